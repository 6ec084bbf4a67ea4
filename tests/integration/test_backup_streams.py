"""Hostile optimized backups: btrfs send streams built by the test from crafted subvolumes on the
test's own btrfs loop pool, wrapped in the tarball layout ``export --optimized-storage`` writes.

``btrfs receive`` runs as host root and confines paths, but a stream may also make device nodes,
set ``trusted.*`` xattrs, hand the volume's own directory to a host user or snapshot any
subvolume of the pool it names by uuid. Each of these must be refused before anything is
received, with nothing left on the pool; what a tar unpack keeps (fifos, setuid files, file
capabilities) still arrives. The pool itself is mounted ``nodev``.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import btrfsutil
import pytest
import yaml

import lxdlib
from lxdlib import sendstream
from lxdlib.errors import UnsafeStream, UnsupportedBackup
from lxdlib.storage.loop import mount_options, mounts
from tests.integration import invariants

pytestmark = pytest.mark.root

INDEX = {"name": "evil", "backend": "btrfs", "pool": "default", "optimized": True,
         "type": "container", "snapshots": [],
         "config": {"container": {"architecture": "x86_64", "config": {}, "devices": {},
                                  "profiles": ["default"]}}}


def _pool_base(host: lxdlib.Host) -> Path:
    return Path(host.pool("default").base)  # type: ignore[attr-defined]


def _loop_device(host: lxdlib.Host) -> os.stat_result:
    """The block device holding the test pool (the node an attacker would want)."""
    base = str(_pool_base(host))
    return os.stat(next(src for mp, _, src in mounts() if mp == base))


@contextlib.contextmanager
def _crafted(host: lxdlib.Host, shape: Callable[[Path], None],
             parent: Path | None = None) -> Iterator[Path]:
    """A read-only subvolume shaped by ``shape`` (a fresh volume, or a writable snapshot of
    ``parent``), on the pool itself so that it can be sent; removed afterwards."""
    base = _pool_base(host) / "craft"
    base.mkdir(mode=0o700, exist_ok=True)
    work, frozen = base / "work", base / "frozen"
    try:
        if parent is None:
            btrfsutil.create_subvolume(work)
            (work / "rootfs" / "dev").mkdir(parents=True)
            (work / "rootfs" / "hello").write_text("hi\n")
            (work / "metadata.yaml").write_text("{}\n")
        else:
            btrfsutil.create_snapshot(parent, work)
        os.chmod(work, 0o711)
        shape(work)
        btrfsutil.create_snapshot(work, frozen, read_only=True)
        yield frozen
    finally:
        for sub in (frozen, work):
            if sub.exists():
                btrfsutil.delete_subvolume(sub)
        base.rmdir()


def _send(subvol: Path, out: Path, parent: Path | None = None) -> Path:
    with open(out, "wb") as f:
        subprocess.run(["btrfs", "send", "-q", *(["-p", str(parent)] if parent else []),
                        str(subvol)], stdout=f, check=True)
    return out


def _archive(path: Path, streams: dict[str, Path], **index: object) -> Path:
    """The optimized backup layout: index.yaml, container.bin, snapshots/<s>.bin."""
    with tarfile.open(path, "w:gz") as tf:
        raw = yaml.safe_dump({**INDEX, **index}).encode()
        info = tarfile.TarInfo("backup/index.yaml")
        info.size = len(raw)
        tf.addfile(info, io.BytesIO(raw))
        for member, stream in streams.items():
            tf.add(stream, member)
    return path


def _devices_under(top: Path) -> list[str]:
    found = []
    for d, dirs, files in os.walk(top):
        for e in (*dirs, *files):
            mode = os.lstat(os.path.join(d, e)).st_mode
            if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
                found.append(os.path.join(d, e))
    return found


def _refused(host: lxdlib.Host, archive: Path) -> lxdlib.UnsafeImage:
    before = sorted(os.listdir(host.paths.lxcpath))
    with pytest.raises(lxdlib.UnsafeImage) as err:
        host.import_backup(archive, "victim")
    assert sorted(os.listdir(host.paths.lxcpath)) == before
    assert "victim" not in host.pool("default").list_volumes("containers")  # type: ignore
    assert not (_pool_base(host) / "containers-snapshots" / "victim").exists()
    assert _devices_under(_pool_base(host)) == []
    invariants.check(host)
    return err.value


def _mknod_block(host: lxdlib.Host) -> Callable[[Path], None]:
    loop = _loop_device(host)

    def shape(v: Path) -> None:
        os.mknod(v / "rootfs" / "pool", stat.S_IFBLK | 0o666, loop.st_rdev)
    return shape


def test_block_device_in_stream_is_refused(host: lxdlib.Host, tmp_path: Path) -> None:
    with _crafted(host, _mknod_block(host)) as sub:
        stream = _send(sub, tmp_path / "container.bin")
    archive = _archive(tmp_path / "b.tar.gz", {"backup/container.bin": stream})
    err = _refused(host, archive)
    assert isinstance(err, UnsafeStream) and "device node" in str(err)
    cli = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                          str(host.paths.root), "import", str(archive), "victim"],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1 and "device node" in cli.stderr
    assert "Traceback" not in cli.stderr
    assert _devices_under(_pool_base(host)) == []


def test_char_device_in_rootfs_dev_is_refused(host: lxdlib.Host, tmp_path: Path) -> None:
    def shape(v: Path) -> None:
        os.mknod(v / "rootfs" / "dev" / "mem", stat.S_IFCHR | 0o666, os.makedev(1, 1))
    with _crafted(host, shape) as sub:
        stream = _send(sub, tmp_path / "container.bin")
    assert "device node" in str(_refused(host, _archive(tmp_path / "c.tar.gz",
                                                        {"backup/container.bin": stream})))


def test_device_in_a_snapshot_stream_is_refused(host: lxdlib.Host, tmp_path: Path) -> None:
    with _crafted(host, lambda v: None) as clean:
        s0 = _send(clean, tmp_path / "s0.bin")
        with _crafted_child(host, clean, _mknod_block(host)) as evil:
            live = _send(evil, tmp_path / "container.bin", parent=clean)
    err = _refused(host, _archive(tmp_path / "s.tar.gz", {"backup/snapshots/s0.bin": s0,
                                                          "backup/container.bin": live},
                                  snapshots=["s0"]))
    assert "device node" in str(err)


@contextlib.contextmanager
def _crafted_child(host: lxdlib.Host, parent: Path,
                   shape: Callable[[Path], None]) -> Iterator[Path]:
    base = _pool_base(host) / "craft2"
    base.mkdir(mode=0o700)
    work, frozen = base / "work", base / "frozen"
    try:
        btrfsutil.create_snapshot(parent, work)
        shape(work)
        btrfsutil.create_snapshot(work, frozen, read_only=True)
        yield frozen
    finally:
        for sub in (frozen, work):
            if sub.exists():
                btrfsutil.delete_subvolume(sub)
        base.rmdir()


def test_trusted_xattr_is_refused(host: lxdlib.Host, tmp_path: Path) -> None:
    def shape(v: Path) -> None:
        os.setxattr(v / "rootfs" / "hello", "trusted.overlay.redirect", b"/etc")
    with _crafted(host, shape) as sub:
        stream = _send(sub, tmp_path / "container.bin")
    err = _refused(host, _archive(tmp_path / "x.tar.gz", {"backup/container.bin": stream}))
    assert "trusted.overlay.redirect" in str(err)


def test_volume_root_given_to_a_host_user_is_refused(host: lxdlib.Host, tmp_path: Path) -> None:
    def shape(v: Path) -> None:
        os.chown(v, 1000, 1000)
        os.chmod(v, 0o777)
    with _crafted(host, shape) as sub:
        stream = _send(sub, tmp_path / "container.bin")
    err = _refused(host, _archive(tmp_path / "r.tar.gz", {"backup/container.bin": stream}))
    assert "own directory" in str(err)


def test_snapshot_of_another_instance_is_refused(host: lxdlib.Host, tmp_path: Path) -> None:
    """A stream sent against another instance's snapshot (its uuid is all the stream names)
    would receive that instance's files into the imported one."""
    other = host.create("busybox", "other")
    other.snapshots.create("s0")
    secret = "/root/secret"
    with open(str(host.pool("default").volume_path(  # type: ignore[attr-defined]
            "containers", "other")) + "/rootfs" + secret, "w") as f:
        f.write("other's data\n")
    other.snapshots.create("s1")
    theirs = host.pool("default").volume_path(  # type: ignore[attr-defined]
        "containers-snapshots", "other/s1")
    with _crafted_child(host, theirs, lambda v: None) as sub:
        stream = _send(sub, tmp_path / "container.bin", parent=theirs)
    err = _refused(host, _archive(tmp_path / "p.tar.gz", {"backup/container.bin": stream}))
    assert "not in the backup" in str(err)


def test_what_tar_keeps_still_arrives(host: lxdlib.Host, tmp_path: Path) -> None:
    """Fifos, setuid-root files and file capabilities are what a tar unpack keeps too (real
    systems need them); they arrive, and nothing of the stream's root reaches a host user."""
    def shape(v: Path) -> None:
        os.mkfifo(v / "rootfs" / "fifo", 0o600)
        suid = v / "rootfs" / "suid"
        suid.write_text("#!/bin/sh\n")
        os.chmod(suid, 0o4755)
        caps = v / "rootfs" / "caps"
        caps.write_text("x")
        subprocess.run(["setcap", "cap_net_raw+ep", str(caps)], check=True)
    with _crafted(host, shape) as sub:
        stream = _send(sub, tmp_path / "container.bin")
    host.import_backup(_archive(tmp_path / "ok.tar.gz", {"backup/container.bin": stream}), "ok")
    rootfs = host.pool("default").volume_path("containers", "ok") / "rootfs"  # type: ignore
    assert stat.S_ISFIFO(os.lstat(rootfs / "fifo").st_mode)
    assert os.lstat(rootfs / "suid").st_mode & 0o7777 == 0o4755
    assert os.getxattr(rootfs / "caps", "security.capability")
    invariants.check(host)


def test_pool_is_mounted_nodev(host: lxdlib.Host) -> None:
    """Defense in depth: a device node on the pool, however it got there, opens nothing."""
    base = _pool_base(host)
    assert "nodev" in mount_options(base)
    node = base / "custom" / "null"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    try:
        with pytest.raises(PermissionError):
            os.open(node, os.O_RDONLY)
    finally:
        node.unlink()
    c = host.launch("busybox", "c1")  # containers keep their own /dev
    c.wait_ready()
    assert c.exec(["sh", "-c", "echo x > /dev/null && head -c1 /dev/zero | wc -c"]).text \
        .strip() == "1"
    c.stop(force=True)


@pytest.mark.parametrize("proto", ["1", "2"])
def test_real_streams_parse_as_btrfs_receive_reads_them(host: lxdlib.Host, tmp_path: Path,
                                                        proto: str) -> None:
    """The parser reads what the kernel writes, command for command (v2: compressed data)."""
    c = host.create("busybox", "c1")
    c.snapshots.create("s0")
    snap = host.pool("default").volume_path(  # type: ignore[attr-defined]
        "containers-snapshots", "c1/s0")
    out = tmp_path / "s0.bin"
    with open(out, "wb") as f:
        subprocess.run(["btrfs", "send", "-q", "--proto", proto,
                        *(["--compressed-data"] if proto == "2" else []), str(snap)],
                       stdout=f, check=True)
    with open(out, "rb") as f:
        ours = [c.name for c in sendstream.commands(f)]
    with open(out, "rb") as f:
        owner = os.stat(snap).st_uid  # the container's root host uid since volumes are 0100
        assert sendstream.check(f, (), range(owner, owner + 1)).name == "s0"
    dump = subprocess.run(["btrfs", "receive", "--dump", "-f", str(out)], capture_output=True,
                          text=True, check=True).stdout.splitlines()
    assert [line.split()[0] for line in dump] == ours[:-1]  # the dump does not show "end"
    assert ours[-1] == "end" and "mknod" not in ours


def test_same_optimized_backup_imports_twice(host: lxdlib.Host, tmp_path: Path) -> None:
    """Two imports of one backup: the second one's snapshots start from its own (the parent
    check must not mistake the first import's snapshots, which claim the same origin)."""
    c = host.create("busybox", "c1")
    c.snapshots.create("s0")
    c.snapshots.create("s1")
    out = host.export_backup("c1", tmp_path / "o.tar.gz", optimized=True)
    for name in ("r1", "r2", "r3"):
        r = host.import_backup(out, name)
        assert r.snapshots.names() == ["s0", "s1"]
    invariants.check(host)


def test_optimized_zfs_backup_is_refused(host: lxdlib.Host, tmp_path: Path) -> None:
    """zfs streams would set dataset properties on the host: refused with a typed error before
    anything is made (also into a btrfs pool, where its stream would reach btrfs receive)."""
    stream = tmp_path / "container.bin"
    stream.write_bytes(b"\0" * 64)
    with pytest.raises(UnsupportedBackup, match="optimized zfs"):
        host.import_backup(_archive(tmp_path / "z.tar.gz", {"backup/container.bin": stream},
                                    backend="zfs"), "victim")
    assert host.pool("default").list_volumes("containers") == []  # type: ignore
    invariants.check(host)


def _crc32c(data: bytes) -> int:
    """The CRC btrfs puts in each command: CRC-32C, seed 0, no final inversion."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc


def _respell_root(stream: Path, out: Path, spelling: bytes) -> int:
    """Copy ``stream`` to ``out`` with every path ``""`` (the volume's own directory) of a
    chown or chmod spelled ``spelling``, CRCs made again; returns how many were changed."""
    raw = stream.read_bytes()
    pos = len(sendstream.MAGIC) + 4
    parts, changed = [raw[:pos]], 0
    while pos < len(raw):
        length, cmd, crc = struct.unpack_from("<IHI", raw, pos)
        body = raw[pos + 10:pos + 10 + length]
        pos += 10 + length
        if cmd in (sendstream.CHOWN, sendstream.CHMOD):
            head = struct.pack("<HH", sendstream.A_PATH, 0)
            if body.startswith(head):
                body = struct.pack("<HH", sendstream.A_PATH, len(spelling)) + spelling \
                    + body[len(head):]
                changed += 1
                zeroed = struct.pack("<IHI", len(body), cmd, 0) + body
                crc = _crc32c(zeroed)
        else:
            assert crc == _crc32c(struct.pack("<IHI", length, cmd, 0) + body)
        parts.append(struct.pack("<IHI", len(body), cmd, crc) + body)
    out.write_bytes(b"".join(parts))
    return changed


@pytest.mark.parametrize("spelling", [b"./", b".//", b"./."])
def test_volume_root_given_away_under_another_spelling_is_refused(
        host: lxdlib.Host, tmp_path: Path, spelling: bytes) -> None:
    """``btrfs receive`` applies a chown of ``./`` to the volume's own directory, as one of
    ``""``: the check of the root must see it so. Before, ``./`` passed, and a snapshot's
    directory (never closed again after receiving) stayed a host user's, mode 0777."""
    def shape(v: Path) -> None:
        os.chown(v, 1000, 1000)
        os.chmod(v, 0o777)
    with _crafted(host, shape) as sub:
        sent = _send(sub, tmp_path / "sent.bin")
    assert _respell_root(sent, tmp_path / "s0.bin", spelling) == 2
    with _crafted(host, lambda v: None) as clean:
        live = _send(clean, tmp_path / "container.bin")
    err = _refused(host, _archive(tmp_path / "r.tar.gz", {"backup/snapshots/s0.bin":
                                                          tmp_path / "s0.bin",
                                                          "backup/container.bin": live},
                                  snapshots=["s0"]))
    assert "own directory" in str(err)


@pytest.mark.parametrize("linked", ["metadata.yaml", "templates/t.tpl"])
def test_stream_hard_linking_what_the_host_reads_into_the_rootfs_is_refused(
        host: lxdlib.Host, tmp_path: Path, linked: str) -> None:
    """A hard link from the rootfs to ``metadata.yaml`` or a template would let the
    container's root write what host root reads and renders at every start."""
    def shape(v: Path) -> None:
        (v / "templates").mkdir()
        (v / "templates" / "t.tpl").write_text("x\n")
        os.link(v / linked, v / "rootfs" / "second-name")
    with _crafted(host, shape) as sub:
        stream = _send(sub, tmp_path / "container.bin")
    err = _refused(host, _archive(tmp_path / "h.tar.gz", {"backup/container.bin": stream}))
    assert "hard-linked" in str(err)
