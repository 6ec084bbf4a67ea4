"""Unpack failures on a btrfs pool each get their own typed error. btrfs reports no inode count
(``f_files == 0``), which the out-of-space check used to read as "no inode left": every failure
there was reported as "run out of disk space". Images (``unpack``) and backups (``import``)
share the classification."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lxdlib.errors import (
    CorruptArchive,
    DeviceNode,
    ImageError,
    LxdlibError,
    QuotaExceeded,
    UnsafeLink,
    UnsafeMemberName,
)
from lxdlib.imagestore import unpack
from lxdlib.state import Paths
from lxdlib.storage import create_pool
from lxdlib.storage.base import PoolDriver
from tests.integration.image_fixtures import Member, dev, good_members, hard, reg, tar_bytes
from tests.integration.storage_fixtures import needs_root, paths, teardown_pool, unique

pytestmark = [pytest.mark.root, needs_root]
__all__ = ["paths"]  # fixture used by name


@pytest.fixture
def small_btrfs(paths: Paths) -> Iterator[PoolDriver]:
    """The smallest btrfs loop pool: small enough to fill in a second."""
    name = unique("ue")
    pool = create_pool(paths, name, "btrfs", {"size": "128MiB"})
    try:
        yield pool
    finally:
        teardown_pool(paths, name)


@pytest.fixture
def dest(small_btrfs: PoolDriver) -> Path:
    d = Path(small_btrfs.base) / "custom" / "vol"  # type: ignore[attr-defined]
    d.mkdir(mode=0o711)
    return d


def _image(tmp_path: Path, members: list[Member], *, cut: int | None = None,
           gz: bool = True) -> Path:
    raw = tar_bytes(members)
    data = gzip.compress(raw, mtime=0) if gz else raw
    if cut is not None:
        data = data[:cut]
    path = tmp_path / ("img.tar.gz" if gz else "img.tar")
    path.write_bytes(data)
    return path


BIG = reg("rootfs/big", os.urandom(256 * 1024))

CASES: dict[str, tuple[list[Member], dict[str, object], type[LxdlibError]]] = {
    "dotdot": (good_members([reg("rootfs/../../escape", b"x")]), {}, UnsafeMemberName),
    "hardlink-absolute": (good_members([hard("rootfs/h", "/etc/passwd")]), {}, UnsafeLink),
    "hardlink-relative": (good_members([hard("rootfs/h", "../outside/victim")]), {},
                          UnsafeLink),
    "device-node": (good_members([dev("rootfs/sda", block=True)]), {}, DeviceNode),
    "truncated-gzip": (good_members([BIG]), {"cut": 60 * 1024}, CorruptArchive),
    "truncated-tar": (good_members([BIG]), {"cut": 100 * 1024, "gz": False}, CorruptArchive),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unpack_failure_is_typed_on_btrfs(tmp_path: Path, dest: Path, case: str) -> None:
    members, how, kind = CASES[case]
    image = _image(tmp_path, members, **how)  # type: ignore[arg-type]
    with pytest.raises(ImageError) as err:
        unpack(image, dest)
    assert type(err.value) is kind, err.value
    assert "disk space" not in str(err.value)
    assert list(dest.iterdir()) == []


def test_full_btrfs_pool_is_still_out_of_space(tmp_path: Path, dest: Path) -> None:
    image = _image(tmp_path, good_members([reg("rootfs/huge", bytes(200 * 1024 * 1024))]),
                   gz=False)
    with pytest.raises(QuotaExceeded, match="run out of disk space"):
        unpack(image, dest)
    assert list(dest.iterdir()) == []


def test_truncated_backup_is_typed(tmp_path: Path) -> None:
    """A backup cut short is a corrupt archive, not an unreadable one of unknown kind."""
    from lxdlib.backup import scan
    index = yaml.safe_dump({"name": "c", "snapshots": [], "backend": "btrfs"}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("backup/index.yaml", index),
                           ("backup/container/rootfs/big", os.urandom(256 * 1024))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path = tmp_path / "b.tar.gz"
    path.write_bytes(gzip.compress(buf.getvalue())[:100 * 1024])
    with pytest.raises(CorruptArchive):
        scan(path)
