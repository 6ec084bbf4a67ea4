"""DHCP, DNS and reachability end to end: a client in a network namespace behind a veth on the
test's own bridge talks to the network's dnsmasq (traffic never leaves the bridge)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxdlib import state
from lxdlib.errors import InvalidConfig
from lxdlib.network import dhcphosts
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
    assert not (netenv.paths.run / "networks" / name / "hosts.d" / "c2").exists()
    assert netenv.manager.leases(name)[0]["type"] == "dynamic"


def wait_lease_gone(netenv: NetEnv, name: str, mac: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(lease["hwaddr"] != mac for lease in netenv.manager.leases(name)):
            return True
        time.sleep(0.05)
    return False


def test_forget_releases_leases_at_once(netenv: NetEnv) -> None:
    gw = free_subnet()
    name = netenv.bridge_name()
    netenv.manager.create(name, {"ipv4.address": str(gw)})
    pid = dnsmasq_pid(netenv.paths, name)
    run = netenv.paths.run / "networks" / name
    fixed = str(gw.network.network_address + 40)
    mac_a, mac_b = "02:00:00:00:0a:01", "02:00:00:00:0b:01"
    netenv.manager.dhcp_host_add(name, "ca/eth0", mac_a, fixed, "ca")
    ns_a, _ = netenv.plug(name, mac=mac_a)
    assert netenv.dhcp(ns_a) == fixed
    # a dynamic lease of the same instance's second nic goes too
    mac_a2 = "02:00:00:00:0a:02"
    netenv.manager.dhcp_host_add(name, "ca/eth1", mac_a2, None, "ca")
    ns_a2, _ = netenv.plug(name, mac=mac_a2)
    dynamic = netenv.dhcp(ns_a2)
    assert dynamic is not None and dynamic != fixed

    netenv.manager.dhcp_hosts_forget("ca")

    assert not (run / "hosts.d" / "ca").exists()
    assert wait_lease_gone(netenv, name, mac_a) and wait_lease_gone(netenv, name, mac_a2)
    assert mac_a not in (run / "dnsmasq.leases").read_text()
    assert dnsmasq_pid(netenv.paths, name) == pid  # released through dnsmasq, not a restart
    # and dnsmasq dropped the pin (it keeps a removed file's records until told to re-read):
    # that MAC now gets an address of dnsmasq's own choice
    again = netenv.dhcp(ns_a)
    assert again is not None and again != fixed
    # the address is free at once: another MAC pinned to it gets it (dnsmasq refuses an
    # address another client holds a lease on)
    netenv.manager.dhcp_host_add(name, "cb/eth0", mac_b, fixed, "cb")
    ns_b, _ = netenv.plug(name, mac=mac_b)
    assert netenv.dhcp(ns_b) == fixed

    # a network that is down: its lease file is edited (dnsmasq reads it when it starts)
    netenv.manager.down(name)
    assert mac_b in (run / "dnsmasq.leases").read_text()
    netenv.manager.dhcp_hosts_forget("cb")
    assert mac_b not in (run / "dnsmasq.leases").read_text()
    netenv.manager.ensure_up(name)
    assert all(lease["hwaddr"] != mac_b for lease in netenv.manager.leases(name))


def test_old_hosts_file_is_migrated(netenv: NetEnv) -> None:
    """A root made before the hosts directory kept every entry in ``dhcp-hosts.yaml``
    (rendered to one ``--dhcp-hostsfile``): the next ensure_up moves them, once."""
    gw = free_subnet()
    name = netenv.bridge_name()
    netenv.manager.create(name, {"ipv4.address": str(gw)})
    run = netenv.paths.run / "networks" / name
    for live in (True, False):
        n = 1 if live else 2
        mac, fixed = f"02:00:00:00:0c:{n}1", str(gw.network.network_address + 30 + n)
        if not live:
            netenv.manager.down(name)
        # what an older lxdlib left (as YAML: older versions wrote records so)
        (run / "dhcp-hosts.yaml").write_text(state.dump_yaml({
            f"old{n}/eth0": {"hwaddr": mac, "ipv4": fixed, "hostname": f"old{n}"},
            f"other{n}/eth0": {"hwaddr": f"02:00:00:00:0c:{n}2", "ipv4": None,
                               "hostname": f"other{n}"}}))
        (run / "dnsmasq.hosts").write_text(f"{mac},{fixed},old{n}\n")

        netenv.manager.ensure_up(name)

        assert not (run / "dhcp-hosts.yaml").exists()
        assert not (run / "dnsmasq.hosts").exists()
        assert {f"old{n}", f"other{n}"} <= {p.name for p in (run / "hosts.d").iterdir()}
        cmd = Path(f"/proc/{dnsmasq_pid(netenv.paths, name)}/cmdline").read_bytes()
        assert f"--dhcp-hostsdir={run / 'hosts.d'}".encode() in cmd.split(b"\0")
        ns, _ = netenv.plug(name, mac=mac)
        assert netenv.dhcp(ns) == fixed  # dnsmasq serves the moved entry
        assert [le["type"] for le in netenv.manager.leases(name) if le["hwaddr"] == mac] == \
            ["static"]
        netenv.manager.dhcp_hosts_forget(f"old{n}")
        assert wait_lease_gone(netenv, name, mac)
    # a moved entry still counts: another key cannot take its MAC
    with pytest.raises(InvalidConfig, match="already assigned to other1/eth0"):
        netenv.manager.dhcp_host_add(name, "new/eth0", "02:00:00:00:0c:12")


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
        env.manager.dhcp_host_add(name, "c3/eth0", mac, fixed)  # read as that user
        ns, _ = env.plug(name, mac=mac)
        assert env.dhcp(ns) == fixed
        env.manager.dhcp_hosts_forget("c3")  # SIGHUP: the directory is re-read as that user
        again = env.dhcp(ns)
        assert again is not None and again != fixed
        assert dnsmasq_pid(env.paths, name) == pid
    finally:
        leaks = env.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    assert not leaks


def _resolve(netenv: NetEnv, ns: str, fqdn: str, server: str) -> str | None:
    look = netenv.in_ns(ns, "/bin/busybox", "nslookup", fqdn, server)
    if look.returncode != 0:
        return None
    answer = look.stdout.split("Name:")[-1]
    return next((w for w in answer.split() if w.count(".") == 3 and w != server), None)


def test_removed_name_entry_waits_for_a_reread_and_harms_nothing(netenv: NetEnv) -> None:
    """An instance's name-only entry removed (its delete) is not worth dnsmasq's re-read of
    every entry at once: its MAC and name are marked instead, and other instances are served
    meanwhile. An instance made again under that name makes dnsmasq re-read first, so the name
    goes to the new instance."""
    gw = free_subnet()
    name = netenv.bridge_name()
    netenv.manager.create(name, {"ipv4.address": str(gw), "dns.domain": "lxdtest"})
    stale = netenv.paths.run / "networks" / name / dhcphosts.STALE_DIR
    mac1, mac2, mac3 = "02:00:00:0a:00:01", "02:00:00:0a:00:02", "02:00:00:0a:00:03"
    server = str(gw.ip)
    netenv.manager.dhcp_host_add(name, "a/eth0", mac1, None, "web")
    ns1, _ = netenv.plug(name, mac=mac1)
    ip1 = netenv.dhcp(ns1)
    assert ip1 and _resolve(netenv, ns1, "web.lxdtest", server) == ip1

    netenv.manager.dhcp_hosts_forget("a")  # as a delete does: the lease is released too
    assert {p.name for p in stale.iterdir()} == {"mac-" + mac1.replace(":", ""), "name-web"}
    netenv.manager.dhcp_host_add(name, "b/eth0", mac2, None, "api")
    assert {p.name for p in stale.iterdir()} == {"mac-" + mac1.replace(":", ""), "name-web"}
    ns2, _ = netenv.plug(name, mac=mac2)
    ip2 = netenv.dhcp(ns2)
    assert ip2 and _resolve(netenv, ns2, "api.lxdtest", server) == ip2

    netenv.manager.dhcp_host_add(name, "c/eth0", mac3, None, "web")  # the name comes back
    assert not any(stale.iterdir())
    ns3, _ = netenv.plug(name, mac=mac3)
    ip3 = netenv.dhcp(ns3)
    assert ip3 and _resolve(netenv, ns3, "web.lxdtest", server) == ip3
    leases = {lease["hwaddr"]: lease["hostname"] for lease in netenv.manager.leases(name)}
    assert leases == {mac2: "api", mac3: "web"}
