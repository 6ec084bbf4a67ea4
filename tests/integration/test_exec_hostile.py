"""``exec`` against a container whose root is hostile: it gets the command's three standard
streams and nothing else of the caller's, and it cannot stretch an exec past its timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lxdlib

pytestmark = pytest.mark.root

# the container's root writes into, reads from and keeps open whatever fds it was handed
GRAB = ("ls /proc/self/fd; echo container-wrote >&{w}; cat <&{r};"
        " (sleep 600 {w}>&{w} </dev/null >/dev/null 2>&1 &) ; true")


def _host_files(tmp: Path) -> tuple[Path, Path]:
    secret = tmp / "secret"
    secret.write_text("host secret\n")
    secret.chmod(0o600)
    lock = tmp / "job.lock"
    lock.write_text("")
    lock.chmod(0o600)
    return secret, lock


def test_exec_hands_the_container_no_fd_of_the_caller(host: lxdlib.Host, root: Path,
                                                      tmp_path: Path) -> None:
    """A caller's inheritable fds (a shell's ``exec 9>lock; flock 9``) were open in the
    container: its root wrote a root-only host file through one, read another and held the
    caller's lock forever. As LXD, the command gets fds 0-2 only: from the API and the CLI."""
    c = host.launch("busybox", "c1")
    secret, lock = _host_files(tmp_path)
    w = os.open(lock, os.O_WRONLY | os.O_APPEND)
    r = os.open(secret, os.O_RDONLY)
    try:
        os.set_inheritable(w, True)
        os.set_inheritable(r, True)
        res = c.exec(["sh", "-c", GRAB.format(w=w, r=r)])
        fds = res.stdout.split()
        assert str(w).encode() not in fds and str(r).encode() not in fds, res
        assert b"host secret" not in res.stdout
        assert os.get_inheritable(w) and os.get_inheritable(r)  # the caller's, as they were
    finally:
        os.close(w)
        os.close(r)
    # the command line, from a shell that keeps fds 8 and 9 open
    script = (f"exec 9>>{lock}; flock -n 9 || exit 42; exec 8<{secret}; "
              f"{sys.executable} -m lxdlib exec c1 -- sh -c '{GRAB.format(w=9, r=8)}'")
    env = {**os.environ, "LXDLIB_ROOT": str(root),
           "PYTHONPATH": str(Path(lxdlib.__file__).parents[1])}
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, timeout=60)
    assert out.returncode == 0, out
    assert b"host secret" not in out.stdout
    assert lock.read_text() == ""
    # the lock is free again: no process in the container holds it
    again = subprocess.run(["bash", "-c", f"exec 9>>{lock}; flock -n 9"], timeout=10)
    assert again.returncode == 0
    c.exec(["sh", "-c", "killall sleep; true"])


def test_exec_timeout_holds_when_a_left_behind_process_keeps_the_output_open(
        host: lxdlib.Host) -> None:
    """``(sleep &)`` is reparented to the container's init, out of the tree a timeout kills,
    and keeps the output pipes open: ``exec(timeout=…)`` used to wait for it forever."""
    c = host.launch("busybox", "c1")
    t = time.monotonic()
    with pytest.raises(lxdlib.ExecTimeout) as err:
        c.exec(["sh", "-c", "(sleep 600 &); echo started; sleep 300"], timeout=2)
    assert time.monotonic() - t < 10
    assert err.value.result.stdout == b"started\n"
    # the command itself ends in time: its own result, without waiting for what it left
    t = time.monotonic()
    res = c.exec(["sh", "-c", "(sleep 600 &); echo done; exit 3"], timeout=2)
    assert time.monotonic() - t < 10
    assert (res.returncode, res.stdout) == (3, b"done\n")
    c.exec(["sh", "-c", "killall sleep; true"])


# the container's root moves every process of its own, init included, into a cgroup it makes
# below its payload, and freezes it (the v1 freezer where the host has one, else cgroup2)
FREEZE_SELF = """
mount -t tmpfs none /sys/fs/cgroup; mkdir -p /sys/fs/cgroup/f
if mount -t cgroup -o freezer none /sys/fs/cgroup/f 2>/dev/null; then
  key=freezer.state; value=FROZEN
else
  mount -t cgroup2 none /sys/fs/cgroup/f; key=cgroup.freeze; value=1
fi
mkdir /sys/fs/cgroup/f/x
echo 1 > /sys/fs/cgroup/f/x/cgroup.procs
( for p in $(cat /sys/fs/cgroup/f/cgroup.procs); do echo $p > /sys/fs/cgroup/f/x/cgroup.procs; done
  echo $value > /sys/fs/cgroup/f/x/$key ) </dev/null >/dev/null 2>&1 &
"""


@pytest.mark.parametrize("verb", ["stop", "delete"])
def test_a_container_that_froze_its_own_init_is_still_stopped(host: lxdlib.Host, root: Path,
                                                                verb: str) -> None:
    """liblxc thaws only the payload cgroup: an init the container froze in a cgroup of its
    own never received the SIGKILL, and ``stop --force`` / ``delete --force`` hung."""
    c = host.launch("busybox", "c1")
    c.exec(["sh", "-c", FREEZE_SELF], check=True, timeout=30)
    time.sleep(1)
    env = {**os.environ, "LXDLIB_ROOT": str(root),
           "PYTHONPATH": str(Path(lxdlib.__file__).parents[1])}
    try:
        out = subprocess.run([sys.executable, "-m", "lxdlib", verb, "-f", "c1"], env=env,
                             capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{verb} --force of an instance that froze its init hung")
    assert out.returncode == 0, out
    if verb == "stop":
        assert c.state == "STOPPED"
    else:
        assert "c1" not in host.instances
