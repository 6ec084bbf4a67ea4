"""export / import in LXD's backup format against real pools: round trips (files, btrfs
streams, other compressions, zfs with shifted owners, an index without lxdlib's record), and
hostile archives that must be refused with nothing changed."""

from __future__ import annotations

import datetime as dt
import io
import os
import secrets
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

import lxdlib
from lxdlib.backup import scan
from lxdlib.config.units import parse_api_time
from tests.integration import invariants
from tests.integration.archive_fixtures import rewrite_index
from tests.integration.storage_fixtures import ZfsDaemons, zfs_daemon, zfs_daemons

pytestmark = pytest.mark.root
__all__ = ["zfs_daemon", "zfs_daemons"]  # fixtures used by name


def _source(host: lxdlib.Host) -> lxdlib.Instance:
    c = host.launch("busybox", "c1", config={"user.k": "v", "snapshots.expiry": "2d"})
    c.wait_ready()
    c.exec(["sh", "-c", "echo one > /root/f; echo o > /root/owned; chown 1000:1001 /root/owned;"
            " chmod 666 /root/owned; ln -s /root/f /root/sym; ln /root/f /root/hard"],
           check=True)
    c.snapshots.create("s0")
    c.exec(["sh", "-c", "echo two > /root/f"], check=True)
    c.snapshots.create("s1", no_expiry=True)
    c.exec(["sh", "-c", "echo live > /root/f"], check=True)
    return c


def _check_copy(host: lxdlib.Host, src: lxdlib.Instance, name: str,
                snapshots: list[str]) -> lxdlib.Instance:
    r = host.instances[name]
    assert r.snapshots.names() == snapshots
    assert r.config["user.k"] == "v" and r.config["volatile.uuid"] == src.config["volatile.uuid"]
    for s in snapshots:
        assert r.snapshots[s].created_at == src.snapshots[s].created_at
        assert r.snapshots[s].expires_at == src.snapshots[s].expires_at
    assert host.pool(r.record().pool).list_snapshots(name) == snapshots
    r.start()
    r.wait_ready()
    assert r.exec(["cat", "/root/f"]).text == "live\n"
    assert r.exec(["stat", "-c", "%u:%g", "/root/owned"]).text.strip() == "1000:1001"
    assert r.exec(["readlink", "/root/sym"]).text.strip() == "/root/f"
    assert r.exec(["stat", "-c", "%h", "/root/hard"]).text.strip() == "2"
    if snapshots and host.pool(r.record().pool).driver != "zfs":
        r.snapshots.restore(snapshots[0])
        assert r.exec(["cat", "/root/f"]).text == "one\n"
    r.stop(force=True)
    return r


def test_round_trips(host: lxdlib.Host, tmp_path: Path) -> None:
    src = _source(host)
    out = host.export_backup("c1", tmp_path)  # a running instance, read at one point in time
    assert out == tmp_path / "c1.tar.gz" and src.running
    with tarfile.open(out) as tf:
        names = tf.getnames()
        index = yaml.safe_load(tf.extractfile("backup/index.yaml").read())  # type: ignore
        owned = tf.getmember("backup/container/rootfs/root/owned")
    assert names[0] == "backup/index.yaml"
    assert {"backup/container/rootfs/root/f", "backup/snapshots/s0/rootfs/root/f",
            "backup/snapshots/s1/metadata.yaml"} <= set(names)
    assert index["name"] == "c1" and index["snapshots"] == ["s0", "s1"]
    assert index["backend"] == "btrfs" and index["optimized"] is False
    assert index["config"]["container"]["config"]["user.k"] == "v"
    assert (owned.uid, owned.gid) == (1000, 1001)  # container ids, not host ids
    with pytest.raises(lxdlib.AlreadyExists):
        host.import_backup(out)
    host.import_backup(out, "r1")
    _check_copy(host, src, "r1", ["s0", "s1"])
    # optimized: btrfs send streams
    opt = host.export_backup("c1", tmp_path / "opt.tar.zst", optimized=True,
                             compression_algorithm="zstd")
    with tarfile.open(fileobj=io.BytesIO(subprocess.run(
            ["zstd", "-dc", str(opt)], capture_output=True, check=True).stdout)) as tf:
        assert sorted(tf.getnames()) == ["backup/container.bin", "backup/index.yaml",
                                         "backup/snapshots/s0.bin", "backup/snapshots/s1.bin"]
    host.import_backup(opt, "r2")
    _check_copy(host, src, "r2", ["s0", "s1"])
    # instance only, uncompressed
    plain = host.export_backup("c1", tmp_path / "plain.tar", instance_only=True,
                               compression_algorithm="none")
    host.import_backup(plain, "r3")
    _check_copy(host, src, "r3", [])
    # an index as LXD writes it (no lxdlib record): the LXD-shaped config is used
    lxd = tmp_path / "lxd.tar.gz"
    rewrite_index(out, lxd, lambda d: d.pop("lxdlib"))
    host.import_backup(lxd, "r4")
    _check_copy(host, src, "r4", ["s0", "s1"])
    with pytest.raises(lxdlib.InvalidArgument):
        host.export_backup("c1", tmp_path / "x.tar", compression_algorithm="rot13")
    invariants.check(host)


def test_lxd_index_keeps_fractions_of_seconds(host: lxdlib.Host, tmp_path: Path) -> None:
    """The index's LXD-shaped times are Go's (RFC3339Nano): a fraction of a second survives
    an archive read back through them alone (as LXD reads it), where the index once wrote
    whole seconds and an expiry moved."""
    c = host.instances.create("busybox", "hddfrac")
    at = dt.datetime(2031, 5, 6, 7, 8, 9, 123400, tzinfo=dt.UTC)
    c.snapshots.create("s", expires_at=at)
    out = host.export_backup("hddfrac", tmp_path)
    with tarfile.open(out) as tf:
        index = yaml.safe_load(tf.extractfile("backup/index.yaml").read())  # type: ignore
    written = index["config"]["snapshots"][0]["expires_at"]
    assert parse_api_time(written) == at
    rewrite_index(out, tmp_path / "lxd.tar.gz", lambda d: d.pop("lxdlib"))
    host.import_backup(tmp_path / "lxd.tar.gz", "hddfrac2")
    assert host.instances["hddfrac2"].snapshots["s"].expires_at == at
    invariants.check(host)


def test_round_trip_through_zfs(host: lxdlib.Host, tmp_path: Path,
                                zfs_daemon: ZfsDaemons) -> None:
    host.create_pool("zp", "zfs", {"size": "512MiB",
                                   "zfs.pool_name": f"lxtb{secrets.token_hex(3)}"})
    src = _source(host)
    out = host.export_backup("c1", tmp_path / "c1.tar.xz", compression_algorithm="xz")
    host.import_backup(out, "z1", pool="zp")  # owners shifted on disk on the FUSE pool
    z = _check_copy(host, src, "z1", ["s0", "s1"])
    back = host.export_backup("z1", tmp_path / "z1.tar.gz")
    with tarfile.open(back) as tf:
        owned = tf.getmember("backup/snapshots/s0/rootfs/root/owned")
    assert (owned.uid, owned.gid) == (1000, 1001)  # mapped back to container ids
    host.import_backup(back, "z2", pool="default")
    _check_copy(host, z, "z2", ["s0", "s1"])
    with pytest.raises(lxdlib.InvalidArgument):
        host.export_backup("z1", tmp_path / "o.tar.gz", optimized=True)
    invariants.check(host)


def test_backup_commands(host: lxdlib.Host, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                               str(host.paths.root), *args], capture_output=True, text=True,
                              timeout=120)
    c = host.create("busybox", "c1")
    c.snapshots.create("s0")
    r = run("export", "c1", str(tmp_path / "b.tar.gz"), "--compression", "bzip2")
    assert r.returncode == 0 and "exported" in r.stdout, r.stderr
    assert run("import", str(tmp_path / "b.tar.gz"), "c2").returncode == 0
    assert host.instances["c2"].snapshots.names() == ["s0"]
    r = run("import", str(tmp_path / "b.tar.gz"), "c2")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = run("export", "nope")
    assert r.returncode == 1 and "not found" in r.stderr
    assert run("recover").returncode == 0
    invariants.check(host)


# -- hostile archives ------------------------------------------------------------------------------

INDEX = {"name": "evil", "backend": "btrfs", "pool": "default", "optimized": False,
         "type": "container", "snapshots": [],
         "config": {"container": {"architecture": "x86_64", "config": {}, "devices": {},
                                  "profiles": ["default"]}}}


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    i = tarfile.TarInfo(name)
    i.type = tarfile.DIRTYPE
    i.mode = 0o755
    return i, None


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    i = tarfile.TarInfo(name)
    i.size = len(data)
    i.mode = 0o644
    return i, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    i = tarfile.TarInfo(name)
    i.type = kind
    i.linkname = target
    return i, None


def _index(**changes: object) -> tuple[tarfile.TarInfo, bytes]:
    return _file("backup/index.yaml", yaml.safe_dump({**INDEX, **changes}).encode())


def _volume(prefix: str = "backup/container") -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [_dir(prefix), _dir(f"{prefix}/rootfs"), _dir(f"{prefix}/rootfs/dev"),
            _file(f"{prefix}/rootfs/hello", b"hi"), _file(f"{prefix}/metadata.yaml", b"{}")]


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    i = tarfile.TarInfo(name)
    i.type = tarfile.BLKTYPE
    i.devmajor, i.devminor = 8, 0
    return i, None


HOSTILE: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] = {
    "dotdot": [_index(), *_volume(), _file("backup/container/../../escaped")],
    "absolute": [_index(), *_volume(), _file("/tmp/lxdlib-escaped")],
    "outside": [_index(), *_volume(), _file("escaped")],
    "below-symlink": [_index(), *_volume(), _link("backup/container/rootfs/l", "/tmp"),
                      _file("backup/container/rootfs/l/escaped")],
    "symlinked-index": [_link("backup/index.yaml", "/etc/passwd"), *_volume()],
    "hardlink-out": [_index(), *_volume(),
                     _link("backup/container/rootfs/h", "../etc/passwd", tarfile.LNKTYPE)],
    "hardlink-other-volume": [_index(), *_volume(), _dir("backup/snapshots"),
                              *_volume("backup/snapshots/s"),
                              _link("backup/container/rootfs/h",
                                    "backup/snapshots/s/rootfs/hello", tarfile.LNKTYPE)],
    "device": [_index(), *_volume(), _device("backup/container/rootfs/sda")],
    "bad-name": [_index(name="../evil"), *_volume()],
    "bad-snapshot": [_index(snapshots=["a/b"]), *_volume()],
    "unlisted-volume": [_index(), *_volume(), _dir("backup/snapshots"),
                        *_volume("backup/snapshots/extra")],
    "missing-snapshot": [_index(snapshots=["s"]), *_volume()],
    "rootfs-symlink": [_index(), _dir("backup/container"), _link("backup/container/rootfs", "/"),
                       _file("backup/container/metadata.yaml", b"{}")],
    "container-file": [_index(), _file("backup/container", b"x")],
    "no-index": _volume(),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_change_nothing(host: lxdlib.Host, tmp_path: Path, case: str) -> None:
    host.create("busybox", "keep")
    before = sorted(os.listdir(host.paths.lxcpath))
    vols = host.pool("default").list_volumes("containers")  # type: ignore[attr-defined]
    archive = _tar(tmp_path / f"{case}.tar.gz", HOSTILE[case])
    with pytest.raises((lxdlib.ImageError, lxdlib.InvalidArgument)):
        host.import_backup(archive, "victim")
    assert sorted(os.listdir(host.paths.lxcpath)) == before
    assert host.pool("default").list_volumes("containers") == vols  # type: ignore
    assert not Path("/tmp/lxdlib-escaped").exists()
    assert not (tmp_path.parent / "escaped").exists()
    invariants.check(host)


def test_scan_accepts_what_export_writes(host: lxdlib.Host, tmp_path: Path) -> None:
    c = host.create("busybox", "c1")
    c.snapshots.create("s.0-a")
    idx = scan(host.export_backup("c1", tmp_path / "b.tar.gz"))
    assert idx.name == "c1" and idx.snapshots == ("s.0-a",) and not idx.optimized




@pytest.mark.parametrize("optimized", [False, True])
def test_the_archive_unpacked_is_the_one_checked(host: lxdlib.Host, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 optimized: bool) -> None:
    """The archive may lie in a directory a host user can write, who can put another file
    under its name once the checks passed: the import reads through the descriptor it
    checked. Here the swap is made right after the check."""
    from lxdlib import backup
    c = host.create("busybox", "c1")
    c.files.put("/root/which", b"checked\n")
    checked = host.export_backup("c1", tmp_path / "a.tar.gz", optimized=optimized)
    c.files.put("/root/which", b"swapped\n")
    other = host.export_backup("c1", tmp_path / "b.tar.gz", optimized=optimized)
    real = backup.scan

    def scan_then_swap(path: str | os.PathLike[str], **kw: object) -> backup.BackupIndex:
        idx = real(path, **kw)  # type: ignore[arg-type]
        os.replace(other, checked)
        return idx
    monkeypatch.setattr(backup, "scan", scan_then_swap)
    imp = host.import_backup(checked, "imp")
    assert imp.files.get("/root/which") == b"checked\n"
