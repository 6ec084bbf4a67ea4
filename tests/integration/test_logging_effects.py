"""What a user sees with ``logging.getLogger("lxdlib").setLevel(DEBUG)``: the real mounts, loop
devices, subvolumes, bridges, nft tables and dnsmasq of a loop-backed btrfs pool and a managed
network, each named in a record, and the pool and bridge lifecycle at INFO."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxdlib.state import Paths
from lxdlib.storage import create_pool, delete_pool
from lxdlib.storage.loop import find_loops
from tests.integration.network_fixtures import NetEnv, dnsmasq_pid, free_subnet, netenv_for
from tests.integration.storage_fixtures import (
    fill_image,
    needs_root,
    paths,
    teardown_pool,
    unique,
)

__all__ = ["paths"]  # fixture used by name

pytestmark = [pytest.mark.root, needs_root]


def messages(caplog: pytest.LogCaptureFixture, logger: str, level: int = logging.DEBUG
             ) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


def test_btrfs_pool_effects_logged(paths: Paths, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="lxdlib")
    name = unique("lg")
    pool = create_pool(paths, name, "btrfs", {"size": "1GiB"})
    try:
        mountpoint = paths.pools / name
        loop_file = paths.disks / f"{name}.img"
        (loop,) = find_loops(loop_file)
        assert f"attached {loop_file} to loop device {loop}" in messages(
            caplog, "lxdlib.storage.loop")
        assert any(re.fullmatch(rf"mounted {loop} on {mountpoint} \(btrfs, options "
                                r"'user_subvol_rm_allowed,nodev'\)", m)
                   for m in messages(caplog, "lxdlib.storage.loop")), caplog.text
        assert f"storage pool {name} created (driver btrfs, config " \
            f"{pool.config})" in messages(caplog, "lxdlib.storage.pools", logging.INFO)

        caplog.clear()
        fp = "a" * 64
        pool.create_image_volume(fp, fill_image())
        pool.create_instance_volume("c1", image=fp)
        pool.create_snapshot("c1", "snap0")
        btrfs = messages(caplog, "lxdlib.storage.btrfs")
        # each subvolume is made under a temporary name, then renamed into place
        assert any(re.fullmatch(rf"btrfs pool {name}: created subvolume "
                                rf"{mountpoint}/images/\.tmp-\d+-[0-9a-f]+-{fp}", m)
                   for m in btrfs), btrfs
        assert any(m.startswith(f"btrfs pool {name}: subvolume {mountpoint}/images/.tmp-")
                   and m.endswith(" made read-only") for m in btrfs), btrfs
        # instances and snapshots are btrfs snapshots made under their final names (a snapshot
        # appears whole or not at all, see BtrfsPool._snapshot_into_place)
        done = btrfs + messages(caplog, "lxdlib.storage.dir")
        assert f"btrfs pool {name}: created instance volume c1 from image {fp} at " \
            f"{mountpoint}/containers/c1" in done, done
        assert f"btrfs pool {name}: created snapshot c1/snap0 of {mountpoint}/containers/c1 at " \
            f"{mountpoint}/containers-snapshots/c1/snap0" in done, done

        pool.set_quota("containers", "c1", 64 * 1024 * 1024)
        assert f"btrfs pool {name}: quotas enabled on {mountpoint}" in messages(
            caplog, "lxdlib.storage.btrfs", logging.INFO)
        assert f"btrfs pool {name}: qgroup limit of {mountpoint}/containers/c1 set to " \
            f"{64 * 1024 * 1024} bytes" in messages(caplog, "lxdlib.storage.btrfs")

        caplog.clear()
        pool.delete_instance_volume("c1")
        pool.delete_image_volume(fp)
        delete_pool(paths, name)
        assert f"unmounted {mountpoint}" in messages(caplog, "lxdlib.storage.loop")
        assert f"detached loop device {loop} from {loop_file}" in messages(
            caplog, "lxdlib.storage.loop")
        assert f"btrfs pool {name}: removed loop file {loop_file}" in messages(
            caplog, "lxdlib.storage.btrfs")
        assert f"storage pool {name} deleted" in messages(caplog, "lxdlib.storage.pools",
                                                          logging.INFO)
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        teardown_pool(paths, name)


@pytest.fixture
def netenv(tmp_path: Path) -> Iterator[NetEnv]:
    yield from netenv_for(tmp_path)


def test_network_effects_logged(netenv: NetEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="lxdlib")
    gw = free_subnet()
    name = netenv.bridge_name()
    netenv.manager.create(name, {"ipv4.address": str(gw), "ipv4.nat": "true"})
    pid = dnsmasq_pid(netenv.paths, name)
    assert pid is not None
    assert any(m.startswith(f"bridge {name} created (hwaddr ")
               for m in messages(caplog, "lxdlib.network.bridge", logging.INFO)), caplog.text
    bridge = messages(caplog, "lxdlib.network.bridge")
    assert f"bridge {name}: address {gw} added" in bridge
    assert f"bridge {name}: set up" in bridge
    assert f"nft table inet lxdlib_{name} loaded (chains: filter_fwd, nat_post)" in messages(
        caplog, "lxdlib.network.nat")
    assert any(m.startswith(f"dnsmasq for {name} started (pid {pid}, ")
               for m in messages(caplog, "lxdlib.network.dnsmasq")), caplog.text

    caplog.clear()
    netenv.manager.delete(name)
    assert f"dnsmasq (pid {pid}, {netenv.paths.run / 'networks' / name}) stopped" in messages(
        caplog, "lxdlib.network.dnsmasq")
    assert f"nft table inet lxdlib_{name} deleted" in messages(caplog, "lxdlib.network.nat")
    assert f"bridge {name} deleted" in messages(caplog, "lxdlib.network.bridge", logging.INFO)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
