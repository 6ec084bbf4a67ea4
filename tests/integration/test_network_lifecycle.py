"""Managed networks against the real kernel, dnsmasq and nftables: create, inspect, update,
recover, rename, delete, and the refusals that must leave nothing behind."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxdlib.errors import (
    AlreadyExists,
    InUse,
    InvalidConfig,
    InvalidName,
    NetworkError,
    NotFound,
)
from tests.integration.network_fixtures import (
    NetEnv,
    dnsmasq_pid,
    free_subnet,
    host_subnets,
    link_exists,
    listening,
    netenv_for,
    nft_table_exists,
    run,
    wait_dead,
)

pytestmark = pytest.mark.root


@pytest.fixture
def netenv(tmp_path: Path) -> Iterator[NetEnv]:
    yield from netenv_for(tmp_path)


def addresses(name: str) -> set[str]:
    (link,) = json.loads(run("ip", "-j", "addr", "show", "dev", name).stdout)
    return {f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]
            if a.get("scope") == "global"}


def link_flags(name: str) -> list[str]:
    (link,) = json.loads(run("ip", "-j", "link", "show", "dev", name).stdout)
    return list(link["flags"])


def nft_table(name: str) -> str:
    return run("nft", "list", "table", "inet", f"lxdlib_{name}").stdout


def assert_gone(env: NetEnv, name: str, pid: int | None) -> None:
    assert not link_exists(name)
    assert not nft_table_exists(f"lxdlib_{name}")
    if pid is not None:
        assert wait_dead(pid)
    assert not (env.paths.networks / f"{name}.yaml").exists()
    assert not (env.paths.run / "networks" / name).exists()


def test_create_fixed_subnet_then_delete(netenv: NetEnv) -> None:
    gw = free_subnet()
    name = netenv.bridge_name()

    rec = netenv.manager.create(name, {"ipv4.address": str(gw), "user.note": "x"},
                                description="test net")

    assert rec == {"name": name, "type": "bridge", "managed": True, "description": "test net",
                   "config": {"ipv4.address": str(gw), "user.note": "x"}}
    assert netenv.manager.get(name) == rec
    assert [r["name"] for r in netenv.manager.list()] == [name]
    assert addresses(name) == {str(gw)}
    assert "UP" in link_flags(name)
    pid = dnsmasq_pid(netenv.paths, name)
    assert pid is not None
    socks = listening(pid)
    assert f"{gw.ip}:53/udp" in socks and f"{gw.ip}:53/tcp" in socks
    assert f"0.0.0.0%{name}:67/udp" in socks
    table = nft_table(name)
    assert f'iifname "{name}" accept' in table
    assert "masquerade" not in table  # a fixed subnet defaults to ipv4.nat=false
    info = netenv.manager.info(name)
    assert info["state"] == "up" and info["mtu"] == 1500
    assert {"family": "inet", "address": str(gw.ip), "netmask": "24", "scope": "global"} \
        in info["addresses"]

    netenv.manager.delete(name)

    assert_gone(netenv, name, pid)
    assert netenv.manager.list() == []
    with pytest.raises(NotFound):
        netenv.manager.get(name)


def test_auto_subnet_with_nat(netenv: NetEnv) -> None:
    before = [n for n in host_subnets() if n.version == 4]
    name = netenv.bridge_name()

    rec = netenv.manager.create(name)

    iface = ipaddress.IPv4Interface(rec["config"]["ipv4.address"])
    assert iface.network.prefixlen == 24 and iface.ip == iface.network.network_address + 1
    assert iface.network.subnet_of(ipaddress.IPv4Network("10.0.0.0/8"))
    assert not any(iface.network.overlaps(n) for n in before)
    assert rec["config"]["ipv4.nat"] == "true"
    assert addresses(name) == {str(iface)}
    table = nft_table(name)
    assert f"ip saddr {iface.network} ip daddr != {iface.network} masquerade" in table
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"

    second = netenv.bridge_name()
    other = netenv.manager.create(second, {"ipv4.nat": "off"})
    assert not ipaddress.IPv4Interface(other["config"]["ipv4.address"]).network.overlaps(
        iface.network)
    assert "masquerade" not in nft_table(second)


def test_ipv6_auto(netenv: NetEnv) -> None:
    name = netenv.bridge_name()
    rec = netenv.manager.create(name, {"ipv4.address": "none", "ipv6.address": "auto",
                                       "ipv6.nat": "false"})
    v6 = ipaddress.IPv6Interface(rec["config"]["ipv6.address"])
    assert v6.network.prefixlen == 64
    assert v6.network.subnet_of(ipaddress.IPv6Network("fd00::/8"))
    assert addresses(name) == {str(v6)}
    pid = dnsmasq_pid(netenv.paths, name)
    assert pid is not None
    assert f"[{v6.ip}]:53/udp" in listening(pid)


@pytest.mark.parametrize("bad", ["", "a" * 16, "a/b", "a b", "a:b", ".", "..", "-x", "é1",
                                 "a\nb"])
def test_invalid_names_create_nothing(netenv: NetEnv, bad: str) -> None:
    with pytest.raises(InvalidName):
        netenv.manager.create(bad, {"ipv4.address": "none"})
    assert netenv.manager.list() == []
    assert not (netenv.paths.run / "networks").exists() or \
        not any((netenv.paths.run / "networks").iterdir())


@pytest.mark.parametrize("config", [
    {"ipv4.foo": "1"},
    {"ipv4.nat": "maybe"},
    {"ipv4.address": "10.1.2.3"},
    {"ipv4.address": "10.1.2.0/24"},
    {"ipv4.address": "10.77.0.1/24", "ipv4.dhcp.ranges": "10.78.0.2-10.78.0.9"},
    {"dns.domain": "bad domain"},
    {"raw.dnsmasq": "x\0y"},
    {"user.note": "two\nlines"},
    {"bridge.mtu": "9"},
])
def test_invalid_config_creates_nothing(netenv: NetEnv, config: dict[str, str]) -> None:
    name = netenv.bridge_name()
    with pytest.raises(InvalidConfig):
        netenv.manager.create(name, config)
    assert not link_exists(name)
    assert not nft_table_exists(f"lxdlib_{name}")
    assert netenv.manager.list() == []
    assert not (netenv.paths.run / "networks" / name).exists()


def test_failed_create_is_undone(netenv: NetEnv) -> None:
    # dnsmasq refuses the raw option after the bridge and the nft table were made.
    name = netenv.bridge_name()
    with pytest.raises(NetworkError, match="dnsmasq"):
        netenv.manager.create(name, {"ipv4.address": str(free_subnet()),
                                     "raw.dnsmasq": "no-such-option=1"})
    assert not link_exists(name)
    assert not nft_table_exists(f"lxdlib_{name}")
    assert netenv.manager.list() == []
    assert not (netenv.paths.run / "networks" / name).exists()


def test_failed_update_restores_the_old_network(netenv: NetEnv) -> None:
    gw = free_subnet()
    name = netenv.bridge_name()
    rec = netenv.manager.create(name, {"ipv4.address": str(gw)})
    new_gw = free_subnet()
    with pytest.raises(NetworkError, match="dnsmasq"):
        netenv.manager.update(name, {"ipv4.address": str(new_gw),
                                     "raw.dnsmasq": "no-such-option=1"})
    assert netenv.manager.get(name) == rec
    assert addresses(name) == {str(gw)}
    pid = dnsmasq_pid(netenv.paths, name)
    assert pid is not None and f"{gw.ip}:53/udp" in listening(pid)

    rec = netenv.manager.update(name, {**rec["config"], "user.k": "v"}, description="d")
    assert rec["description"] == "d" and rec["config"]["user.k"] == "v"
    assert dnsmasq_pid(netenv.paths, name) == pid  # user keys do not restart anything


def test_duplicates_and_host_interfaces(netenv: NetEnv) -> None:
    name = netenv.bridge_name()
    netenv.manager.create(name, {"ipv4.address": str(free_subnet())})
    pid = dnsmasq_pid(netenv.paths, name)
    with pytest.raises(AlreadyExists) as exc:
        netenv.manager.create(name, {"ipv4.address": "none"})
    assert exc.value.kind == "network"
    assert dnsmasq_pid(netenv.paths, name) == pid
    with pytest.raises(AlreadyExists) as exc:
        netenv.manager.create("lo", {"ipv4.address": "none"})
    assert exc.value.kind == "interface"
    assert [r["name"] for r in netenv.manager.list()] == [name]


def test_overlap_with_existing_network_refused(netenv: NetEnv) -> None:
    gw = free_subnet()
    first = netenv.bridge_name()
    netenv.manager.create(first, {"ipv4.address": str(gw)})
    second = netenv.bridge_name()
    with pytest.raises(InvalidConfig):
        netenv.manager.create(second, {"ipv4.address": str(gw.network.network_address + 9)
                                       + "/24"})
    assert not link_exists(second)


def test_delete_in_use_changes_nothing(netenv: NetEnv) -> None:
    gw = free_subnet()
    name = netenv.bridge_name()
    rec = netenv.manager.create(name, {"ipv4.address": str(gw)})
    pid = dnsmasq_pid(netenv.paths, name)

    with pytest.raises(InUse):
        netenv.manager.delete(name, used_by=["c1", "c2"])

    assert netenv.manager.get(name) == rec
    assert addresses(name) == {str(gw)}
    assert dnsmasq_pid(netenv.paths, name) == pid
    assert nft_table_exists(f"lxdlib_{name}")


def test_update_live(netenv: NetEnv) -> None:
    gw = free_subnet()
    name = netenv.bridge_name()
    netenv.manager.create(name, {"ipv4.address": str(gw), "user.a": "1"})
    old_pid = dnsmasq_pid(netenv.paths, name)
    new_gw = free_subnet()

    rec = netenv.manager.update(name, {"ipv4.address": str(new_gw), "ipv4.nat": "yes",
                                       "bridge.mtu": "1400"})

    assert rec["config"] == {"ipv4.address": str(new_gw), "ipv4.nat": "yes",
                             "bridge.mtu": "1400"}
    assert addresses(name) == {str(new_gw)}
    assert netenv.manager.info(name)["mtu"] == 1400
    assert f"ip saddr {new_gw.network}" in nft_table(name)
    pid = dnsmasq_pid(netenv.paths, name)
    assert pid is not None and old_pid is not None and wait_dead(old_pid)
    assert f"{new_gw.ip}:53/udp" in listening(pid)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"--dhcp-option-force=26,1400" in cmdline

    with pytest.raises(InvalidConfig):
        netenv.manager.update(name, {**rec["config"], "ipv4.dhcp.ranges": "1.2.3.4-1.2.3.9"})
    assert netenv.manager.get(name) == rec
    assert dnsmasq_pid(netenv.paths, name) == pid

    rec = netenv.manager.update(name, {"ipv4.address": str(new_gw), "ipv4.nat": "",
                                       "ipv4.dhcp": "false", "dns.mode": "none"})
    assert rec["config"] == {"ipv4.address": str(new_gw), "ipv4.dhcp": "false",
                             "dns.mode": "none"}
    assert "masquerade" not in nft_table(name)
    assert dnsmasq_pid(netenv.paths, name) is None  # nothing left to serve


def test_ensure_up_restores_runtime(netenv: NetEnv) -> None:
    gw = free_subnet()
    name = netenv.bridge_name()
    netenv.manager.create(name, {"ipv4.address": str(gw), "ipv4.nat": "true"})
    pid = dnsmasq_pid(netenv.paths, name)
    assert pid is not None

    netenv.manager.ensure_up(name)  # all up: nothing is restarted
    assert dnsmasq_pid(netenv.paths, name) == pid

    os.kill(pid, signal.SIGKILL)
    assert wait_dead(pid)
    run("nft", "delete", "table", "inet", f"lxdlib_{name}")
    netenv.manager.ensure_up(name)
    new_pid = dnsmasq_pid(netenv.paths, name)
    assert new_pid is not None and new_pid != pid
    assert "masquerade" in nft_table(name)

    run("ip", "link", "del", name)  # as after a reboot
    netenv.manager.ensure_up(name)
    assert addresses(name) == {str(gw)}
    assert "UP" in link_flags(name)
    assert dnsmasq_pid(netenv.paths, name) is not None
    assert nft_table_exists(f"lxdlib_{name}")


def test_down_keeps_record_and_stop_all(netenv: NetEnv) -> None:
    names = [netenv.bridge_name(), netenv.bridge_name()]
    for name in names:
        netenv.manager.create(name, {"ipv4.address": str(free_subnet())})
    pids = [dnsmasq_pid(netenv.paths, name) for name in names]

    netenv.manager.down(names[0])
    assert not link_exists(names[0]) and link_exists(names[1])
    assert netenv.manager.info(names[0])["state"] == "down"
    netenv.manager.stop_all()

    for name, pid in zip(names, pids, strict=True):
        assert not link_exists(name)
        assert not nft_table_exists(f"lxdlib_{name}")
        assert pid is not None and wait_dead(pid)
    assert [r["name"] for r in netenv.manager.list()] == sorted(names)
    netenv.manager.ensure_up(names[0])
    assert link_exists(names[0])


def test_rename(netenv: NetEnv) -> None:
    gw = free_subnet()
    old = netenv.bridge_name()
    new = netenv.bridge_name()
    netenv.manager.create(old, {"ipv4.address": str(gw)})
    mac = "02:00:00:00:00:99"
    netenv.manager.dhcp_host_add(old, "c1/eth0", mac, str(gw.network.network_address + 5))
    old_pid = dnsmasq_pid(netenv.paths, old)

    netenv.manager.rename(old, new)

    assert not link_exists(old) and not nft_table_exists(f"lxdlib_{old}")
    assert old_pid is not None and wait_dead(old_pid)
    assert addresses(new) == {str(gw)}
    assert netenv.manager.get(new)["name"] == new
    with pytest.raises(NotFound):
        netenv.manager.get(old)
    assert nft_table_exists(f"lxdlib_{new}")
    assert dnsmasq_pid(netenv.paths, new) is not None
    hosts = (netenv.paths.run / "networks" / new / "hosts.d" / "c1").read_text()
    assert mac in hosts


def test_leftovers_of_a_killed_create_are_cleaned(netenv: NetEnv) -> None:
    name = netenv.bridge_name()
    # A create killed right after the link was made, before its alias was set.
    run_dir = netenv.paths.run / "networks" / name
    run_dir.mkdir(parents=True)
    (run_dir / "link-pending").write_text("")
    run("ip", "link", "add", name, "type", "bridge")

    netenv.manager.create(name, {"ipv4.address": str(free_subnet())})

    assert Path(f"/sys/class/net/{name}/ifalias").read_text().startswith("lxdlib:")
    assert not (run_dir / "link-pending").exists()

    # A create killed after everything was up but before the record was written.
    pid = dnsmasq_pid(netenv.paths, name)
    (netenv.paths.networks / f"{name}.yaml").unlink()
    gw = free_subnet()
    netenv.manager.create(name, {"ipv4.address": str(gw)})
    assert pid is not None and wait_dead(pid)
    assert addresses(name) == {str(gw)}

    # And cleanup_leftovers() does the same without a new create.
    (netenv.paths.networks / f"{name}.yaml").unlink()
    pid = dnsmasq_pid(netenv.paths, name)
    netenv.manager.cleanup_leftovers()
    assert not link_exists(name) and not run_dir.exists()
    assert pid is not None and wait_dead(pid)


def test_foreign_interface_is_never_touched(netenv: NetEnv) -> None:
    name = netenv.bridge_name()
    netenv.bridges.remove(name)
    netenv.foreign.append(name)
    run("ip", "link", "add", name, "type", "bridge")

    with pytest.raises(AlreadyExists):
        netenv.manager.create(name, {"ipv4.address": "none"})
    assert link_exists(name)

    # A record whose link is someone else's: ensure_up/delete leave that link alone.
    other_root = NetEnv(netenv.root.parent / "other")
    other = other_root.bridge_name()
    try:
        other_root.manager.create(other, {"ipv4.address": "none", "dns.mode": "none"})
        netenv.manager.paths.networks.mkdir(parents=True, exist_ok=True)
        (netenv.paths.networks / f"{other}.yaml").write_text(
            (other_root.paths.networks / f"{other}.yaml").read_text())
        with pytest.raises(Exception, match="not a bridge of this lxdlib root"):
            netenv.manager.ensure_up(other)
        netenv.manager.delete(other)
        assert link_exists(other)
        assert nft_table_exists(f"lxdlib_{other}")
    finally:
        leaks = other_root.cleanup()
    assert not leaks
