"""Copy and move between two lxdlib roots through a byte stream (lxdlib.migrate).

Two roots on this machine stand for two hosts; the transport is the other root's ``lxdlib`` run as
a subprocess (``python -m lxdlib --root R``), exactly the argv an SSH remote would prefix with
``ssh host``. Each side has its own btrfs pool (and the target a dir pool for the file stream).

Covered: a copy with snapshots; ``instance_only``; a refresh that sends less (measured); moves of a
stopped and (``stateless``) a running instance; btrfs→btrfs (send streams) and btrfs→dir (tar);
hostile streams refused with nothing left; kill -9 of either side mid-stream and a dropped pipe,
after which the source is intact, the target shows nothing and its next call cleans up.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import btrfsutil
import pytest

import lxdlib
from lxdlib import migrate
from lxdlib.errors import LxdlibError, WrongState
from tests.cleanup import teardown_root
from tests.integration.storage_fixtures import ZfsDaemons, zfs_daemon, zfs_daemons

__all__ = ["zfs_daemon", "zfs_daemons"]  # fixtures used by name

pytestmark = pytest.mark.root

A_NAME = "mig-c1"


@pytest.fixture
def other(busybox_tarball: Path) -> Iterator[lxdlib.Host]:
    """The second "host": its own root, btrfs pool ``default`` and dir pool ``dp``."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    base = Path(tempfile.mkdtemp(prefix="lxdlib-test-b-", dir="/var/tmp"))
    base.chmod(0o711)
    r = base / "root"
    r.mkdir()
    h = lxdlib.Host(r)
    try:
        h.create_pool("default", "btrfs", {"size": "2GiB"})
        h.create_pool("dp", "dir", {})
        h.profiles.create("default", {}, {"root": {"type": "disk", "path": "/",
                                                   "pool": "default"}})
        yield h
    finally:
        for inst in h.instances.list():
            with contextlib.suppress(Exception):
                inst.delete(force=True)
        for name in h.pool_names():
            with contextlib.suppress(Exception):
                h.pool(name).unmount()
        teardown_root(r)
        shutil.rmtree(base, ignore_errors=True)


def _argv(h: lxdlib.Host) -> list[str]:
    return migrate.local_argv(h.ctx.paths.root)


def _volume(h: lxdlib.Host, name: str, pool: str = "default") -> Path:
    return Path(h.pool(pool).volume_path("containers", name))  # type: ignore[attr-defined]


def _snapdir(h: lxdlib.Host, name: str, pool: str = "default") -> Path:
    return Path(h.pool(pool).volume_path("containers-snapshots", f"{name}/x")).parent  # type: ignore


def _source(host: lxdlib.Host, snaps: int = 2, big: int = 0) -> lxdlib.Instance:
    c = host.create("busybox", A_NAME)
    rootfs = _volume(host, A_NAME) / "rootfs"
    if big:
        (rootfs / "big").write_bytes(os.urandom(big))
    for i in range(snaps):
        (rootfs / "state").write_text(f"v{i}\n")
        c.snapshots.create(f"s{i}")
    (rootfs / "state").write_text("live\n")
    return c


def _fresh(h: lxdlib.Host) -> lxdlib.Host:
    """A new Host on the same root: a new process's view (its first call recovers leftovers)."""
    return lxdlib.Host(h.ctx.paths.root)


def _nothing_visible(h: lxdlib.Host, name: str) -> None:
    fresh = _fresh(h)
    assert name not in [i.name for i in fresh.instances.list()]


def _clean(h: lxdlib.Host, name: str) -> None:
    """What a next call leaves: no directory, volume, snapshots or temporary volumes."""
    fresh = _fresh(h)
    fresh.instances.list()  # the first call of a process recovers leftovers
    assert not fresh.ctx.paths.instance_dir(name).exists()
    for pool in fresh.pool_names():
        assert not _volume(fresh, name, pool).exists()
        assert not _snapdir(fresh, name, pool).exists()
    leftovers = [e for e in os.listdir(_snapdir(fresh, "x").parent) if e.startswith(".")]
    assert leftovers == []


def _intact(host: lxdlib.Host, snaps: int = 2) -> None:
    fresh = _fresh(host)
    c = fresh.instances.get(A_NAME)
    assert [s.name for s in c.snapshots.list()] == [f"s{i}" for i in range(snaps)]
    assert (_volume(fresh, A_NAME) / "rootfs" / "state").read_text() == "live\n"


# -- copies ----------------------------------------------------------------------------------------

def test_copy_with_snapshots(host: lxdlib.Host, other: lxdlib.Host) -> None:
    src = _source(host)
    out = migrate.copy_between(host.ctx, None, _argv(other), A_NAME, "mig-c2")
    assert out.name == "mig-c2" and out.sent_bytes > 0
    c2 = _fresh(other).instances.get("mig-c2")
    assert [s.name for s in c2.snapshots.list()] == ["s0", "s1"]
    assert (_volume(other, "mig-c2") / "rootfs" / "state").read_text() == "live\n"
    for i in range(2):
        assert (_snapdir(other, "mig-c2") / f"s{i}" / "rootfs" / "state").read_text() == \
            f"v{i}\n"
        # received uuids are not left behind (a later receive must not take it as a parent)
        info = btrfsutil.subvolume_info(_snapdir(other, "mig-c2") / f"s{i}")
        assert not any(info.received_uuid)
    assert c2.config["volatile.uuid"] != src.config["volatile.uuid"]
    _intact(host)
    c2.start()  # the copy's config loads and runs
    try:
        assert c2.exec(["cat", "/state"]).text == "live\n"
    finally:
        c2.stop(force=True)
    # the reverse direction: this side receives, the other side's lxdlib sends
    migrate.copy_between(host.ctx, _argv(other), None, "mig-c2", "mig-back")
    back = _fresh(host).instances.get("mig-back")
    assert [s.name for s in back.snapshots.list()] == ["s0", "s1"]


def test_copy_instance_only(host: lxdlib.Host, other: lxdlib.Host) -> None:
    _source(host)
    migrate.copy_between(host.ctx, None, _argv(other), A_NAME, instance_only=True)
    c = _fresh(other).instances.get(A_NAME)
    assert c.snapshots.list() == []
    assert not _snapdir(other, A_NAME).exists() or not os.listdir(_snapdir(other, A_NAME))


def test_both_sides_elsewhere(host: lxdlib.Host, other: lxdlib.Host) -> None:
    """Neither root is this process's: the two sides talk through two pipes."""
    _source(host, snaps=1)
    migrate.copy_between(host.ctx, _argv(host), _argv(other), A_NAME, "mig-relay")
    assert [s.name for s in _fresh(other).instances.get("mig-relay").snapshots.list()] == \
        ["s0"]
    _intact(host, snaps=1)


def test_refresh_sends_less(host: lxdlib.Host, other: lxdlib.Host) -> None:
    _source(host, big=32 * 1024 * 1024)
    full = migrate.copy_between(host.ctx, None, _argv(other), A_NAME)
    rootfs = _volume(host, A_NAME) / "rootfs"
    (rootfs / "state").write_text("v2\n")
    host.instances.get(A_NAME).snapshots.create("s2")
    (rootfs / "state").write_text("newer\n")
    again = migrate.copy_between(host.ctx, None, _argv(other), A_NAME, refresh=True)
    assert full.sent_bytes > 32 * 1024 * 1024
    assert again.sent_bytes < full.sent_bytes / 20, (again.sent_bytes, full.sent_bytes)
    c = _fresh(other).instances.get(A_NAME)
    assert [s.name for s in c.snapshots.list()] == ["s0", "s1", "s2"]
    assert (_volume(other, A_NAME) / "rootfs" / "state").read_text() == "newer\n"
    assert (_snapdir(other, A_NAME) / "s2" / "rootfs" / "state").read_text() == "v2\n"
    assert (_volume(other, A_NAME) / "rootfs" / "big").stat().st_size == 32 * 1024 * 1024
    # a snapshot deleted on the source goes on the target too; the rest still sends little
    host.instances.get(A_NAME).snapshots.delete("s0")
    third = migrate.copy_between(host.ctx, None, _argv(other), A_NAME, refresh=True)
    assert third.sent_bytes < full.sent_bytes / 20
    assert [s.name for s in _fresh(other).instances.get(A_NAME).snapshots.list()] == \
        ["s1", "s2"]


def test_copy_to_a_dir_pool_uses_files(host: lxdlib.Host, other: lxdlib.Host) -> None:
    _source(host)
    rootfs = _volume(host, A_NAME) / "rootfs"
    os.chown(rootfs / "state", 1000, 1000)
    migrate.copy_between(host.ctx, None, _argv(other), A_NAME, pool="dp")
    c = _fresh(other).instances.get(A_NAME)
    assert c.record().pool == "dp"
    assert [s.name for s in c.snapshots.list()] == ["s0", "s1"]
    vol = _volume(other, A_NAME, "dp")
    assert (vol / "rootfs" / "state").read_text() == "live\n"
    assert os.lstat(vol / "rootfs" / "state").st_uid == 1000  # the container's own ids
    assert (_snapdir(other, A_NAME, "dp") / "s0" / "rootfs" / "state").read_text() == "v0\n"
    assert stat.S_IMODE(os.lstat(vol).st_mode) & 0o077 == 0


def test_btrfs_to_zfs_and_back(host: lxdlib.Host, other: lxdlib.Host,
                               zfs_daemon: ZfsDaemons) -> None:
    """zfs pools take and give the file stream (a zfs stream cannot be checked before ``zfs
    recv`` applies it); zfs-fuse stores owners shifted: in, they land in the instance's map;
    out, they are the container's own ids again."""
    other.create_pool("zp", "zfs", {"size": "512MiB",
                                    "zfs.pool_name": f"lxmg{secrets.token_hex(3)}"})
    _source(host)
    os.chown(_volume(host, A_NAME) / "rootfs" / "state", 1000, 1000)
    migrate.copy_between(host.ctx, None, _argv(other), A_NAME, pool="zp")
    c = _fresh(other).instances.get(A_NAME)
    assert [s.name for s in c.snapshots.list()] == ["s0", "s1"]
    base = int(c.config["volatile.idmap.base"])
    vol = _volume(other, A_NAME, "zp")
    assert os.lstat(vol / "rootfs" / "state").st_uid == base + 1000
    migrate.copy_between(host.ctx, _argv(other), None, A_NAME, "mig-back")
    back = _volume(host, "mig-back")
    assert (back / "rootfs" / "state").read_text() == "live\n"
    assert os.lstat(back / "rootfs" / "state").st_uid == 1000
    assert (_snapdir(host, "mig-back") / "s0" / "rootfs" / "state").read_text() == "v0\n"


# -- moves -----------------------------------------------------------------------------------------

def test_move_stopped(host: lxdlib.Host, other: lxdlib.Host) -> None:
    src = _source(host)
    ident = src.config["volatile.uuid"]
    migrate.copy_between(host.ctx, None, _argv(other), A_NAME, move=True)
    assert A_NAME not in [i.name for i in _fresh(host).instances.list()]
    moved = _fresh(other).instances.get(A_NAME)
    assert moved.config["volatile.uuid"] == ident  # the same instance, elsewhere
    assert [s.name for s in moved.snapshots.list()] == ["s0", "s1"]


def test_move_running_needs_stateless(host: lxdlib.Host, other: lxdlib.Host) -> None:
    src = _source(host, snaps=1)
    src.start()
    try:
        with pytest.raises(WrongState, match="stateless"):
            migrate.copy_between(host.ctx, None, _argv(other), A_NAME, move=True)
        assert _fresh(host).instances.get(A_NAME).state == "RUNNING"
        _nothing_visible(other, A_NAME)
        out = migrate.copy_between(host.ctx, None, _argv(other), A_NAME, move=True,
                                   stateless=True)
        assert out.started
        assert A_NAME not in [i.name for i in _fresh(host).instances.list()]
        moved = _fresh(other).instances.get(A_NAME)
        assert moved.state == "RUNNING"
        assert moved.exec(["cat", "/state"]).text == "live\n"
    finally:
        for h in (host, other):
            with contextlib.suppress(LxdlibError):
                _fresh(h).instances.get(A_NAME).stop(force=True)


def test_running_ephemeral_is_not_moved(host: lxdlib.Host, other: lxdlib.Host) -> None:
    """Its stop would delete it: refused before anything happens."""
    eph = host.create("busybox", "mig-eph", ephemeral=True)
    eph.start()
    try:
        with pytest.raises(WrongState, match="ephemeral"):
            migrate.copy_between(host.ctx, None, _argv(other), "mig-eph", move=True,
                                 stateless=True)
        assert _fresh(host).instances.get("mig-eph").state == "RUNNING"
        _nothing_visible(other, "mig-eph")
    finally:
        with contextlib.suppress(LxdlibError):
            _fresh(host).instances.get("mig-eph").stop(force=True)


# -- hostile streams -------------------------------------------------------------------------------

def _header(driver: str, **record: object) -> dict[str, object]:
    rec = {"name": "evil", "architecture": "x86_64", "created_at": "2026-01-01T00:00:00+00:00",
           "pool": "default", "profiles": ["default"], "config": {}, "devices": {},
           "snapshots": [], **record}
    return {"proto": migrate.PROTOCOL, "version": migrate.VERSION, "name": "evil",
            "record": rec, "snapshots": [], "driver": driver, "disk_base": 0,
            "identities": {}}


def _hostile(other: lxdlib.Host, header: dict[str, object], data: bytes | None,
             pool: str = "default") -> LxdlibError:
    """Play a hostile sender against the other root's receiver; it must refuse, leaving
    nothing."""
    proc = subprocess.Popen(migrate.receive_argv(_argv(other), "victim", pool),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    ch = migrate.Channel(proc.stdout, proc.stdin)  # type: ignore[arg-type]
    err: LxdlibError | None = None
    try:
        ch.send(header)
        accept = ch.receive()
        ch.send({"part": "live"})
        assert data is not None, accept
        _volume_data(ch, accept["format"], data)
        ch.send({"done": True})
        ch.receive()
    except LxdlibError as e:
        err = e
    finally:
        with contextlib.suppress(Exception):
            proc.stdin.close()
        proc.wait(timeout=60)
    assert err is not None, "the receiver accepted a hostile stream"
    assert proc.returncode != 0
    _nothing_visible(other, "victim")
    _clean(other, "victim")
    return err


def _volume_data(ch: migrate.Channel, fmt: str, data: bytes) -> None:
    """A btrfs stream goes as it is (it ends itself); files go in framed chunks."""
    if fmt == "btrfs":
        ch.raw(data)
        ch.flush()
        return
    for i in range(0, len(data), 65536):
        ch.data(data[i:i + 65536])
    ch.end_part()


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.DIRTYPE, mode: int = 0o755, data: bytes = b"",
            dev: tuple[int, int] = (0, 0)) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, len(data)
    info.devmajor, info.devminor = dev
    return info, data


def test_a_criu_dump_is_not_taken_along(other: lxdlib.Host) -> None:
    """A ``state/`` dump in the stream (even a symlink) would be handed to CRIU at the next
    start: it never arrives."""
    data = _tar([*VOLUME, _member("./state"),
                 _member("./state/.complete", tarfile.REGTYPE, 0o644, b"x")])
    _deliver(other, "dumped", data)
    assert not os.path.lexists(_volume(other, "dumped", "dp") / "state")
    link = tarfile.TarInfo("./state")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    _deliver(other, "linked", _tar([*VOLUME, (link, b"")]))
    assert not os.path.lexists(_volume(other, "linked", "dp") / "state")


def _deliver(other: lxdlib.Host, name: str, data: bytes,
             config: dict[str, str] | None = None, allow: bool = False) -> None:
    proc = subprocess.Popen(migrate.receive_argv(_argv(other), name, "dp", allow),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    ch = migrate.Channel(proc.stdout, proc.stdin)  # type: ignore[arg-type]
    ch.send(_header("dir", config=config or {}))
    assert ch.receive()["format"] == "tar"
    ch.send({"part": "live"})
    _volume_data(ch, "tar", data)
    ch.send({"done": True})
    assert ch.receive()["committed"]
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0


VOLUME = [_member("./"), _member("./rootfs"), _member("./rootfs/dev"),
          _member("./metadata.yaml", tarfile.REGTYPE, 0o644, b"{}\n")]


def test_device_node_in_file_stream_is_refused(other: lxdlib.Host) -> None:
    data = _tar([*VOLUME, _member("./rootfs/sda", tarfile.BLKTYPE, 0o666, dev=(8, 0))])
    err = _hostile(other, _header("dir"), data)
    assert isinstance(err, lxdlib.UnsafeImage), err


def test_bad_config_is_refused_before_any_data(other: lxdlib.Host) -> None:
    inject = "a\nlxc.init.cmd = /bin/sh -c 'touch /pwned'"
    for cfg in ({"environment.X": inject}, {"volatile.eth0.hwaddr": "00:16:3e:00:00:01\nx"},
                {"bogus.key": "1"}):
        err = _hostile(other, _header("dir", config=cfg), None)
        assert isinstance(err, lxdlib.InvalidArgument), err


def test_root_equivalent_settings_are_refused_unless_allowed(other: lxdlib.Host,
                                                            tmp_path: Path) -> None:
    """The sender's record is another host's word: a ``raw.lxc`` hook (run as host root at the
    start the sender itself asks for), a privileged or host-mapped instance, a host path or
    host device are refused unless the receiver's root allows them. Before, the hook ran."""
    witness = tmp_path / "pwned"
    hook = f"lxc.hook.pre-start = /bin/sh -c 'id > {witness}'"
    snap = {"name": "s0", "created_at": "2026-01-01T00:00:00+00:00",
            "config": {"raw.lxc": hook}}
    for config, devices, snaps in (
            ({"raw.lxc": hook}, {}, []),
            ({"security.privileged": "true"}, {}, []),
            ({"raw.idmap": "both 0 0"}, {}, []),
            ({"security.syscalls.deny_default": "false"}, {}, []),
            ({}, {"h": {"type": "disk", "source": "/", "path": "/host"}}, []),
            ({}, {"k": {"type": "unix-block", "source": "/dev/loop0"}}, []),
            ({}, {"p": {"type": "proxy", "listen": "tcp:127.0.0.1:1",
                        "connect": "unix:/run/x.sock", "bind": "host"}}, []),
            ({}, {}, [snap])):
        header = _header("dir", config=config, devices=devices, snapshots=snaps)
        header["snapshots"] = [s["name"] for s in snaps]
        header["start"] = True
        err = _hostile(other, header, _tar(VOLUME))
        assert isinstance(err, lxdlib.InvalidConfig), (config, devices, err)
        assert "root-equivalent" in str(err)
        assert not witness.exists()
    # the receiver's root may allow it
    _deliver(other, "allowed", _tar(VOLUME), {"raw.lxc": "lxc.apparmor.profile = unconfined"},
             allow=True)
    assert other.instances.get("allowed").config["raw.lxc"] == \
        "lxc.apparmor.profile = unconfined"


def test_bad_names_are_refused(other: lxdlib.Host) -> None:
    err = _hostile(other, {**_header("dir", snapshots=[
        {"name": "../x", "created_at": "2026-01-01T00:00:00+00:00"}]), "snapshots": ["../x"]},
        None)
    assert "x" in str(err)


@contextlib.contextmanager
def _crafted(host: lxdlib.Host, shape: object) -> Iterator[Path]:
    base = Path(host.pool("default").base) / "craft"  # type: ignore[attr-defined]
    base.mkdir(mode=0o700, exist_ok=True)
    work, frozen = base / "work", base / "frozen"
    try:
        btrfsutil.create_subvolume(work)
        (work / "rootfs" / "dev").mkdir(parents=True)
        (work / "metadata.yaml").write_text("{}\n")
        os.chmod(work, 0o700)
        shape(work)  # type: ignore[operator]
        btrfsutil.create_snapshot(work, frozen, read_only=True)
        yield frozen
    finally:
        for sub in (frozen, work):
            if sub.exists():
                btrfsutil.delete_subvolume(sub)
        base.rmdir()


def _send(sub: Path) -> bytes:
    return subprocess.run(["btrfs", "send", "-q", str(sub)], stdout=subprocess.PIPE,
                          check=True).stdout


def test_device_node_in_btrfs_stream_is_refused(host: lxdlib.Host, other: lxdlib.Host) -> None:
    def shape(v: Path) -> None:
        os.mknod(v / "rootfs" / "sda", stat.S_IFBLK | 0o666, os.makedev(8, 0))
    with _crafted(host, shape) as sub:
        data = _send(sub)
    err = _hostile(other, _header("btrfs"), data)
    assert isinstance(err, lxdlib.UnsafeImage) and "device node" in str(err)


def _suid(v: Path) -> None:
    suid = v / "rootfs" / "suid"
    suid.write_bytes(Path("/usr/bin/id").read_bytes())
    os.chmod(suid, 0o4755)
    os.chmod(v / "rootfs", 0o755)


def test_setuid_root_given_to_a_host_user_is_refused(host: lxdlib.Host,
                                                     other: lxdlib.Host) -> None:
    """A setuid-root file in a volume whose own directory a host user would own."""
    def shape(v: Path) -> None:
        _suid(v)
        os.chown(v, 1000, 1000)
        os.chmod(v, 0o777)
    with _crafted(host, shape) as sub:
        data = _send(sub)
    err = _hostile(other, _header("btrfs"), data)
    assert "own directory" in str(err)


def test_setuid_root_in_an_open_volume_arrives_closed(host: lxdlib.Host,
                                                      other: lxdlib.Host) -> None:
    """A stream whose volume directory is 0755 (as a tar unpack keeps setuid files, so does
    a receive): the file arrives, and no host user can reach it."""
    def shape(v: Path) -> None:
        _suid(v)
        os.chmod(v, 0o755)
    with _crafted(host, shape) as sub:
        data = _send(sub)
    proc = subprocess.Popen(migrate.receive_argv(_argv(other), "opened"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    ch = migrate.Channel(proc.stdout, proc.stdin)  # type: ignore[arg-type]
    ch.send(_header("btrfs"))
    assert ch.receive()["format"] == "btrfs"
    ch.send({"part": "live"})
    _volume_data(ch, "btrfs", data)
    ch.send({"done": True})
    assert ch.receive()["committed"]
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    vol = _volume(other, "opened")
    assert stat.S_IMODE(os.lstat(vol).st_mode) & 0o077 == 0
    assert os.lstat(vol / "rootfs" / "suid").st_mode & 0o7777 == 0o4755
    probe = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "sh",
                            "-c", f"{vol}/rootfs/suid"], check=False, capture_output=True)
    assert probe.returncode != 0 and b"uid=" not in probe.stdout


def test_file_stream_cannot_open_the_volume(other: lxdlib.Host) -> None:
    """The tar stream's own ``.`` entry never changes the volume directory: a setuid-root file
    arrives (as in any tar unpack) but stays closed to host users."""
    data = _tar([_member("./", mode=0o755), *VOLUME[1:],
                 _member("./rootfs/suid", tarfile.REGTYPE, 0o4755, b"#!/bin/sh\n")])
    proc = subprocess.Popen(migrate.receive_argv(_argv(other), "opened", "dp"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    ch = migrate.Channel(proc.stdout, proc.stdin)  # type: ignore[arg-type]
    ch.send(_header("dir"))
    assert ch.receive()["format"] == "tar"
    ch.send({"part": "live"})
    ch.data(data)
    ch.end_part()
    ch.send({"done": True})
    assert ch.receive()["committed"]
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    vol = _volume(other, "opened", "dp")
    assert stat.S_IMODE(os.lstat(vol).st_mode) & 0o077 == 0
    assert os.lstat(vol / "rootfs" / "suid").st_mode & 0o7777 == 0o4755
    probe = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "sh",
                            "-c", f"{vol}/rootfs/suid"], check=False, capture_output=True)
    assert probe.returncode != 0


# -- interruptions ---------------------------------------------------------------------------------

@contextlib.contextmanager
def _crash_at(point: str) -> Iterator[None]:
    """Children started meanwhile die by SIGKILL at ``point`` (this process read its setting
    at import, so it is not affected)."""
    os.environ["LXDLIB_CRASHPOINT"] = point
    try:
        yield
    finally:
        del os.environ["LXDLIB_CRASHPOINT"]


def test_receiver_killed_mid_stream(host: lxdlib.Host, other: lxdlib.Host) -> None:
    _source(host)
    with _crash_at("migrate.snapshot-received"), pytest.raises(LxdlibError):
        migrate.copy_between(host.ctx, None, _argv(other), A_NAME)
    _intact(host)
    _nothing_visible(other, A_NAME)
    _clean(other, A_NAME)
    migrate.copy_between(host.ctx, None, _argv(other), A_NAME)  # and it works afterwards
    assert [s.name for s in _fresh(other).instances.get(A_NAME).snapshots.list()] == \
        ["s0", "s1"]


def test_receiver_killed_before_commit_in_move(host: lxdlib.Host, other: lxdlib.Host) -> None:
    _source(host)
    with _crash_at("migrate.received"), pytest.raises(LxdlibError):
        migrate.copy_between(host.ctx, None, _argv(other), A_NAME, move=True)
    _intact(host)
    _nothing_visible(other, A_NAME)
    _clean(other, A_NAME)


def test_sender_killed_mid_stream(host: lxdlib.Host, other: lxdlib.Host) -> None:
    """The other root sends and dies after its first snapshot: this side receives nothing
    visible, and the sender's root keeps the instance (its next call settles its intent)."""
    _source(host)
    migrate.copy_between(host.ctx, None, _argv(other), A_NAME, "mig-src")
    with _crash_at("migrate.snapshot-sent"), pytest.raises(LxdlibError):
        migrate.copy_between(host.ctx, _argv(other), None, "mig-src", "mig-dst", move=True)
    _fresh(other).instances.list()  # a next call on the sender's root
    src = _fresh(other).instances.get("mig-src")
    assert [s.name for s in src.snapshots.list()] == ["s0", "s1"]
    assert not (_fresh(other).ctx.paths.instance_dir("mig-src") / ".pending.yaml").exists()
    _nothing_visible(host, "mig-dst")
    _clean(host, "mig-dst")


def test_sender_of_a_running_move_killed_starts_it_again(host: lxdlib.Host,
                                                        other: lxdlib.Host) -> None:
    """A move of a running instance (``stateless``) stops it, sends it and deletes it once
    the far side has it. The sender killed in between left the source stopped for good (the
    start again was in its own ``except``, and no intent named the power state): now the
    stop is one restart's, the send in its middle, and the next call starts it again."""
    _source(host)
    migrate.copy_between(host.ctx, None, _argv(other), A_NAME, "mig-src")
    _fresh(other).instances.get("mig-src").start()
    try:
        with _crash_at("migrate.snapshot-sent"), pytest.raises(LxdlibError):
            migrate.copy_between(host.ctx, _argv(other), None, "mig-src", "mig-dst",
                                 move=True, stateless=True)
        _fresh(other).instances.list()  # a next call on the sender's root
        src = _fresh(other).instances.get("mig-src")
        assert (src.state, src.config["volatile.last_state.power"]) == ("RUNNING", "RUNNING")
        assert not (_fresh(other).ctx.paths.instance_dir("mig-src") / ".pending.yaml").exists()
        _nothing_visible(host, "mig-dst")
        _clean(host, "mig-dst")
        # killed once the far side has everything: it may have committed and started it,
        # so this one is not started again beside it (two would run), and one of them stays
        with _crash_at("migrate.done-sent"), pytest.raises(LxdlibError):
            migrate.copy_between(host.ctx, _argv(other), None, "mig-src", "mig-dst",
                                 move=True, stateless=True)
        _fresh(other).instances.list()
        here = {i.name: i.state for i in _fresh(host).instances.list()}
        there = {i.name: i.state for i in _fresh(other).instances.list()}
        assert here.get("mig-dst") or there.get("mig-src"), (here, there)
        assert there.get("mig-src") != "RUNNING", (here, there)
        if "mig-dst" in here:
            _fresh(host).instances.get("mig-dst").delete(force=True)
        _fresh(other).instances.get("mig-src").start()
        # and a move that is not cut short still ends with the source gone
        out = migrate.copy_between(host.ctx, _argv(other), None, "mig-src", "mig-dst",
                                   move=True, stateless=True)
        assert out.started and "mig-src" not in _fresh(other).instances.names()
        assert _fresh(host).instances.get("mig-dst").state == "RUNNING"
    finally:
        for h, n in ((other, "mig-src"), (host, "mig-dst")):
            with contextlib.suppress(LxdlibError):
                _fresh(h).instances.get(n).stop(force=True)


def test_running_move_whose_answer_is_lost_is_not_started_beside_it(
        host: lxdlib.Host, other: lxdlib.Host) -> None:
    """The connection lost after a running move's last word, before the far side's answer:
    the far side has committed and started the instance, so the source must stay stopped as
    it does after a kill there. Its failure path started it again: two ran, one address."""
    import threading
    _source(host)
    migrate.copy_between(host.ctx, None, _argv(other), A_NAME, "mig-src")
    _fresh(other).instances.get("mig-src").start()
    recv = subprocess.Popen(migrate.receive_argv(_argv(host), "mig-dst", move=True),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert recv.stdout and recv.stdin
    r, w = os.pipe()

    def answers() -> None:  # the accept goes through; then the line drops, unanswered
        with os.fdopen(w, "wb") as to_sender:
            _frames(recv.stdout, to_sender, 1)  # type: ignore[arg-type]
            recv.wait(timeout=120)

    relay = threading.Thread(target=answers, daemon=True)
    relay.start()
    try:
        with os.fdopen(r, "rb") as inp, pytest.raises(migrate.ChannelClosed):
            migrate.send_instance(_fresh(other).ctx, "mig-src", inp, recv.stdin,  # type: ignore[arg-type]
                                  move=True, stateless=True)
        relay.join(timeout=120)
        assert recv.returncode == 0  # the far side committed and started it
        assert _fresh(host).instances.get("mig-dst").state == "RUNNING"
        _fresh(other).instances.list()  # a next call on the sender's root
        src = _fresh(other).instances.get("mig-src")
        assert src.state == "STOPPED"  # kept (the far side's commit is not known here)
        assert not (other.ctx.paths.instance_dir("mig-src") / ".pending.yaml").exists()
    finally:
        with contextlib.suppress(Exception):
            recv.stdin.close()
        recv.wait(timeout=120)
        for h, n in ((other, "mig-src"), (host, "mig-dst")):
            with contextlib.suppress(LxdlibError):
                _fresh(h).instances.get(n).stop(force=True)


@pytest.mark.parametrize("how", ["dropped-pipe", "kill-receiver", "kill-sender"])
def test_cut_mid_stream(host: lxdlib.Host, other: lxdlib.Host, how: str) -> None:
    """Both sides are processes talking through this test, which cuts the connection after
    64 KiB of volume data, or kills one side there with SIGKILL (a move: the source must
    stay)."""
    _source(host, big=4 * 1024 * 1024)
    send = subprocess.Popen(migrate.send_argv(_argv(host), A_NAME, move=True),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    recv = subprocess.Popen(migrate.receive_argv(_argv(other), A_NAME, move=True),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert send.stdout and send.stdin and recv.stdout and recv.stdin
    assert _frames(send.stdout, recv.stdin, 1)  # header
    _frames(recv.stdout, send.stdin, 1)  # accept
    copied = 0
    while copied < 64 * 1024:
        chunk = send.stdout.read1(16384)  # type: ignore[attr-defined]
        if not chunk:
            break
        recv.stdin.write(chunk)
        recv.stdin.flush()
        copied += len(chunk)
    assert copied >= 64 * 1024
    if how == "kill-receiver":
        os.kill(recv.pid, signal.SIGKILL)
        recv.wait()
    elif how == "kill-sender":
        os.kill(send.pid, signal.SIGKILL)
        send.wait()
    for f in (recv.stdin, send.stdout, send.stdin, recv.stdout):
        with contextlib.suppress(Exception):
            f.close()
    assert send.wait(timeout=60) != 0
    assert recv.wait(timeout=60) != 0
    _intact(host)
    _fresh(host).instances.list()  # the source's next call settles what its sender left
    assert not (host.ctx.paths.instance_dir(A_NAME) / ".pending.yaml").exists()
    leftovers = [e for e in os.listdir(_snapdir(host, A_NAME)) if e.startswith(".")]
    assert leftovers == []
    _nothing_visible(other, A_NAME)
    _clean(other, A_NAME)


def _frames(src: io.BufferedReader, dst: io.BufferedWriter, count: int) -> bytes:  # type: ignore
    got = b""
    for _ in range(count):
        head = src.read(5)
        size = int.from_bytes(head[1:], "big")
        body = src.read(size)
        dst.write(head + body)
        dst.flush()
        got += body
    return got

