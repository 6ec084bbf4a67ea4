"""The nic ``security.*`` keys, tested by real spoofing between containers on a bridge the test
makes (``nf<hex>``): MAC takeover, ARP/IP takeover, a third container's TCP stream, forged source
addresses, DHCP requests and releases in another MAC's name, rogue router advertisements, IPv6
source filtering, port isolation, and the rules following the nic (start, stop, live update,
hot-unplug, network delete). Traffic only flows between the test's own containers
and its own bridge."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import lxdlib
from lxdlib.devices.nic import default_host_name
from lxdlib.network import filtering

pytestmark = pytest.mark.root


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=60)


def _bridge_table(net: str) -> str:
    """``nft list table bridge lxdlib_<net>`` ('' when there is no such table)."""
    proc = _run("nft", "list", "table", "bridge", f"lxdlib_{net}")
    return proc.stdout if proc.returncode == 0 else ""


@contextlib.contextmanager
def _network(host: lxdlib.Host, config: dict[str, str]) -> Iterator[str]:
    name = f"nf{secrets.token_hex(4)}"
    host.networks.create(name, {"ipv4.nat": "false", **config})
    try:
        yield name
    finally:
        for inst in host.instances.list():
            with contextlib.suppress(Exception):
                inst.delete(force=True)
        with contextlib.suppress(Exception):
            host.networks.delete(name)
        for family in ("bridge", "inet"):
            _run("nft", "delete", "table", family, f"lxdlib_{name}")
        if _run("ip", "link", "show", name).returncode == 0:
            _run("ip", "link", "del", name)


@pytest.fixture
def net(host: lxdlib.Host) -> Iterator[str]:
    """A managed IPv4 bridge without NAT (DHCP on)."""
    with _network(host, {"ipv4.address": "auto"}) as name:
        yield name


def sh(c: lxdlib.Instance, script: str, timeout: float = 30) -> str:
    return c.exec(["sh", "-c", script], timeout=timeout).stdout.decode()


def pings(c: lxdlib.Instance, args: str) -> bool:
    """Whether ``ping <args>`` inside ``c`` got a reply (busybox ping exits 0 then)."""
    return c.exec(["sh", "-c", f"ping {args}"], timeout=30).returncode == 0


def ipv4_of(c: lxdlib.Instance) -> str:
    assert c.wait_for(lambda: bool(c.addresses()), timeout=30), c.network_state()
    return c.addresses()[0]


def mac_of(c: lxdlib.Instance) -> str:
    return sh(c, "cat /sys/class/net/eth0/address").strip()


def nic(net: str, **keys: str) -> dict[str, dict[str, str]]:
    return {"eth0": {"type": "nic", "network": net, "name": "eth0", **keys}}


def listen(c: lxdlib.Instance, port: int) -> None:
    """A one-shot TCP listener that writes what it receives to /tmp/got-<port>."""
    sh(c, f"rm -f /tmp/got-{port}; nc -l -p {port} > /tmp/got-{port} 2>/dev/null &")


def got(c: lxdlib.Instance, port: int) -> str:
    return sh(c, f"cat /tmp/got-{port} 2>/dev/null")


def send(c: lxdlib.Instance, address: str, port: int, text: str) -> None:
    sh(c, f"echo {text} | nc -w 3 {address} {port}")


def wait_got(c: lxdlib.Instance, port: int, text: str, timeout: float = 10) -> bool:
    return c.wait_for(lambda: text in got(c, port), timeout=timeout, interval=0.2)


def echo_requests_received(c: lxdlib.Instance) -> int:
    """InEchos of the container's /proc/net/snmp (its own network namespace)."""
    lines = [ln.split() for ln in sh(c, "cat /proc/net/snmp").splitlines()
             if ln.startswith("Icmp:")]
    return int(lines[1][lines[0].index("InEchos")])


def test_mac_filtering_stops_mac_takeover(host: lxdlib.Host, net: str) -> None:
    """The spoofer takes the victim's MAC and IP and keeps sending: the bridge never learns the
    victim's MAC behind the spoofer's port, and a third container's TCP stream reaches the
    victim only."""
    victim = host.launch("busybox", "victim", devices=nic(net))
    spoofer = host.launch("busybox", "spoofer", devices=nic(net, **{
        "security.mac_filtering": "true"}))
    peer = host.launch("busybox", "peer", devices=nic(net))
    vip, vmac = ipv4_of(victim), mac_of(victim)
    sip, pip = ipv4_of(spoofer), ipv4_of(peer)
    sveth = default_host_name(host.paths.root, "spoofer", "eth0")
    # the filter lets the nic's own traffic through
    assert pings(peer, f"-c 1 -W 3 {sip}")

    listen(victim, 5002)
    listen(spoofer, 5002)
    sh(spoofer, f"ip link set eth0 down; ip link set eth0 address {vmac}; "
                f"ip addr flush dev eth0; ip addr add {vip}/24 dev eth0; ip link set eth0 up; "
                f"(arping -U -c 20 -I eth0 {vip} & ping -i 0.2 -c 50 {pip} &) >/dev/null 2>&1")
    time.sleep(2)
    fdb = _run("bridge", "fdb", "show", "br", net, "dev", sveth).stdout
    assert vmac not in fdb, fdb  # the bridge did not learn the victim's MAC on that port
    send(peer, vip, 5002, "secret-for-victim")
    assert wait_got(victim, 5002, "secret-for-victim"), got(victim, 5002)
    assert "secret" not in got(spoofer, 5002)


def test_ipv4_filtering_stops_arp_and_ip_takeover(host: lxdlib.Host, net: str) -> None:
    """With ipv4_filtering (and no static address: the network pins the one it leased), the
    spoofer cannot poison a peer's ARP cache with the victim's IP, cannot take over a TCP
    stream meant for the victim, and packets with a forged source never reach the peer."""
    victim = host.launch("busybox", "victim", devices=nic(net))
    spoofer = host.launch("busybox", "spoofer", devices=nic(net, **{
        "security.ipv4_filtering": "true"}))
    peer = host.launch("busybox", "peer", devices=nic(net))
    vip, vmac = ipv4_of(victim), mac_of(victim)
    sip, smac = ipv4_of(spoofer), mac_of(spoofer)
    pip, pmac = ipv4_of(peer), mac_of(peer)
    pinned = {lease["hwaddr"]: (lease["address"], lease["type"])
              for lease in host.networks.leases(net)}
    assert pinned[smac] == (sip, "static"), pinned
    # its own address works (ARP and IP both ways)
    assert pings(peer, f"-c 1 -W 3 {sip}")

    assert pings(peer, f"-c 1 -W 3 {vip}")
    time.sleep(1.2)  # past the neighbour table's locktime: an update would be taken now
    listen(victim, 5003)
    listen(spoofer, 5003)
    sh(spoofer, f"ip addr add {vip}/32 dev eth0; arping -U -c 3 -I eth0 {vip}; "
                f"arping -A -c 2 -I eth0 {vip}", timeout=30)
    neigh = sh(peer, f"ip neigh show {vip}")
    assert smac not in neigh and vmac in neigh, neigh
    send(peer, vip, 5003, "stream-for-victim")
    assert wait_got(victim, 5003, "stream-for-victim"), got(victim, 5003)
    assert "stream" not in got(spoofer, 5003)

    # a forged source address (the peer's MAC given statically, so no ARP is needed)
    before = echo_requests_received(peer)
    sh(spoofer, f"ip neigh replace {pip} lladdr {pmac} dev eth0 nud permanent; "
                f"ping -c 3 -i 0.2 -W 1 -I {vip} {pip}")
    assert echo_requests_received(peer) == before
    sh(spoofer, f"ping -c 2 -i 0.2 -W 1 -I {sip} {pip}")
    assert echo_requests_received(peer) >= before + 2  # its own source still passes


def forge_dhcp(c: lxdlib.Instance, requests: list[dict[str, str]]) -> dict[str, str]:
    """Send ``requests`` (see `tests.integration.dhcp_forge`) from ``c``'s eth0, in its network
    namespace, as its root could; the leases its discovers got, by ``chaddr``."""
    proc = subprocess.run(
        ["nsenter", f"--net=/proc/{c.pid}/ns/net", sys.executable, "-m",
         "tests.integration.dhcp_forge", "eth0"],
        input=json.dumps(requests), capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    answers: dict[str, str] = json.loads(proc.stdout)
    return answers


@pytest.mark.parametrize("key", ["security.mac_filtering", "security.ipv4_filtering"])
def test_filtered_nic_cannot_ask_or_release_as_another_mac(host: lxdlib.Host, net: str,
                                                           key: str) -> None:
    """dnsmasq knows a client by the MAC inside its DHCP message (and by its client identifier),
    not by the frame's: a filtered spoofer that forges only those fields (its frames keep its
    own source MAC) gets no lease for made-up MACs or identifiers (which could take every free
    address of the network) and cannot release the victim's lease; its own DHCP still
    works."""
    victim = host.launch("busybox", "victim", devices=nic(net))
    spoofer = host.launch("busybox", "spoofer", devices=nic(net, **{key: "true"}))
    vip, vmac = ipv4_of(victim), mac_of(victim)
    sip, smac = ipv4_of(spoofer), mac_of(spoofer)
    gw = host.networks.get(net)["config"]["ipv4.address"].split("/")[0]
    made_up = [f"02:aa:bb:cc:dd:{i:02x}" for i in range(4)]

    got = forge_dhcp(spoofer, [{"chaddr": m} for m in made_up] +
                     [{"chaddr": vmac, "type": "release", "ciaddr": vip, "server": gw}])

    assert got == {}, got
    leases = {lease["hwaddr"]: lease["address"] for lease in host.networks.leases(net)}
    assert leases == {vmac: vip, smac: sip}, leases
    # what it sends as itself still gets an answer, and its one address however many client
    # identifiers it makes up
    assert forge_dhcp(spoofer, [{"chaddr": smac}]) == {smac: sip}
    for i in range(4):
        assert forge_dhcp(spoofer, [{"chaddr": smac, "clientid": f"ff{i:08x}"}]) == {smac: sip}
    leases = {lease["hwaddr"]: lease["address"] for lease in host.networks.leases(net)}
    assert leases == {vmac: vip, smac: sip}, leases


def _forge_in(c: lxdlib.Instance, *args: str) -> subprocess.Popen[str]:
    """`tests.integration.dhcp_forge` with ``args`` in ``c``'s network namespace, started."""
    return subprocess.Popen(
        ["nsenter", f"--net=/proc/{c.pid}/ns/net", sys.executable, "-m",
         "tests.integration.dhcp_forge", "eth0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2])


@pytest.mark.parametrize("key", ["security.mac_filtering", "security.ipv4_filtering"])
def test_a_rogue_dhcp_server_reaches_others_only_without_ipv4_filtering(
        host: lxdlib.Host, net: str, key: str) -> None:
    """A container that answers DHCP as a server from its own address, naming itself the
    gateway (a neighbour taking its offer sends it all its traffic): with MAC filtering alone
    the offers are its own frames and reach the neighbour (as in LXD); with ipv4_filtering,
    which lets the nic send as a DHCP client only, they never leave the nic — the IPv4
    counterpart of the router adverts IPv6 filtering drops."""
    victim = host.launch("busybox", "victim", devices=nic(net))
    spoofer = host.launch("busybox", "spoofer", devices=nic(net, **{key: "true"}))
    ipv4_of(victim)
    sip = ipv4_of(spoofer)
    listener = _forge_in(victim, "listen", sip, "4")
    time.sleep(1)
    sender = _forge_in(spoofer, "offer", sip)
    assert sender.wait(timeout=30) == 0, sender.communicate()
    out, err = listener.communicate(timeout=30)
    assert listener.returncode == 0, err
    assert (int(out) > 0) == (key == "security.mac_filtering"), out


@pytest.mark.parametrize("key", ["security.mac_filtering", "security.ipv6_filtering"])
def test_a_rogue_router_advert_reaches_others_only_without_ipv6_filtering(
        host: lxdlib.Host, key: str) -> None:
    """A container that advertises itself as a router with a prefix of its own: with MAC
    filtering alone the advert is its own frame and passes (as in LXD), and a neighbour takes
    an address of that prefix; with ipv6_filtering it never leaves the nic."""
    rogue = "2001:db8:bad:1::"
    with _network(host, {"ipv4.address": "none", "ipv6.address": "auto"}) as name:
        victim = host.launch("busybox", "victim", devices=nic(name))
        spoofer = host.launch("busybox", "spoofer", devices=nic(name, **{key: "true"}))
        assert victim.wait_for(lambda: bool(victim.addresses("inet6")), timeout=30)
        proc = subprocess.run(
            ["nsenter", f"--net=/proc/{spoofer.pid}/ns/net", sys.executable, "-m",
             "tests.integration.dhcp_forge", "eth0", "ra", rogue],
            capture_output=True, text=True, timeout=60, check=False,
            cwd=Path(__file__).resolve().parents[2])
        assert proc.returncode == 0, proc.stderr

        def rogue_address() -> bool:
            return any(a.startswith("2001:db8:bad:1:") for a in victim.addresses("inet6"))
        taken = victim.wait_for(rogue_address, timeout=5, interval=0.2)
        assert taken == (key == "security.mac_filtering"), victim.addresses("inet6")


def test_a_pinned_address_the_network_no_longer_serves_is_pinned_again(
        host: lxdlib.Host, net: str) -> None:
    """ipv4_filtering's pinned address is kept across starts, but not once the network's
    subnet moved away from it (as LXD allocates again then): the next start pins an address
    of the new subnet, and the container reaches its new gateway through its filter."""
    c = host.launch("busybox", "c", devices=nic(net, **{"security.ipv4_filtering": "true"}))
    old = ipv4_of(c)
    c.stop(force=True)
    config = host.networks.get(net)["config"]
    while True:  # a new subnet, free on the host, as `auto` picks them
        host.networks.update(net, {**config, "ipv4.address": "auto"})
        gw = ipaddress.IPv4Interface(host.networks.get(net)["config"]["ipv4.address"])
        if ipaddress.IPv4Address(old) not in gw.network:
            break
    c.start()
    assert c.wait_for(lambda: bool(c.addresses()) and
                      ipaddress.IPv4Address(c.addresses()[0]) in gw.network, timeout=30), \
        c.network_state()
    new = c.addresses()[0]
    assert f"ip saddr {new}" in _bridge_table(net) and old not in _bridge_table(net)
    assert c.wait_for(lambda: pings(c, f"-c 1 -W 1 {gw.ip}"), timeout=15)


def test_ipv6_filtering_allows_only_the_slaac_address(host: lxdlib.Host) -> None:
    """ipv6_filtering on a network with an IPv6 /64: only the nic's SLAAC address may send
    (router advertisements from the instance are dropped too); a second address is refused.
    ipv4_filtering on a network with DHCPv4 off blocks IPv4 altogether."""
    with _network(host, {"ipv4.address": "auto", "ipv4.dhcp": "false",
                         "ipv6.address": "auto"}) as name:
        c = host.launch("busybox", "c6", devices=nic(name, **{
            "security.ipv6_filtering": "true", "security.ipv4_filtering": "true"}))
        # no DHCPv4 here: the image's udhcpc would keep flushing eth0's addresses between tries
        sh(c, "kill $(pidof udhcpc)")
        gw6 = host.networks.get(name)["config"]["ipv6.address"].split("/")[0]
        assert c.wait_for(lambda: bool(c.addresses("inet6")), timeout=30), c.network_state()
        own = c.addresses("inet6")[0]
        rules = _bridge_table(name)
        assert f"ip6 saddr {own}" in rules and "nd-router-advert drop" in rules, rules
        assert c.wait_for(lambda: pings(c, f"-c 1 -W 1 {gw6}"),
                          timeout=15)  # the address may still be tentative (DAD) at first
        # its own link-local address too (the router is known by its link-local one)
        assert c.wait_for(lambda: "via fe80" in sh(c, "ip -6 route show default"), timeout=15)
        router = sh(c, "ip -6 route show default").split()[2]
        assert c.wait_for(lambda: pings(c, f"-c 1 -W 1 -I eth0 {router}"), timeout=15)
        other = ipaddress.IPv6Interface(f"{own}/64").network.network_address + 0xdead_beef
        sh(c, f"ip -6 addr add {other}/64 dev eth0")  # busybox ip has no nodad: wait for DAD
        assert c.wait_for(lambda: str(other) in (out := sh(c, "ip -6 addr show dev eth0"))
                          and "tentative" not in out, timeout=15)
        assert not pings(c, f"-c 2 -W 2 -I {other} {gw6}")
        # IPv4: no DHCP on the network, so no address to allow: all IPv4 and ARP dropped
        gw4 = host.networks.get(name)["config"]["ipv4.address"].split("/")[0]
        base = gw4.rsplit(".", 1)[0]
        sh(c, f"ip addr add {base}.77/24 dev eth0")
        assert not pings(c, f"-c 1 -W 2 {gw4}")
        # the same packets pass once the filters are switched off live: they were the filter's
        c.update(devices=nic(name))
        assert not filtering.installed(name, default_host_name(host.paths.root, "c6", "eth0"))
        assert c.wait_for(lambda: pings(c, f"-c 1 -W 1 -I {other} {gw6}"), timeout=15)
        assert c.wait_for(lambda: pings(c, f"-c 1 -W 1 {gw4}"), timeout=15)


def test_port_isolation(host: lxdlib.Host, net: str) -> None:
    """Two isolated ports cannot reach each other; each reaches the bridge (host) and a
    non-isolated port. Switched off live, they talk again."""
    gw = host.networks.get(net)["config"]["ipv4.address"].split("/")[0]
    a = host.launch("busybox", "a", devices=nic(net, **{"security.port_isolation": "true"}))
    b = host.launch("busybox", "b", devices=nic(net, **{"security.port_isolation": "true"}))
    o = host.launch("busybox", "o", devices=nic(net))
    aip, bip, oip = ipv4_of(a), ipv4_of(b), ipv4_of(o)
    aveth = default_host_name(host.paths.root, "a", "eth0")
    assert "isolated on" in _run("ip", "-d", "link", "show", aveth).stdout
    assert not pings(a, f"-c 2 -W 1 {bip}")
    assert not pings(b, f"-c 2 -W 1 {aip}")
    for c in (a, b):
        assert pings(c, f"-c 1 -W 3 {gw}")
        assert pings(c, f"-c 1 -W 3 {oip}")
    b.update(devices=nic(net, **{"security.port_isolation": "false"}))
    assert pings(a, f"-c 1 -W 3 {bip}")
    a.restart(force=True)  # the hook sets the flag again at every start
    assert "isolated on" in _run("ip", "-d", "link", "show", aveth).stdout


def test_filters_follow_the_nic(host: lxdlib.Host, net: str) -> None:
    """The nic's chain exists exactly while the nic is plugged with a filter: start (hook),
    stop, live enable/disable, hot-unplug (the nic leaves the container with it), and the
    network's delete takes the bridge table."""
    veth = default_host_name(host.paths.root, "c", "eth0")
    veth1 = default_host_name(host.paths.root, "c", "eth1")
    c = host.launch("busybox", "c", devices={**nic(net, **{"security.mac_filtering": "true"}),
                                             "eth1": {"type": "nic", "network": net,
                                                      "name": "eth1"}})
    assert filtering.installed(net, veth)
    assert mac_of(c) in _bridge_table(net) and "prerouting" in _bridge_table(net)
    c.stop(force=True)
    assert not filtering.installed(net, veth)
    c.start()
    assert filtering.installed(net, veth)
    assert "ip saddr" not in _bridge_table(net)

    devices = c.devices
    c.update(devices={**devices, "eth1": {**devices["eth1"],
                                          "security.ipv4_filtering": "true"}})
    assert filtering.installed(net, veth1) and "ip saddr" in _bridge_table(net)
    devices = c.devices
    c.update(devices={**devices, "eth0": {k: v for k, v in devices["eth0"].items()
                                          if not k.startswith("security.")}})
    assert not filtering.installed(net, veth) and filtering.installed(net, veth1)

    # hot-unplug of a filtered nic: the chain and the link go at once
    c.update(devices={"eth0": c.devices["eth0"]})
    assert not filtering.installed(net, veth1)
    assert _run("ip", "link", "show", veth1).returncode != 0
    assert "eth1" not in c.network_state()

    c.update(devices=nic(net, **{"security.mac_filtering": "true"}))
    assert filtering.installed(net, veth)
    c.delete(force=True)
    assert not filtering.installed(net, veth)
    assert _bridge_table(net) != ""  # empty table, kept with the network
    host.networks.delete(net)
    assert _bridge_table(net) == ""


def test_security_keys_validated(host: lxdlib.Host, net: str) -> None:
    """Bad values and impossible combinations are refused before anything is created."""
    with pytest.raises(lxdlib.InvalidConfig, match=r"security\.port_isolation"):
        host.launch("busybox", "bad", devices=nic(net, **{"security.port_isolation": "yes?"}))
    with pytest.raises(lxdlib.InvalidConfig, match="unmanaged parent bridge"):
        host.launch("busybox", "bad", devices={"eth0": {
            "type": "nic", "nictype": "bridged", "parent": net,
            "security.ipv4_filtering": "true"}})
    assert not host.instances.list()
