"""Pure rules of managed networks: names, config validation, subnet choice, dnsmasq argv and
files, nft script rendering."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from lxdlib.errors import InvalidArgument, InvalidConfig, InvalidName, NetworkError
from lxdlib.network import dnsmasq, nat
from lxdlib.network.manager import (
    bridge_mac,
    default_ranges,
    parse_bool,
    parse_ranges,
    parse_spec,
    pick_ipv4_subnet,
    pick_ipv6_subnet,
    probe_order,
    validate_config,
    validate_name,
)

V4 = ipaddress.IPv4Network
V6 = ipaddress.IPv6Network
V4A = ipaddress.IPv4Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


# -- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lxdbr0", "a", "x" * 15, "br-1.test_2", "0net"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 16, "a/b", "a b", "a\tb", "a:b", ".", "..", "-br",
                                  ".hidden", "br\n", "bré", "a@b", 5])
def test_invalid_names(name: object) -> None:
    with pytest.raises(InvalidName):
        validate_name(name)


# -- values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "want"), [
    ("true", True), ("YES", True), ("1", True), ("on", True),
    ("false", False), ("no", False), ("0", False), ("Off", False),
])
def test_parse_bool(text: str, want: bool) -> None:
    assert parse_bool("ipv4.nat", text) is want


@pytest.mark.parametrize("text", ["", "2", "enabled", "tru"])
def test_parse_bool_refuses(text: str) -> None:
    with pytest.raises(InvalidConfig):
        parse_bool("ipv4.nat", text)


GOOD_CONFIGS: list[dict[str, str]] = [
    {},
    {"ipv4.address": "auto"},
    {"ipv4.address": "none", "ipv6.address": "none"},
    {"ipv4.address": "10.0.3.1/24", "ipv4.nat": "true", "ipv4.dhcp": "no"},
    {"ipv4.address": "192.168.50.254/24", "ipv4.dhcp.ranges": "192.168.50.10-192.168.50.20,"
                                                              "192.168.50.30-192.168.50.40"},
    {"ipv4.dhcp.expiry": "2m"}, {"ipv4.dhcp.expiry": "infinite"}, {"ipv4.dhcp.expiry": "7200"},
    {"ipv6.address": "auto", "ipv6.nat": "off", "ipv6.dhcp": "on"},
    {"ipv6.address": "fd42:1:2:3::1/64"},
    {"bridge.mtu": "1400"}, {"bridge.mtu": "68"}, {"bridge.mtu": "65535"},
    {"bridge.hwaddr": "02:AB:cd:00:11:22"},
    {"dns.domain": "lxd.example-1.org"}, {"dns.mode": "none"}, {"dns.mode": "managed"},
    {"raw.dnsmasq": "log-queries\ndhcp-option=42,0.0.0.0"},
    {"user.anything": "free text: with symbols !", "user.x.y": ""},
]


@pytest.mark.parametrize("config", GOOD_CONFIGS)
def test_good_configs(config: dict[str, str]) -> None:
    assert validate_config(config) == config


BAD_CONFIGS: list[tuple[dict[str, object], str]] = [
    ({"ipv4.adress": "auto"}, "ipv4.adress"),
    ({"bridge.driver": "openvswitch"}, "bridge.driver"),
    ({"user.": "x"}, "user."),
    ({"ipv4.nat": "maybe"}, "ipv4.nat"),
    ({"ipv4.dhcp": ""}, "ipv4.dhcp"),
    ({"ipv4.address": "10.0.0.1"}, "ipv4.address"),
    ({"ipv4.address": "10.0.0.0/24"}, "ipv4.address"),
    ({"ipv4.address": "10.0.0.255/24"}, "ipv4.address"),
    ({"ipv4.address": "10.0.0.1/31"}, "ipv4.address"),
    ({"ipv4.address": "127.0.0.1/8"}, "ipv4.address"),
    ({"ipv4.address": "224.0.0.1/24"}, "ipv4.address"),
    ({"ipv4.address": "fd00::1/64"}, "ipv4.address"),
    ({"ipv4.address": "10.0.0.300/24"}, "ipv4.address"),
    ({"ipv6.address": "10.0.0.1/24"}, "ipv6.address"),
    ({"ipv6.address": "fe80::1/64"}, "ipv6.address"),
    ({"ipv6.address": "fd00::/64"}, "ipv6.address"),
    ({"ipv6.address": "fd00::1"}, "ipv6.address"),
    ({"ipv4.dhcp.ranges": "10.0.0.5"}, "ipv4.dhcp.ranges"),
    ({"ipv4.dhcp.ranges": "10.0.0.9-10.0.0.5"}, "ipv4.dhcp.ranges"),
    ({"ipv4.dhcp.ranges": "10.0.0.5-x"}, "ipv4.dhcp.ranges"),
    ({"ipv4.dhcp.expiry": "1m"}, "ipv4.dhcp.expiry"),
    ({"ipv4.dhcp.expiry": "1y"}, "ipv4.dhcp.expiry"),
    ({"bridge.mtu": "67"}, "bridge.mtu"),
    ({"bridge.mtu": "65536"}, "bridge.mtu"),
    ({"bridge.mtu": "-1"}, "bridge.mtu"),
    ({"bridge.mtu": "1500 "}, "bridge.mtu"),
    ({"bridge.hwaddr": "01:00:5e:00:00:01"}, "bridge.hwaddr"),
    ({"bridge.hwaddr": "00:00:00:00:00:00"}, "bridge.hwaddr"),
    ({"bridge.hwaddr": "02:00:00:00:00"}, "bridge.hwaddr"),
    ({"dns.domain": "a..b"}, "dns.domain"),
    ({"dns.domain": "-a.b"}, "dns.domain"),
    ({"dns.domain": "a b"}, "dns.domain"),
    ({"dns.mode": "dynamic"}, "dns.mode"),
    ({"user.note": "line\nbreak"}, "user.note"),
    ({"user.note": "cr\r"}, "user.note"),
    ({"dns.domain": "lxd\0"}, "dns.domain"),
    ({"raw.dnsmasq": "a\rb"}, "raw.dnsmasq"),
    ({"raw.dnsmasq": "a\0b"}, "raw.dnsmasq"),
    ({"ipv4.nat": True}, "ipv4.nat"),
    ({"bridge.mtu": 1500}, "bridge.mtu"),
]


@pytest.mark.parametrize(("config", "key"), BAD_CONFIGS)
def test_bad_configs(config: dict[str, object], key: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        validate_config(config)
    assert exc.value.key == key


def test_config_must_be_a_mapping() -> None:
    with pytest.raises(InvalidConfig):
        validate_config(["ipv4.address"])
    assert validate_config(None) == {}


# -- spec (cross-key rules) ----------------------------------------------------------------------
def test_spec_defaults() -> None:
    spec = parse_spec({"ipv4.address": "10.0.3.1/24"})
    assert spec.ipv4 == ipaddress.IPv4Interface("10.0.3.1/24")
    assert (spec.ipv4_nat, spec.ipv4_dhcp, spec.ipv4_expiry) == (False, True, "1h")
    assert spec.ipv4_ranges == ((ipaddress.IPv4Address("10.0.3.2"),
                                 ipaddress.IPv4Address("10.0.3.254")),)
    assert spec.ipv6 is None and spec.mtu is None and spec.hwaddr is None
    assert (spec.dns_domain, spec.dns_mode, spec.raw_dnsmasq) == ("lxd", "managed", "")


def test_spec_without_addresses() -> None:
    spec = parse_spec({})
    assert spec.ipv4 is None and spec.ipv6 is None and spec.addresses == []


@pytest.mark.parametrize("config", [
    {"ipv4.address": "auto"},
    {"ipv4.address": "10.0.3.1/24", "ipv4.dhcp.ranges": "10.0.4.2-10.0.4.9"},
    {"ipv4.address": "10.0.3.1/24", "ipv4.dhcp.ranges": "10.0.3.0-10.0.3.9"},
    {"ipv4.address": "10.0.3.1/24", "ipv4.dhcp.ranges": "10.0.3.2-10.0.3.255"},
    {"ipv4.address": "10.0.3.5/24", "ipv4.dhcp.ranges": "10.0.3.2-10.0.3.9"},
    {"ipv6.address": "fd00::1/64", "bridge.mtu": "1279"},
])
def test_spec_refuses(config: dict[str, str]) -> None:
    with pytest.raises(InvalidConfig):
        parse_spec(config)


@pytest.mark.parametrize(("iface", "want"), [
    ("10.0.0.1/24", [("10.0.0.2", "10.0.0.254")]),
    ("10.0.0.254/24", [("10.0.0.1", "10.0.0.253")]),
    ("10.0.0.100/24", [("10.0.0.1", "10.0.0.99"), ("10.0.0.101", "10.0.0.254")]),
    ("10.0.0.1/30", [("10.0.0.2", "10.0.0.2")]),
    ("172.16.0.1/16", [("172.16.0.2", "172.16.255.254")]),
])
def test_default_ranges(iface: str, want: list[tuple[str, str]]) -> None:
    got = default_ranges(ipaddress.IPv4Interface(iface))
    assert [(str(a), str(b)) for a, b in got] == want


# -- subnet choice -------------------------------------------------------------------------------
def test_pick_ipv4_avoids_used() -> None:
    used: list[IPNet] = [V4("10.0.0.0/9"), V4("192.0.2.0/24"), V4("10.200.0.0/16"),
                         V6("fd00::/8")]
    for seed in range(50):
        iface = pick_ipv4_subnet(used, random.Random(seed))
        assert iface.network.prefixlen == 24
        assert iface.ip == iface.network.network_address + 1
        assert iface.network.subnet_of(V4("10.0.0.0/8"))
        assert not any(iface.network.overlaps(u) for u in used if u.version == 4)


def test_pick_ipv4_falls_back_to_a_scan() -> None:
    # Only one /24 is free: random tries almost surely miss it, the scan must find it.
    used = [V4("10.0.0.0/9"), V4("10.128.0.0/10"), V4("10.192.0.0/11"), V4("10.224.0.0/12"),
            V4("10.240.0.0/13"), V4("10.248.0.0/14"), V4("10.252.0.0/15"), V4("10.254.0.0/16"),
            V4("10.255.0.0/17"), V4("10.255.128.0/18"), V4("10.255.192.0/19"),
            V4("10.255.224.0/20"), V4("10.255.240.0/21"), V4("10.255.248.0/22"),
            V4("10.255.252.0/23"), V4("10.255.255.0/24")]
    assert str(pick_ipv4_subnet(used, random.Random(1), attempts=3)) == "10.255.254.1/24"


@pytest.mark.parametrize("prefix", [20, 22, 24, 28])
def test_pick_ipv4_of_a_given_size(prefix: int) -> None:
    used = [V4("10.0.0.0/9"), V4("10.200.0.0/16")]
    for seed in range(20):
        iface = pick_ipv4_subnet(used, random.Random(seed), prefix=prefix)
        assert iface.network.prefixlen == prefix
        assert iface.ip == iface.network.network_address + 1
        assert iface.network.subnet_of(V4("10.0.0.0/8"))
        assert not any(iface.network.overlaps(u) for u in used)


def test_pick_ipv4_of_a_given_size_scans_too() -> None:
    # one /22 left free in 10/8 (10.255.252.0/22): found by the scan after random misses
    used = [V4("10.0.0.0/9"), V4("10.128.0.0/10"), V4("10.192.0.0/11"), V4("10.224.0.0/12"),
            V4("10.240.0.0/13"), V4("10.248.0.0/14"), V4("10.252.0.0/15"), V4("10.254.0.0/16"),
            V4("10.255.0.0/17"), V4("10.255.128.0/18"), V4("10.255.192.0/19"),
            V4("10.255.224.0/20"), V4("10.255.240.0/21"), V4("10.255.248.0/22")]
    assert str(pick_ipv4_subnet(used, random.Random(1), attempts=2, prefix=22)) == \
        "10.255.252.1/22"


@pytest.mark.parametrize("prefix", [8, 31])
def test_pick_ipv4_refuses_odd_sizes(prefix: int) -> None:
    with pytest.raises(InvalidArgument):
        pick_ipv4_subnet([], random.Random(0), prefix=prefix)


def test_pick_ipv4_full() -> None:
    with pytest.raises(NetworkError):
        pick_ipv4_subnet([V4("10.0.0.0/8")], random.Random(0), attempts=3)


def test_pick_ipv4_ignores_a_wider_unrelated_network() -> None:
    # A /24 only collides with what overlaps it; 192.168/16 never does.
    iface = pick_ipv4_subnet([V4("192.168.0.0/16")], random.Random(3))
    assert iface.network.subnet_of(V4("10.0.0.0/8"))


def test_pick_ipv6() -> None:
    used: list[IPNet] = [V6("fd00::/16"), V4("10.0.0.0/8")]
    for seed in range(50):
        iface = pick_ipv6_subnet(used, random.Random(seed))
        assert iface.network.prefixlen == 64
        assert iface.network.subnet_of(V6("fd00::/8"))
        assert iface.ip == iface.network.network_address + 1
        assert not iface.network.overlaps(V6("fd00::/16"))
    with pytest.raises(NetworkError):
        pick_ipv6_subnet([V6("fd00::/8")], random.Random(0), attempts=5)


def test_bridge_mac_is_stable_and_lxds() -> None:
    """LXD 5.0's bridges get a MAC of its 00:16:3e range, as its nics do."""
    mac = bridge_mac("lxdlib:abc", "br0")
    assert mac == bridge_mac("lxdlib:abc", "br0")
    assert mac != bridge_mac("lxdlib:abc", "br1")
    assert mac.startswith("00:16:3e:") and len(mac.split(":")) == 6
    validate_config({"bridge.hwaddr": mac})


# -- dnsmasq -------------------------------------------------------------------------------------
RUN = Path("/var/lib/lxdlib/run/networks/br0")


def test_argv_ipv4_dhcp_dns() -> None:
    spec = parse_spec({"ipv4.address": "10.0.3.1/24", "bridge.mtu": "1400",
                       "dns.domain": "example"})
    cfg = dnsmasq.DnsmasqConfig(bridge="br0", run_dir=RUN, ipv4=spec.ipv4,
                                ipv4_ranges=spec.ipv4_ranges, mtu=spec.mtu,
                                dns_domain=spec.dns_domain, user="dnsmasq", group="nogroup")
    argv = dnsmasq.build_argv(cfg, "/usr/sbin/dnsmasq")
    assert argv[0] == "/usr/sbin/dnsmasq"
    for arg in ["--strict-order", "--bind-interfaces", "--except-interface=lo", "--no-ping",
                "--interface=br0", "--dhcp-rapid-commit", "--dhcp-no-override",
                "--dhcp-authoritative", "--no-resolv", "--no-hosts",
                f"--conf-file={RUN}/dnsmasq.raw", f"--pid-file={RUN}/dnsmasq.pid",
                f"--dhcp-leasefile={RUN}/dnsmasq.leases",
                f"--dhcp-hostsdir={RUN}/hosts.d", "--dhcp-lease-max=254", "--dhcp-ignore-clid",
                "--user=dnsmasq", "--group=nogroup",
                "--listen-address=10.0.3.1", "--dhcp-range=10.0.3.2,10.0.3.254,1h",
                "--dhcp-option-force=26,1400", "--domain=example", "--local=/example/",
                "--interface-name=_gateway.example,br0"]:
        assert arg in argv
    assert not any(a.startswith("--port") or a == "--enable-ra" or
                   a.startswith("--dhcp-hostsfile") for a in argv)
    assert dnsmasq.needed(cfg)


@pytest.mark.parametrize(("config", "want"), [
    ({"ipv4.address": "10.0.0.1/24"}, 254),
    ({"ipv4.address": "10.0.0.1/20"}, 4094),  # > dnsmasq's default of 1000
    ({"ipv4.address": "10.0.0.1/16"}, 65534),
    ({"ipv4.address": "10.0.0.1/30"}, 2),
    # a static address may lie outside narrow ranges: the subnet is the bound
    ({"ipv4.address": "10.0.0.1/22", "ipv4.dhcp.ranges": "10.0.0.10-10.0.0.20"}, 1022),
    ({"ipv4.address": "10.0.0.1/24", "ipv4.dhcp": "false"}, None),
    ({"ipv6.address": "fd42::1/64"}, None),
])
def test_lease_max_fits_the_subnet(config: dict[str, str], want: int | None) -> None:
    spec = parse_spec(config)
    cfg = dnsmasq.DnsmasqConfig(bridge="br0", run_dir=RUN, ipv4=spec.ipv4,
                                ipv4_dhcp=spec.ipv4_dhcp, ipv4_ranges=spec.ipv4_ranges,
                                ipv6=spec.ipv6)
    assert dnsmasq.lease_max(cfg) == want
    got = [a for a in dnsmasq.build_argv(cfg) if a.startswith("--dhcp-lease-max")]
    assert got == ([] if want is None else [f"--dhcp-lease-max={want}"])


def test_argv_variants() -> None:
    v6 = ipaddress.IPv6Interface("fd42::1/64")
    cfg = dnsmasq.DnsmasqConfig(bridge="br0", run_dir=RUN, ipv6=v6, dns_mode="none")
    argv = dnsmasq.build_argv(cfg)
    assert "--listen-address=fd42::1" in argv and "--enable-ra" in argv
    assert "--dhcp-range=::,constructor:br0,ra-stateless,ra-names" in argv
    assert "--port=0" in argv and not any(a.startswith("--domain") for a in argv)
    cfg = dnsmasq.DnsmasqConfig(bridge="br0", run_dir=RUN, ipv6=v6, ipv6_dhcp=False)
    assert "--dhcp-range=::,constructor:br0,ra-only" in dnsmasq.build_argv(cfg)
    v4 = ipaddress.IPv4Interface("10.0.0.1/24")
    cfg = dnsmasq.DnsmasqConfig(bridge="br0", run_dir=RUN, ipv4=v4, ipv4_dhcp=False,
                                ipv4_ranges=default_ranges(v4))
    argv = dnsmasq.build_argv(cfg)
    assert not any(a.startswith("--dhcp-range") for a in argv)
    assert dnsmasq.needed(cfg)  # still serves DNS
    cfg = dnsmasq.DnsmasqConfig(bridge="br0", run_dir=RUN, ipv4=v4, ipv4_dhcp=False,
                                dns_mode="none")
    assert not dnsmasq.needed(cfg)
    assert not dnsmasq.needed(dnsmasq.DnsmasqConfig(bridge="br0", run_dir=RUN))
    spec = parse_spec({"ipv4.address": "10.0.0.1/24",
                       "ipv4.dhcp.ranges": "10.0.0.10-10.0.0.20,10.0.0.30-10.0.0.40",
                       "ipv4.dhcp.expiry": "infinite"})
    cfg = dnsmasq.DnsmasqConfig(bridge="br0", run_dir=RUN, ipv4=spec.ipv4,
                                ipv4_ranges=spec.ipv4_ranges, ipv4_expiry=spec.ipv4_expiry)
    ranges = [a for a in dnsmasq.build_argv(cfg) if a.startswith("--dhcp-range")]
    assert ranges == ["--dhcp-range=10.0.0.10,10.0.0.20,infinite",
                      "--dhcp-range=10.0.0.30,10.0.0.40,infinite"]


LEASES = """\
1700003600 02:00:00:aa:bb:cc 10.0.3.17 c1 01:02:00:00:aa:bb:cc
0 02:00:00:AA:BB:DD 10.0.3.18 * *
garbage line
1700000000 02:00:00:aa:bb:ee not-an-ip host *
duid 00:01:00:01:2c:aa:bb:cc:02:00:00:00:00:01
1700007200 1234567 fd42::17 c1 00:04:aa
"""


def test_parse_leases() -> None:
    assert dnsmasq.parse_leases(LEASES) == [
        {"hwaddr": "02:00:00:aa:bb:cc", "address": "10.0.3.17", "hostname": "c1",
         "expiry": 1700003600},
        {"hwaddr": "02:00:00:aa:bb:dd", "address": "10.0.3.18", "hostname": "", "expiry": 0},
        {"hwaddr": "", "address": "fd42::17", "hostname": "c1", "expiry": 1700007200},
    ]
    assert dnsmasq.parse_leases("") == []


def test_host_line() -> None:
    assert dnsmasq.host_line("02:00:00:00:00:0B", "10.0.0.11", "b") == \
        "02:00:00:00:00:0b,10.0.0.11,b"
    assert dnsmasq.host_line("02:00:00:00:00:0a", None, "a") == "02:00:00:00:00:0a,a"
    assert dnsmasq.host_line("02:00:00:00:00:0c", "10.0.0.12", None) == \
        "02:00:00:00:00:0c,10.0.0.12"
    assert dnsmasq.host_line("02:00:00:00:00:0d", None, None) is None


def test_lease_file_search() -> None:
    leases = dnsmasq.LeaseFile(LEASES.encode())
    assert leases.address_of("02:00:00:aa:bb:cc") == "10.0.3.17"
    assert leases.address_of("02:00:00:AA:BB:DD") == "10.0.3.18"  # any case, either side
    assert leases.address_of("02:00:00:aa:bb:ee") is None  # its line has no address
    assert leases.address_of("02:00:00:aa:bb:ff") is None
    assert leases.holds("10.0.3.17") and leases.holds("10.0.3.18")
    assert not leases.holds("10.0.3.1") and not leases.holds("10.0.3.170")
    kept = leases.without({"02:00:00:aa:bb:dd"})
    assert kept is not None
    assert kept.decode() == LEASES.replace("0 02:00:00:AA:BB:DD 10.0.3.18 * *\n", "")
    assert leases.without({"02:00:00:00:00:01"}) is None
    assert dnsmasq.LeaseFile(b"").address_of("02:00:00:aa:bb:cc") is None


def testprobe_order_covers_every_address_once() -> None:
    ranges = parse_ranges("r", "10.0.0.10-10.0.0.12,10.0.0.30-10.0.0.31")
    got = list(probe_order(ranges, "02:00:00:00:00:01"))
    assert sorted(got) == [V4A(a) for a in ("10.0.0.10", "10.0.0.11", "10.0.0.12",
                                             "10.0.0.30", "10.0.0.31")]
    starts = {next(probe_order(ranges, f"02:00:00:00:00:{i:02x}")) for i in range(64)}
    assert len(starts) > 1  # spread by MAC, not always the first free address
    assert list(probe_order((), "02:00:00:00:00:01")) == []


# -- nft -----------------------------------------------------------------------------------------
def test_nft_script() -> None:
    spec = nat.bridge_table("br0", "br0", nat4=V4("10.0.3.0/24"), nat6=V6("fd42::/64"))
    script = nat.render(spec)
    lines = script.splitlines()
    assert lines[:3] == ["table inet lxdlib_br0 {}", "delete table inet lxdlib_br0",
                         "table inet lxdlib_br0 {"]
    assert "\t\tip saddr 10.0.3.0/24 ip daddr != 10.0.3.0/24 masquerade" in lines
    assert "\t\tip6 saddr fd42::/64 ip6 daddr != fd42::/64 masquerade" in lines
    assert '\t\tiifname "br0" accept' in lines
    assert script.count("hook postrouting") == 1
    assert "masquerade" not in nat.render(nat.bridge_table("br0", "br0"))


def test_nft_gettable_request_layout() -> None:
    msg = nat._gettable_request("lxdlib_br0", 7)
    length, mtype, flags, seq, _pid = nat._NLMSG_HDR.unpack_from(msg)
    assert length == len(msg) and len(msg) % 4 == 0
    assert mtype == (10 << 8) | 1 and flags == 0x5 and seq == 7
    assert b"lxdlib_br0\0" in msg
