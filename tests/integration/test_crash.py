"""kill -9 in the middle of snapshot, restore, copy (within a pool and across pools), import,
delete, rename and pool moves: the next lxdlib call leaves the old state or the new one, and the
invariant checker finds nothing half-made, no temporary name and no held lock."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import lxdlib
from tests.integration import invariants
from tests.integration.storage_fixtures import ZfsDaemons, zfs_daemon, zfs_daemons  # noqa: F401

pytestmark = pytest.mark.root

_PROLOGUE = """
import sys, lxdlib
h = lxdlib.Host(sys.argv[1])
c = h.instances["c1" if "c1" in h.instances else "c2"]
print("ready", flush=True)
i = 0
while True:
    i += 1
"""

LOOPS = {
    "snapshot": """
    c.snapshots.create()
    names = c.snapshots.names()
    if len(names) > 3:
        c.snapshots.delete(names[0])
""",
    "restore": """
    c.snapshots.restore("s0" if i % 2 else "s1")
""",
    "copy": """
    n = f"cp{i}"
    # every fourth: a lone clone into place, which writes no intent
    h.copy("c1", n, pool="dp" if i % 2 else None, instance_only=i % 4 == 0)
    h.instances[n].delete()
""",
    "import": """
    n = f"im{i}"
    h.import_backup(sys.argv[2], n)
    h.instances[n].delete()
""",
    "delete": """
    n = f"d{i}"
    x = h.copy("c1", n)
    x.snapshots.create("extra")
    x.delete()
""",
    "restore-running": """
    c.snapshots.restore("s0" if i % 2 else "s1")
""",
    "device-running": """
    devs = c.devices
    port = sys.argv[2].split(",")[i % 2]
    if devs.pop("p", None) is None:
        devs["p"] = {"type": "proxy", "listen": f"tcp:127.0.0.1:{port}",
                     "connect": "tcp:127.0.0.1:1"}
    c.update(devices=devs)
""",
    "rename-move": """
    c = c.rename("c2" if c.name == "c1" else "c1")
    from lxdlib.copy import move_to_pool
    move_to_pool(h.ctx, c.name, "dp" if c.record().pool == "default" else "default")
""",
}


def _spawn(root: Path, op: str, extra: str) -> subprocess.Popen[str]:
    script = _PROLOGUE + textwrap.indent(textwrap.dedent(LOOPS[op]), "    ")
    return subprocess.Popen([sys.executable, "-c", script, str(root), extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.mark.parametrize("delay", [0.05, 0.25, 0.6])
@pytest.mark.parametrize("op", sorted(LOOPS))
def test_kill_9_leaves_old_or_new(host: lxdlib.Host, tmp_path: Path, op: str,
                                  delay: float) -> None:
    host.create_pool("dp", "dir", {})
    c = host.create("busybox", "c1")
    vol = host.pool("default").volume_path("containers", "c1")
    (vol / "rootfs" / "root" / "f").write_text("zero\n")
    c.snapshots.create("s0")
    (vol / "rootfs" / "root" / "f").write_text("one\n")
    c.snapshots.create("s1")
    backup = host.export_backup("c1", tmp_path / "c1.tar.gz") if op == "import" else Path()
    if op.endswith("-running"):
        c.start()
    extra = f"{_free_port()},{_free_port()}" if op == "device-running" else str(backup)
    p = _spawn(host.paths.root, op, extra)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip() == "ready", p.stderr.read() if p.stderr else ""
        time.sleep(delay)
        assert p.poll() is None, p.stderr.read() if p.stderr else ""  # still in its loop
    finally:
        os.killpg(p.pid, signal.SIGKILL)  # the process and the tools it runs (cp, tar, btrfs)
        p.communicate()
    fresh = lxdlib.Host(host.paths.root)
    names = fresh.instances.names()  # the next call: finishes or undoes what was cut short
    invariants.check(fresh)
    invariants.check_live(fresh)  # record and live agree: devices, limits, power
    assert set(names) & {"c1", "c2"}, names
    main = fresh.instances["c1" if "c1" in names else "c2"]
    assert set(main.snapshots.names()) >= {"s0", "s1"} if op != "snapshot" else True
    # and the root goes on working: every instance starts, snapshots and copies
    for name in names:
        inst = fresh.instances[name]
        text = (fresh.pool(inst.record().pool).volume_path("containers", name) /
                "rootfs" / "root" / "f").read_text()
        assert text in ("zero\n", "one\n")
    # a copy must not take the same listen address; the local root device stays (an instance
    # the kill left on the other pool keeps its root there: dropping it would ask to move it)
    main.update(devices={k: v for k, v in main.devices.items() if k != "p"})
    main.snapshots.create("after")
    fresh.copy(main.name, "final")
    fresh.instances["final"].start()
    assert fresh.instances["final"].exec(["cat", "/root/f"]).text in ("zero\n", "one\n")
    invariants.check(fresh)


def test_recover_repairs_what_no_intent_names(host: lxdlib.Host) -> None:
    """After a power loss the intent files may be gone too: ``lxdlib recover`` compares the
    pools with the records instead."""
    from lxdlib.housekeeping import recover
    c = host.create("busybox", "c1")
    c.snapshots.create("s0")
    pool = host.pool("default")
    pool.create_snapshot("c1", "unrecorded")  # a snapshot whose record write was lost
    pool.create_instance_volume("orphan", None)  # a volume no instance owns
    (pool.volume_path("containers", "x").parent / ".tmp-999999999-dead-x").mkdir()
    (host.paths.instance_dir("c1") / ".instance.yaml.tmp999999999").write_text("half")
    with pytest.raises(AssertionError):
        invariants.check(host)
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root),
                        "recover"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "c1/unrecorded" in r.stdout and "default:orphan" in r.stdout
    invariants.check(host)
    assert c.snapshots.names() == ["s0"]
    assert recover(host).recovered == []  # idempotent


# -- exact crash points: each operation that changes a running instance ----------------------------
# ``LXDLIB_CRASHPOINT=<point>`` makes lxdlib SIGKILL itself at that step boundary
# (``journal.crashpoint``); the next call — ``lxdlib recover`` or any listing — must leave the
# instance old or new, with record and live state agreeing (``invariants.check_live``).

_STEP = """
import sys, lxdlib
h = lxdlib.Host(sys.argv[1])
c = h.instances[sys.argv[3]] if sys.argv[3] else None
exec(sys.argv[2])
"""

UPDATE_BEFORE = ["update.begun", "update.config-written", "update.saved"]  # old comes back
UPDATE_AFTER = ["update.live", "update.live-config", "update.device"]  # the new is finished


def _unique(prefix: str) -> str:
    """Instance names differ per run: liblxc names its monitor cgroups after them."""
    return f"{prefix}{os.urandom(3).hex()}"


def _die_at(host: lxdlib.Host, point: str, code: str, name: str = "") -> None:
    """Run ``code`` (``c`` is instance ``name``) in a subprocess that SIGKILLs itself at
    ``point``, which it must reach."""
    env = {**os.environ, "LXDLIB_CRASHPOINT": point}
    r = subprocess.run([sys.executable, "-c", _STEP, str(host.paths.root), code, name], env=env,
                       capture_output=True, text=True, timeout=120, start_new_session=True)
    assert r.returncode == -signal.SIGKILL, f"{point} not reached: {r.returncode} {r.stderr}"


def _next_call(host: lxdlib.Host, i: int) -> lxdlib.Host:
    """The call after the crash: ``lxdlib recover`` or, every other time, a plain listing."""
    if i % 2:
        r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                            str(host.paths.root), "recover"], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        assert "Nothing to recover" not in r.stdout
    fresh = lxdlib.Host(host.paths.root)
    fresh.instances.names()
    invariants.check(fresh)
    invariants.check_live(fresh)
    return fresh


def _listening(port: int) -> bool:
    import socket
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proxy(port: int) -> dict[str, str]:
    return {"type": "proxy", "listen": f"tcp:127.0.0.1:{port}", "connect": "tcp:127.0.0.1:1"}


def test_crash_points_device_add_update_remove(host: lxdlib.Host) -> None:
    n = _unique("j")
    c = host.launch("busybox", n)
    src = host.paths.root / "src"
    src.mkdir(mode=0o755)
    i = 0
    for point in UPDATE_BEFORE + UPDATE_AFTER:  # a host directory hot-plugged as a disk
        i += 1
        c.update(devices={})
        want = {"d": {"type": "disk", "source": str(src), "path": "/mnt/d"}}
        _die_at(host, point, f"c.update(devices={want!r})", n)
        fresh = _next_call(host, i)  # check_live: mounted once if recorded
        assert fresh.instances[n].devices == (want if point in UPDATE_AFTER else {}), point
        mounted = c.exec(["grep", "-c", " /mnt/d ", "/proc/mounts"]).text.strip()
        assert mounted == ("1" if point in UPDATE_AFTER else "0"), point
    c.update(devices={})
    for op in ("add", "update", "remove"):
        for point in UPDATE_BEFORE + UPDATE_AFTER:
            i += 1
            old_port, new_port = _free_port(), _free_port()
            devs = {k: v for k, v in c.devices.items() if k != "p"}
            if op != "add":
                devs["p"] = _proxy(old_port)
            c.update(devices=devs)
            want = {**devs, "p": _proxy(new_port)} if op != "remove" else \
                {k: v for k, v in devs.items() if k != "p"}
            _die_at(host, point, f"c.update(devices={want!r})", n)
            fresh = _next_call(host, i)
            forward = point in UPDATE_AFTER
            got = fresh.instances[n].devices
            assert got == (want if forward else devs), (op, point, got)
            assert _listening(old_port) == (op != "add" and not forward), (op, point)
            assert _listening(new_port) == (op != "remove" and forward), (op, point)
            assert fresh.instances[n].state == "RUNNING"


def test_crash_points_live_config(host: lxdlib.Host) -> None:
    n = _unique("j")
    c = host.launch("busybox", n)
    for i, point in enumerate(["update.saved", "update.live", "update.live-config"]):
        c.set_config("limits.processes", "100")
        _die_at(host, point, f"c.set_config('limits.processes', '{200 + i}')", n)
        fresh = _next_call(host, i)  # check_live: pids.max is what the record says
        assert fresh.instances[n].config["limits.processes"] == \
            ("100" if point == "update.saved" else str(200 + i))


def test_crash_points_restore_running(host: lxdlib.Host) -> None:
    """A restore of a running instance is stop → swap → start: wherever it dies, the
    instance ends restored and RUNNING again."""
    n = _unique("j")
    c = host.launch("busybox", n)
    c.set_config("user.v", "snap")
    c.exec("echo snap > /root/f", check=True)
    c.snapshots.create("s0")
    points = ["restore.begun", "restore.stopped", "restore.swapped", "restore.starting",
              "restore.started"]
    for i, point in enumerate(points):
        c.set_config("user.v", "later")
        c.exec("echo later > /root/f", check=True)
        _die_at(host, point, "c.snapshots.restore('s0')", n)
        fresh = _next_call(host, i)
        inst = fresh.instances[n]
        assert inst.state == "RUNNING", point
        assert inst.config["user.v"] == "snap", point
        assert inst.wait_ready()
        assert inst.exec(["cat", "/root/f"]).text == "snap\n", point
        c = inst


def test_crash_points_rename(host: lxdlib.Host) -> None:
    a, b = _unique("ja"), _unique("jb")
    host.create("busybox", a)
    for i, point in enumerate(["rename.begun", "rename.volume", "rename.directory",
                               "rename.saved"]):
        _die_at(host, point, f"c.rename({b!r})", a)
        fresh = _next_call(host, i)
        names = fresh.instances.names()
        assert names == ([a] if point in ("rename.begun", "rename.volume") else [b]), point
        if names == [b]:
            fresh.instances[b].rename(a)
    fresh.instances[a].start()


def test_crash_points_profile_apply(host: lxdlib.Host) -> None:
    """A profile edit re-applied to a running and a stopped user: all of them follow the
    profile file, saved or not."""
    host.profiles.create("pp", {}, {})
    host.launch("busybox", _unique("ja"), profiles=["default", "pp"])
    host.create("busybox", _unique("jb"), profiles=["default", "pp"])
    for i, point in enumerate(["profile.begun", "profile.saved", "profile.applied-one",
                               "update.device"]):
        old_port, new_port = _free_port(), _free_port()
        host.update_profile("pp", config={"limits.processes": "100"},
                            devices={"p": _proxy(old_port)})
        _die_at(host, point, f"h.update_profile('pp', config={{'limits.processes': '{300 + i}'}},"
                             f" devices={{'p': {_proxy(new_port)!r}}})")
        fresh = _next_call(host, i)
        forward = point != "profile.begun"
        assert fresh.profiles.get("pp").config["limits.processes"] == \
            (str(300 + i) if forward else "100")
        assert _listening(old_port) != forward and _listening(new_port) == forward, point


def test_crash_points_stop_and_restart(host: lxdlib.Host) -> None:
    """liblxc stops the instance, then the record says so: a kill -9 between left a stopped
    instance recorded RUNNING (``autostart`` would start it at the next boot), an ephemeral
    one stopped and never deleted, and a restart of an ephemeral one without its flag for
    good; a start records RUNNING before liblxc starts it, and a kill -9 between left the
    same. The next call finishes each: a stop is recorded (an ephemeral instance deleted), a
    start that did not happen is recorded stopped, a restart starts the instance again with
    its flag back. (A random-delay kill loop of start and stop left 6 of 12 runs so.)"""
    n = _unique("j")
    host.launch("busybox", n)
    i = 0
    for point in ["stop.stopping", "stop.stopped"]:
        i += 1
        _die_at(host, point, "c.stop(force=True)", n)
        inst = _next_call(host, i).instances[n]
        want = "RUNNING" if point == "stop.stopping" else "STOPPED"
        assert (inst.state, inst.config["volatile.last_state.power"]) == (want, want), point
        if want == "STOPPED":
            inst.start()
    inst.stop(force=True)
    i += 1
    _die_at(host, "start.recorded", "c.start()", n)  # recorded RUNNING, not started yet
    inst = _next_call(host, i).instances[n]
    assert (inst.state, inst.config["volatile.last_state.power"]) == ("STOPPED", "STOPPED")
    inst.start()
    e = _unique("je")
    host.launch("busybox", e, ephemeral=True)
    for name in (n, e):
        for point in ["stop.stopping", "stop.stopped", "restart.stopped"]:
            i += 1
            _die_at(host, point, "c.restart(force=True)", name)
            # an ephemeral instance's stop hook starts a reaper, which takes the lock and so
            # finishes the restart too: whichever comes first, the other finds nothing to do
            inst = _next_call(host, i if name == n else 0).instances[name]
            assert _soon(functools.partial(_settled, inst, name == e)), \
                (name, point, inst.state, inst.config, inst.ephemeral)
    # the flag goes before the stop: a kill right after it kept a non-ephemeral instance
    for j in (1, 2):  # the next call: a recover, then a listing
        _die_at(host, "restart.unflagged", "c.restart(force=True)", e)
        inst = _next_call(host, j).instances[e]
        assert _soon(functools.partial(_settled, inst, True)), (inst.state, inst.config)
    _die_at(host, "stop.stopped", "c.stop(force=True)", e)
    fresh = _next_call(host, 0)
    assert _soon(lambda: e not in fresh.instances.names())  # deleted, as by its stop


def _settled(inst: lxdlib.Instance, ephemeral: bool) -> bool:
    return (inst.state, inst.config["volatile.last_state.power"], inst.ephemeral) == \
        ("RUNNING", "RUNNING", ephemeral)


def _soon(check: Callable[[], bool], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_start_that_fails_is_recorded_stopped(host: lxdlib.Host) -> None:
    """Its record said RUNNING before the start (so that a kill -9 after it is right), and
    kept saying so when the start failed: ``autostart`` would have started it at boot."""
    c = host.create("busybox", _unique("f"))
    c.set_config("raw.lxc", "lxc.hook.pre-start = /bin/false")
    with pytest.raises(lxdlib.LXCError):
        c.start()
    assert (c.state, c.config["volatile.last_state.power"]) == ("STOPPED", "STOPPED")
    assert host.autostart(sleep=lambda _: None) == {}


def test_crash_points_publish_force(host: lxdlib.Host) -> None:
    """``publish --force`` stops a running instance for the tarball and starts it after. A
    kill -9 between left it stopped for good (and recorded so), and an ephemeral one was
    deleted by that stop before anything was published ("Instance not found"; LXD's client
    clears the flag around it). Now the stop and start are one restart with the tarball in
    its middle: without a kill the instance runs again, ephemeral still; after one, the next
    call starts it, as an interrupted restart."""
    for ephemeral in (False, True):
        n = _unique("pe" if ephemeral else "p")
        host.launch("busybox", n, ephemeral=ephemeral)
        img = host.images.publish(n, force=True)
        inst = host.instances[n]
        assert _settled(inst, ephemeral), (inst.state, inst.config, inst.ephemeral)
        host.images[img.fingerprint].delete()
        for i, point in enumerate(["stop.stopped", "restart.stopped", "publish.written"]):
            _die_at(host, point, "h.images.publish(c, force=True)", n)
            # an ephemeral instance's reaper may finish the restart first (see above)
            inst = _next_call(host, 0 if ephemeral else i).instances[n]
            assert _soon(functools.partial(_settled, inst, ephemeral)), \
                (n, point, inst.state, inst.config, inst.ephemeral)
        # the killed publishes stored nothing
        assert [i.fingerprint for i in host.images.list()] == [host.images["busybox"].fingerprint]


@pytest.mark.parametrize("driver", ["zfs", "btrfs", "dir"])
def test_crash_point_publish_of_a_snapshot_leaves_no_clone(host: lxdlib.Host,
                                                           request: pytest.FixtureRequest,
                                                           driver: str) -> None:
    """zfs-fuse shows no snapshot as a directory, so publishing one reads a clone of it. The
    clone had an ordinary volume name: a kill -9 left it for good, through the next publish
    and every listing, until ``lxdlib recover`` took it for an orphan. It is named for its
    process now, and the next call that opens the pool removes it. btrfs and dir read the
    snapshot where it is and leave nothing either."""
    pname = "default"
    if driver != "btrfs":
        pname = _unique("pp")
        if driver == "zfs":
            request.getfixturevalue("zfs_daemon")
            host.create_pool(pname, "zfs", {"size": "512MiB", "zfs.pool_name": _unique("lxdt")})
        else:
            host.create_pool(pname, "dir", {})
    n = _unique("ps")
    try:
        c = host.create("busybox", n, pool=pname)
        c.snapshots.create("s0")
        c.snapshots.create("s1")
        _die_at(host, "publish.written", "h.images.publish(c.name + '/s0')", n)
        # a call about the instance in a process that opened the pool before the kill (its
        # clean-up of the pool is done): the clone left must not hold the snapshot
        c.snapshots.delete("s0")
        _die_at(host, "publish.written", "h.images.publish(c.name + '/s1')", n)
        # the next call, in a process of its own: the same publish again
        r = subprocess.run([sys.executable, "-c", _STEP, str(host.paths.root),
                            "h.images.publish(c.name + '/s1', aliases=['again'])", n],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        invariants.check(host)  # this process opened the pool before: it cleaned up nothing
        assert "again" in host.images  # the publish after the kill went through
    finally:
        for inst in host.instances.list():
            inst.delete(force=True)
        if pname != "default":
            # a clone left (the failure above) keeps the pool in use: the root's teardown
            # destroys it then
            with contextlib.suppress(lxdlib.errors.InUse):
                host.delete_pool(pname)


@pytest.mark.parametrize("op", ["export", "copy", "snapshot"])
def test_kill_while_frozen_for_a_read_thaws_it(host: lxdlib.Host, tmp_path: Path,
                                               op: str) -> None:
    """A pool that copies files (dir) freezes a running instance while an export, a copy or a
    snapshot reads its volume. A kill -9 then left it FROZEN for good, its processes stopped
    with no one to thaw them; ``lxdlib recover`` found nothing to do. The intent says so
    now, and the next call thaws it."""
    host.create_pool("dp", "dir", {})
    n = _unique("fz")
    c = host.launch("busybox", n, pool="dp")
    code = {"export": f"h.export_backup(c.name, {str(tmp_path / 'b.tar.gz')!r})",
            "copy": "h.copy(c.name, c.name + 'x')",
            "snapshot": "c.snapshots.create('s0')"}[op]
    # killed at the point where the read has frozen it (timing a kill by polling the state
    # missed a read that ended first)
    _die_at(host, "frozen.read", code, n)
    assert c.state == "FROZEN"
    fresh = _next_call(host, 1)  # ``lxdlib recover``: it has something to do
    assert fresh.instances.names() == [n]  # a copy cut short is gone
    assert fresh.instances[n].state == "RUNNING"
    fresh.instances[n].exec(["true"], check=True)


def _work_dirs(host: lxdlib.Host) -> set[str]:
    """The work directories of publishes, downloads and builds, wherever they are made."""
    run = host.paths.run
    return {str(p) for p in [*Path("/tmp").glob("lxdlib-publish-*"), *run.glob("download-*"),
                             *run.glob("build-*"), *(run / "image-imports").glob("*")]}


@pytest.mark.parametrize("op", ["publish", "download"])
def test_kill_during_publish_or_download_leaves_no_work_directory(host: lxdlib.Host,
                                                                  op: str) -> None:
    """A publish made its work directory in /tmp, a URL import (a whole image) and an image
    build theirs under ``run/``: a kill -9 left each for good, as nothing looked there. They
    are made among the store's temp files now, named for their process, and the next ``Host``
    removes a dead one's."""
    import http.server
    import threading
    before = _work_dirs(host)
    stall = threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            self.wfile.write(b"\0" * (1 << 20))
            self.wfile.flush()
            stall.wait(60)  # the rest never comes

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    n = _unique("pw")
    if op == "publish":
        c = host.create("busybox", n)
        with open(c.volume / "rootfs" / "root" / "big", "wb") as f:
            f.write(os.urandom(1 << 20) * 64)  # a tar long enough to be caught in
        code = "h.images.publish(c)"
    else:
        code = f"h.images.import_url('http://127.0.0.1:{server.server_address[1]}/x.tar')"
    p = subprocess.Popen([sys.executable, "-c", _STEP, str(host.paths.root), code,
                          n if op == "publish" else ""],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        assert _soon(lambda: any(op in d for d in _work_dirs(host) - before)
                     or p.poll() is not None, 60)
        assert p.poll() is None, p.stderr.read() if p.stderr else ""
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        stall.set()
        server.shutdown()
        server.server_close()
    _next_call(host, 0)
    assert _work_dirs(host) - before == set()


def test_crash_point_forced_delete_of_a_running_instance(host: lxdlib.Host) -> None:
    """``delete --force`` of a running instance stops it, then deletes it: a kill -9 between
    left it stopped and kept (recorded stopped by its stop hook's mark), neither the running
    instance it was nor the deletion asked for. The next call finishes the delete."""
    n = _unique("dl")
    host.launch("busybox", n)
    _die_at(host, "delete.stopped", "c.delete(force=True)", n)
    fresh = _next_call(host, 0)  # a listing finishes it
    assert n not in fresh.instances.names()
    assert not host.paths.instance_dir(n).exists()
