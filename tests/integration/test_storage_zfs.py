"""The zfs driver against real ZFS (the zfs-fuse daemon), on a loop file in the test's root."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lxdlib.errors import AlreadyExists, InUse, InvalidConfig, NotFound, WrongState
from lxdlib.state import Paths
from lxdlib.storage import create_pool, delete_pool, list_pools, load_pool, pool_info
from lxdlib.storage.base import PoolDriver
from lxdlib.storage.loop import is_mounted
from lxdlib.storage.zfs import ZfsPool, stop_zfs_daemon

try:
    from .storage_fixtures import (
        MiB,
        ZfsDaemons,
        fill_image,
        kill9_during_fill,
        make_zfs_pool,
        needs_root,
        paths,
        teardown_pool,
        write_bytes,
        zfs_daemon,
        zfs_daemons,
        zfs_pool,
    )
except ImportError:
    from storage_fixtures import (  # type: ignore[no-redef,import-not-found]
        MiB,
        ZfsDaemons,
        fill_image,
        kill9_during_fill,
        make_zfs_pool,
        needs_root,
        paths,
        teardown_pool,
        write_bytes,
        zfs_daemon,
        zfs_daemons,
        zfs_pool,
    )

__all__ = ["paths", "zfs_daemon", "zfs_daemons", "zfs_pool"]  # fixtures used by name

pytestmark = [pytest.mark.root, needs_root]


def as_zfs(pool: PoolDriver) -> ZfsPool:
    assert isinstance(pool, ZfsPool)
    return pool


def zget(prop: str, ds: str, fields: str = "value") -> str:
    return subprocess.run(["zfs", "get", "-H", "-o", fields, prop, ds], capture_output=True,
                          text=True, check=True).stdout.strip()


def zpool_exists(name: str) -> bool:
    return subprocess.run(["zpool", "list", "-H", name], capture_output=True,
                          check=False).returncode == 0


def test_core_flow(zfs_pool: PoolDriver) -> None:
    pool = as_zfs(zfs_pool)
    assert not pool.supports_idmapped_mounts
    assert pool.loop_file.is_file() and zpool_exists(pool.root)
    assert is_mounted(pool.mountpoint)

    img = pool.create_image_volume("a" * 64, fill_image("from image"))
    ds_img = pool.dataset("images", "a" * 64)
    assert (img / "rootfs" / "hello").read_text() == "from image"
    # zfs-fuse shows a read-only dataset mounted "rw" as "off, temporary"; writes still fail.
    assert zget("readonly", ds_img, "value,source") in ("on\tlocal", "off\ttemporary")
    with pytest.raises(OSError) as e:
        (img / "rootfs" / "new").write_text("x")
    assert e.value.errno == errno.EROFS

    inst = pool.create_instance_volume("c1", "a" * 64)
    assert zget("origin", pool.dataset("containers", "c1")) == f"{ds_img}@readonly"
    (inst / "rootfs" / "hello").write_text("changed in instance")
    assert (img / "rootfs" / "hello").read_text() == "from image"
    with pytest.raises(AlreadyExists):
        pool.create_instance_volume("c1", "a" * 64)

    pool.create_snapshot("c1", "s0")
    (inst / "rootfs" / "hello").write_text("v2")
    (inst / "rootfs" / "later").write_text("after s0")
    pool.restore_snapshot("c1", "s0")
    assert (inst / "rootfs" / "hello").read_text() == "changed in instance"
    assert not (inst / "rootfs" / "later").exists()
    pool.create_snapshot("c1", "s1")
    assert pool.list_snapshots("c1") == ["s0", "s1"]
    with pytest.raises(WrongState, match="remove_snapshots"):
        pool.restore_snapshot("c1", "s0")  # ZFS rolls back only to the latest snapshot
    assert pool.list_snapshots("c1") == ["s0", "s1"]

    pool.rename_snapshot("c1", "s1", "s9")
    pool.rename_instance_volume("c1", "web")
    assert pool.list_snapshots("web") == ["s0", "s9"]
    web = pool.volume_path("containers", "web")
    assert (web / "rootfs" / "hello").read_text() == "changed in instance"
    copy = pool.copy_instance_volume("web", "copy", snapshot="s0")
    assert (copy / "rootfs" / "hello").read_text() == "changed in instance"
    assert zget("origin", pool.dataset("containers", "copy")) == "-"  # independent
    assert pool.list_snapshots("copy") == []
    copy2 = pool.copy_instance_volume("web", "copy2")
    (copy2 / "rootfs" / "hello").write_text("own data")
    assert (web / "rootfs" / "hello").read_text() == "changed in instance"
    assert pool.list_snapshots("web") == ["s0", "s9"]  # the copy's temporary snapshot is gone

    pool.delete_snapshot("web", "s0")
    pool.delete_instance_volume("web")
    pool.delete_instance_volume("web")
    assert not pool.volume_exists("containers", "web")
    assert pool.list_volumes("containers") == ["copy", "copy2"]


def test_quota_hits_edquot_and_can_be_lifted(zfs_pool: PoolDriver) -> None:
    pool = as_zfs(zfs_pool)
    pool.create_image_volume("b" * 64, fill_image())
    inst = pool.create_instance_volume("q1", "b" * 64)
    pool.set_quota("containers", "q1", 20 * MiB)
    assert zget("quota", pool.dataset("containers", "q1")) in ("20M", "20.0M")
    with pytest.raises(OSError) as e:
        write_bytes(inst / "big", 40 * MiB)
    assert e.value.errno in (errno.EDQUOT, errno.ENOSPC)
    used = pool.volume_usage("containers", "q1")
    assert used is not None and 10 * MiB < used <= 21 * MiB

    other = pool.create_custom_volume("data")
    write_bytes(other / "big", 40 * MiB)  # the pool itself is fine

    pool.set_quota("containers", "q1", None)
    assert zget("quota", pool.dataset("containers", "q1")) == "none"
    write_bytes(inst / "big", 40 * MiB)
    assert (pool.volume_usage("containers", "q1") or 0) >= 40 * MiB
    info = pool_info(pool.paths, pool.name)
    assert info["used"] >= 80 * MiB and info["total"] > info["used"]
    assert info["volumes"]["custom"] == 1

    small = pool.create_custom_volume("small", size=5 * MiB)
    with pytest.raises(OSError) as e:
        write_bytes(small / "big", 10 * MiB)
    assert e.value.errno in (errno.EDQUOT, errno.ENOSPC)


def test_refquota_and_remove_snapshots(paths: Paths, zfs_daemon: ZfsDaemons) -> None:
    name, zpool = make_zfs_pool(paths, {"zfs.use_refquota": "true",
                                        "zfs.remove_snapshots": "true"})
    try:
        pool = as_zfs(load_pool(paths, name))
        inst = pool.create_instance_volume("r1")
        pool.set_quota("containers", "r1", 20 * MiB)
        ds = pool.dataset("containers", "r1")
        assert zget("quota", ds) == "none" and zget("refquota", ds) != "none"
        (inst / "f").write_text("s0")
        pool.create_snapshot("r1", "s0")
        (inst / "f").write_text("s1")
        pool.create_snapshot("r1", "s1")
        pool.restore_snapshot("r1", "s0")  # allowed: the later snapshot is destroyed
        assert (inst / "f").read_text() == "s0"
        assert pool.list_snapshots("r1") == ["s0"]
    finally:
        teardown_pool(paths, name, (zpool,))


def test_image_with_clones_is_marked_then_destroyed_with_its_last_clone(
        zfs_pool: PoolDriver) -> None:
    pool = as_zfs(zfs_pool)
    fp = "c" * 64
    pool.create_image_volume(fp, fill_image("shared"))
    inst = pool.create_instance_volume("i1", fp)
    pool.create_instance_volume("i2", fp)
    pool.delete_image_volume(fp)
    ds_img = pool.dataset("images", fp)
    assert not pool.volume_exists("images", fp) and pool.list_volumes("images") == []
    assert zget("lxdlib:deleted", ds_img) == "yes"  # kept while clones need it
    assert (inst / "rootfs" / "hello").read_text() == "shared"
    with pytest.raises(NotFound):
        pool.create_instance_volume("i3", fp)

    # The same fingerprint again: the marked volume is taken back, nothing is refilled.
    assert pool.create_image_volume(fp, lambda d: pytest.fail("refilled")) == \
        pool.volume_path("images", fp)
    assert pool.volume_exists("images", fp)
    assert (pool.volume_path("images", fp) / "rootfs" / "hello").read_text() == "shared"

    pool.delete_image_volume(fp)
    pool.delete_instance_volume("i1")
    assert zget("lxdlib:deleted", ds_img) == "yes"  # i2 still uses it
    pool.delete_instance_volume("i2")  # the last clone takes the image with it
    assert subprocess.run(["zfs", "list", ds_img], capture_output=True,
                          check=False).returncode != 0
    pool.create_image_volume("d" * 64, fill_image())
    pool.delete_image_volume("d" * 64)  # no clones: destroyed at once
    pool.delete_image_volume("d" * 64)
    assert pool.list_volumes("images") == []


def test_pool_delete_refused_in_use_then_removes_everything(paths: Paths,
                                                            zfs_daemon: ZfsDaemons) -> None:
    name, zpool = make_zfs_pool(paths)
    try:
        pool = as_zfs(load_pool(paths, name))
        assert pool.config["zfs.pool_name"] == zpool
        with pytest.raises(AlreadyExists):
            create_pool(paths, name, "zfs", {"zfs.pool_name": zpool})
        other = f"{name}x"
        with pytest.raises(InvalidConfig, match="already exists"):  # the zpool name is taken
            create_pool(paths, other, "zfs", {"zfs.pool_name": zpool})
        assert other not in list_pools(paths)
        pool.create_image_volume("e" * 64, fill_image())
        pool.create_instance_volume("busy", "e" * 64)
        with pytest.raises(InUse):
            delete_pool(paths, name)
        pool.delete_instance_volume("busy")

        pool.unmount()  # zpool export, as at shutdown
        assert not zpool_exists(zpool) and not is_mounted(pool.mountpoint)
        again = as_zfs(load_pool(paths, name))  # imports it again
        assert zpool_exists(zpool) and is_mounted(again.mountpoint)
        assert again.list_volumes("images") == ["e" * 64]

        loop_file = again.loop_file
        delete_pool(paths, name)
        assert not zpool_exists(zpool) and not loop_file.exists()
        assert not again.mountpoint.exists() and list_pools(paths) == []
    finally:
        teardown_pool(paths, name, (zpool,))


def test_daemon_restart_like_a_reboot(paths: Paths, zfs_daemon: ZfsDaemons) -> None:
    if not zfs_daemon.started:
        pytest.skip("zfs-fuse was already running before the tests: not ours to stop")
    name, zpool = make_zfs_pool(paths)
    try:
        pool = as_zfs(load_pool(paths, name))
        pool.create_image_volume("f" * 64, fill_image("survives"))
        zfs_daemon.stop_ours()  # every dataset is unmounted, the zpool forgotten
        assert not is_mounted(pool.mountpoint)
        again = as_zfs(load_pool(paths, name))  # starts zfs-fuse, imports, mounts
        zfs_daemon.adopt_from(paths)
        assert zfs_daemon.started
        img = again.volume_path("images", "f" * 64)
        assert (img / "rootfs" / "hello").read_text() == "survives"
    finally:
        teardown_pool(paths, name, (zpool,))


def test_leftovers_of_a_killed_or_failed_image_create(zfs_pool: PoolDriver) -> None:
    pool = as_zfs(zfs_pool)

    def bad_fill(d: Path) -> None:
        (d / "rootfs").mkdir()
        raise RuntimeError("unpack failed")

    with pytest.raises(RuntimeError):
        pool.create_image_volume("1" * 64, bad_fill)
    assert subprocess.run(["zfs", "list", "-H", "-o", "name", "-d", "1", f"{pool.root}/images"],
                          capture_output=True, text=True, check=True).stdout.split() == [
                              f"{pool.root}/images"]

    pid = kill9_during_fill(pool.paths, pool.name, "2" * 64)
    children = subprocess.run(["zfs", "list", "-H", "-o", "name", "-r", f"{pool.root}/images"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert any(f"-{pid}-" in c for c in children)
    assert not pool.volume_exists("images", "2" * 64)
    pool.cleanup_leftovers()
    assert pool.list_volumes("images") == []
    assert not [e for e in os.listdir(pool.mountpoint / "images") if e.startswith(".")]
    with pytest.raises(NotFound):
        pool.create_instance_volume("x", "2" * 64)


def test_stop_zfs_daemon_ignores_foreign_pids() -> None:
    stop_zfs_daemon(None)
    stop_zfs_daemon(os.getpid())  # not a zfs-fuse process: left alone
    assert os.path.exists(f"/proc/{os.getpid()}")


def test_pool_on_an_existing_dataset(zfs_pool: PoolDriver) -> None:
    outer = as_zfs(zfs_pool)
    parent = f"{outer.root}/byhand"
    subprocess.run(["zfs", "create", "-o", "mountpoint=none", parent], check=True)
    subprocess.run(["zfs", "create", f"{parent}/child"], check=True)
    name = f"{outer.name}d"
    with pytest.raises(InvalidConfig, match="not empty"):
        create_pool(outer.paths, name, "zfs", {"source": parent})
    with pytest.raises(InvalidConfig, match="no such"):
        create_pool(outer.paths, name, "zfs", {"source": f"{parent}/missing"})
    assert zget("mountpoint", parent) == "none"  # refusals touched nothing
    source = f"{parent}/child"
    try:
        inner = as_zfs(create_pool(outer.paths, name, "zfs", {"source": source}))
        assert inner.config["zfs.pool_name"] == source and not inner.owns_zpool
        inner.create_image_volume("4" * 64, fill_image("inner"))
        inst = inner.create_instance_volume("i1", "4" * 64)
        assert (inst / "rootfs" / "hello").read_text() == "inner"
        assert zget("origin", f"{source}/containers/i1") == f"{source}/images/{'4' * 64}@readonly"
        inner.delete_instance_volume("i1")
        delete_pool(outer.paths, name)
        assert subprocess.run(["zfs", "list", "-H", "-o", "name", "-r", source],
                              capture_output=True, text=True, check=True).stdout.split() == [
                                  source]
        assert zpool_exists(outer.root)  # the zpool is not ours to destroy here
    finally:
        teardown_pool(outer.paths, name)
        subprocess.run(["zfs", "destroy", "-r", parent], capture_output=True, check=False)


def test_volumes_usage_runs_one_command_for_all(zfs_pool: PoolDriver,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing's disk usage (``volumes_usage``): one ``zfs`` command for every volume
    (``volume_usage`` runs two per volume), the figures those asked one by one, a name with no
    volume left out."""
    from lxdlib.storage import zfs as zfs_module
    pool = as_zfs(zfs_pool)
    pool.create_image_volume("c" * 64, fill_image())
    for i in range(3):
        vol = pool.create_instance_volume(f"u{i}", "c" * 64)
        write_bytes(vol / "data", (1 + 2 * i) * MiB)
    subprocess.run(["sync"], check=True)
    each = {f"u{i}": pool.volume_usage("containers", f"u{i}") for i in range(3)}
    ran: list[list[str]] = []
    real_run = zfs_module.run

    def counted(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        ran.append(list(argv))
        return real_run(argv, *args, **kwargs)
    monkeypatch.setattr(zfs_module, "run", counted)
    got = pool.volumes_usage("containers", ["u0", "u1", "u2", "gone"])
    assert len(ran) == 1 and ran[0][:2] == ["zfs", "get"]
    assert set(got) == set(each)
    for name, used in each.items():  # zfs-fuse may still be settling the last writes
        assert used is not None and abs((got[name] or 0) - used) <= MiB, name
    assert (got["u0"] or 0) < (got["u1"] or 0) < (got["u2"] or 0)
