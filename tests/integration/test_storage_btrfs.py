"""The btrfs driver against a real btrfs on a loop file."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Any

import btrfsutil
import pytest

from lxdlib.errors import (
    AlreadyExists,
    InUse,
    InvalidConfig,
    NotFound,
    StorageError,
)
from lxdlib.state import Paths
from lxdlib.storage import create_pool, delete_pool, list_pools, load_pool, pool_info
from lxdlib.storage.base import PoolDriver
from lxdlib.storage.btrfs import BtrfsPool, sysfs_dir
from lxdlib.storage.loop import find_loops, is_mounted, temp_name

try:
    from .storage_fixtures import (
        MiB,
        btrfs_pool,
        dead_pid,
        fill_image,
        kill9_during_fill,
        needs_root,
        paths,
        teardown_pool,
        unique,
        write_bytes,
    )
except ImportError:
    from storage_fixtures import (  # type: ignore[no-redef,import-not-found]
        MiB,
        btrfs_pool,
        dead_pid,
        fill_image,
        kill9_during_fill,
        needs_root,
        paths,
        teardown_pool,
        unique,
        write_bytes,
    )

__all__ = ["btrfs_pool", "paths"]  # fixtures used by name

pytestmark = [pytest.mark.root, needs_root]


def as_btrfs(pool: PoolDriver) -> BtrfsPool:
    assert isinstance(pool, BtrfsPool)
    return pool


def test_pool_create_record_loop_and_delete(paths: Paths) -> None:
    name = unique("bt")
    pool = as_btrfs(create_pool(paths, name, "btrfs", {"size": "1GiB"}, "test pool"))
    try:
        assert list_pools(paths) == [name]
        assert (paths.pools / f"{name}.yaml").is_file()
        assert pool.loop_file.stat().st_size == 1024 * MiB
        assert pool.loop_file.stat().st_mode & 0o777 == 0o600
        assert is_mounted(pool.mountpoint)
        assert len(find_loops(pool.loop_file)) == 1
        info = pool_info(paths, name)
        assert info["driver"] == "btrfs" and info["description"] == "test pool"
        assert info["total"] > 900 * MiB and 0 < info["used"] < info["total"]
        assert info["volumes"] == {"images": 0, "containers": 0, "custom": 0, "snapshots": 0}
        with pytest.raises(AlreadyExists):
            create_pool(paths, name, "btrfs", {"size": "1GiB"})
        loop_file, mountpoint = pool.loop_file, pool.mountpoint
        delete_pool(paths, name)
        assert list_pools(paths) == []
        assert not loop_file.exists()
        assert find_loops(loop_file) == []
        assert not is_mounted(mountpoint) and not mountpoint.exists()
        with pytest.raises(NotFound):
            load_pool(paths, name)
    finally:
        teardown_pool(paths, name)


def test_bad_config_leaves_nothing(paths: Paths) -> None:
    with pytest.raises(InvalidConfig):
        create_pool(paths, "bad1", "btrfs", {"source": str(paths.root / "missing")})
    with pytest.raises(InvalidConfig):  # a directory, but not on btrfs
        create_pool(paths, "bad2", "btrfs", {"source": str(paths.root)})
    with pytest.raises(InvalidConfig):
        create_pool(paths, "bad3", "btrfs", {"size": "1GiB", "zfs.pool_name": "x"})
    assert list_pools(paths) == []
    assert list(paths.disks.iterdir()) == []
    assert not any((paths.pools / n).exists() for n in ("bad1", "bad2", "bad3"))


def test_image_volume_is_read_only_and_instances_are_snapshots(btrfs_pool: PoolDriver) -> None:
    pool = as_btrfs(btrfs_pool)
    img = pool.create_image_volume("f" * 64, fill_image("from image"))
    assert (img / "rootfs" / "hello").read_text() == "from image"
    assert btrfsutil.get_subvolume_read_only(img)
    with pytest.raises(OSError) as e:
        (img / "rootfs" / "new").write_text("x")
    assert e.value.errno == errno.EROFS
    # Asking again returns the existing volume without filling anything.
    assert pool.create_image_volume("f" * 64, lambda d: pytest.fail("refilled")) == img

    inst = pool.create_instance_volume("c1", "f" * 64)
    assert inst == pool.volume_path("containers", "c1")
    # A writable btrfs snapshot of the image: copy-on-write, whatever the image's size.
    assert btrfsutil.subvolume_info(inst).parent_uuid == btrfsutil.subvolume_info(img).uuid
    assert not btrfsutil.get_subvolume_read_only(inst)
    (inst / "rootfs" / "hello").write_text("changed in instance")
    assert (img / "rootfs" / "hello").read_text() == "from image"

    empty = pool.create_instance_volume("c2")
    assert list(empty.iterdir()) == []
    with pytest.raises(AlreadyExists):
        pool.create_instance_volume("c1", "f" * 64)
    with pytest.raises(NotFound):
        pool.create_instance_volume("c3", "0" * 64)
    assert not pool.volume_exists("containers", "c3")


def test_snapshot_restore_rename_copy_delete(btrfs_pool: PoolDriver) -> None:
    pool = as_btrfs(btrfs_pool)
    pool.create_image_volume("a" * 64, fill_image("v0"))
    inst = pool.create_instance_volume("web", "a" * 64)
    (inst / "rootfs" / "hello").write_text("v1")
    snap = pool.create_snapshot("web", "snap0")
    assert btrfsutil.get_subvolume_read_only(snap)
    assert (snap / "rootfs" / "hello").read_text() == "v1"
    with pytest.raises(AlreadyExists):
        pool.create_snapshot("web", "snap0")

    (inst / "rootfs" / "hello").write_text("v2")
    (inst / "rootfs" / "later").write_text("made after the snapshot")
    pool.create_snapshot("web", "snap1")
    assert pool.list_snapshots("web") == ["snap0", "snap1"]
    pool.restore_snapshot("web", "snap0")
    assert (inst / "rootfs" / "hello").read_text() == "v1"
    assert not (inst / "rootfs" / "later").exists()
    assert not btrfsutil.get_subvolume_read_only(inst)
    (inst / "rootfs" / "hello").write_text("writable after restore")
    assert not [e for e in os.listdir(inst.parent) if e.startswith(".")]

    pool.rename_snapshot("web", "snap1", "before-upgrade")
    assert pool.list_snapshots("web") == ["snap0", "before-upgrade"]
    pool.rename_instance_volume("web", "www")
    assert not pool.volume_exists("containers", "web")
    assert pool.list_snapshots("www") == ["snap0", "before-upgrade"]
    assert (pool.volume_path("containers-snapshots", "www/before-upgrade") / "rootfs" /
            "hello").read_text() == "v2"

    copy = pool.copy_instance_volume("www", "copy1")
    assert (copy / "rootfs" / "hello").read_text() == "writable after restore"
    from_snap = pool.copy_instance_volume("www", "copy2", snapshot="before-upgrade")
    assert (from_snap / "rootfs" / "later").exists()
    (from_snap / "rootfs" / "hello").write_text("copies are writable")
    assert pool.list_snapshots("copy2") == []

    pool.delete_snapshot("www", "snap0")
    assert pool.list_snapshots("www") == ["before-upgrade"]
    with pytest.raises(NotFound):
        pool.delete_snapshot("www", "snap0")
    pool.delete_instance_volume("www")
    pool.delete_instance_volume("www")  # idempotent
    assert not pool.volume_exists("containers", "www")
    assert not (pool.base / "containers-snapshots" / "www").exists()
    assert pool.list_volumes("containers") == ["copy1", "copy2"]


def test_quota_hits_edquot_and_can_be_lifted(btrfs_pool: PoolDriver) -> None:
    pool = as_btrfs(btrfs_pool)
    pool.create_image_volume("b" * 64, fill_image())
    inst = pool.create_instance_volume("q1", "b" * 64)
    assert pool.volume_usage("containers", "q1") is None  # quotas are still off
    pool.set_quota("containers", "q1", 20 * MiB)
    assert pool.quotas_enabled()
    with pytest.raises(OSError) as e:
        write_bytes(inst / "big", 40 * MiB)
    assert e.value.errno in (errno.EDQUOT, errno.ENOSPC)
    used = pool.volume_usage("containers", "q1")
    assert used is not None and 10 * MiB < used <= 21 * MiB

    # The pool itself is fine: another volume takes the 40 MiB.
    other = pool.create_custom_volume("data")
    write_bytes(other / "big", 40 * MiB)
    assert (pool.volume_usage("custom", "data") or 0) >= 40 * MiB

    pool.set_quota("containers", "q1", None)
    write_bytes(inst / "big", 40 * MiB)
    assert (pool.volume_usage("containers", "q1") or 0) >= 40 * MiB
    usage = pool.usage()
    assert usage.used is not None and usage.used >= 80 * MiB

    limited = pool.create_custom_volume("small", size=5 * MiB)
    with pytest.raises(OSError) as e:
        write_bytes(limited / "big", 10 * MiB)
    assert e.value.errno in (errno.EDQUOT, errno.ENOSPC)


def test_delete_pool_refuses_while_instance_exists(paths: Paths) -> None:
    name = unique("bt")
    pool = as_btrfs(create_pool(paths, name, "btrfs", {"size": "1GiB"}))
    try:
        pool.create_image_volume("c" * 64, fill_image())
        pool.create_instance_volume("busy", "c" * 64)
        with pytest.raises(InUse):
            delete_pool(paths, name)
        assert list_pools(paths) == [name] and is_mounted(pool.mountpoint)
        pool.delete_instance_volume("busy")
        loop_file = pool.loop_file
        delete_pool(paths, name)  # the image volume goes with the pool
        assert not loop_file.exists() and find_loops(loop_file) == []
    finally:
        teardown_pool(paths, name)


def test_load_after_unmount_remounts(btrfs_pool: PoolDriver) -> None:
    pool = as_btrfs(btrfs_pool)
    pool.create_image_volume("d" * 64, fill_image("kept"))
    pool.unmount()  # as after a reboot: not mounted, no loop device
    assert not is_mounted(pool.mountpoint)
    assert find_loops(pool.loop_file) == []
    pool.unmount()  # idempotent
    again = as_btrfs(load_pool(pool.paths, pool.name))
    assert is_mounted(again.mountpoint)
    assert len(find_loops(again.loop_file)) == 1
    assert (again.volume_path("images", "d" * 64) / "rootfs" / "hello").read_text() == "kept"
    again.mount()  # already mounted: nothing happens
    assert len(find_loops(again.loop_file)) == 1


def test_kill9_during_image_fill_leaves_only_a_temporary(btrfs_pool: PoolDriver) -> None:
    pool = as_btrfs(btrfs_pool)
    fp = "e" * 64
    pid = kill9_during_fill(pool.paths, pool.name, fp)
    leftovers = [e for e in os.listdir(pool.base / "images") if e.startswith(".")]
    assert len(leftovers) == 1 and f"-{pid}-" in leftovers[0]
    assert not pool.volume_exists("images", fp)  # never visible half-filled
    pool.cleanup_leftovers()
    assert os.listdir(pool.base / "images") == []
    # The next attempt succeeds normally.
    pool.create_image_volume(fp, fill_image())
    assert pool.list_volumes("images") == [fp]


def test_failed_fill_leaves_nothing(btrfs_pool: PoolDriver) -> None:
    pool = as_btrfs(btrfs_pool)

    def bad_fill(d: Path) -> None:
        (d / "rootfs").mkdir()
        raise RuntimeError("unpack failed")

    with pytest.raises(RuntimeError, match="unpack failed"):
        pool.create_image_volume("1" * 64, bad_fill)
    assert os.listdir(pool.base / "images") == []


def test_image_race_keeps_the_winner(btrfs_pool: PoolDriver) -> None:
    pool = as_btrfs(btrfs_pool)
    fp = "2" * 64

    def slow_fill(d: Path) -> None:
        # Another process finishes the same image while this one is still filling.
        pool.create_image_volume(fp, fill_image("winner"))
        fill_image("loser")(d)

    path = pool.create_image_volume(fp, slow_fill)
    assert (path / "rootfs" / "hello").read_text() == "winner"
    assert os.listdir(pool.base / "images") == [fp]


def test_cleanup_undoes_a_restore_that_died_mid_swap(btrfs_pool: PoolDriver) -> None:
    pool = as_btrfs(btrfs_pool)
    inst = pool.create_instance_volume("r1")
    (inst / "data").write_text("old")
    pid = dead_pid()
    # As if killed between "live aside" and "new into place".
    aside = inst.parent / temp_name("aside", "r1").replace(f"-{os.getpid()}-", f"-{pid}-", 1)
    os.rename(inst, aside)
    stale_tmp = inst.parent / temp_name("tmp", "r2").replace(f"-{os.getpid()}-", f"-{pid}-", 1)
    btrfsutil.create_subvolume(stale_tmp)
    mine = inst.parent / temp_name("tmp", "r3")  # this process is alive: left alone
    btrfsutil.create_subvolume(mine)
    pool.cleanup_leftovers()
    assert (inst / "data").read_text() == "old"
    assert not aside.exists() and not stale_tmp.exists() and mine.exists()
    btrfsutil.delete_subvolume(mine)


def test_pool_on_an_existing_btrfs_directory(btrfs_pool: PoolDriver) -> None:
    outer = as_btrfs(btrfs_pool)
    source = outer.create_custom_volume("nested-pool")
    name = unique("bd")
    inner = create_pool(outer.paths, name, "btrfs", {"source": str(source)})
    try:
        assert inner.volume_path("images", "x").parent == source / "images"
        inner.create_image_volume("3" * 64, fill_image("inner"))
        inst = inner.create_instance_volume("i1", "3" * 64)
        assert (inst / "rootfs" / "hello").read_text() == "inner"
        inner.delete_instance_volume("i1")
        delete_pool(outer.paths, name)
        assert source.is_dir() and list(source.iterdir()) == []
    finally:
        teardown_pool(outer.paths, name)


def test_usage_read_in_process_is_what_btrfs_reports(btrfs_pool: PoolDriver) -> None:
    """Qgroups are read from sysfs (no ``btrfs`` run per ``info``); the numbers are the ones
    ``btrfs qgroup show`` prints, and the pool's mount is seen without the mount table."""
    pool = as_btrfs(btrfs_pool)
    vol = pool.create_instance_volume("u1", None)
    assert sysfs_dir(vol) is not None  # the in-process path is the one taken here
    assert pool.volume_usage("containers", "u1") is None  # quotas off: nothing synced or run
    pool.set_quota("containers", "u1", 50 * MiB)
    write_bytes(vol / "data", 3 * MiB)
    used = pool.volume_usage("containers", "u1")
    shown = subprocess.run(["btrfs", "qgroup", "show", "-re", "--raw", "-f", str(vol)],
                           capture_output=True, text=True, check=True).stdout
    qgroup = f"0/{btrfsutil.subvolume_id(vol)}"
    row = next(line.split() for line in shown.splitlines() if line.startswith(qgroup + " "))
    assert used == int(row[1]) and used >= 3 * MiB
    assert pool._mounted_here() and is_mounted(pool.mountpoint)


def test_set_quota_bad_input(btrfs_pool: PoolDriver) -> None:
    pool = as_btrfs(btrfs_pool)
    with pytest.raises(NotFound):
        pool.set_quota("containers", "nope", 10 * MiB)
    pool.create_instance_volume("z1")
    pool.create_snapshot("z1", "s")
    with pytest.raises(ValueError):
        pool.set_quota("containers", "z1", 0)
    with pytest.raises(ValueError):
        pool.set_quota("containers-snapshots", "z1/s", 10 * MiB)
    with pytest.raises(ValueError):
        pool.set_quota("containers", "../z1", 10 * MiB)
    assert not pool.quotas_enabled()  # bad input changed nothing


def test_pool_whose_loop_file_is_gone(paths: Paths) -> None:
    name = unique("bt")
    pool = as_btrfs(create_pool(paths, name, "btrfs", {"size": "1GiB"}))
    try:
        pool.unmount()
        pool.loop_file.unlink()
        with pytest.raises(StorageError, match="missing"):
            load_pool(paths, name)
        with pytest.raises(StorageError):
            delete_pool(paths, name)
        assert list_pools(paths) == [name]
        delete_pool(paths, name, force=True)
        assert list_pools(paths) == [] and not pool.mountpoint.exists()
    finally:
        teardown_pool(paths, name)


def test_volumes_usage_syncs_once_for_all(btrfs_pool: PoolDriver,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing's disk usage (``volumes_usage``): the pool is synced once for every volume
    (``volume_usage`` syncs for each), the figures are those asked one by one, a name with no
    volume is left out, and with quotas off nothing is synced at all."""
    pool = as_btrfs(btrfs_pool)
    vols = {f"v{i}": pool.create_instance_volume(f"v{i}", None) for i in range(3)}
    synced: list[str] = []
    real_sync = btrfsutil.sync

    def counted(path: Any) -> None:
        synced.append(str(path))
        real_sync(path)
    monkeypatch.setattr(btrfsutil, "sync", counted)
    assert pool.volumes_usage("containers", [*vols, "gone"]) == dict.fromkeys(vols)
    assert synced == []  # quotas off
    pool.set_quota("containers", "v0", 50 * MiB)  # turns the pool's quotas on
    for i, vol in enumerate(vols.values()):
        write_bytes(vol / "data", (1 + 2 * i) * MiB)
    each = {name: pool.volume_usage("containers", name) for name in vols}
    synced.clear()
    got = pool.volumes_usage("containers", [*vols, "gone"])
    assert len(synced) == 1
    assert got == each
    assert (each["v0"] or 0) < (each["v1"] or 0) < (each["v2"] or 0)


def _ran_during(call: Any) -> int:
    """How far another thread got while ``call`` ran: it is let go right before the call and
    read right after, so it can only have run if the call let go of the GIL (a call that
    keeps it leaves the other thread waiting until this one next lets go)."""
    import threading
    go, stop, count = threading.Event(), threading.Event(), [0]

    def spin() -> None:
        go.wait()
        while not stop.is_set():
            count[0] += 1
    t = threading.Thread(target=spin)
    t.start()
    try:
        go.set()
        call()
        ran = count[0]
    finally:
        stop.set()
        t.join()
    return ran


def test_snapshots_made_without_holding_the_gil(btrfs_pool: PoolDriver) -> None:
    """``storage.btrfssnap``: the snapshots btrfsutil makes (writable, read-only; a taken name
    refused with EEXIST), with the GIL let go during the transaction commit, so that the
    caller's other threads run meanwhile (``lxdlib.background`` overlaps a copy's commit with
    it). btrfsutil keeps the GIL: the same measure gives it 0 for most calls."""
    from lxdlib.storage import btrfssnap
    pool = as_btrfs(btrfs_pool)
    pool.create_image_volume("a" * 64, fill_image("v0"))
    src = pool.create_instance_volume("web", "a" * 64)
    (src / "rootfs" / "hello").write_text("v1")
    assert btrfssnap.releases_gil()
    made = []
    for i in range(5):
        dst, ro = pool.base / f"gil{i}", i % 2 == 1
        made.append(_ran_during(
            lambda dst=dst, ro=ro: btrfssnap.create_snapshot(src, dst, read_only=ro)))
        assert (dst / "rootfs" / "hello").read_text() == "v1"
        assert btrfsutil.get_subvolume_read_only(dst) == (i % 2 == 1)
    assert sum(1 for n in made if n > 0) >= 4, made
    with pytest.raises(FileExistsError):
        btrfssnap.create_snapshot(src, pool.base / "gil0")
    with pytest.raises(OSError) as e:
        btrfssnap.create_snapshot(pool.base / "nothing-here", pool.base / "gil9")
    assert e.value.errno == errno.ENOENT
    for i in range(5):
        btrfsutil.delete_subvolume(pool.base / f"gil{i}")


def test_a_short_lived_command_snapshots_without_loading_ctypes(btrfs_pool: PoolDriver) -> None:
    """The ``lxdlib`` command running one verb (``state.SHORT_LIVED``) does not load ctypes
    (~2.5 ms of its start) for a snapshot: btrfsutil makes it, the GIL kept."""
    import sys

    pool = as_btrfs(btrfs_pool)
    pool.create_image_volume("a" * 64, fill_image("v0"))
    src = pool.create_instance_volume("web", "a" * 64)
    code = ("import sys; from lxdlib import state; state.SHORT_LIVED = True; "
            "from lxdlib.storage import btrfssnap; "
            "btrfssnap.create_snapshot(sys.argv[1], sys.argv[2]); "
            "print('ctypes' in sys.modules, btrfssnap.releases_gil())")
    r = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = {sys.path!r}; "
                        + code, str(src), str(pool.base / "short")],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["False", "False"], r.stderr
    assert btrfsutil.is_subvolume(pool.base / "short")
    btrfsutil.delete_subvolume(pool.base / "short")
