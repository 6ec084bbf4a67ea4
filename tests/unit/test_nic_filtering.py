"""The nic filter's rules (pure): what each security key allows and drops, and in which order."""

from __future__ import annotations

import ipaddress

import pytest

from lxdlib.errors import NetworkError
from lxdlib.network.filtering import NicFilter, chain_name, eui64, render, rules

MAC = "00:16:3e:aa:bb:cc"


def test_mac_only_checks_the_source_mac_of_every_frame_and_of_arp_and_ndp() -> None:
    out = rules(NicFilter("br0", "veth1", MAC.upper()))
    assert out[0] == f'iifname "veth1" ether saddr != {MAC} drop'
    assert any("arp saddr ether != " + MAC in r for r in out)
    assert any("@nh,528,48 != 0x00163eaabbcc drop" in r for r in out)
    assert not any("ip saddr" in r or "ip6 saddr" in r for r in out)
    assert not any("ether type != " in r for r in out)  # other ethertypes pass without IP filters


def test_dhcp_requests_must_carry_the_nics_own_mac_as_client_hardware_address() -> None:
    # dnsmasq keys leases by chaddr, not by the frame's source MAC: a filtered nic must not ask
    # (or release) as another MAC; the rules come before any accept of DHCP discovery
    out = rules(NicFilter("br0", "veth1", MAC.upper(),
                          ipv4=(ipaddress.IPv4Network("10.0.0.5/32"),)))
    dhcp = 'iifname "veth1" ether type ip udp dport 67'
    chaddr = out.index(f"{dhcp} @th,288,48 != 0x00163eaabbcc drop")
    assert out.index(f"{dhcp} @th,72,16 != 0x0106 drop") < chaddr
    assert out.index(f"{dhcp} ip frag-off & 0x2000 != 0 drop") < chaddr
    assert chaddr < min(i for i, r in enumerate(out) if "udp dport 67 accept" in r)
    assert f"{dhcp} @th,288,48 != 0x00163eaabbcc drop" in rules(NicFilter("br0", "veth1", MAC))


def test_ipv4_allows_its_address_and_dhcp_discovery_then_drops_the_rest() -> None:
    out = rules(NicFilter("br0", "veth1", MAC, ipv4=(ipaddress.IPv4Network("10.0.0.5/32"),)))
    mac_rules = 6
    assert out[:mac_rules] == rules(NicFilter("br0", "veth1", MAC))  # IP filtering implies MAC
    body = out[mac_rules:]
    assert "udp dport 67 accept" in body[0]
    assert body.index('iifname "veth1" ether type arp arp saddr ip 10.0.0.5/32 accept') < \
        body.index('iifname "veth1" ether type arp drop')
    assert body.index('iifname "veth1" ether type ip ip saddr 10.0.0.5/32 accept') < \
        body.index('iifname "veth1" ether type ip drop')
    assert body[-1] == 'iifname "veth1" ether type != { arp, ip, ip6 } drop'
    # a DHCP client, never a server: dropped before its own address is let through
    assert body.index('iifname "veth1" ether type ip udp sport 67 drop') < \
        body.index('iifname "veth1" ether type ip ip saddr 10.0.0.5/32 accept')


def test_empty_address_list_blocks_the_family() -> None:
    out = rules(NicFilter("br0", "v", MAC, ipv4=(), ipv6=()))
    assert 'iifname "v" ether type arp drop' in out and 'iifname "v" ether type ip drop' in out
    assert 'iifname "v" ether type ip6 drop' in out
    assert not any("accept" in r for r in out)


def test_ipv6_allows_its_address_and_its_neighbour_adverts_drops_router_adverts() -> None:
    addr = ipaddress.IPv6Network("fd00::216:3eff:feaa:bbcc/128")
    out = rules(NicFilter("br0", "v", MAC, ipv6=(addr,)))
    ra = out.index('iifname "v" ether type ip6 icmpv6 type nd-router-advert drop')
    allow = out.index(f'iifname "v" ether type ip6 ip6 saddr {addr} accept')
    assert ra < allow < out.index('iifname "v" ether type ip6 drop')
    assert out.index('iifname "v" ether type ip6 udp sport 547 drop') < allow
    assert any("@nh,384,128 0xfd00000000000000" in r for r in out)
    with pytest.raises(NetworkError):
        rules(NicFilter("br0", "v", MAC, ipv6=(ipaddress.IPv6Network("fd00::/61"),)))


def test_chain_replaced_in_one_transaction_at_prerouting() -> None:
    script = render(NicFilter("br0", "veth1", MAC))
    assert script.splitlines()[:3] == ["table bridge lxdlib_br0 {}",
                                       "add chain bridge lxdlib_br0 nic_veth1",
                                       "delete chain bridge lxdlib_br0 nic_veth1"]
    assert "type filter hook prerouting priority -200; policy accept;" in script


def test_chain_names_and_eui64() -> None:
    assert chain_name("veth1a2b") == "nic_veth1a2b"
    assert chain_name("my-veth.0") == "nic_x" + b"my-veth.0".hex()
    net = ipaddress.IPv6Network("fd00:1:2:3::/64")
    assert str(eui64(net, MAC)) == "fd00:1:2:3:216:3eff:feaa:bbcc"
