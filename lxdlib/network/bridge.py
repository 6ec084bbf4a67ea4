"""The bridge link itself: create, configure, inspect and remove it through netlink (pyroute2).

pyroute2 takes ~80 ms to import, so it is imported lazily: the checks that run on every instance
start (`is_ready`) read sysfs, ``/proc/net/if_inet6`` and one ioctl instead, which costs
microseconds.

A bridge made by lxdlib carries an interface alias (``ifalias``) naming the lxdlib root that owns
it. That is how a root tells its own bridges from a host interface (or another root's bridge) of the
same name before it touches or deletes anything.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import TYPE_CHECKING, AlreadyExists, NetworkError
from ..logs import get_logger

if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SYS_NET = Path("/sys/class/net")
_IFF_UP = 0x1
_IFA_F_NODAD = 0x02
_RT_SCOPE_UNIVERSE = 0
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B


@contextlib.contextmanager
def iproute() -> Iterator[Any]:
    """A netlink socket (pyroute2's ``IPRoute``), closed after use; pyroute2 is imported here,
    on first use, not when lxdlib is (it costs tens of ms)."""
    from pyroute2 import IPRoute

    ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _netlink_error(action: str, name: str, exc: Exception) -> NetworkError:
    return NetworkError(f"{action} {name}: {exc}")


def _index(ipr: Any, name: str) -> int | None:
    try:
        links = ipr.link("get", ifname=name)
    except Exception as exc:  # pyroute2 raises NetlinkError(ENODEV) for a missing link
        if getattr(exc, "code", None) == errno.ENODEV:
            return None
        raise _netlink_error("looking up", name, exc) from exc
    return int(links[0]["index"]) if links else None


# -- cheap reads (sysfs / procfs / ioctl) -------------------------------------------------------
def exists(name: str) -> bool:
    return (_SYS_NET / name).exists()


def alias(name: str) -> str | None:
    """The link's alias, ``""`` if it has none, ``None`` if the link does not exist."""
    try:
        return (_SYS_NET / name / "ifalias").read_text().rstrip("\n")
    except FileNotFoundError:
        return None


def is_bridge(name: str) -> bool:
    return (_SYS_NET / name / "bridge").is_dir()


def is_up(name: str) -> bool:
    try:
        flags = int((_SYS_NET / name / "flags").read_text(), 16)
    except FileNotFoundError:
        return False
    return bool(flags & _IFF_UP)


def _ipv4_of(name: str) -> ipaddress.IPv4Interface | None:
    """The link's primary IPv4 address, by ioctl (no netlink dump)."""
    req = struct.pack("16s16x", name.encode())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            addr = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, req)
            mask = fcntl.ioctl(s.fileno(), _SIOCGIFNETMASK, req)
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.ENODEV):
                return None
            raise
    ip = socket.inet_ntoa(addr[20:24])
    netmask = socket.inet_ntoa(mask[20:24])
    return ipaddress.IPv4Interface(f"{ip}/{netmask}")


def _ipv6_of(name: str) -> set[ipaddress.IPv6Interface]:
    found: set[ipaddress.IPv6Interface] = set()
    try:
        text = Path("/proc/net/if_inet6").read_text()
    except FileNotFoundError:
        return found
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[5] == name:
            raw = fields[0]
            addr = ":".join(raw[i:i + 4] for i in range(0, 32, 4))
            found.add(ipaddress.IPv6Interface(f"{addr}/{int(fields[2], 16)}"))
    return found


def has_addresses(name: str, wanted: Iterable[IPInterface]) -> bool:
    """Whether every wanted address is on the link (a cheap check; extra addresses are ignored)."""
    v6: set[ipaddress.IPv6Interface] | None = None
    for want in wanted:
        if isinstance(want, ipaddress.IPv4Interface):
            if _ipv4_of(name) != want:
                return False
        else:
            if v6 is None:
                v6 = _ipv6_of(name)
            if want not in v6:
                return False
    return True


def write_sysctl(path: str, value: str) -> None:
    """Write ``/proc/sys/<path>`` if it exists (IPv6 may be disabled on the host)."""
    p = Path("/proc/sys") / path
    try:
        current = p.read_text().strip()
    except FileNotFoundError:
        return
    if current != value:
        p.write_text(value)
        log.debug("sysctl %s: %s -> %s", path, current, value)


# -- changes -------------------------------------------------------------------------------------
def create(name: str, owner: str, *, hwaddr: str) -> None:
    """Create a bridge link named ``name`` carrying ``owner`` as its alias (left down)."""
    with iproute() as ipr:
        try:
            ipr.link("add", ifname=name, kind="bridge", address=hwaddr)
        except Exception as exc:
            if getattr(exc, "code", None) == errno.EEXIST:
                raise AlreadyExists("interface", name) from exc
            raise _netlink_error("creating bridge", name, exc) from exc
        idx = _index(ipr, name)
        if idx is None:
            raise NetworkError(f"bridge {name} vanished right after it was created")
        try:
            ipr.link("set", index=idx, ifalias=owner)
        except Exception as exc:
            try:
                ipr.link("del", index=idx)
            except Exception as undo:
                log.warning("bridge %s: cannot delete it after its alias failed: %s", name,
                            undo)
            raise _netlink_error("setting the alias of", name, exc) from exc
    log.info("bridge %s created (hwaddr %s, alias %s)", name, hwaddr, owner)


def delete(name: str) -> None:
    """Remove the link; a missing link is fine."""
    with iproute() as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return
        try:
            ipr.link("del", index=idx)
        except Exception as exc:
            if getattr(exc, "code", None) == errno.ENODEV:
                return
            raise _netlink_error("deleting", name, exc) from exc
    log.info("bridge %s deleted", name)


def configure(name: str, *, mtu: int, hwaddr: str | None,
              addresses: list[IPInterface], ipv6: bool = True) -> None:
    """Bring the bridge to the wanted MTU, MAC and global addresses, then set it up.

    Global addresses that are not wanted are removed (the bridge belongs to lxdlib); link-local
    ones are left to the kernel. IPv6 addresses skip duplicate address detection so dnsmasq can
    bind them at once, even while the bridge has no port and so no carrier. Without ``ipv6``
    (``ipv6.address=none``) the bridge has no IPv6 at all, not even a link-local address, as
    LXD's: IPv6 is disabled on it.
    """
    # A bridge must not learn addresses or routes from router advertisements that an instance
    # sends: it is the router.
    for key, value in (("accept_ra", "0"), ("autoconf", "0"),
                       ("disable_ipv6", "0" if ipv6 else "1")):
        write_sysctl(f"net/ipv6/conf/{name}/{key}", value)
    with iproute() as ipr:
        idx = _index(ipr, name)
        if idx is None:
            raise NetworkError(f"bridge {name} does not exist")
        try:
            link = ipr.link("get", index=idx)[0]
            changes: dict[str, Any] = {}
            if link.get_attr("IFLA_MTU") != mtu:
                changes["mtu"] = mtu
            if hwaddr is not None and link.get_attr("IFLA_ADDRESS") != hwaddr.lower():
                changes["address"] = hwaddr.lower()
            if changes:
                ipr.link("set", index=idx, **changes)
                log.debug("bridge %s: set %s", name, changes)
            current: set[IPInterface] = set()
            for msg in ipr.get_addr(index=idx):
                if msg["scope"] != _RT_SCOPE_UNIVERSE:
                    continue
                current.add(ipaddress.ip_interface(
                    f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"))
            for stale in current - set(addresses):
                ipr.addr("del", index=idx, address=str(stale.ip),
                         prefixlen=stale.network.prefixlen)
                log.debug("bridge %s: address %s removed", name, stale)
            for want in addresses:
                if want in current:
                    continue
                if isinstance(want, ipaddress.IPv4Interface):
                    ipr.addr("add", index=idx, address=str(want.ip),
                             prefixlen=want.network.prefixlen,
                             broadcast=str(want.network.broadcast_address))
                else:
                    ipr.addr("add", index=idx, address=str(want.ip),
                             prefixlen=want.network.prefixlen, flags=_IFA_F_NODAD)
                log.debug("bridge %s: address %s added", name, want)
            if not link["flags"] & _IFF_UP:
                ipr.link("set", index=idx, state="up")
                log.debug("bridge %s: set up", name)

        except NetworkError:
            raise
        except Exception as exc:
            raise _netlink_error("configuring bridge", name, exc) from exc


# -- inspection ----------------------------------------------------------------------------------
def state(name: str) -> dict[str, Any]:
    """LXD's network state shape: state, mtu, hwaddr, addresses, counters."""
    empty = {"bytes_received": 0, "bytes_sent": 0, "packets_received": 0, "packets_sent": 0}
    with iproute() as ipr:
        idx = _index(ipr, name)
        if idx is None:
            return {"state": "down", "type": "broadcast", "mtu": 0, "hwaddr": "",
                    "addresses": [], "counters": empty}
        try:
            link = ipr.link("get", index=idx)[0]
            addrs = ipr.get_addr(index=idx)
        except Exception as exc:
            raise _netlink_error("reading the state of", name, exc) from exc
    stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS")
    counters = dict(empty)
    if stats is not None:
        counters = {
            "bytes_received": int(stats["rx_bytes"]),
            "bytes_sent": int(stats["tx_bytes"]),
            "packets_received": int(stats["rx_packets"]),
            "packets_sent": int(stats["tx_packets"]),
        }
    addresses = []
    for msg in addrs:
        family = "inet" if msg["family"] == socket.AF_INET else "inet6"
        scope = {0: "global", 253: "link", 254: "local"}.get(msg["scope"], str(msg["scope"]))
        addresses.append({"family": family, "address": str(msg.get_attr("IFA_ADDRESS")),
                          "netmask": str(msg["prefixlen"]), "scope": scope})
    return {
        "state": "up" if link["flags"] & _IFF_UP else "down",
        "type": "broadcast",
        "mtu": int(link.get_attr("IFLA_MTU")),
        "hwaddr": str(link.get_attr("IFLA_ADDRESS")),
        "addresses": addresses,
        "counters": counters,
        "bridge": _bridge_state(name),
    }


def _bridge_state(name: str) -> dict[str, Any]:
    """The bridge part of LXD's network state (``lxc network info``'s ``Bridge:``), read from
    sysfs as LXD reads it: id, STP, forward delay, VLAN settings (0/false where the kernel
    has no such file), and the ports enslaved to it (``brif``), sorted."""
    base = Path("/sys/class/net") / name

    def read(leaf: str) -> str:
        try:
            return (base / "bridge" / leaf).read_text().strip()
        except OSError:
            return ""
    try:
        upper = sorted(p.name for p in (base / "brif").iterdir())
    except OSError:
        upper = []
    return {"id": read("bridge_id"), "stp": read("stp_state") not in ("", "0"),
            "forward_delay": int(read("forward_delay") or 0),
            "vlan_default": int(read("default_pvid") or 0),
            "vlan_filtering": read("vlan_filtering") not in ("", "0"),
            "upper_devices": upper}


def host_networks(exclude: str | None = None, *, routes: bool = True) -> list[IPNetwork]:
    """Every subnet the host already uses: its global addresses and (``routes``) its routes in
    all tables.

    Default routes are left out (they overlap everything); so is ``exclude``, the bridge whose
    subnet is being chosen again.
    """
    found: list[IPNetwork] = []
    with iproute() as ipr:
        try:
            skip = _index(ipr, exclude) if exclude is not None else None
            for msg in ipr.get_addr():
                if (skip is not None and msg["index"] == skip) \
                        or msg["scope"] != _RT_SCOPE_UNIVERSE:
                    continue
                addr = msg.get_attr("IFA_ADDRESS")
                if addr:
                    found.append(ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}").network)
            for family in (socket.AF_INET, socket.AF_INET6) if routes else ():
                for msg in ipr.get_routes(family=family):
                    dst = msg.get_attr("RTA_DST")
                    if not dst or msg["dst_len"] == 0:
                        continue
                    if skip is not None and msg.get_attr("RTA_OIF") == skip:
                        continue
                    found.append(ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False))
        except Exception as exc:
            raise NetworkError(f"reading the host's addresses and routes: {exc}") from exc
    return found
