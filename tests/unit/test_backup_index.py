"""Pure parts of backups and snapshots: member names, volume parts, sed escaping for tar's
transforms, index parsing (LXD's shape and lxdlib's), expiry selection, send argv."""

from __future__ import annotations

import datetime as dt
import tarfile
from pathlib import Path

import pytest
import yaml

from lxdlib import backup, record, transfer
from lxdlib.errors import ImageError, InvalidName, UnsafeImage
from lxdlib.snapshots import expired


@pytest.mark.parametrize(("raw", "want"), [
    ("backup/index.yaml", "backup/index.yaml"),
    ("./backup/container/rootfs", "backup/container/rootfs"),
    ("backup//container/./rootfs/", "backup/container/rootfs"),
    ("backup", "backup"),
    (".", ""),
])
def test_member_names(raw: str, want: str) -> None:
    assert backup._member(raw) == want


@pytest.mark.parametrize("raw", ["/etc/passwd", "backup/../etc", "backup/container/../../x",
                                 "..", "backup/a\0b"])
def test_member_names_refused(raw: str) -> None:
    with pytest.raises(UnsafeImage):
        backup._member(raw)


def _info(kind: bytes) -> tarfile.TarInfo:
    i = tarfile.TarInfo("x")
    i.type = kind
    return i


@pytest.mark.parametrize(("name", "kind", "part"), [
    ("backup/container", tarfile.DIRTYPE, "container"),
    ("backup/container/rootfs/etc/passwd", tarfile.REGTYPE, "container"),
    ("backup/snapshots", tarfile.DIRTYPE, ""),
    ("backup/snapshots/s0", tarfile.DIRTYPE, "snapshots/s0"),
    ("backup/snapshots/s0/rootfs", tarfile.DIRTYPE, "snapshots/s0"),
    ("backup/snapshots/s0.bin", tarfile.REGTYPE, "backup/snapshots/s0.bin"),
    ("backup/snapshots/x.bin", tarfile.DIRTYPE, "snapshots/x.bin"),  # a snapshot named x.bin
    ("backup/container.bin", tarfile.REGTYPE, "backup/container.bin"),
])
def test_parts(name: str, kind: bytes, part: str) -> None:
    assert backup._part(name, _info(kind)) == part


def test_unknown_top_level_member_refused() -> None:
    with pytest.raises(UnsafeImage):
        backup._part("backup/extra/file", _info(tarfile.REGTYPE))


@pytest.mark.parametrize(("text", "regex", "repl"), [
    ("var/tmp/root", "var/tmp/root", "var/tmp/root"),
    ("a.b[c]*^$\\", "a\\.b\\[c\\]\\*\\^\\$\\\\", "a.b[c]*^$\\\\"),
    ("snap&1", "snap&1", "snap\\&1"),
])
def test_sed_escaping(text: str, regex: str, repl: str) -> None:
    assert backup._sed(text) == regex
    assert backup._sed_repl(text) == repl


LXD_INDEX = {
    "name": "web", "backend": "btrfs", "pool": "default", "optimized": False,
    "type": "container", "snapshots": ["snap0"],
    "config": {
        "container": {"architecture": "x86_64", "config": {"limits.cpu": 2, "user.b": True},
                      "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}},
                      "profiles": ["default"], "ephemeral": False,
                      "created_at": "2024-01-02T03:04:05Z", "description": "d"},
        "snapshots": [{"name": "snap0", "config": {"limits.cpu": "1"}, "devices": {},
                       "profiles": ["default"], "stateful": False,
                       "created_at": "2024-01-03T00:00:00Z",
                       "expires_at": "0001-01-01T00:00:00Z"}]}}


def _parse(doc: dict[str, object], seen: set[str]) -> backup.BackupIndex:
    return backup._parse_index(yaml.safe_dump(doc).encode(), seen)


def test_lxd_shaped_index() -> None:
    idx = _parse(LXD_INDEX, {"container", "snapshots/snap0"})
    rec = idx.record
    assert (idx.name, idx.pool, idx.snapshots, idx.optimized) == ("web", "default",
                                                                   ("snap0",), False)
    assert rec.config == {"limits.cpu": "2", "user.b": "true"}
    assert rec.devices["root"]["pool"] == "default" and rec.description == "d"
    assert rec.created_at == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    snap = rec.snapshots[0]
    assert snap.config == {"limits.cpu": "1"} and snap.expires_at is None


def test_lxdlib_record_wins() -> None:
    own = record.InstanceRecord(name="web", architecture="aarch64", created_at=record.now(),
                                pool="p", config={"user.x": "1"},
                                snapshots=[record.SnapshotRecord("snap0", record.now())])
    idx = _parse({**LXD_INDEX, "lxdlib": {"record": own.to_dict()}},
                 {"container", "snapshots/snap0"})
    assert idx.record.architecture == "aarch64" and idx.record.config == {"user.x": "1"}


@pytest.mark.parametrize(("change", "seen", "error"), [
    ({"name": "../x"}, {"container", "snapshots/snap0"}, InvalidName),
    ({"name": None}, {"container"}, ImageError),
    ({"snapshots": ["a b"]}, {"container"}, InvalidName),
    ({"snapshots": ["s", "s"]}, {"container", "snapshots/s"}, ImageError),
    ({}, {"container"}, ImageError),  # snap0 listed, not in the archive
    ({"snapshots": []}, {"container", "snapshots/snap0"}, UnsafeImage),  # not listed
    ({"type": "virtual-machine"}, {"container", "snapshots/snap0"}, ImageError),
    ({"optimized": True}, {"container", "snapshots/snap0"}, ImageError),
])
def test_bad_indexes(change: dict[str, object], seen: set[str], error: type) -> None:
    with pytest.raises(error):
        _parse({**LXD_INDEX, **change}, seen)


def test_optimized_index_wants_streams() -> None:
    idx = _parse({**LXD_INDEX, "optimized": True},
                 {"backup/container.bin", "backup/snapshots/snap0.bin"})
    assert idx.optimized


def test_not_yaml() -> None:
    with pytest.raises(ImageError):
        backup._parse_index(b"{[", {"container"})


def test_expired_selection() -> None:
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    rec = record.InstanceRecord(name="c", architecture="x86_64", created_at=now, pool="p")
    rec.snapshots = [record.SnapshotRecord("old", now, expires_at=now - dt.timedelta(1)),
                     record.SnapshotRecord("edge", now, expires_at=now),
                     record.SnapshotRecord("later", now, expires_at=now + dt.timedelta(1)),
                     record.SnapshotRecord("never", now)]
    assert expired(rec, now) == ["old", "edge"]


def test_send_argv() -> None:
    assert transfer.btrfs_send_argv(Path("/a")) == ["btrfs", "send", "-q", "/a"]
    assert transfer.btrfs_send_argv(Path("/b"), Path("/a")) == ["btrfs", "send", "-q", "-p",
                                                                "/a", "/b"]
    assert transfer.zfs_send_argv("p/c@s1", "p/c@s0") == ["zfs", "send", "-i", "@s0", "p/c@s1"]
    assert transfer.zfs_send_argv("p/c@s1") == ["zfs", "send", "p/c@s1"]
