"""A start of an instance that uses a custom volume against the volume verbs that refuse running
users under the volume's lock (``storage volume restore``, the shift of a volume's files to
another id map on zfs-fuse), on real btrfs, dir and zfs pools with real liblxc; and a hot-plug
of the volume into a running instance, which is a start of its use.

The verb paused (``SIGSTOP``) between its check and its change while another process starts a
user: the start waits and runs on what the verb left, or the verb refuses; never a running
instance whose volume's files were swapped or shifted under it. And restores and starts from two
processes at once, round after round: both finish (the lock order: instance, then volume)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import lxdlib
import lxdlib.errors
from lxdlib.errors import WrongState
from lxdlib.state import lock
from lxdlib.volumes import VOLUME_LOCK
from tests.integration.storage_fixtures import (  # noqa: F401
    ZfsDaemons,
    run_with_pause,
    zfs_daemon,
    zfs_daemons,
)

pytestmark = pytest.mark.root

DIR_POOL = "radir"
REFUSED = "Cannot restore custom volume used by running instances"
#: How long the second command is given to finish while the first is paused: one that does not
#: wait for the first finishes in well under a second (a start, an attach), so this catches it
WINDOW = 2.5


def _name() -> str:
    return f"ra{secrets.token_hex(3)}"


def _cli(host: lxdlib.Host, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lxdlib.cli.main", "--root",
                             str(host.paths.root), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


@contextlib.contextmanager
def _reaped(*procs: subprocess.Popen[str]) -> Iterator[None]:
    """Kill (by pid) what a failed test left running, and resume a stopped one first."""
    try:
        yield
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                p.wait(timeout=30)


@pytest.fixture
def vols(host: lxdlib.Host) -> Iterator[lxdlib.Host]:
    """The ``host`` root (btrfs pool ``default``) with a dir pool beside it."""
    host.create_pool(DIR_POOL, "dir", {})
    try:
        yield host
    finally:
        for inst in host.instances.list():
            with contextlib.suppress(Exception):
                inst.delete(force=True)


def _volume(host: lxdlib.Host, pool: str) -> None:
    """Volume ``v``: ``f`` says "snapshot" in snapshot ``s1``, "live" now."""
    s = host.volumes.store
    s.create(pool, "v")
    (s.path(pool, "v") / "f").write_text("snapshot")
    s.create_snapshot(pool, "v", "s1")
    (s.path(pool, "v") / "f").write_text("live")


def _user(host: lxdlib.Host, pool: str, via: str) -> str:
    """A stopped instance that uses ``v`` at ``/data``, by its own device or a profile's."""
    name = _name()
    dev = {"type": "disk", "pool": pool, "source": "v", "path": "/data"}
    if via == "profile":
        prof = _name()
        host.profiles.create(prof, {}, {"data": dev})
        host.create("busybox", name, profiles=["default", prof])
    else:
        host.create("busybox", name, devices={"data": dev})
    return name


def _seen(host: lxdlib.Host, name: str) -> str:
    return host.instances[name].exec(["cat", "/data/f"], check=True).text


@pytest.mark.parametrize(("pool", "via"), [("default", "device"), (DIR_POOL, "device"),
                                           ("default", "profile")])
def test_start_during_a_paused_restore(vols: lxdlib.Host, pool: str, via: str) -> None:
    _volume(vols, pool)
    name = _user(vols, pool, via)
    restore = run_with_pause(vols, "lxdlib.volumes", "volume.restore.checked",
                             f"h.volumes.store.restore_snapshot({pool!r}, 'v', 's1')")
    start = _cli(vols, "start", name)
    with _reaped(restore, start):
        # the restore is between its check (no running user) and its swap: a start that does
        # not wait for it finishes now (in well under a second)
        with contextlib.suppress(subprocess.TimeoutExpired):
            start.wait(timeout=WINDOW)
        restore.send_signal(signal.SIGCONT)
        _, rerr = restore.communicate(timeout=120)
        _, serr = start.communicate(timeout=120)
        assert start.returncode == 0, serr
        assert vols.instances[name].state == "RUNNING"
        on_host = (vols.volumes.store.path(pool, "v") / "f").read_text()
        if restore.returncode == 0:
            assert on_host == "snapshot"
        else:
            assert REFUSED in rerr and on_host == "live"
        # the instance runs on the volume's files as they are, not on what the swap replaced
        assert _seen(vols, name) == on_host


def test_attach_to_a_running_instance_during_a_paused_restore(vols: lxdlib.Host) -> None:
    """A hot-plug is a start of the volume's use: an attach to a running instance while a
    restore is between its check (no user then) and its swap waits and mounts what the
    restore left."""
    _volume(vols, "default")
    name = _name()
    vols.launch("busybox", name)
    restore = run_with_pause(vols, "lxdlib.volumes", "volume.restore.checked",
                             "h.volumes.store.restore_snapshot('default', 'v', 's1')")
    attach = _cli(vols, "storage", "volume", "attach", "default", "v", name, "/data")
    with _reaped(restore, attach):
        with contextlib.suppress(subprocess.TimeoutExpired):
            attach.wait(timeout=WINDOW)
        restore.send_signal(signal.SIGCONT)
        _, rerr = restore.communicate(timeout=120)
        _, aerr = attach.communicate(timeout=120)
        assert attach.returncode == 0, aerr
        on_host = (vols.volumes.store.path("default", "v") / "f").read_text()
        if restore.returncode == 0:
            assert on_host == "snapshot"
        else:
            assert REFUSED in rerr and on_host == "live"
        assert _seen(vols, name) == on_host


def _inits(monitor: int) -> list[int]:
    """The children of liblxc's monitor in a pid namespace of their own: the container's
    init (not the hooks it runs)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == monitor and \
                        os.readlink(f"/proc/{entry}/ns/pid") != \
                        os.readlink(f"/proc/{monitor}/ns/pid"):
                    out.append(int(entry))
    return out


def _mount_points(pid: int) -> list[str]:
    with open(f"/proc/{pid}/mountinfo") as f:
        return [line.split()[4] for line in f]


@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_a_reboot_inside_waits_for_the_volume_lock(vols: lxdlib.Host, pool: str) -> None:
    """A reboot from inside passes through liblxc alone; its start-host hook mounts the
    volume, and takes the volume's lock for that as a start of lxdlib's does: while another
    holds it (here the test, standing for a restore between its check and its swap) the
    volume is not mounted in the new run; once it is free the instance comes up with it."""
    _volume(vols, pool)
    name = _name()
    vols.launch("busybox", name, devices={"data": {"type": "disk", "pool": pool,
                                                   "source": "v", "path": "/data"}})
    inst = vols.instances[name]
    assert _seen(vols, name) == "live"
    old = inst.pid
    with open(f"/proc/{old}/stat") as f:
        monitor = int(f.read().rsplit(")", 1)[1].split()[1])
    with lock(vols.paths, VOLUME_LOCK, f"{pool}.v"):
        with contextlib.suppress(lxdlib.errors.LxdlibError):
            inst.exec(["reboot", "-f"])
        deadline = time.monotonic() + 60
        while not (new := [p for p in _inits(monitor) if p != old]):
            assert time.monotonic() < deadline, "the instance did not reboot"
            time.sleep(0.05)
        time.sleep(3)  # a hook that does not wait has mounted it long since
        assert "/data" not in _mount_points(new[0])
        # a restore meanwhile (this thread holds the lock) finds the instance on its way up
        # at once, without asking its monitor (busy in the hook, waiting for the lock)
        began = time.monotonic()
        with pytest.raises(WrongState, match=REFUSED):
            vols.volumes.store.restore_snapshot(pool, "v", "s1")
        assert time.monotonic() - began < 10
    deadline = time.monotonic() + 60
    while "/data" not in _mount_points(new[0]):
        assert time.monotonic() < deadline, "the volume was never mounted"
        time.sleep(0.05)
    assert inst.wait_for(lambda: inst.running and inst.pid == new[0], timeout=60)
    assert _seen(vols, name) == "live"


_RESTORES = """
import os, time
from lxdlib.errors import WrongState
for _ in range(1000):  # until the starts are done
    if os.path.exists({done!r}):
        break
    time.sleep(0.1)  # as between two commands: the locks are not fair, a waiter polls
    try:
        h.volumes.store.restore_snapshot({pool!r}, 'v', 's1')
    except WrongState as e:
        assert "running instances" in str(e), e
"""

_STARTS = """
import os
s = h.volumes.store
inst = h.instances[{name!r}]
try:
    for _ in range({rounds}):
        inst.start()
        seen = inst.exec(["cat", "/data/f"]).text
        on_host = (s.path({pool!r}, 'v') / 'f').read_text()
        assert seen == on_host, (seen, on_host)
        inst.stop(force=True)
        (s.path({pool!r}, 'v') / 'f').write_text("live")
finally:
    open({done!r}, "w").close()
"""


@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_restores_and_starts_at_once_both_finish(vols: lxdlib.Host, pool: str) -> None:
    """Two processes, one restoring the volume (lingering 0.2 s between its check and its
    swap, which widens the window a start used to slip through), one starting and stopping
    its user, each checking that a running user sees the volume's files: both finish."""
    _volume(vols, pool)
    name = _user(vols, pool, "device")
    done = str(vols.paths.root / "starts-done")
    restores = run_with_pause(vols, "lxdlib.volumes", "volume.restore.checked",
                              _RESTORES.format(done=done, pool=pool), how="0.2")
    starts = run_with_pause(vols, "lxdlib.volumes", "-", _STARTS.format(
        rounds=8, pool=pool, name=name, done=done), how="0")
    with _reaped(restores, starts):
        deadline = time.monotonic() + 240
        for p in (restores, starts):
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert p.returncode == 0, err


def test_shift_refuses_a_user_starting_meanwhile(host: lxdlib.Host,
                                                 zfs_daemon: ZfsDaemons) -> None:  # noqa: F811
    """zfs-fuse (no idmapped mounts): the volume's files carry one map at a time. An instance
    paused in its start after its render (files shifted to its map) and before liblxc starts
    it: another instance with another map given the volume meanwhile (two spellings of an
    attach) is refused — a volume is shared by one map only — rather than shifting the files
    away from the first one's map."""
    zpool = f"razp{secrets.token_hex(3)}"
    host.create_pool("razp", "zfs", {"size": "512MiB", "zfs.pool_name": zpool})
    s = host.volumes.store
    first, second, third = _name(), _name(), _name()
    data = {"data": {"type": "disk", "pool": "razp", "source": "v", "path": "/data"}}
    try:
        s.create("razp", "v")
        (s.path("razp", "v") / "f").write_text("x")
        host.create("busybox", first, config={"security.idmap.isolated": "true"},
                    devices=data)
        host.create("busybox", second, config={"security.idmap.isolated": "true"})
        host.create("busybox", third, config={"security.idmap.isolated": "true"})
        start1 = run_with_pause(host, "lxdlib.journal", "start.recorded",
                                f"h.instances[{first!r}].start()")
        attach2 = _cli(host, "storage", "volume", "attach", "razp", "v", second, "/data")
        add3 = _cli(host, "config", "device", "add", third, "data", "disk", "pool=razp",
                    "source=v", "path=/data")
        with _reaped(start1, attach2, add3):
            with contextlib.suppress(subprocess.TimeoutExpired):
                attach2.wait(timeout=WINDOW)
                add3.wait(timeout=WINDOW)
            start1.send_signal(signal.SIGCONT)
            _, err1 = start1.communicate(timeout=120)
            _, err2 = attach2.communicate(timeout=120)
            _, err3 = add3.communicate(timeout=120)
            assert start1.returncode == 0, err1
            assert host.instances[first].state == "RUNNING"
            for p, err in ((attach2, err2), (add3, err3)):
                assert p.returncode != 0 and "different id map" in err, err
            assert "data" not in host.instances[second].devices
            assert "data" not in host.instances[third].devices
            # the first one's root owns the files it mounted
            assert host.instances[first].exec(["stat", "-c", "%u", "/data/f"],
                                              check=True).text.strip() == "0"
    finally:
        for inst in host.instances.list():
            with contextlib.suppress(Exception):
                inst.delete(force=True)
        for v in s.names("razp"):
            with contextlib.suppress(Exception):
                s.delete("razp", v)
        with contextlib.suppress(Exception):
            host.delete_pool("razp")
