"""``storage volume rename|copy|info`` on a real btrfs loop pool and a dir pool: what LXD 5.0
does (its refusals and messages), the data and config carried, and a ``kill -9`` at each step
boundary of a rename or a copy leaving the old state or the new one, nothing half-made."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

import lxdlib
from lxdlib.errors import AlreadyExists, InUse, InvalidName, NotFound, StorageError
from lxdlib.volumes import IDMAP_LAST
from tests.integration.storage_fixtures import (  # noqa: F401
    ZfsDaemons,
    die_at,
    zfs_daemon,
    zfs_daemons,
)

pytestmark = pytest.mark.root

DIR_POOL = "vd"


@pytest.fixture
def vols(host: lxdlib.Host) -> lxdlib.Host:
    """The ``host`` root (btrfs pool ``default``) with a dir pool beside it."""
    host.create_pool(DIR_POOL, "dir", {})
    return host


def _store(host: lxdlib.Host):  # type: ignore[no-untyped-def]
    return host.volumes.store


def _put(host: lxdlib.Host, key: str, text: str, owner: int = 0) -> None:
    path = host.volumes[key].path / "f"
    path.write_text(text)
    os.chown(path, owner, owner)


def _cli(host: lxdlib.Host, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                           str(host.paths.root), "storage", "volume", *args],
                          capture_output=True, text=True, timeout=120)


def _on_disk(host: lxdlib.Host, pool: str) -> list[str]:
    return sorted(host.pool(pool).list_volumes("custom"))


def _hidden(host: lxdlib.Host, pool: str) -> list[str]:
    """What a rename or delete in progress keeps beside the records (none once settled)."""
    d = host.paths.volume_records / pool
    return sorted(e for e in os.listdir(d) if e.startswith(".")) if d.is_dir() else []


# -- rename ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_rename_moves_data_and_config(vols: lxdlib.Host, pool: str) -> None:
    cfg = {"user.k": "v", **({"size": "64MiB"} if pool == "default" else {})}
    vols.volumes.create(f"{pool}/v1", cfg, description="d")
    _put(vols, f"{pool}/v1", "hello", owner=1000)
    r = _cli(vols, "rename", pool, "v1", "v2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == 'Renamed storage volume from "v1" to "v2"\n'
    v = vols.volumes[f"{pool}/v2"]
    assert v.config == cfg and v.description == "d"
    assert (v.path / "f").read_text() == "hello" and (v.path / "f").stat().st_uid == 1000
    assert "v1" not in _store(vols).names(pool)
    assert _on_disk(vols, pool) == ["v2"] and _hidden(vols, pool) == []
    assert v.rename("v1").name == "v1"  # the model's verb
    assert _store(vols).names(pool) == ["v1"]


def test_rename_refusals_change_nothing(vols: lxdlib.Host) -> None:
    s = _store(vols)
    s.create("default", "a")
    s.create("default", "b")
    _put(vols, "default/a", "a")
    with pytest.raises(AlreadyExists):
        s.rename("default", "a", "b")
    r = _cli(vols, "rename", "default", "a", "b")
    assert r.stderr == "Error: Volume by that name already exists\n"  # LXD's words
    with pytest.raises(AlreadyExists):
        s.rename("default", "a", "a")
    with pytest.raises(NotFound):
        s.rename("default", "nope", "c")
    with pytest.raises(InvalidName):
        s.rename("default", "a", "x/y")
    with pytest.raises(InvalidName):
        s.rename("default", "a", "bad\nname")
    # an instance (stopped) or a profile naming the volume: refused (LXD 5.0 refuses while a
    # running instance uses it and rewrites stopped users' devices; lxdlib refuses any user)
    vols.create("busybox", "c1")
    s.attach("default", "a", "c1", "/data")
    with pytest.raises(InUse, match="c1"):
        s.rename("default", "a", "c")
    s.detach("default", "a", "c1")
    vols.profiles.create("pv", {}, {"d": {"type": "disk", "pool": "default", "source": "a",
                                          "path": "/d"}})
    r = _cli(vols, "rename", "default", "a", "c")
    assert r.returncode != 0 and "profiles/pv" in r.stderr
    assert s.names("default") == ["a", "b"] and _on_disk(vols, "default") == ["a", "b"]
    assert (s.path("default", "a") / "f").read_text() == "a"
    assert _hidden(vols, "default") == []
    vols.profiles.delete("pv")
    s.rename("default", "a", "c")
    assert s.names("default") == ["b", "c"]


def test_a_pool_or_volume_name_that_is_no_path_component_reaches_no_record(
        vols: lxdlib.Host) -> None:
    """The store's verbs take the pool and volume names as path components of the records:
    ``..`` or a ``/`` in them is refused (``InvalidName``) before a path is made, so no verb
    reads or writes another object's record (an instance's, here) through them."""
    s = _store(vols)
    vols.create("busybox", "c1")
    rec = vols.paths.instance_dir("c1") / "instance.yaml"
    before = rec.read_bytes()
    pool = os.path.relpath(rec.parent, vols.paths.volume_records)  # ../containers/c1
    for verb in (lambda: s.get(pool, "instance"),
                 lambda: s.update(pool, "instance", None, "written through a volume"),
                 lambda: s.set(pool, "instance", "user.k", "v"),
                 lambda: s.create_snapshot(pool, "instance"),
                 lambda: s.get("default", "custom/../../" + pool + "/instance"),
                 lambda: s.update("default", "custom/../x", None, "d")):
        with pytest.raises(InvalidName):
            verb()
    r = _cli(vols, "show", pool, "instance")
    assert r.returncode != 0 and "invalid storage pool name" in r.stderr, r
    assert rec.read_bytes() == before


# -- copy ------------------------------------------------------------------------------------------
def test_copy_within_btrfs_pool_is_independent_with_its_limit(vols: lxdlib.Host) -> None:
    s = _store(vols)
    s.create("default", "src", {"size": "16MiB", "user.k": "v"}, description="d")
    _put(vols, "default/src", "one", owner=1000)
    r = _cli(vols, "copy", "default/src", "default/dst")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Storage volume copied successfully!\n"
    dst = vols.volumes["default/dst"]
    assert dst.config == {"size": "16MiB", "user.k": "v"} and dst.description == "d"
    assert (dst.path / "f").read_text() == "one" and (dst.path / "f").stat().st_uid == 1000
    (dst.path / "f").write_text("two")
    assert (s.path("default", "src") / "f").read_text() == "one"
    # the copy's own limit: 24 MiB do not fit in 16
    big = subprocess.run(["dd", "if=/dev/urandom", f"of={dst.path / 'big'}", "bs=1M",
                          "count=24", "conv=fsync"], capture_output=True, text=True)
    assert big.returncode != 0, "the copy has no quota"
    assert vols.volumes["default/src"].copy("dst2").config == dst.config  # the model's verb


def test_a_refused_description_leaves_the_quota(vols: lxdlib.Host) -> None:
    """``update`` with a new size and a description it refuses changes nothing: the
    description is checked before the quota is set, not after (the record stayed old, the
    pool's limit did not)."""
    s = _store(vols)
    s.create("default", "hddq", {"size": "16MiB"})
    with pytest.raises(lxdlib.InvalidArgument, match="description"):
        s.update("default", "hddq", {"size": "64MiB"}, description="a\rb")
    assert vols.volumes["default/hddq"].config == {"size": "16MiB"}
    big = subprocess.run(["dd", "if=/dev/urandom", f"of={s.path('default', 'hddq') / 'big'}",
                          "bs=1M", "count=24", "conv=fsync"], capture_output=True, text=True)
    assert big.returncode != 0, "the quota was raised by a refused update"


@pytest.mark.parametrize(("src", "dst"), [("default", DIR_POOL), (DIR_POOL, "default")])
def test_copy_across_pools(vols: lxdlib.Host, src: str, dst: str) -> None:
    s = _store(vols)
    s.create(src, "v", {"user.k": "v"}, description="d")
    _put(vols, f"{src}/v", "hello", owner=1000)
    (s.path(src, "v") / "sub").mkdir()
    r = _cli(vols, "copy", f"{src}/v", f"{dst}/w", "--volume-only")
    assert r.returncode == 0, r.stderr
    w = vols.volumes[f"{dst}/w"]
    assert w.config == {"user.k": "v"} and w.description == "d"
    assert (w.path / "f").read_text() == "hello" and (w.path / "f").stat().st_uid == 1000
    assert (w.path / "sub").is_dir()
    assert os.stat(w.path).st_mode & 0o777 == os.stat(s.path(src, "v")).st_mode & 0o777
    assert _on_disk(vols, dst) == ["w"]


def test_copy_refusals_leave_nothing(vols: lxdlib.Host) -> None:
    s = _store(vols)
    s.create("default", "a", {"size": "16MiB"})
    s.create("default", "b")
    _put(vols, "default/b", "b")
    with pytest.raises(AlreadyExists):
        s.copy("default", "a", "default", "b")
    r = _cli(vols, "copy", "default/a", "default/b")
    assert r.stderr == "Error: Volume by that name already exists\n"  # LXD's words
    assert (s.path("default", "b") / "f").read_text() == "b"
    with pytest.raises(NotFound):
        s.copy("default", "nope", "default", "c")
    with pytest.raises(NotFound):
        s.copy("default", "a", "nopool", "c")
    with pytest.raises(InvalidName):
        s.copy("default", "a", "default", "x/y")
    with pytest.raises(StorageError, match="no quotas"):  # a dir pool cannot hold a size
        s.copy("default", "a", DIR_POOL, "c")
    r = _cli(vols, "copy", "default/a", "c")
    assert r.returncode != 0
    assert r.stderr.strip() == "Error: No storage pool for target volume specified"
    assert s.names("default") == ["a", "b"] and _on_disk(vols, "default") == ["a", "b"]
    assert s.names(DIR_POOL) == [] and _on_disk(vols, DIR_POOL) == []


def test_rename_and_copy_on_zfs(vols: lxdlib.Host,
                                zfs_daemon: ZfsDaemons) -> None:  # noqa: F811
    """zfs: a dataset rename, a ``send | receive`` copy with its quota; files zfs-fuse keeps
    shifted on disk stay so within the pool and are shifted back on the way to btrfs, which
    maps at mount time."""
    zpool = f"lxdz{secrets.token_hex(3)}"
    vols.create_pool("zp", "zfs", {"size": "512MiB", "zfs.pool_name": zpool})
    s = _store(vols)
    try:
        s.create("zp", "a", {"size": "32MiB"})
        _put(vols, "zp/a", "z")
        s.prepare_for("zp", "a", "nobody", 100000)  # as a start of an instance would
        s.rename("zp", "a", "b")
        assert _on_disk(vols, "zp") == ["b"] and (s.path("zp", "b") / "f").read_text() == "z"
        s.copy("zp", "b", "zp", "c")
        c = s.get("zp", "c")["config"]
        assert c == {"size": "32MiB", IDMAP_LAST: "100000"}
        assert (s.path("zp", "c") / "f").stat().st_uid == 100000
        quota = subprocess.run(["zfs", "get", "-Hpo", "value", "quota", f"{zpool}/custom/c"],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert quota == str(32 << 20)
        s.copy("zp", "b", "default", "d")
        assert s.get("default", "d")["config"] == {"size": "32MiB"}
        f = s.path("default", "d") / "f"
        assert f.read_text() == "z" and f.stat().st_uid == 0
    finally:
        for v in s.names("zp"):
            s.delete("zp", v)
        vols.delete_pool("zp")


# -- info ------------------------------------------------------------------------------------------
def test_info_prints_lxds_lines(vols: lxdlib.Host) -> None:
    s = _store(vols)
    s.create("default", "v", {"size": "100MiB"}, description="hello")
    r = _cli(vols, "info", "default", "v")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:4] == ["Name: v", "Description: hello", "Type: custom",
                         "Content type: filesystem"]
    assert lines[4].startswith("Usage: ") and lines[4].endswith("iB")  # btrfs qgroups are on
    assert lines[5:] == ["Total: 100.00MiB"]
    s.create(DIR_POOL, "w")
    r = _cli(vols, "info", DIR_POOL, "w")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:3] == ["Name: w", "Type: custom", "Content type: filesystem"]
    assert "Total" not in r.stdout and "Description" not in r.stdout
    assert vols.volumes[f"{DIR_POOL}/w"].info()["total"] is None
    r = _cli(vols, "info", "default", "nope")
    assert r.returncode != 0 and "not found" in r.stderr


# -- kill -9 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_crash_points_rename(vols: lxdlib.Host, pool: str) -> None:
    s = _store(vols)
    s.create(pool, "a", {"user.k": "v"})
    _put(vols, f"{pool}/a", "data")
    points = ["volume.rename.withdrawn", "volume.rename.intent", "volume.rename.moved",
              "volume.rename.recorded"]
    for i, point in enumerate(points):
        die_at(vols, point, f"h.volumes.store.rename({pool!r}, 'a', 'b')")
        fresh = lxdlib.Host(vols.paths.root)
        fs = fresh.volumes.store
        want = "b" if point == "volume.rename.recorded" else "a"
        # the next call: a listing, or (every other time) a look-up of one of the names
        if i % 2 == 0:
            assert _found(fs, pool, "a") == (want == "a"), point
            assert _on_disk(fresh, pool) == [want], point
        assert fs.names(pool) == [want], point
        assert _on_disk(fresh, pool) == [want], point
        assert _hidden(fresh, pool) == [], point
        assert fs.get(pool, want)["config"] == {"user.k": "v"}, point
        assert (fs.path(pool, want) / "f").read_text() == "data", point
        if want == "b":
            fs.rename(pool, "b", "a")


def _found(store, pool: str, name: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        store.get(pool, name)
    except NotFound:
        return False
    return True


@pytest.mark.parametrize(("src", "dst"), [("default", "default"), ("default", DIR_POOL)])
def test_crash_point_copy(vols: lxdlib.Host, src: str, dst: str) -> None:
    s = _store(vols)
    s.create(src, "a")
    _put(vols, f"{src}/a", "data")
    die_at(vols, "volume.copy.made", f"h.volumes.store.copy({src!r}, 'a', {dst!r}, 'b')")
    fresh = lxdlib.Host(vols.paths.root).volumes.store
    assert "b" not in fresh.names(dst)  # the listing removes the copy's debris
    assert "b" not in _on_disk(vols, dst)
    fresh.copy(src, "a", dst, "b")  # and the name is free again
    assert (fresh.path(dst, "b") / "f").read_text() == "data"


# -- a copy against changes of its source ----------------------------------------------------------
#: A copy that stops itself (``SIGSTOP``) once it has read its source's record, just before the
#: pool clones the volume: the test changes the source meanwhile and resumes it (``SIGCONT``)
_PAUSED_COPY = """
import os, signal, sys, lxdlib
from lxdlib.storage.dir import DirPool
real = DirPool.copy_custom_volume
def paused(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGSTOP)
    return real(self, *args, **kwargs)
DirPool.copy_custom_volume = paused
lxdlib.Host(sys.argv[1]).volumes.store.copy(sys.argv[2], "src", sys.argv[2], "dst")
"""

#: The source deleted and made again under its name, with other config and other files
_REMADE = """
import sys, lxdlib
s = lxdlib.Host(sys.argv[1]).volumes.store
s.delete(sys.argv[2], "src")
s.create(sys.argv[2], "src", {"user.gen": "2"})
(s.path(sys.argv[2], "src") / "f").write_text("gen2")
"""


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("pool", ["default", DIR_POOL])
def test_copy_sees_its_source_whole_while_it_is_remade(vols: lxdlib.Host, pool: str) -> None:
    """A copy holds its source's lock from its read of the record to the end of the clone:
    a delete of the source (and a new volume under its name) waits, and the copy is of one
    volume, record and files, not the old one's config over the new one's data."""
    s = _store(vols)
    s.create(pool, "src", {"user.gen": "1"})
    _put(vols, f"{pool}/src", "gen1")
    root = str(vols.paths.root)
    copy = subprocess.Popen([sys.executable, "-c", _PAUSED_COPY, root, pool],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    remake = None
    try:
        deadline = time.monotonic() + 60
        while _state(copy.pid) != "T":
            assert copy.poll() is None, copy.communicate()
            assert time.monotonic() < deadline, "the copy never reached its clone"
            time.sleep(0.02)
        remake = subprocess.Popen([sys.executable, "-c", _REMADE, root, pool],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            remake.wait(timeout=5)  # done at once when nothing holds the source's lock
        os.kill(copy.pid, signal.SIGCONT)
        _out, err = copy.communicate(timeout=120)
        assert copy.returncode == 0, err
        _out, err = remake.communicate(timeout=120)
        assert remake.returncode == 0, err
    finally:
        for p in (copy, remake):
            if p is not None and p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGCONT)
                    p.kill()
                p.wait(timeout=30)
    dst = vols.volumes[f"{pool}/dst"]
    assert (dst.config["user.gen"], (dst.path / "f").read_text()) == ("1", "gen1")
    src = vols.volumes[f"{pool}/src"]
    assert (src.config["user.gen"], (src.path / "f").read_text()) == ("2", "gen2")


def test_verbs_after_a_killed_delete(vols: lxdlib.Host) -> None:
    """A delete killed after it withdrew the record: the next delete or rename of that volume
    (run first, before any listing put the record back) finishes; a look-up while a live delete
    holds the withdrawal finds no volume. (Each recursed without end before.)"""
    from lxdlib.state import lock
    from lxdlib.volumes import WITHDRAW_LOCK
    s = _store(vols)
    s.create("default", "a")
    s.create("default", "b")
    die_at(vols, "volume.withdrawn", "h.volumes.store.delete('default', 'a')")
    assert _hidden(vols, "default") == [".a.away"]
    s.delete("default", "a")
    die_at(vols, "volume.withdrawn", "h.volumes.store.delete('default', 'b')")
    s.rename("default", "b", "c")
    assert s.names("default") == ["c"] and _on_disk(vols, "default") == ["c"]
    assert _hidden(vols, "default") == []
    record = vols.paths.volume_records / "default" / "c.yaml"
    with lock(vols.paths, WITHDRAW_LOCK, "default.c"):  # as a delete under way holds it
        os.rename(record, record.with_name(".c.away"))
        with pytest.raises(NotFound):
            s.get("default", "c")
        os.rename(record.with_name(".c.away"), record)
    assert s.get("default", "c")["name"] == "c"
