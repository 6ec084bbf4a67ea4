"""DHCP, DNS and reachability end to end: a client in a network namespace behind a veth on the
test's own bridge talks to the network's dnsmasq (traffic never leaves the bridge)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.network_fixtures import (
    NetEnv,
    dnsmasq_pid,
    free_subnet,
    netenv_for,
)

pytestmark = pytest.mark.root


@pytest.fixture
def netenv(tmp_path: Path) -> Iterator[NetEnv]:
    yield from netenv_for(tmp_path)


def _in_ranges(addr: str, gw: ipaddress.IPv4Interface) -> bool:
    ip = ipaddress.IPv4Address(addr)
    return ip in gw.network and ip not in (gw.ip, gw.network.network_address,
                                           gw.network.broadcast_address)


def test_dynamic_lease_and_ping(netenv: NetEnv) -> None:
    gw = free_subnet()
    name = netenv.bridge_name()
    netenv.manager.create(name, {"ipv4.address": str(gw)})
    ns, _ = netenv.plug(name, mac="02:00:00:12:34:56")

    got = netenv.dhcp(ns)

    assert got is not None, "udhcpc got no lease"
    assert _in_ranges(got, gw)
    leases = netenv.manager.leases(name)
    assert [(lease["hwaddr"], lease["address"], lease["type"]) for lease in leases] == \
        [("02:00:00:12:34:56", got, "dynamic")]
    assert leases[0]["expiry"] > 0
    ping = netenv.in_ns(ns, "/bin/busybox", "ping", "-c", "1", "-W", "5", str(gw.ip))
    assert ping.returncode == 0, ping.stdout + ping.stderr
    counters = netenv.manager.info(name)["counters"]
    assert counters["packets_received"] > 0 and counters["bytes_sent"] > 0


def test_static_host_entry_and_dns(netenv: NetEnv) -> None:
    gw = free_subnet()
    name = netenv.bridge_name()
    netenv.manager.create(name, {"ipv4.address": str(gw), "dns.domain": "lxdtest"})
    mac = "02:00:00:ab:cd:ef"
    fixed = str(gw.network.network_address + 50)
    netenv.manager.dhcp_host_add(name, "c1/eth0", mac, fixed, "c1")
    ns, _ = netenv.plug(name, mac=mac)

    assert netenv.dhcp(ns) == fixed

    (lease,) = netenv.manager.leases(name)
    assert (lease["address"], lease["hostname"], lease["type"]) == (fixed, "c1", "static")
    look = netenv.in_ns(ns, "/bin/busybox", "nslookup", "c1.lxdtest", str(gw.ip))
    assert look.returncode == 0 and fixed in look.stdout, look.stdout + look.stderr
    look = netenv.in_ns(ns, "/bin/busybox", "nslookup", "_gateway.lxdtest", str(gw.ip))
    assert str(gw.ip) in look.stdout.split("Name:")[-1], look.stdout + look.stderr


def test_static_entry_change_reaches_running_dnsmasq(netenv: NetEnv) -> None:
    gw = free_subnet()
    name = netenv.bridge_name()
    netenv.manager.create(name, {"ipv4.address": str(gw)})
    pid = dnsmasq_pid(netenv.paths, name)
    mac = "02:00:00:00:00:77"
    netenv.manager.dhcp_host_add(name, "c2/eth0", mac, str(gw.network.network_address + 60))
    netenv.manager.dhcp_host_add(name, "c2/eth0", mac, str(gw.network.network_address + 61))
    ns, _ = netenv.plug(name, mac=mac)

    assert netenv.dhcp(ns) == str(gw.network.network_address + 61)
    assert dnsmasq_pid(netenv.paths, name) == pid  # re-read on SIGHUP, not restarted

    netenv.manager.dhcp_host_remove(name, "c2/eth0")
    assert "c2" not in (netenv.paths.run / "networks" / name / "dnsmasq.hosts").read_text()
    assert netenv.manager.leases(name)[0]["type"] == "dynamic"


def test_dnsmasq_drops_privileges_when_it_can_read_its_files() -> None:
    # pytest's tmp_path sits under 0700 directories, which an unprivileged dnsmasq cannot
    # search; this root lives in a world-searchable directory instead.
    base = Path(tempfile.mkdtemp(prefix="lxdlib-nettest-", dir="/var/tmp"))
    os.chmod(base, 0o711)
    env = NetEnv(base / "root")
    try:
        gw = free_subnet()
        name = env.bridge_name()
        env.manager.create(name, {"ipv4.address": str(gw)})
        pid = dnsmasq_pid(env.paths, name)
        assert pid is not None
        status = Path(f"/proc/{pid}/status").read_text()
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        assert uid != 0
        mac = "02:00:00:00:00:88"
        fixed = str(gw.network.network_address + 70)
        env.manager.dhcp_host_add(name, "c3/eth0", mac, fixed)  # re-read as that user
        ns, _ = env.plug(name, mac=mac)
        assert env.dhcp(ns) == fixed
    finally:
        leaks = env.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    assert not leaks
