"""Per-nic spoofing filters (``security.mac_filtering`` / ``ipv4_filtering`` / ``ipv6_filtering``)
and bridge port isolation (``security.port_isolation``).

The filters are nftables rules of the ``bridge`` family, one base chain per nic in the table
``bridge lxdlib_<bridge>`` (same name as the network's ``inet`` table; `nat.delete` removes both).
Each chain matches only frames that *enter the bridge from the nic's host-side veth*, so it can be
added and removed on its own, keyed by that veth's name, without touching other nics' chains.

The chain hooks **prerouting**, not forward/input: the bridge learns a source MAC (updates its
forwarding database) after prerouting and before forward/input. Dropping a spoofed frame only at
forward/input would still let it teach the bridge that the victim's MAC lives behind the
spoofer's port, and traffic meant for the victim would then be delivered to the spoofer.

What is allowed, as in LXD: frames whose source MAC is the nic's (ARP sender MAC and the NDP
neighbour advertisement's link-layer option too, and — stricter than LXD — the client hardware
address of DHCPv4 requests: see `dhcp_client_rules`); with IP filtering, IPv4/ARP and IPv6/NDP only
from the nic's own addresses (plus DHCP discovery and IPv6 router solicitation / DHCPv6 from the
unconfigured or link-local source), no router advertisements, and no other ethertypes. An empty
address list blocks that family entirely (the network serves no addresses of it). Stricter than
LXD again, IP filtering lets the nic speak DHCP as a client only: no DHCPv4 or DHCPv6 server
messages, the counterpart of the router advertisements.
"""

from __future__ import annotations

import ipaddress

from ..errors import NetworkError
from ..logs import get_logger
from ..patterns import Pattern
from ..values import Value, assign
from . import nat

log = get_logger(__name__)

FAMILY = "bridge"
PRIORITY = -200
_PLAIN = Pattern(r"[A-Za-z][A-Za-z0-9_]*")


def table_name(bridge: str) -> str:
    return nat.table_name(bridge)


def chain_name(veth: str) -> str:
    """The nic's chain: named after its host veth (hex-encoded if nft could misread the name)."""
    return f"nic_{veth}" if _PLAIN.fullmatch(veth) else f"nic_x{veth.encode().hex()}"


class NicFilter(Value, frozen=True):
    """What one nic may send. ``ipv4``/``ipv6``: None = not filtered, () = family blocked."""

    _fields = ("bridge", "veth", "hwaddr", "ipv4", "ipv6")
    __slots__ = _fields

    bridge: str
    veth: str
    hwaddr: str
    ipv4: tuple[ipaddress.IPv4Network, ...] | None
    ipv6: tuple[ipaddress.IPv6Network, ...] | None

    def __init__(self, bridge: str, veth: str, hwaddr: str,
                 ipv4: tuple[ipaddress.IPv4Network, ...] | None = None,
                 ipv6: tuple[ipaddress.IPv6Network, ...] | None = None) -> None:
        assign(self, "bridge", bridge)
        assign(self, "veth", veth)
        assign(self, "hwaddr", hwaddr)
        assign(self, "ipv4", ipv4)
        assign(self, "ipv6", ipv6)


def rules(f: NicFilter) -> list[str]:
    """The chain's rules, in order (first match wins; the chain's policy accepts the rest)."""
    mac = f.hwaddr.lower()
    iif = f'iifname "{f.veth}"'
    out = [
        f"{iif} ether saddr != {mac} drop",
        f"{iif} ether type arp arp saddr ether != {mac} drop",
        # an NDP neighbour advertisement whose target link-layer option is not our MAC
        f"{iif} ether type ip6 icmpv6 type nd-neighbor-advert @nh,528,48 != "
        f"0x{mac.replace(':', '')} drop",
        *dhcp_client_rules(iif, mac),
    ]
    if f.ipv4 is not None:
        if f.ipv4:
            out.append(f"{iif} ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 "
                       "udp dport 67 accept")
            # a DHCP client only: offers from its own address could make a neighbour take
            # it for the gateway (stricter than LXD; IPv6's router adverts go the same way)
            out.append(f"{iif} ether type ip udp sport 67 drop")
            for net4 in f.ipv4:
                out.append(f"{iif} ether type arp arp saddr ip {net4} accept")
                out.append(f"{iif} ether type ip ip saddr {net4} accept")
        out.append(f"{iif} ether type arp drop")
        out.append(f"{iif} ether type ip drop")
    if f.ipv6 is not None:
        if f.ipv6:
            out.append(f"{iif} ether type ip6 ip6 saddr fe80::/10 ip6 daddr ff02::1:2 "
                       "udp dport 547 accept")
            out.append(f"{iif} ether type ip6 ip6 saddr fe80::/10 ip6 daddr ff02::2 "
                       "icmpv6 type nd-router-solicit accept")
            out.append(f"{iif} ether type ip6 icmpv6 type nd-router-advert drop")
            out.append(f"{iif} ether type ip6 udp sport 547 drop")  # no DHCPv6 server either
            for net6 in f.ipv6:
                if net6.prefixlen % 8:
                    raise NetworkError(f"IPv6 filter prefix {net6} is not a whole number of bytes")
                prefix = net6.network_address.packed[:net6.prefixlen // 8].hex()
                out.append(f"{iif} ether type ip6 icmpv6 type nd-neighbor-advert "
                           f"@nh,384,{net6.prefixlen} 0x{prefix} accept")
                out.append(f"{iif} ether type ip6 ip6 saddr {net6} accept")
        out.append(f"{iif} ether type ip6 drop")
    if f.ipv4 or f.ipv6:
        out.append(f"{iif} ether type != {{ arp, ip, ip6 }} drop")
    return out


def dhcp_client_rules(iif: str, mac: str) -> list[str]:
    """DHCPv4 from the nic only as the nic itself: Ethernet hardware type, and its own MAC as
    the client hardware address (``chaddr``).

    dnsmasq keys a lease, and finds a static entry, by ``chaddr``, not by the frame's source
    MAC, so the source check above leaves it open: a container could ask for leases as any
    number of made-up MACs (every free address of the network, so that an instance started
    afterwards gets none), or as another instance — and release or decline that instance's
    lease, freeing its address for someone else while it still uses it. LXD's filter does not
    look inside DHCP; this is stricter, and costs a filtered nic nothing: its own client sends
    its own MAC. A first fragment of a datagram to port 67 is dropped too, since the rest of it
    (the ``chaddr``) would not be in view; the later fragments cannot be reassembled without it.
    Offsets count from the UDP header: the BOOTP header starts 8 bytes in, its ``htype`` and
    ``hlen`` at bytes 1-2 of it and ``chaddr`` at byte 28.
    """
    dhcp = f"{iif} ether type ip udp dport 67"
    return [
        f"{dhcp} ip frag-off & 0x2000 != 0 drop",
        f"{dhcp} @th,72,16 != 0x0106 drop",
        f"{dhcp} @th,288,48 != 0x{mac.replace(':', '')} drop",
    ]


def render(f: NicFilter) -> str:
    """The ``nft -f`` script that (re)places the nic's chain in one transaction."""
    table, chain = table_name(f.bridge), chain_name(f.veth)
    lines = [
        f"table {FAMILY} {table} {{}}",
        f"add chain {FAMILY} {table} {chain}",
        f"delete chain {FAMILY} {table} {chain}",
        f"table {FAMILY} {table} {{",
        f"\tchain {chain} {{",
        f"\t\ttype filter hook prerouting priority {PRIORITY}; policy accept;",
        *(f"\t\t{rule}" for rule in rules(f)),
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def install(f: NicFilter) -> None:
    """Put the nic's filter in place (replacing an older version of it atomically)."""
    nat.load(render(f))
    log.debug("nic filter for %s on %s installed (ipv4=%s ipv6=%s)", f.veth, f.bridge,
             f.ipv4, f.ipv6)


def remove(bridge: str, veth: str) -> None:
    """Remove the nic's filter; idempotent (no table or no chain is fine)."""
    table, chain = table_name(bridge), chain_name(veth)
    if not nat.table_exists(table, FAMILY):
        return
    try:
        # add-then-delete: no error for a chain that is already gone; the table is not
        # re-created if the network's delete removed it meanwhile ("add chain" then fails)
        nat.load(f"add chain {FAMILY} {table} {chain}\ndelete chain {FAMILY} {table} {chain}\n")
    except NetworkError:
        if nat.table_exists(table, FAMILY):
            raise
        log.debug("nic filter for %s on %s: its table went meanwhile", veth, bridge)
        return

    log.debug("nic filter for %s on %s removed", veth, bridge)


def installed(bridge: str, veth: str) -> bool:
    """Whether the nic's chain exists (for ``info`` and tests; runs ``nft``)."""
    import shutil
    import subprocess
    exe = shutil.which("nft")
    if exe is None:
        return False
    proc = subprocess.run([exe, "list", "chain", FAMILY, table_name(bridge), chain_name(veth)],
                          capture_output=True, check=False)
    return proc.returncode == 0


def set_isolated(veth: str, on: bool) -> None:
    """Set the bridge port flag ``isolated``: isolated ports exchange no frames with each other,
    only with non-isolated ports (the bridge itself included)."""
    import shutil  # here, as in ``installed``: only these two run a program
    import subprocess
    exe = shutil.which("ip")
    if exe is None:
        raise NetworkError("ip (iproute2) is needed for security.port_isolation")
    proc = subprocess.run([exe, "link", "set", "dev", veth, "type", "bridge_slave", "isolated",
                           "on" if on else "off"], capture_output=True, check=False)
    if proc.returncode != 0:
        raise NetworkError(f"cannot set port isolation on {veth}: "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    log.debug("bridge port %s isolated=%s", veth, on)


def eui64(network: ipaddress.IPv6Network, hwaddr: str) -> ipaddress.IPv6Address:
    """The SLAAC address a nic with ``hwaddr`` takes in a /64 (modified EUI-64)."""
    mac = bytes(int(b, 16) for b in hwaddr.split(":"))
    iid = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return ipaddress.IPv6Address(network.network_address.packed[:8] + iid)
