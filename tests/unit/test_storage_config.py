"""Pool config validation, pool name rules and volume naming: pure checks, no root needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from lxdlib.errors import InvalidArgument, InvalidConfig, InvalidName
from lxdlib.state import Paths
from lxdlib.storage import DRIVERS, create_pool, list_pools, validate_pool_name
from lxdlib.storage.btrfs import BtrfsPool
from lxdlib.storage.dir import DirPool
from lxdlib.storage.loop import _unescape_mountinfo, parse_temp_name, temp_name
from lxdlib.storage.zfs import ZfsPool


def test_drivers() -> None:
    assert set(DRIVERS) == {"dir", "btrfs", "zfs"} and DRIVERS["zfs"] is ZfsPool
    assert DRIVERS["dir"] is DirPool and DRIVERS["btrfs"] is BtrfsPool
    assert not ZfsPool.supports_idmapped_mounts and BtrfsPool.supports_idmapped_mounts
    assert DirPool.snapshot_needs_freeze and not BtrfsPool.snapshot_needs_freeze


@pytest.mark.parametrize("name", ["default", "pool1", "my_pool", "p.1", "a-b", "x" * 63, "Ü"])
def test_valid_pool_names(name: str) -> None:
    validate_pool_name(name)


@pytest.mark.parametrize("name", [
    "", "pool/", "a/b", "pool ", " pool", "a\tb", "a\nb", ".", "..", ".invalid", "-x",
    "x" * 64, "a\x00b",
])
def test_invalid_pool_names(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_pool_name(name)


@pytest.mark.parametrize(("config", "expected"), [
    ({}, {"source": ""}),
    ({"source": "/srv/pool"}, {"source": "/srv/pool"}),
    ({"source": "/srv/pool/"}, {"source": "/srv/pool"}),
])
def test_dir_config_ok(config: dict[str, str], expected: dict[str, str]) -> None:
    assert DirPool.validate_config(config) == expected


@pytest.mark.parametrize(("config", "key"), [
    ({"source": "relative"}, "source"),
    ({"size": "1GiB"}, "size"),
    ({"zfs.pool_name": "tank"}, "zfs.pool_name"),
    ({"btrfs.mount_options": "noatime"}, "btrfs.mount_options"),
    ({"bogus": "1"}, "bogus"),
    ({"source": 5}, "source"),
])
def test_dir_config_refused(config: dict[str, str], key: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        DirPool.validate_config(config)
    assert e.value.key == key


@pytest.mark.parametrize(("config", "expected"), [
    ({}, {"source": "", "size": "5GiB", "btrfs.mount_options": "user_subvol_rm_allowed"}),
    ({"size": "500MiB"}, {"source": "", "size": "500MiB",
                          "btrfs.mount_options": "user_subvol_rm_allowed"}),
    ({"size": "5GB", "btrfs.mount_options": "user_subvol_rm_allowed,compress=zstd:3,noatime"},
     {"source": "", "size": "5GB",
      "btrfs.mount_options": "user_subvol_rm_allowed,compress=zstd:3,noatime"}),
    ({"source": "/dev/vdb"}, {"source": "/dev/vdb",
                              "btrfs.mount_options": "user_subvol_rm_allowed"}),
    ({"source": "/srv/btrfs/lxd"}, {"source": "/srv/btrfs/lxd",
                                    "btrfs.mount_options": "user_subvol_rm_allowed"}),
])
def test_btrfs_config_ok(config: dict[str, str], expected: dict[str, str]) -> None:
    assert BtrfsPool.validate_config(config) == expected


@pytest.mark.parametrize(("config", "key", "reason"), [
    ({"size": "5XB"}, "size", "Invalid"),
    ({"size": "-1GiB"}, "size", "Invalid"),
    ({"size": "1.5GiB"}, "size", "Invalid"),
    ({"size": "10MiB"}, "size", "at least"),
    ({"source": "/dev/vdb", "size": "1GiB"}, "size", "loop"),
    ({"source": "disk"}, "source", "absolute"),
    ({"zfs.pool_name": "tank"}, "zfs.pool_name", "zfs driver"),
    ({"lvm.vg_name": "vg"}, "lvm.vg_name", "lvm driver"),
    ({"btrfs.mount_options": "a b"}, "btrfs.mount_options", "mount options"),
    ({"btrfs.mount_options": "a,,b"}, "btrfs.mount_options", "mount options"),
    ({"volume.size": "1GiB"}, "volume.size", "unknown"),
])
def test_btrfs_config_refused(config: dict[str, str], key: str, reason: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        BtrfsPool.validate_config(config)
    assert e.value.key == key
    assert reason in str(e.value)


@pytest.mark.parametrize(("config", "expected"), [
    ({}, {"source": "", "size": "5GiB"}),
    ({"zfs.pool_name": "tank", "size": "1GiB"},
     {"source": "", "zfs.pool_name": "tank", "size": "1GiB"}),
    ({"source": "tank/lxd"}, {"source": "tank/lxd"}),
    ({"source": "tank", "zfs.pool_name": "tank"}, {"source": "tank", "zfs.pool_name": "tank"}),
    ({"zfs.use_refquota": "true", "zfs.remove_snapshots": "no"},
     {"source": "", "size": "5GiB", "zfs.use_refquota": "true", "zfs.remove_snapshots": "no"}),
])
def test_zfs_config_ok(config: dict[str, str], expected: dict[str, str]) -> None:
    assert ZfsPool.validate_config(config) == expected


@pytest.mark.parametrize(("config", "key"), [
    ({"zfs.pool_name": "1tank"}, "zfs.pool_name"),
    ({"zfs.pool_name": "mirror0"}, "zfs.pool_name"),
    ({"zfs.pool_name": "c0d0"}, "zfs.pool_name"),
    ({"zfs.pool_name": "a b"}, "zfs.pool_name"),
    ({"source": "tank", "zfs.pool_name": "other"}, "zfs.pool_name"),
    ({"source": "tank", "size": "1GiB"}, "size"),
    ({"source": "/dev/sdb"}, "source"),
    ({"source": "tank//x"}, "source"),
    ({"size": "1MiB"}, "size"),
    ({"size": "big"}, "size"),
    ({"zfs.use_refquota": "maybe"}, "zfs.use_refquota"),
    ({"zfs.remove_snapshots": ""}, "zfs.remove_snapshots"),
    ({"btrfs.mount_options": "x"}, "btrfs.mount_options"),
    ({"zfs.clone_copy": "true"}, "zfs.clone_copy"),
])
def test_zfs_config_refused(config: dict[str, str], key: str) -> None:
    with pytest.raises(InvalidConfig) as e:
        ZfsPool.validate_config(config)
    assert e.value.key == key


def test_volume_paths_and_names(tmp_path: Path) -> None:
    pool = DirPool(Paths.at(tmp_path), "p", {"source": ""})
    assert pool.volume_path("containers", "c1") == tmp_path / "storage-pools/p/containers/c1"
    assert pool.volume_path("containers-snapshots", "c1/s1") == \
        tmp_path / "storage-pools/p/containers-snapshots/c1/s1"
    for kind, name in [("containers", "../x"), ("containers", ".tmp-1-2-x"), ("custom", ""),
                       ("images", "a/b"), ("containers-snapshots", "c1"),
                       ("containers-snapshots", "c1/s/x"), ("containers-snapshots", "c1/.s")]:
        with pytest.raises(InvalidName):
            pool.volume_path(kind, name)
    with pytest.raises(InvalidArgument):
        pool.volume_path("virtual-machines", "v")
    zpool = ZfsPool(Paths.at(tmp_path), "z", {"source": "", "zfs.pool_name": "tank"})
    assert zpool.dataset("containers", "c1") == "tank/containers/c1"
    assert zpool.dataset("containers-snapshots", "c1/s1") == "tank/containers/c1@snapshot-s1"
    assert zpool.volume_path("images", "f") == tmp_path / "storage-pools/z/images/f"


def test_temp_names_round_trip() -> None:
    name = temp_name("tmp", "web-1")
    prefix, pid, final = parse_temp_name(name) or ("", 0, "")
    assert (prefix, final) == ("tmp", "web-1") and pid > 0
    assert parse_temp_name(temp_name("aside", "a-b-c"))[2] == "a-b-c"  # type: ignore[index]
    for ordinary in ["web", ".hidden", ".tmp-x-1-a", ".other-1-ab-x", ".tmp-1-ab"]:
        assert parse_temp_name(ordinary) is None


def test_bad_input_to_create_pool_changes_nothing(tmp_path: Path) -> None:
    paths = Paths.at(tmp_path / "root")
    with pytest.raises(InvalidName):
        create_pool(paths, "bad/name", "dir", {})
    with pytest.raises(InvalidConfig) as e:
        create_pool(paths, "p1", "lvm", {})
    assert e.value.key == "driver"
    with pytest.raises(InvalidConfig):
        create_pool(paths, "p1", "btrfs", {"size": "1"})
    assert list_pools(paths) == []
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(("raw", "path"), [
    ("/plain", "/plain"),
    ("/with\\040space", "/with space"),
    ("/tab\\011and\\134backslash", "/tab\tand\\backslash"),
])
def test_mountinfo_unescape(raw: str, path: str) -> None:
    assert _unescape_mountinfo(raw) == path


@pytest.mark.parametrize("raw", [bytes(16), bytes(range(16)), b"\xff" * 16,
                                 bytes.fromhex("0123456789abcdefFEDCBA9876543210")])
def test_uuid_text_is_what_uuid_prints(raw: bytes) -> None:
    """The sysfs directory of a btrfs filesystem is named by its UUID as ``uuid`` prints it."""
    import uuid

    from lxdlib.storage.btrfs import uuid_text
    assert uuid_text(raw) == str(uuid.UUID(bytes=raw))


def test_reconfigure_changes_only_what_the_driver_can(tmp_path: Path) -> None:
    """What a pool's ``reconfigure`` refuses, before any host work (no pool is made here):
    ``dir`` changes nothing, ``zfs`` the keys it reads at each operation, ``btrfs`` neither its
    source nor a smaller or unset size."""
    paths = Paths.at(tmp_path / "root")
    d = DirPool(paths, "d", {"source": ""})
    with pytest.raises(InvalidConfig) as e:
        d.reconfigure({"source": "/elsewhere"}, frozenset())
    assert e.value.key == "source" and d.config == {"source": ""}

    zcfg = ZfsPool.validate_config({"size": "1GiB"})
    z = ZfsPool(paths, "z", dict(zcfg))
    z.reconfigure({**zcfg, "zfs.use_refquota": "true"}, frozenset())  # recorded only
    assert z.config["zfs.use_refquota"] == "true"
    for key, value in (("size", "2GiB"), ("zfs.pool_name", "other")):
        with pytest.raises(InvalidConfig) as e:
            z.reconfigure({**z.config, key: value}, frozenset())
        assert e.value.key == key
    assert z.config == {**zcfg, "zfs.use_refquota": "true"}

    bcfg = BtrfsPool.validate_config({"size": "1GiB"})
    b = BtrfsPool(paths, "b", dict(bcfg))
    with pytest.raises(InvalidConfig) as e:
        b.reconfigure({**bcfg, "source": "/dev/sdz"}, frozenset())
    assert e.value.key == "source"
    with pytest.raises(InvalidConfig, match="cannot be unset"):
        b.reconfigure({**bcfg, "size": "5GiB"}, frozenset({"size"}))
    assert b.config == bcfg


def test_storage_set_words_a_source_change_as_lxc() -> None:
    from argparse import Namespace

    from lxdlib.cli.lxdwords import lxd_text
    err = InvalidConfig("source", "cannot be changed once the storage pool is made", "/x")
    for sub in ("set", "unset", "edit"):
        assert lxd_text(err, Namespace(command="storage", storage_cmd=sub)) == \
            "Pool source cannot be changed when not in pending state"
    assert lxd_text(InvalidConfig("size", "x", "1"),
                    Namespace(command="storage", storage_cmd="set")) == str(
                        InvalidConfig("size", "x", "1"))
