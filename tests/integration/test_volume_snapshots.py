"""Custom volume snapshots (``storage volume snapshot|restore``, ``delete|show <vol>/<snap>``,
``info``, ``list``) on real btrfs, dir and zfs pools: LXD 5.0's names, words and table rows, the
content a restore puts back, snapshots carried by a rename and a copy (not with
``--volume-only``), bad names refused with nothing changed, and ``kill -9`` at each step of a
snapshot, a snapshot delete, a snapshot rename and a restore leaving the old state or the new
one; ``snapshots.pattern``, ``snapshots.expiry`` and ``snapshots.schedule`` on volumes, with
``lxdlib housekeeping`` as the daemon's ticker."""

from __future__ import annotations

import datetime as dt
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import lxdlib
from lxdlib.errors import (
    AlreadyExists,
    InvalidConfig,
    InvalidName,
    LxdlibError,
    NotFound,
    WrongState,
)
from tests.integration import invariants
from tests.integration.storage_fixtures import (  # noqa: F401
    ZfsDaemons,
    die_at,
    zfs_daemon,
    zfs_daemons,
)

pytestmark = pytest.mark.root

DIR_POOL = "vsd"


@pytest.fixture
def vols(host: lxdlib.Host) -> lxdlib.Host:
    """The ``host`` root (btrfs pool ``default``) with a dir pool beside it."""
    host.create_pool(DIR_POOL, "dir", {})
    return host


def _store(host: lxdlib.Host):  # type: ignore[no-untyped-def]
    return host.volumes.store


def _cli(host: lxdlib.Host, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                           str(host.paths.root), "storage", "volume", *args],
                          capture_output=True, text=True, timeout=120)


def _ok(host: lxdlib.Host, *args: str) -> str:
    r = _cli(host, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _file(host: lxdlib.Host, pool: str, vol: str, name: str = "f") -> str:
    return (_store(host).path(pool, vol) / name).read_text()


def _write(host: lxdlib.Host, pool: str, vol: str, text: str, name: str = "f") -> None:
    (_store(host).path(pool, vol) / name).write_text(text)


def _on_disk(host: lxdlib.Host, pool: str, vol: str) -> list[str]:
    return host.pool(pool).list_custom_snapshots(vol)


def _csv(out: str) -> list[list[str]]:
    return [line.split(",") for line in out.splitlines() if line]


# -- create, list, info, show ----------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_snapshot_list_info_show(vols: lxdlib.Host, pool: str) -> None:
    s = _store(vols)
    s.create(pool, "v", {"user.k": "v"}, description="vol")
    _write(vols, pool, "v", "one")
    assert _ok(vols, "snapshot", pool, "v") == ""  # lxc says nothing
    assert _ok(vols, "snapshot", pool, "v") == ""
    assert _ok(vols, "snapshot", pool, "v", "mine") == ""
    r = _cli(vols, "snapshot", pool, "v", "mine")
    assert r.returncode == 1 and r.stderr == 'Error: Snapshot "mine" already in use\n'
    r = _cli(vols, "snapshot", pool, "nope")
    assert r.stderr == "Error: Storage pool volume not found\n"
    # LXD's default names: one past the highest snap<n>
    s.delete_snapshot(pool, "v", "snap0")
    assert vols.volumes[f"{pool}/v"].snapshot()["name"] == "snap2"  # the model's verb
    assert [x["name"] for x in s.snapshots(pool, "v")] == ["snap1", "mine", "snap2"]
    assert _on_disk(vols, pool, "v") == ["snap1", "mine", "snap2"]
    # list: ``custom (snapshot)`` rows named <volume>/<snapshot>, used by nothing
    assert _csv(_ok(vols, "list", pool, "-c", "tnu", "-f", "csv")) == [
        ["custom", "v", "0"], ["custom (snapshot)", "v/mine", "0"],
        ["custom (snapshot)", "v/snap1", "0"], ["custom (snapshot)", "v/snap2", "0"]]
    data = yaml.safe_load(_ok(vols, "list", pool, "-f", "yaml"))
    snap = next(d for d in data if d["name"] == "v/mine")
    assert (snap["type"], snap["used_by"]) == ("custom", [])
    # info: the snapshots table, sorted by name as LXD sorts it
    out = _ok(vols, "info", pool, "v")
    lines = out.splitlines()
    at = lines.index("Snapshots:")
    assert lines[at - 1] == ""
    assert lines[at + 1:] == [
        "+-------+-------------+------------+",
        "| NAME  | DESCRIPTION | EXPIRES AT |",
        "+-------+-------------+------------+",
        "| mine  |             |            |",
        "+-------+-------------+------------+",
        "| snap1 |             |            |",
        "+-------+-------------+------------+",
        "| snap2 |             |            |",
        "+-------+-------------+------------+"]
    r = _cli(vols, "info", pool, "v/mine")
    assert r.stderr == "Error: Only instance or custom volumes are supported\n"
    # show <volume>/<snapshot>: LXD's StorageVolumeSnapshot
    shown = yaml.safe_load(_ok(vols, "show", pool, "v/mine"))
    assert list(shown) == ["description", "expires_at", "name", "config", "content_type",
                           "created_at"]
    assert (shown["name"], shown["config"], shown["content_type"]) == (
        "mine", {"user.k": "v"}, "filesystem")
    r = _cli(vols, "show", pool, "v/nope")
    assert r.stderr == "Error: Storage pool volume not found\n"
    invariants.check(vols)


# -- restore -----------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_restore_puts_content_back(vols: lxdlib.Host, pool: str) -> None:
    s = _store(vols)
    cfg = {"user.k": "v", **({"size": "16MiB"} if pool == "default" else {})}
    s.create(pool, "v", cfg)
    _write(vols, pool, "v", "one")
    s.create_snapshot(pool, "v", "s1")
    _write(vols, pool, "v", "two")
    _write(vols, pool, "v", "new", name="g")
    s.create_snapshot(pool, "v", "s2")
    _write(vols, pool, "v", "three")
    s.set(pool, "v", "user.k", "changed")
    assert _ok(vols, "restore", pool, "v", "s1") == ""
    assert _file(vols, pool, "v") == "one"
    assert not (s.path(pool, "v") / "g").exists()
    # LXD keeps the volume's config; the snapshots all stay
    assert s.get(pool, "v")["config"]["user.k"] == "changed"
    assert [x["name"] for x in s.snapshots(pool, "v")] == ["s1", "s2"]
    vols.volumes[f"{pool}/v"].restore("s2")  # the model's verb
    assert _file(vols, pool, "v") == "two" and _file(vols, pool, "v", "g") == "new"
    if pool == "default":  # the restored volume keeps its limit: 24 MiB do not fit in 16
        big = subprocess.run(["dd", "if=/dev/urandom", f"of={s.path(pool, 'v') / 'big'}",
                              "bs=1M", "count=24", "conv=fsync"], capture_output=True)
        assert big.returncode != 0, "the restored volume has no quota"
    r = _cli(vols, "restore", pool, "v", "nope")
    assert r.stderr == (f'Error: Storage volume "v/nope" in project "default" of type "custom" '
                        f'does not exist on pool "{pool}": Storage pool volume not found\n')
    invariants.check(vols)


def test_restore_refused_while_a_running_instance_uses_it(vols: lxdlib.Host) -> None:
    s = _store(vols)
    s.create("default", "v")
    _write(vols, "default", "v", "one")
    s.create_snapshot("default", "v", "s1")
    _write(vols, "default", "v", "two")
    vols.create("busybox", "vsc1")
    s.attach("default", "v", "vsc1", "/data")
    vols.instances["vsc1"].start()
    try:
        r = _cli(vols, "restore", "default", "v", "s1")
        assert r.stderr == "Error: Cannot restore custom volume used by running instances\n"
        with pytest.raises(WrongState):
            s.restore_snapshot("default", "v", "s1")
        assert _file(vols, "default", "v") == "two"
    finally:
        vols.instances["vsc1"].stop(force=True)
    s.restore_snapshot("default", "v", "s1")  # stopped: allowed
    assert _file(vols, "default", "v") == "one"


# -- delete, rename, copy ----------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_delete_snapshot_and_volume(vols: lxdlib.Host, pool: str) -> None:
    s = _store(vols)
    s.create(pool, "v")
    s.create_snapshot(pool, "v")
    s.create_snapshot(pool, "v")
    assert _ok(vols, "delete", pool, "v/snap0") == "Storage volume v/snap0 deleted\n"
    assert _on_disk(vols, pool, "v") == ["snap1"]
    r = _cli(vols, "delete", pool, "v/snap0")
    assert r.stderr == (f'Error: Storage volume "v/snap0" in project "default" of type '
                        f'"custom" does not exist on pool "{pool}": Storage pool volume not '
                        'found\n')
    with pytest.raises(NotFound):
        vols.volumes[f"{pool}/v"].delete_snapshot("snap0")
    # the volume's delete takes its snapshots along
    assert _ok(vols, "delete", pool, "v") == "Storage volume v deleted\n"
    assert vols.pool(pool).all_custom_snapshots() == {}
    s.create(pool, "v")  # the name is free, with no snapshots of the old one
    assert s.snapshots(pool, "v") == [] and _on_disk(vols, pool, "v") == []
    invariants.check(vols)


@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_rename_keeps_snapshots(vols: lxdlib.Host, pool: str) -> None:
    s = _store(vols)
    s.create(pool, "a")
    _write(vols, pool, "a", "one")
    s.create_snapshot(pool, "a", "s1", description="first")
    _write(vols, pool, "a", "two")
    _ok(vols, "rename", pool, "a", "b")
    assert [(x["name"], x["description"]) for x in s.snapshots(pool, "b")] == [("s1", "first")]
    assert _on_disk(vols, pool, "b") == ["s1"] and _on_disk(vols, pool, "a") == []
    s.restore_snapshot(pool, "b", "s1")
    assert _file(vols, pool, "b") == "one"
    invariants.check(vols)


@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_copy_with_and_without_snapshots(vols: lxdlib.Host, pool: str) -> None:
    s = _store(vols)
    s.create(pool, "a", {"user.k": "v"})
    _write(vols, pool, "a", "one")
    s.create_snapshot(pool, "a", "s1")
    _write(vols, pool, "a", "two")
    s.create_snapshot(pool, "a", "s2")
    _write(vols, pool, "a", "three")
    assert _ok(vols, "copy", f"{pool}/a", f"{pool}/b") == "Storage volume copied successfully!\n"
    assert [x["name"] for x in s.snapshots(pool, "b")] == ["s1", "s2"]
    assert _on_disk(vols, pool, "b") == ["s1", "s2"]
    assert _file(vols, pool, "b") == "three"
    s.restore_snapshot(pool, "b", "s1")  # the copy's own snapshots, with the source's data
    assert _file(vols, pool, "b") == "one" and _file(vols, pool, "a") == "three"
    s.delete_snapshot(pool, "a", "s1")  # independent of the source's
    assert _on_disk(vols, pool, "b") == ["s1", "s2"]
    _ok(vols, "copy", f"{pool}/a", f"{pool}/c", "--volume-only")
    assert s.snapshots(pool, "c") == [] and _on_disk(vols, pool, "c") == []
    assert _file(vols, pool, "c") == "three"
    # to another pool: each snapshot replayed there, oldest first
    other = DIR_POOL if pool == "default" else "default"
    _ok(vols, "copy", f"{pool}/a", f"{other}/d")
    assert [x["name"] for x in s.snapshots(other, "d")] == ["s2"]
    assert _on_disk(vols, other, "d") == ["s2"] and _file(vols, other, "d") == "three"
    s.restore_snapshot(other, "d", "s2")
    assert _file(vols, other, "d") == "two"
    vols.volumes[f"{pool}/a"].copy("e", other, volume_only=True)
    assert _file(vols, other, "e") == "three" and s.snapshots(other, "e") == []
    assert _on_disk(vols, other, "e") == []
    invariants.check(vols)


#: Snapshots of volume ``a`` made and deleted in a loop until the file ``argv[3]`` exists: the
#: volume's ``f`` says ``cN`` in snapshot ``cN``; two are kept
_CHURN = """
import sys, lxdlib
from pathlib import Path
s = lxdlib.Host(sys.argv[1]).volumes.store
pool, stop, n = sys.argv[2], Path(sys.argv[3]), 0
while not stop.exists():
    n += 1
    (s.path(pool, "a") / "f").write_text(f"c{n}")
    s.create_snapshot(pool, "a", f"c{n}")
    if n > 2:
        s.delete_snapshot(pool, "a", f"c{n - 2}")
"""


@pytest.mark.parametrize(("pool", "other"), [("default", "default"), (DIR_POOL, DIR_POOL),
                                             ("default", DIR_POOL)])
def test_copies_while_snapshots_come_and_go(vols: lxdlib.Host, pool: str, other: str,
                                            tmp_path: Path) -> None:
    """Copies of a volume while another process snapshots it and deletes its snapshots: the
    copy holds the source's lock from its read of the record to the end of the clone, so
    each copy succeeds with the snapshots its record lists, each holding what it held (one
    deleted in between failed the copy, or across pools could be replayed half-deleted)."""
    s = _store(vols)
    s.create(pool, "a")
    _write(vols, pool, "a", "c0")
    stop = tmp_path / "stop"
    churn = subprocess.Popen([sys.executable, "-c", _CHURN, str(vols.paths.root), pool,
                              str(stop)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    failed: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while len(s.snapshots(pool, "a")) < 2:  # the churn is under way
            assert churn.poll() is None, churn.communicate()
            assert time.monotonic() < deadline, "no snapshot made in 60 s"
            time.sleep(0.01)
        for k in range(25):
            try:
                s.copy(pool, "a", other, f"d{k}")
            except LxdlibError as e:
                failed.append(f"d{k}: {type(e).__name__}: {e}")
                assert f"d{k}" not in s.names(other), "a failed copy left its record"
                assert f"d{k}" not in vols.pool(other).list_volumes("custom")
                continue
            snaps = [x["name"] for x in s.snapshots(other, f"d{k}")]
            assert _on_disk(vols, other, f"d{k}") == snaps
            for snap in snaps:
                path = vols.pool(other).volume_path("custom-snapshots", f"d{k}/{snap}")
                assert (path / "f").read_text() == snap
    finally:
        stop.touch()
        try:
            _out, err = churn.communicate(timeout=60)
        finally:
            if churn.poll() is None:
                churn.kill()
                churn.wait(timeout=30)
    assert churn.returncode == 0, err
    assert failed == []
    invariants.check(vols)


# -- refusals ----------------------------------------------------------------------------------
def test_bad_snapshot_names_change_nothing(vols: lxdlib.Host) -> None:
    s = _store(vols)
    s.create("default", "v")
    s.create_snapshot("default", "v", "s1")
    record = (vols.paths.volume_records / "default" / "v.yaml").read_bytes()
    for bad in ("a/b", "a b", "bad\nname", "x\r", "-x", ".x", "", "x" * 64):
        with pytest.raises(InvalidName):
            s.create_snapshot("default", "v", bad)
    with pytest.raises(AlreadyExists):
        s.create_snapshot("default", "v", "s1")
    assert _cli(vols, "snapshot", "default", "v", "a/b").stderr == \
        'Error: Storage name cannot contain "/"\n'
    assert _cli(vols, "snapshot", "default", "v", "a\nb").stderr == \
        "Error: Storage name cannot contain white space\n"
    with pytest.raises(NotFound):
        s.restore_snapshot("default", "v", "a/b")
    with pytest.raises(NotFound):
        s.delete_snapshot("default", "v", "../v")
    assert (vols.paths.volume_records / "default" / "v.yaml").read_bytes() == record
    assert _on_disk(vols, "default", "v") == ["s1"]
    invariants.check(vols)


# -- zfs ---------------------------------------------------------------------------------------
def test_snapshots_on_zfs(vols: lxdlib.Host, zfs_daemon: ZfsDaemons) -> None:  # noqa: F811
    """zfs snapshots of the dataset; a rollback only to the latest (later ones refused unless
    the pool's ``zfs.remove_snapshots``, which deletes them); a copy sends the snapshots as
    increments; a rename carries them."""
    zpool = f"vsz{secrets.token_hex(3)}"
    vols.create_pool("vszp", "zfs", {"size": "512MiB", "zfs.pool_name": zpool})
    s = _store(vols)
    try:
        s.create("vszp", "a", {"size": "32MiB"})
        _write(vols, "vszp", "a", "one")
        s.create_snapshot("vszp", "a")
        _write(vols, "vszp", "a", "two")
        s.create_snapshot("vszp", "a")
        _write(vols, "vszp", "a", "three")
        assert _on_disk(vols, "vszp", "a") == ["snap0", "snap1"]
        s.restore_snapshot("vszp", "a", "snap1")
        assert _file(vols, "vszp", "a") == "two"
        with pytest.raises(WrongState, match="remove_snapshots"):
            s.restore_snapshot("vszp", "a", "snap0")
        assert _file(vols, "vszp", "a") == "two"
        s.copy("vszp", "a", "vszp", "b")
        assert _on_disk(vols, "vszp", "b") == ["snap0", "snap1"]
        assert _file(vols, "vszp", "b") == "two"
        s.rename("vszp", "b", "c")
        assert _on_disk(vols, "vszp", "c") == ["snap0", "snap1"]
        vols.pools["vszp"].configure({"zfs.remove_snapshots": "true"})
        s.restore_snapshot("vszp", "c", "snap0")
        assert _file(vols, "vszp", "c") == "one"
        assert [x["name"] for x in s.snapshots("vszp", "c")] == ["snap0"]
        assert _on_disk(vols, "vszp", "c") == ["snap0"]
        s.delete_snapshot("vszp", "a", "snap0")
        assert _on_disk(vols, "vszp", "a") == ["snap1"]
        # to btrfs and back: the snapshots replayed from readable clones, then sent
        s.copy("vszp", "c", "default", "d")
        s.create_snapshot("default", "d", "s9")
        s.copy("default", "d", "vszp", "e")
        assert _on_disk(vols, "vszp", "e") == ["snap0", "s9"]
        assert _file(vols, "vszp", "e") == "one"
        invariants.check(vols)
    finally:
        for v in s.names("vszp"):
            s.delete("vszp", v)
        vols.delete_pool("vszp")


# -- kill -9 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_crash_points(vols: lxdlib.Host, pool: str) -> None:
    s = _store(vols)
    s.create(pool, "v")
    _write(vols, pool, "v", "one")
    s.create_snapshot(pool, "v", "s0")
    _write(vols, pool, "v", "two")
    # a snapshot killed before its record: the next listing removes the pool's copy
    die_at(vols, "volume.snapshot.made", f"h.volumes.store.create_snapshot({pool!r}, 'v', 's1')")
    assert _on_disk(vols, pool, "v") == ["s0", "s1"]
    fresh = lxdlib.Host(vols.paths.root).volumes.store
    assert fresh.names(pool) == ["v"]
    assert _on_disk(vols, pool, "v") == ["s0"]
    invariants.check(vols)
    fresh.create_snapshot(pool, "v", "s1")  # the name is free again
    # a snapshot delete killed after its record: the next snapshot verb finishes it
    die_at(vols, "volume.snapshot.unrecorded",
            f"h.volumes.store.delete_snapshot({pool!r}, 'v', 's1')")
    fresh = lxdlib.Host(vols.paths.root).volumes.store
    assert [x["name"] for x in fresh.snapshots(pool, "v")] == ["s0"]
    fresh.create_snapshot(pool, "v", "s2")
    assert _on_disk(vols, pool, "v") == ["s0", "s2"]
    invariants.check(vols)
    # a restore killed before its swap: the old content; after it: the new one; the
    # temporary volume goes with the pool's clean-up
    for point, want in (("volume.restore.cloned", "two"), ("volume.restore.swapped", "one")):
        die_at(vols, point, f"h.volumes.store.restore_snapshot({pool!r}, 'v', 's0')")
        fresh_host = lxdlib.Host(vols.paths.root)
        fresh_host.pool(pool).cleanup_leftovers()
        assert _file(fresh_host, pool, "v") == want, point
        invariants.check(fresh_host)


@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_crash_points_rename_with_snapshots(vols: lxdlib.Host, pool: str) -> None:
    """The volume and its snapshots' directory move in two steps: a kill between them, or
    before the record, is undone by the next call (both back under the old name); after the
    record, both are under the new one."""
    s = _store(vols)
    s.create(pool, "a")
    _write(vols, pool, "a", "one")
    s.create_snapshot(pool, "a", "s1")
    for point in ("volume.rename.storage-half", "volume.rename.moved",
                  "volume.rename.recorded"):
        die_at(vols, point, f"h.volumes.store.rename({pool!r}, 'a', 'b')")
        fresh = lxdlib.Host(vols.paths.root)
        fs = fresh.volumes.store
        want = "b" if point == "volume.rename.recorded" else "a"
        assert fs.names(pool) == [want], point
        assert _on_disk(fresh, pool, want) == ["s1"], point
        assert [x["name"] for x in fs.snapshots(pool, want)] == ["s1"], point
        invariants.check(fresh)
        fs.restore_snapshot(pool, want, "s1")
        assert _file(fresh, pool, want) == "one", point
        if want == "b":
            fs.rename(pool, "b", "a")


@pytest.mark.parametrize(("src", "dst"), [("default", "default"), (DIR_POOL, DIR_POOL),
                                          ("default", DIR_POOL)])
def test_crash_point_copy_with_snapshots(vols: lxdlib.Host, src: str, dst: str) -> None:
    """A copy killed after its storage (volume and snapshots) was made, before its record:
    the next listing removes both; the name is free again."""
    s = _store(vols)
    s.create(src, "a")
    _write(vols, src, "a", "one")
    s.create_snapshot(src, "a", "s1")
    die_at(vols, "volume.copy.made", f"h.volumes.store.copy({src!r}, 'a', {dst!r}, 'b')")
    assert _on_disk(vols, dst, "b") == ["s1"]
    fresh = lxdlib.Host(vols.paths.root)
    assert "b" not in fresh.volumes.store.names(dst)
    assert _on_disk(fresh, dst, "b") == [] and "b" not in fresh.pool(dst).list_volumes("custom")
    invariants.check(fresh)
    fresh.volumes.store.copy(src, "a", dst, "b")
    assert _on_disk(fresh, dst, "b") == ["s1"]


# -- rename of a snapshot ----------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_rename_snapshot(vols: lxdlib.Host, pool: str) -> None:
    """``rename <pool> <vol>/<snap> <vol>/<new>``: LXD 5.0's line, the data, description and
    place among the snapshots kept; the model's verb; restore and delete by the new name."""
    s = _store(vols)
    s.create(pool, "v")
    _write(vols, pool, "v", "one")
    s.create_snapshot(pool, "v", "s1", description="first")
    _write(vols, pool, "v", "two")
    s.create_snapshot(pool, "v", "s2")
    _write(vols, pool, "v", "three")
    assert _ok(vols, "rename", pool, "v/s1", "v/a1") == \
        'Renamed storage volume from "v/s1" to "a1"\n'
    assert [(x["name"], x["description"]) for x in s.snapshots(pool, "v")] == [
        ("a1", "first"), ("s2", "")]
    assert _on_disk(vols, pool, "v") == ["a1", "s2"]  # the pool's order (creation) stays
    assert _ok(vols, "rename", pool, "custom/v/s2", "v/b2") == \
        'Renamed storage volume from "v/s2" to "b2"\n'
    view = vols.volumes[f"{pool}/v"].rename_snapshot("a1", "c1")  # the model's verb
    assert view["name"] == "c1" and view["description"] == "first"
    assert _on_disk(vols, pool, "v") == ["c1", "b2"]
    assert yaml.safe_load(_ok(vols, "show", pool, "v/c1"))["name"] == "c1"
    r = _cli(vols, "show", pool, "v/s1")
    assert r.stderr == "Error: Storage pool volume not found\n"
    s.restore_snapshot(pool, "v", "c1")
    assert _file(vols, pool, "v") == "one"
    # the old name is free again, the new one taken
    s.create_snapshot(pool, "v", "s1")
    with pytest.raises(AlreadyExists):
        s.create_snapshot(pool, "v", "c1")
    s.delete_snapshot(pool, "v", "b2")
    assert _on_disk(vols, pool, "v") == ["c1", "s1"]
    invariants.check(vols)


@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_rename_snapshot_refusals_change_nothing(vols: lxdlib.Host, pool: str) -> None:
    """LXD 5.0's client and server words for a target on another volume, a target that is no
    snapshot, an empty or slashed name, a missing snapshot; lxdlib's for a taken or invalid
    name (LXD 5.0 fails in its storage layer there, or takes names lxdlib cannot hold)."""
    s = _store(vols)
    s.create(pool, "v")
    s.create(pool, "w")
    s.create_snapshot(pool, "v", "s1")
    s.create_snapshot(pool, "v", "s2")
    record = (vols.paths.volume_records / pool / "v.yaml").read_bytes()
    cases = {
        ("v/s1", "w/s9"): "Invalid new snapshot name, parent volume must be the same as source",
        ("v/s1", "s9"): "Invalid new snapshot name, parent volume must be the same as source",
        ("v/s1", "v"): "Invalid new snapshot name",
        ("v/s1", "v/"): "No name provided",
        ("v/s1", "v/a/b"): "Storage volume names may not contain slashes",
        ("v/s1/x", "v/s9"): "Invalid snapshot name",
        ("v/nope", "v/s9"): "Storage pool volume not found",
        ("nope/s1", "nope/s9"): "Storage pool volume not found",
        ("v/s1", "v/s2"): 'Snapshot "s2" already in use',
        ("v/s1", "v/s1"): 'Snapshot "s1" already in use',
        ("v/s1", "v/a b"): "Storage name cannot contain white space",
    }
    for (src, dst), words in cases.items():
        r = _cli(vols, "rename", pool, src, dst)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", f"Error: {words}\n"), (src, dst)
    for bad in ("a b", "bad\nname", "x\r", "-x", ".x", "", "x" * 64, "a/b"):
        with pytest.raises(InvalidName):
            s.rename_snapshot(pool, "v", "s1", bad)
    with pytest.raises(AlreadyExists):
        s.rename_snapshot(pool, "v", "s1", "s2")
    with pytest.raises(NotFound):
        s.rename_snapshot(pool, "v", "nope", "s9")
    with pytest.raises(NotFound):
        s.rename_snapshot(pool, "nope", "s1", "s9")
    assert (vols.paths.volume_records / pool / "v.yaml").read_bytes() == record
    assert _on_disk(vols, pool, "v") == ["s1", "s2"]
    invariants.check(vols)


@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_crash_points_snapshot_rename(vols: lxdlib.Host, pool: str) -> None:
    """The record is the commit point: a kill after it (the pool's snapshot not yet renamed,
    or renamed with the record's mark still on) is finished by the next listing, snapshot
    verb or copy; the data is the snapshot's and nothing is removed as debris."""
    s = _store(vols)
    s.create(pool, "v")
    _write(vols, pool, "v", "one")
    s.create_snapshot(pool, "v", "s0")
    _write(vols, pool, "v", "two")
    s.create_snapshot(pool, "v", "s1")
    _write(vols, pool, "v", "three")
    settles: dict[str, Callable[[lxdlib.Host], object]] = {
        "listing": lambda h: h.volumes.store.names(pool),
        "snapshot": lambda h: h.volumes.store.create_snapshot(pool, "v", "x"),
        "restore": lambda h: h.volumes.store.restore_snapshot(pool, "v", "s1"),
        "rename": lambda h: h.volumes.store.rename_snapshot(pool, "v", "s1", "y"),
        "copy": lambda h: h.volumes.store.copy(pool, "v", pool, "c"),
    }
    old, new = "s0", "a0"
    for point in ("volume.snapshot.rename.recorded", "volume.snapshot.rename.moved"):
        for how, settle in settles.items():
            die_at(vols, point, f"h.volumes.store.rename_snapshot({pool!r}, 'v', {old!r}, "
                                f"{new!r})")
            fresh = lxdlib.Host(vols.paths.root)
            fs = fresh.volumes.store
            assert fs.snapshots(pool, "v")[0]["name"] == new, (point, how)
            settle(fresh)
            assert _on_disk(fresh, pool, "v")[0] == new, (point, how)
            assert old not in _on_disk(fresh, pool, "v"), (point, how)
            invariants.check(fresh)
            fs.restore_snapshot(pool, "v", new)
            assert _file(fresh, pool, "v") == "one", (point, how)
            if how == "copy":
                assert _on_disk(fresh, pool, "c")[0] == new
                fs.delete(pool, "c")
            if how == "rename":
                fs.rename_snapshot(pool, "v", "y", "s1")
            if how == "snapshot":
                fs.delete_snapshot(pool, "v", "x")
            old, new = new, old
    invariants.check(vols)


# -- snapshots.pattern, snapshots.expiry, snapshots.schedule -----------------------------------
@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_pattern_and_expiry(vols: lxdlib.Host, pool: str) -> None:
    """A snapshot taken without a name follows ``snapshots.pattern``; each records its expiry
    from ``snapshots.expiry`` (not with ``--no-expiry``), shown by ``show`` and ``info``."""
    s = _store(vols)
    s.create(pool, "v", {"snapshots.pattern": "bk%d", "snapshots.expiry": "2d"})
    before = dt.datetime.now(dt.UTC)
    assert _ok(vols, "snapshot", pool, "v") == ""
    assert _ok(vols, "snapshot", pool, "v", "--no-expiry") == ""
    assert _ok(vols, "snapshot", pool, "v", "mine") == ""
    assert [x["name"] for x in s.snapshots(pool, "v")] == ["bk0", "bk1", "mine"]
    # a Go time, plain as LXD's yaml.v2 writes it: read here as the text it is
    shown = yaml.load(_ok(vols, "show", pool, "v/bk0"), Loader=yaml.BaseLoader)
    expires = dt.datetime.fromisoformat(str(shown["expires_at"]).replace("Z", "+00:00"))
    assert str(shown["expires_at"]).endswith("Z")
    assert before + dt.timedelta(days=2) <= expires <= \
        dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    assert yaml.load(_ok(vols, "show", pool, "v/bk1"), Loader=yaml.BaseLoader)["expires_at"] \
        == "0001-01-01T00:00:00Z"
    lines = _ok(vols, "info", pool, "v").splitlines()
    row = next(line for line in lines if line.startswith("| bk0 "))
    assert row.split("|")[3].strip() == expires.strftime("%Y/%m/%d %H:%M UTC")
    assert next(line for line in lines if line.startswith("| bk1 ")).split("|")[3].strip() == ""
    # the API: an expiry given, or none
    at = dt.datetime(2030, 1, 2, 3, 4, tzinfo=dt.UTC)
    got = vols.volumes[f"{pool}/v"].snapshot(expires_at=at)
    assert got["name"] == "bk2" and got["expires_at"] == at.isoformat()
    # a pattern with the date, no %d: the name, then -<n> once taken (as an instance's)
    s.set(pool, "v", "snapshots.pattern", "daily-{{ creation_date|date:'2006-01-02' }}")
    day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    assert s.create_snapshot(pool, "v")["name"] == f"daily-{day}"
    assert s.create_snapshot(pool, "v")["name"] == f"daily-{day}-0"
    s.unset(pool, "v", "snapshots.pattern")
    assert s.create_snapshot(pool, "v")["name"] == "snap0"
    assert _on_disk(vols, pool, "v") == [x["name"] for x in s.snapshots(pool, "v")]
    invariants.check(vols)


@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_housekeeping_expires_and_schedules(vols: lxdlib.Host, pool: str) -> None:
    """No daemon: ``lxdlib housekeeping`` removes the volumes' expired snapshots and takes
    their scheduled ones, as it does for instances' (``snapshots.schedule``)."""
    from lxdlib import housekeeping
    s = _store(vols)
    s.create(pool, "v", {"snapshots.expiry": "1H"})
    s.create_snapshot(pool, "v", "old")
    s.create_snapshot(pool, "v", "kept", no_expiry=True)
    now = dt.datetime.now(dt.UTC)
    report = housekeeping.run(vols, now)
    assert report.expired == [] and report.created == []
    report = housekeeping.run(vols, now + dt.timedelta(hours=2))
    assert report.expired == [f"{pool}/v/old"]
    assert [x["name"] for x in s.snapshots(pool, "v")] == ["kept"]
    assert _on_disk(vols, pool, "v") == ["kept"]
    # a schedule: one snapshot when a scheduled minute has passed since the last look (the
    # first look: since the volume's creation, one for all the minutes missed), not one per run
    s.set_many(pool, "v", {"snapshots.schedule": "*/5 * * * *", "snapshots.expiry": None})
    t = dt.datetime(2031, 5, 6, 7, 3, tzinfo=dt.UTC)
    assert housekeeping.run(vols, t).created == [f"{pool}/v/snap0"]
    assert housekeeping.run(vols, t + dt.timedelta(minutes=1)).created == []
    assert housekeeping.run(vols, t + dt.timedelta(minutes=2)).created == [f"{pool}/v/snap1"]
    assert housekeeping.run(vols, t + dt.timedelta(minutes=3)).created == []
    assert _on_disk(vols, pool, "v") == ["kept", "snap0", "snap1"]
    # the CLI runs the same pass
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                        str(vols.paths.root), "housekeeping"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    invariants.check(vols)


_VOLUME_KILLED_BEFORE_STAMP = """
import datetime as dt, os, signal, sys
import lxdlib
from lxdlib import housekeeping, volumes
write = volumes.write_record
def killed_at_stamp(path, data, **kw):  # the stamp after the committed snapshot
    if str(path).endswith("last-run.yaml") and "taking" not in data:
        os.kill(os.getpid(), signal.SIGKILL)
    return write(path, data, **kw)
volumes.write_record = killed_at_stamp
housekeeping.run(lxdlib.Host(sys.argv[1]), dt.datetime.fromisoformat(sys.argv[2]))
"""


def test_housekeeping_killed_after_a_volume_snapshot_takes_no_second(vols: lxdlib.Host) -> None:
    """A run killed after a volume's scheduled snapshot was recorded, before its stamp: the
    next run in that minute takes no second snapshot."""
    from lxdlib import housekeeping
    s = _store(vols)
    s.create("default", "v", {"snapshots.schedule": "* * * * *"})
    t = dt.datetime(2031, 5, 6, 7, 3, 5, tzinfo=dt.UTC)
    assert housekeeping.run(vols, t).created == ["default/v/snap0"]
    r = subprocess.run([sys.executable, "-c", _VOLUME_KILLED_BEFORE_STAMP, str(vols.paths.root),
                        (t + dt.timedelta(minutes=1)).isoformat()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert [x["name"] for x in s.snapshots("default", "v")] == ["snap0", "snap1"]
    assert housekeeping.run(vols, t + dt.timedelta(minutes=1, seconds=30)).created == []
    assert housekeeping.run(vols, t + dt.timedelta(minutes=2)).created == ["default/v/snap2"]
    assert _on_disk(vols, "default", "v") == ["snap0", "snap1", "snap2"]
    invariants.check(vols)


def test_a_volume_housekeeping_run_that_waited_puts_no_stamp_back(vols: lxdlib.Host) -> None:
    """As an instance's: a run with an older ``now`` that went after a later one does not put
    the volume's stamp back, so the minute's snapshot is not taken twice."""
    from lxdlib import housekeeping
    s = _store(vols)
    s.create("default", "v", {"snapshots.schedule": "* * * * *"})
    t = dt.datetime(2031, 5, 6, 7, 3, 5, tzinfo=dt.UTC)
    assert housekeeping.run(vols, t).created == ["default/v/snap0"]
    later = dt.datetime(2031, 5, 6, 7, 4, 0, 100_000, tzinfo=dt.UTC)
    assert housekeeping.run(vols, later).created == ["default/v/snap1"]
    waited = dt.datetime(2031, 5, 6, 7, 3, 59, 900_000, tzinfo=dt.UTC)
    assert housekeeping.run(vols, waited).created == []
    assert housekeeping.run(vols, later + dt.timedelta(seconds=30)).created == []
    assert _on_disk(vols, "default", "v") == ["snap0", "snap1"]


def test_a_corrupt_volume_record_hides_no_other(vols: lxdlib.Host) -> None:
    """A volume record that is no record (truncated, hand-edited: not JSON nor YAML, empty,
    NULs, a ``config`` or ``snapshots`` of another shape) is a ``CorruptRecord`` for that
    volume alone: the pool's listing shows the others (CLI too), housekeeping expires and
    schedules the others' snapshots, the bad volume's snapshots are not taken for debris, and
    it can still be deleted. A housekeeping stamp with NULs (written without fsync) is no
    stamp."""
    from lxdlib import housekeeping
    from lxdlib.errors import CorruptRecord
    pool = DIR_POOL
    s = _store(vols)
    s.create(pool, "a")
    s.create_snapshot(pool, "a", "keep")
    s.create(pool, "b", {"snapshots.expiry": "1H"})
    s.create_snapshot(pool, "b", "old")
    rec = vols.paths.volume_records / pool / "a.yaml"
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    for bad in (b"{{{", b"", b"\0\0\0", b'{"name": "a", "config": [1]}', b'[1, 2]',
                b'{"name": "a", "config": {}, "snapshots": "keep"}',
                b'{"name": "a", "config": {}, "snapshots": [{"name": "keep", "config": 5}]}'):
        rec.write_bytes(bad)
        with pytest.raises(CorruptRecord):
            s.get(pool, "a")
        assert [v["name"] for v in s.list(pool)] == ["b"], bad
        out = _cli(vols, "list", pool, "-f", "csv")
        assert out.returncode == 0 and "custom,b," in out.stdout, (bad, out.stderr)
        report = housekeeping.run(vols, later)
        assert f"{pool}/a" in report.skipped, bad
        assert _on_disk(vols, pool, "a") == ["keep"], bad
    assert _on_disk(vols, pool, "b") == []  # expired by the first pass, beside a bad "a"
    s.set_many(pool, "b", {"snapshots.schedule": "*/5 * * * *"})
    (vols.paths.volume_records / pool / ".b.last-run.yaml").write_bytes(b"\0" * 40)
    t = dt.datetime(2031, 5, 6, 7, 3, tzinfo=dt.UTC)
    assert f"{pool}/b/snap0" in housekeeping.run(vols, t).created
    s.delete(pool, "a")  # a corrupt volume can still be removed, snapshots and all
    assert s.names(pool) == ["b"] and _on_disk(vols, pool, "a") == []
    s.delete(pool, "b")
    invariants.check(vols)


def test_snapshot_keys_refused_change_nothing(vols: lxdlib.Host) -> None:
    s = _store(vols)
    s.create("default", "v", {"snapshots.expiry": "1d"})
    record = (vols.paths.volume_records / "default" / "v.yaml").read_bytes()
    for key, bad in (("snapshots.expiry", "1q"), ("snapshots.expiry", "1d\n"),
                     ("snapshots.pattern", "a/%d"), ("snapshots.pattern", "%d%d"),
                     ("snapshots.schedule", "bad"), ("snapshots.schedule", "* * * *"),
                     ("snapshots.stuff", "x")):
        with pytest.raises(InvalidConfig):
            s.set("default", "v", key, bad)
        with pytest.raises(InvalidConfig):
            s.create("default", "w", {key: bad})
        r = _cli(vols, "set", "default", "v", key, bad)
        assert r.returncode == 1 and r.stderr.startswith("Error: "), (key, bad)
    with pytest.raises(lxdlib.InvalidArgument):
        s.create_snapshot("default", "v", expires_at=dt.datetime(2030, 1, 1))  # no zone
    assert (vols.paths.volume_records / "default" / "v.yaml").read_bytes() == record
    assert "w" not in s.names("default") and _on_disk(vols, "default", "v") == []
    invariants.check(vols)


def test_snapshot_rename_and_expiry_on_zfs(vols: lxdlib.Host,
                                            zfs_daemon: ZfsDaemons) -> None:  # noqa: F811
    """On zfs: a rename keeps the snapshot's place (createtxg), so rollbacks still go to the
    latest only; a kill after the record is finished by the next listing; expiry prunes."""
    from lxdlib import housekeeping
    zpool = f"vsz{secrets.token_hex(3)}"
    vols.create_pool("vszr", "zfs", {"size": "512MiB", "zfs.pool_name": zpool})
    s = _store(vols)
    try:
        s.create("vszr", "a", {"snapshots.pattern": "z%d", "snapshots.expiry": "1d"})
        _write(vols, "vszr", "a", "one")
        assert s.create_snapshot("vszr", "a")["name"] == "z0"
        _write(vols, "vszr", "a", "two")
        s.create_snapshot("vszr", "a", "s1", no_expiry=True)
        _ok(vols, "rename", "vszr", "a/z0", "a/first")
        assert _on_disk(vols, "vszr", "a") == ["first", "s1"]
        with pytest.raises(WrongState, match="remove_snapshots"):
            s.restore_snapshot("vszr", "a", "first")
        with pytest.raises(AlreadyExists):
            s.rename_snapshot("vszr", "a", "first", "s1")
        die_at(vols, "volume.snapshot.rename.recorded",
               "h.volumes.store.rename_snapshot('vszr', 'a', 's1', 'last')")
        fresh = lxdlib.Host(vols.paths.root)
        assert fresh.volumes.store.names("vszr") == ["a"]
        assert _on_disk(fresh, "vszr", "a") == ["first", "last"]
        s.restore_snapshot("vszr", "a", "last")
        assert _file(vols, "vszr", "a") == "two"
        invariants.check(fresh)
        report = housekeeping.run(vols, dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
        assert report.expired == ["vszr/a/first"]
        assert _on_disk(vols, "vszr", "a") == ["last"]
        invariants.check(vols)
    finally:
        for v in s.names("vszr"):
            s.delete("vszr", v)
        vols.delete_pool("vszr")


# -- edit of a snapshot: description and expiry, as LXD 5.0 ---------------------------------------
def _edit(host: lxdlib.Host, pool: str, ref: str, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                           str(host.paths.root), "storage", "volume", "edit", pool, ref],
                          input=text, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_edit_snapshot_description_and_expiry(vols: lxdlib.Host, pool: str) -> None:
    """``show <vol>/<snap> | sed … | edit <vol>/<snap>`` changes the description and the expiry
    (LXD's own test of the verb); a changed name or config is ignored, a field left out is
    emptied (LXD's whole-document semantics), and ``housekeeping`` follows the new expiry."""
    s = _store(vols)
    s.create(pool, "v", {"user.k": "v"})
    _ok(vols, "snapshot", pool, "v", "s1")
    shown = _ok(vols, "show", pool, "v/s1")
    r = _edit(vols, pool, "v/s1", shown.replace('description: ""', "description: foo"))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert yaml.safe_load(_ok(vols, "show", pool, "v/s1"))["description"] == "foo"
    doc = yaml.safe_load(_ok(vols, "show", pool, "v/s1"))
    doc.update(expires_at="2100-01-02T15:04:05Z", name="other", config={"a": "b"})
    assert _edit(vols, pool, "v/s1", yaml.safe_dump(doc)).returncode == 0
    after = yaml.load(_ok(vols, "show", pool, "v/s1"), Loader=yaml.BaseLoader)  # times as text
    assert (after["description"], after["expires_at"], after["name"], after["config"]) == \
        ("foo", "2100-01-02T15:04:05Z", "s1", {"user.k": "v"})
    assert [x["name"] for x in s.snapshots(pool, "v")] == ["s1"]
    # the whole document: what is left out is emptied, as LXD's PUT does
    assert _edit(vols, pool, "v/s1", "description: x\n").returncode == 0
    after = yaml.load(_ok(vols, "show", pool, "v/s1"), Loader=yaml.BaseLoader)  # times as text
    assert (after["description"], after["expires_at"]) == ("x", "0001-01-01T00:00:00Z")
    # an expiry in the past: the next housekeeping removes it
    past = "expires_at: 2001-01-01T00:00:00+02:00\ndescription: old\n"
    assert _edit(vols, pool, "v/s1", past).returncode == 0
    assert s.get_snapshot(pool, "v", "s1")["expires_at"] == "2000-12-31T22:00:00+00:00"
    subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(vols.paths.root),
                    "housekeeping"], check=True, capture_output=True, timeout=120)
    assert s.snapshots(pool, "v") == [] and _on_disk(vols, pool, "v") == []
    invariants.check(vols)


def test_edit_snapshot_api_and_refusals_change_nothing(vols: lxdlib.Host) -> None:
    """The API (``Volume.update_snapshot``) keeps what it is not given; a bad time, an empty
    document, a missing snapshot, and ``set``/``unset`` of a snapshot's key (read-only in LXD,
    with its words) are refused and change nothing; ``get`` reads the snapshot's config."""
    s = _store(vols)
    s.create("default", "v", {"user.k": "v"})
    vol = vols.volumes["default/v"]
    vol.snapshot("s1", "first")
    at = dt.datetime(2031, 5, 6, 7, 8, tzinfo=dt.UTC)
    got = vol.update_snapshot("s1", expires_at=at)
    assert (got["description"], got["expires_at"]) == ("first", at.isoformat())
    assert vol.update_snapshot("s1", description="second")["expires_at"] == at.isoformat()
    assert vol.update_snapshot("s1", no_expiry=True)["expires_at"] is None
    before = vol.get_snapshot("s1")
    with pytest.raises(lxdlib.InvalidArgument, match="description"):
        vol.update_snapshot("s1", description="a\rb")
    with pytest.raises(lxdlib.InvalidArgument):
        vol.update_snapshot("s1", expires_at=dt.datetime(2031, 1, 1))  # no time zone
    with pytest.raises(NotFound):
        vol.update_snapshot("nosnap", description="x")
    for text, words in [("expires_at: bogus\n", "invalid expires_at 'bogus'"),
                        ("", "the new content is empty"),
                        ("- a list\n", "expected a YAML mapping")]:
        r = _edit(vols, "default", "v/s1", text)
        assert r.returncode == 1 and words in r.stderr, r.stderr
    r = _edit(vols, "default", "v/nosnap", "description: y\n")
    assert r.returncode == 1 and "not found" in r.stderr
    for args in (["set", "default", "v/s1", "user.a", "b"], ["unset", "default", "v/s1", "user.k"]):
        r = _cli(vols, *args)
        assert (r.returncode, r.stderr) == (1, "Error: Snapshots are read-only and can't have "
                                               "their configuration changed\n")
    assert _ok(vols, "get", "default", "v/s1", "user.k") == "v\n"
    assert vol.get_snapshot("s1") == before
    assert s.get("default", "v")["config"] == {"user.k": "v"}
    invariants.check(vols)
