"""Copies and moves against real pools: copy-on-write within btrfs, btrfs send/receive between
btrfs pools, file copies to dir and (shifted) zfs pools, zfs send/receive, snapshots copied,
fresh identity, the copy template trigger, refresh, renames and moves between pools."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator

import btrfsutil
import pytest

import lxdlib
from lxdlib import record
from lxdlib.copy import move_to_pool
from tests.integration import invariants
from tests.integration.storage_fixtures import ZfsDaemons, die_at, zfs_daemon, zfs_daemons

pytestmark = pytest.mark.root
__all__ = ["zfs_daemon", "zfs_daemons"]  # fixtures used by name


@pytest.fixture
def bridge() -> Iterator[str]:
    """A plain host bridge for bridged nics (nothing is started on it)."""
    name = f"lxtc{secrets.token_hex(3)}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def cat(inst: lxdlib.Instance, path: str) -> str:
    return inst.exec(["cat", path]).text


def test_copy_running_instance_same_pool(host: lxdlib.Host, bridge: str) -> None:
    host.profiles.create("extra", {"user.from-profile": "yes"}, {})
    src = host.launch("busybox", "src", devices={
        "eth0": {"type": "nic", "nictype": "bridged", "parent": bridge, "name": "eth0"}})
    src.wait_ready()
    src.exec(["sh", "-c", "echo one > /root/f"], check=True)
    src.snapshots.create("s0")
    src.exec(["sh", "-c", "echo two > /root/f"], check=True)
    src.snapshots.create("s1", expires_at=record.now().replace(year=2040))
    src.exec(["sh", "-c", "echo live > /root/f"], check=True)
    c = host.copy("src", "dst")  # the source keeps running
    assert src.state == "RUNNING" and c.state == "STOPPED"
    pool = host.pool("default")
    vol = pool.volume_path("containers", "dst")
    assert btrfsutil.is_subvolume(vol)  # a btrfs snapshot: copy-on-write
    assert c.snapshots.names() == ["s0", "s1"] and pool.list_snapshots("dst") == ["s0", "s1"]
    assert c.snapshots["s1"].expires_at == src.snapshots["s1"].expires_at
    assert c.snapshots["s1"].created_at == src.snapshots["s1"].created_at
    sc, cc = src.config, c.config
    assert cc["volatile.uuid"] != sc["volatile.uuid"]
    # a new machine to cloud-init too; both ids made at creation, as LXD makes them
    assert cc["volatile.cloud-init.instance-id"] != sc["volatile.cloud-init.instance-id"]
    assert uuid.UUID(sc["volatile.cloud-init.instance-id"]) != uuid.UUID(sc["volatile.uuid"])
    assert cc["volatile.eth0.hwaddr"] != sc["volatile.eth0.hwaddr"]
    assert cc["volatile.base_image"] == sc["volatile.base_image"]
    assert "volatile.last_state.power" not in cc
    assert c.snapshots["s0"].config["volatile.eth0.hwaddr"] == cc["volatile.eth0.hwaddr"]
    c.start()
    c.wait_ready()
    assert cat(c, "/root/f") == "live\n"
    assert cat(c, "/etc/hostname").strip() == "dst"  # the copy template trigger ran
    assert "volatile.apply_template" not in c.config
    c.exec(["sh", "-c", "echo changed > /root/f"], check=True)
    assert cat(src, "/root/f") == "live\n"  # independent of the source
    c.snapshots.restore("s0")
    assert cat(c, "/root/f") == "one\n"
    # from a snapshot: that snapshot's content and config, no snapshots
    fs = host.copy("src/s1", "fromsnap")
    assert fs.snapshots.names() == []
    fs.start()
    assert cat(fs, "/root/f") == "two\n"
    with pytest.raises(lxdlib.InvalidArgument):
        host.copy("src/s1", "bad", instance_only=True)
    with pytest.raises(lxdlib.NotFound):
        host.copy("src/nope", "bad")
    with pytest.raises(lxdlib.AlreadyExists):
        host.copy("src", "dst")
    with pytest.raises(lxdlib.InvalidName):
        host.copy("src", "bad_name")
    # options: instance only, ephemeral, profiles, config, devices, isolated idmap
    o = host.copy("src", "opts", instance_only=True, ephemeral=True,
                  profiles=["default", "extra"], config={"user.x": "1",
                                                         "security.idmap.isolated": "true"},
                  devices={"root": {"type": "disk", "path": "/", "pool": "default",
                                    "size": "300MiB"}})
    assert o.snapshots.names() == [] and o.ephemeral
    assert o.profiles == ["default", "extra"]
    assert o.expanded_config["user.from-profile"] == "yes" and o.config["user.x"] == "1"
    assert o.devices["root"]["size"] == "300MiB"
    assert o.config["volatile.idmap.base"] != sc["volatile.idmap.base"]
    o.start()
    o.wait_ready()
    assert cat(o, "/root/f") == "live\n"
    assert o.exec(["id", "-u"]).text.strip() == "0"
    o.stop(force=True)
    assert "opts" not in host.instances  # ephemeral copy: deleted when it stopped
    with pytest.raises(lxdlib.NotFound):
        host.copy("src", "bad", profiles=["nope"])
    assert sorted(host.instances.names()) == ["dst", "fromsnap", "src"]
    invariants.check(host)


def test_copy_between_pools_and_move(host: lxdlib.Host, zfs_daemon: ZfsDaemons) -> None:
    host.create_pool("bt2", "btrfs", {"size": "1GiB"})
    host.create_pool("dp", "dir", {})
    host.create_pool("zp", "zfs", {"size": "512MiB",
                                   "zfs.pool_name": f"lxtc{secrets.token_hex(3)}"})
    src = host.launch("busybox", "src")
    src.wait_ready()
    src.exec(["sh", "-c", "echo one > /root/f; echo x > /root/u; chown 1000:1000 /root/u; "
              "chmod 666 /root/u"], check=True)
    src.snapshots.create("s0")
    src.exec(["sh", "-c", "echo two > /root/f"], check=True)
    src.snapshots.create("s1")
    src.exec(["sh", "-c", "echo live > /root/f"], check=True)

    def verify(inst: lxdlib.Instance, pool: str) -> None:
        assert inst.record().pool == pool
        assert host.pool(pool).list_snapshots(inst.name) == ["s0", "s1"]
        inst.start()
        inst.wait_ready()
        assert cat(inst, "/root/f") == "live\n"
        assert inst.exec(["stat", "-c", "%u:%g", "/root/u"]).text.strip() == "1000:1000"
        if pool != "zp":  # zfs rolls back to the latest snapshot only
            inst.snapshots.restore("s0")
            assert cat(inst, "/root/f") == "one\n"
        inst.stop(force=True)

    verify(host.copy("src", "onbt2", pool="bt2"), "bt2")  # btrfs send/receive
    verify(host.copy("src", "ondir", pool="dp"), "dp")  # files
    z = host.copy("src", "onzfs", pool="zp")  # files, owners shifted on disk
    verify(z, "zp")
    zc = host.copy("onzfs", "zfscopy")  # zfs send/receive within the pool
    verify(zc, "zp")
    # move between pools: a stopped instance with its snapshots; the old pool keeps nothing
    src.stop(force=True)
    with pytest.raises(lxdlib.InvalidArgument):
        move_to_pool(host.ctx, "src", "default")
    moved = move_to_pool(host.ctx, "src", "zp")
    assert "src" not in host.pool("default").list_volumes("containers")  # type: ignore
    verify(moved, "zp")
    back = host.move("src", pool="bt2")
    verify(back, "bt2")
    back.start()
    with pytest.raises(lxdlib.WrongState):
        move_to_pool(host.ctx, "src", "default")
    back.stop(force=True)
    invariants.check(host)


def test_refresh_updates_an_existing_copy(host: lxdlib.Host) -> None:
    src = host.create("busybox", "src")
    vol = host.pool("default").volume_path("containers", "src")
    (vol / "rootfs" / "root" / "f").write_text("one\n")
    src.snapshots.create("s0")
    dst = host.copy("src", "dst")
    ident = {k: v for k, v in dst.config.items() if k.startswith("volatile.")}
    (vol / "rootfs" / "root" / "f").write_text("two\n")
    src.snapshots.create("s1")
    src.set_config("user.new", "1")
    with pytest.raises(lxdlib.AlreadyExists):
        host.copy("src", "dst")
    host.copy("src", "dst", refresh=True)
    assert dst.snapshots.names() == ["s0", "s1"]
    assert dst.config["user.new"] == "1"
    assert {k: v for k, v in dst.config.items() if k.startswith("volatile.")} == ident
    dvol = host.pool("default").volume_path("containers", "dst")
    assert (dvol / "rootfs" / "root" / "f").read_text() == "two\n"
    src.snapshots.delete("s0")
    host.copy("src", "dst", refresh=True)
    assert dst.snapshots.names() == ["s1"]
    assert host.pool("default").list_snapshots("dst") == ["s1"]
    invariants.check(host)


def test_copy_and_move_commands(host: lxdlib.Host) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                               str(host.paths.root), *args], capture_output=True, text=True,
                              timeout=120)
    host.create_pool("dp", "dir", {})
    c = host.create("busybox", "c1")
    c.snapshots.create("s0")
    r = run("copy", "c1", "c2", "-c", "user.k=v", "-d", "root,size=200MiB", "--instance-only")
    assert r.returncode == 0, r.stderr
    c2 = host.instances["c2"]
    assert c2.config["user.k"] == "v" and c2.devices["root"]["size"] == "200MiB"
    assert c2.snapshots.names() == []
    assert run("copy", "c1", "c3", "-s", "dp", "--start").returncode == 0
    assert host.instances["c3"].record().pool == "dp" and host.instances["c3"].running
    r = run("copy", "c1", "c2")
    assert r.returncode == 1 and "already exists" in r.stderr
    assert run("move", "c1", "c4").returncode == 0
    assert host.instances["c4"].snapshots.names() == ["s0"]
    assert run("move", "c4", "-s", "dp").returncode == 0
    assert host.instances["c4"].record().pool == "dp"
    assert host.pool("dp").list_snapshots("c4") == ["s0"]
    r = run("move", "c3", "-s", "default")
    assert r.returncode == 1 and "stop it first" in r.stderr
    with contextlib.suppress(Exception):
        host.instances["c3"].stop(force=True)
    invariants.check(host)


@pytest.mark.parametrize("point", ["commit.prepared", "create.rendered"])
def test_a_copy_killed_beside_its_clone_leaves_nothing(host: lxdlib.Host, point: str) -> None:
    """On btrfs a copy renders its liblxc config and writes its record (unnamed) on a thread
    while its clone is made (``lxdlib.background``). Killed there, the clone made or not
    (``commit.prepared``), or after the clone with the record still unnamed
    (``create.rendered``): the next call finds a directory without a record and removes it
    and the volume, and the name can be copied to again."""
    src = host.create("busybox", "c1")
    src.snapshots.create("s0")
    die_at(host, point, "h.copy('c1', 'c2', instance_only=True)")
    fresh = lxdlib.Host(host.paths.root)
    assert fresh.instances.names() == ["c1"]  # the listing settles what the kill left
    assert not fresh.pool("default").volume_exists("containers", "c2")
    assert not fresh.paths.instance_dir("c2").exists()
    invariants.check(fresh)
    copy = fresh.copy("c1", "c2", instance_only=True)
    assert copy.record().snapshots == [] and fresh.instances.names() == ["c1", "c2"]
    invariants.check(fresh)
