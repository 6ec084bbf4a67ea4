"""The models against real containers, bridges and pools: a profile changed through its model
reaches running instances, a network's model applies to the live bridge, a volume's model attaches
to a running instance, and an exec that runs out of time is killed with what it started."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time

import pytest

import lxdlib
from lxdlib import runtime
from tests.integration.network_fixtures import free_subnet, link_exists, run, unique

pytestmark = pytest.mark.root


def mem(c: lxdlib.Instance) -> str | None:
    key = "memory.limit_in_bytes" if runtime.cgroup_version() == 1 else "memory.max"
    return runtime.cgroup_get(c.handle(), key)


def test_profile_model_update_reapplies_to_running_users(host: lxdlib.Host) -> None:
    lim = host.profiles.create("lim", {"limits.memory": "128MiB"}, {})
    c = host.launch("busybox", "mdl-p1", profiles=["default", "lim"])
    stopped = host.create("busybox", "mdl-p2", profiles=["default", "lim"])
    assert mem(c) == str(128 << 20)
    lim.update(config={"limits.memory": "96MiB"})
    assert mem(c) == str(96 << 20)  # the running instance took it at once
    assert str(96 << 20) in (host.paths.instance_dir(stopped.name) / "config").read_text()
    # the same through the collection, and a read-modify-write on a fresh Host
    lxdlib.Host(host.paths.root).profiles["lim"].set_config("limits.memory", "80MiB")
    assert mem(c) == str(80 << 20) and lim.config == {"limits.memory": "80MiB"}
    assert sorted(lim.used_by) == ["mdl-p1", "mdl-p2"]
    # a change the running instance cannot take: reported for it, saved for the others
    c.exec(["sh", "-c", "head -c 40000000 /dev/zero > /dev/shm/fill"], check=True)
    with pytest.raises(lxdlib.ProfileApplyError) as err:
        host.profiles.update("lim", config={"limits.memory": "16MiB"})
    assert list(err.value.failures) == ["mdl-p1"]
    assert lim.config == {"limits.memory": "16MiB"}
    with pytest.raises(lxdlib.InUse):
        lim.delete()


def _addresses(name: str) -> set[str]:
    (link,) = json.loads(run("ip", "-j", "addr", "show", "dev", name).stdout)
    return {f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]
            if a.get("scope") == "global"}


def _mtu(name: str) -> int:
    (link,) = json.loads(run("ip", "-j", "link", "show", "dev", name).stdout)
    return int(link["mtu"])


def test_network_model_update_applies_live(host: lxdlib.Host) -> None:
    name, renamed = unique("mdn"), unique("mdr")
    first = free_subnet()
    net = host.networks.create(name, {"ipv4.address": str(first), "ipv4.nat": "false"})
    try:
        assert isinstance(net, lxdlib.Network) and net == host.networks[name]
        assert name in host.networks and net.type == "bridge" and net.managed
        assert net["config"]["ipv4.address"] == str(first)  # the dicts' spelling still works
        assert net.get("description") == "" and net.get("nope", 1) == 1
        assert _addresses(name) == {str(first)}
        second = free_subnet()
        while second.network == first.network:
            second = free_subnet()
        net.update(config={"ipv4.address": str(second), "ipv4.nat": "false"},
                   description="moved")
        assert _addresses(name) == {str(second)} and net.description == "moved"
        net.update(description="kept config")
        assert net.config["ipv4.address"] == str(second)
        net.set_config("bridge.mtu", "1400")
        assert _mtu(name) == 1400
        with pytest.raises(lxdlib.InvalidConfig):
            net.update(config={"bridge.mtu": "10"})  # refused: nothing changes
        assert _mtu(name) == 1400 and net.config["bridge.mtu"] == "1400"
        assert net.info()["state"] == "up" and net.leases() == []

        prof = host.profiles.create("withnet", {}, {
            "eth0": {"type": "nic", "network": name, "name": "eth0"}})
        assert net.used_by == ["profile:withnet"]
        with pytest.raises(lxdlib.InUse):
            net.delete()
        with pytest.raises(lxdlib.InUse):
            net.rename(renamed)
        prof.delete()
        moved = net.rename(renamed)
        assert link_exists(renamed) and not link_exists(name) and not net.exists
        assert moved.config["bridge.mtu"] == "1400"
        moved.delete()
        assert not link_exists(renamed) and renamed not in host.networks
    finally:
        for n in (name, renamed):
            with contextlib.suppress(lxdlib.NotFound):
                host.ctx.networks.delete(n)


def test_volume_model_attaches_to_a_running_instance(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "mdl-v1")
    vol = host.pools["default"].volumes.create("data", {"size": "64MiB"}, "scratch")
    assert vol == host.volumes["default/data"] and vol.used_by == []
    (vol.path / "hello").write_text("from the host\n")
    vol.attach(c.name, "/srv/data")  # hot-plugged
    assert c.exec(["cat", "/srv/data/hello"]).text == "from the host\n"
    assert vol.used_by == [f"/1.0/instances/{c.name}"]
    assert c.devices["data"] == {"type": "disk", "pool": "default", "source": "data",
                                 "path": "/srv/data"}
    vol.update(config={"size": "128MiB", "user.k": "v"})
    assert host.volumes["default/data"].config == {"size": "128MiB", "user.k": "v"}
    with pytest.raises(lxdlib.InUse):
        vol.delete()
    vol.detach(c.name)
    assert c.exec(["test", "-e", "/srv/data/hello"]).returncode != 0
    vol.delete()
    assert "default/data" not in host.volumes and not vol.exists


def _container_processes(c: lxdlib.Instance) -> list[str]:
    return [line for line in c.exec(["ps"]).text.splitlines()[1:] if "ps" not in line.split()]


def test_exec_timeout_raises_after_killing_what_the_command_started(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "mdl-t1")
    # init alone (what its boot runs has ended)
    assert c.wait_for(lambda: len(_container_processes(c)) == 1, timeout=10)
    start = time.monotonic()
    with pytest.raises(TimeoutError) as err:
        # 3 s: room for the shell to say "started" on a loaded machine (it once did not in 1)
        c.exec(["sh", "-c", "echo started; sleep 300 & sleep 301; echo never"], timeout=3)
    assert time.monotonic() - start < 15  # the sleeps held the pipes: they had to go too
    assert isinstance(err.value, lxdlib.Timeout) and isinstance(err.value, lxdlib.ExecTimeout)
    assert err.value.instance == "mdl-t1" and err.value.result.stdout == b"started\n"
    assert "'mdl-t1'" in str(err.value) and "sleep 301" in str(err.value)
    # killed at once; the one that had been reparented is reaped by the container's init
    assert c.wait_for(lambda: len(_container_processes(c)) == 1, timeout=10), \
        _container_processes(c)
    assert c.exec(["true"], timeout=10).ok  # in time: a plain result
    with pytest.raises(lxdlib.ExecError, match=r"command 'false' in instance 'mdl-t1'"):
        c.exec(["false"], check=True, timeout=10)


def test_snapshot_model(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "mdl-s1")
    s = c.snapshots.create("s0", description="first")
    assert isinstance(s, lxdlib.Snapshot) and s == c.snapshots["s0"] == c.snapshots.get("s0")
    assert "s0" in c.snapshots and len(c.snapshots) == 1 and list(c.snapshots) == [s]
    assert s.instance == "mdl-s1" and s.description == "first" and s.expires_at is None
    when = dt.datetime(2040, 1, 1, tzinfo=dt.UTC)
    s.update(expires_at=when)
    assert c.snapshots["s0"].expires_at == when and s.record().expires_at == when
    s.update()  # nothing given: nothing changes
    assert s.expires_at == when
    moved = s.rename("s1")
    assert not s.exists and moved.exists and c.snapshots.names() == ["s1"]
    copy = moved.copy("mdl-s2")
    assert isinstance(copy, lxdlib.Instance) and copy.snapshots.names() == []
    copy.delete(force=True)
    moved.delete()
    assert len(c.snapshots) == 0
    with pytest.raises(lxdlib.NotFound, match="mdl-s1/s1"):
        c.snapshots["s1"]
