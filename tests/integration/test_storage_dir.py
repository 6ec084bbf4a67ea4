"""The dir driver on the host filesystem."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lxdlib.errors import AlreadyExists, InUse, InvalidConfig, NotFound, StorageError
from lxdlib.state import Paths
from lxdlib.storage import create_pool, delete_pool, list_pools, load_pool, pool_info
from lxdlib.storage.base import PoolDriver
from lxdlib.storage.dir import DirPool

try:
    from .storage_fixtures import (
        MiB,
        dir_pool,
        fill_image,
        kill9_during_fill,
        needs_root,
        paths,
        teardown_pool,
        unique,
    )
except ImportError:
    from storage_fixtures import (  # type: ignore[no-redef,import-not-found]
        MiB,
        dir_pool,
        fill_image,
        kill9_during_fill,
        needs_root,
        paths,
        teardown_pool,
        unique,
    )

__all__ = ["dir_pool", "paths"]  # fixtures used by name

pytestmark = [pytest.mark.root, needs_root]


def test_create_and_delete_default_source(paths: Paths) -> None:
    name = unique("dp")
    pool = create_pool(paths, name, "dir", {})
    try:
        assert isinstance(pool, DirPool) and pool.snapshot_needs_freeze
        base = paths.pools / name
        assert sorted(os.listdir(base)) == ["containers", "containers-snapshots", "custom",
                                            "custom-snapshots", "images"]
        assert pool_info(paths, name)["driver"] == "dir"
        load_pool(paths, name).create_image_volume("a" * 64, fill_image())
        delete_pool(paths, name)
        assert not base.exists() and list_pools(paths) == []
    finally:
        teardown_pool(paths, name)


def test_user_source_must_be_an_empty_directory(paths: Paths, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "junk").write_text("x")
    with pytest.raises(InvalidConfig):
        create_pool(paths, "dp1", "dir", {"source": str(src)})
    with pytest.raises(InvalidConfig):
        create_pool(paths, "dp1", "dir", {"source": "relative/path"})
    assert list_pools(paths) == []
    (src / "junk").unlink()
    pool = create_pool(paths, "dp1", "dir", {"source": str(src)})
    try:
        assert pool.volume_path("custom", "v") == src / "custom" / "v"
        delete_pool(paths, "dp1")
        assert src.is_dir() and list(src.iterdir()) == []  # the user's directory stays
    finally:
        teardown_pool(paths, "dp1")


def test_clone_snapshot_restore_delete(dir_pool: PoolDriver) -> None:
    pool = dir_pool
    img = pool.create_image_volume("b" * 64, fill_image("v0"))
    inst = pool.create_instance_volume("c1", "b" * 64)
    assert (inst / "rootfs" / "hello").read_text() == "v0"
    assert (inst / "metadata.yaml").is_file() and (inst / "templates").is_dir()
    (inst / "rootfs" / "hello").write_text("v1")
    assert (img / "rootfs" / "hello").read_text() == "v0"  # a full copy

    pool.create_snapshot("c1", "s0")
    (inst / "rootfs" / "hello").write_text("v2")
    (inst / "rootfs" / "new").write_text("after s0")
    pool.create_snapshot("c1", "s1")
    assert pool.list_snapshots("c1") == ["s0", "s1"]
    with pytest.raises(AlreadyExists):
        pool.create_snapshot("c1", "s1")
    pool.restore_snapshot("c1", "s0")
    assert (inst / "rootfs" / "hello").read_text() == "v1"
    assert not (inst / "rootfs" / "new").exists()
    assert not [e for e in os.listdir(inst.parent) if e.startswith(".")]

    copy = pool.copy_instance_volume("c1", "c2", snapshot="s1")
    assert (copy / "rootfs" / "new").read_text() == "after s0"
    pool.rename_instance_volume("c1", "c3")
    assert pool.list_snapshots("c3") == ["s0", "s1"]
    pool.delete_snapshot("c3", "s0")
    pool.delete_instance_volume("c3")
    assert not pool.volume_exists("containers", "c3")
    with pytest.raises(NotFound):
        pool.list_snapshots("c3")
    pool.delete_instance_volume("c2")
    pool.delete_image_volume("b" * 64)
    assert not pool.volume_exists("images", "b" * 64)


def test_no_quotas_and_usage_by_walking(dir_pool: PoolDriver) -> None:
    pool = dir_pool
    vol = pool.create_custom_volume("data")
    (vol / "f").write_bytes(os.urandom(2 * MiB))
    assert (pool.volume_usage("custom", "data") or 0) >= 2 * MiB
    with pytest.raises(StorageError, match="no quotas"):
        pool.set_quota("custom", "data", 10 * MiB)
    pool.set_quota("custom", "data", None)  # nothing to lift
    with pytest.raises(StorageError, match="no quotas"):
        pool.create_custom_volume("sized", size=10 * MiB)
    assert not pool.volume_exists("custom", "sized")


def test_delete_pool_in_use_and_leftovers(dir_pool: PoolDriver) -> None:
    pool = dir_pool
    pool.create_custom_volume("keep")
    with pytest.raises(InUse):
        delete_pool(pool.paths, pool.name)
    pid = kill9_during_fill(pool.paths, pool.name, "c" * 64)
    images = pool.volume_path("images", "x").parent
    assert [e for e in os.listdir(images) if f"-{pid}-" in e]
    assert not pool.volume_exists("images", "c" * 64)
    pool.cleanup_leftovers()
    assert os.listdir(images) == []
