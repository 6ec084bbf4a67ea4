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
