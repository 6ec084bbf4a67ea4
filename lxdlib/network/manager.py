"""Managed networks: their records, their config rules, and the steps that make them real.

A managed network is a Linux bridge plus, as needed, a dnsmasq (DHCP/DNS) and an nftables table
(forwarding, NAT). Its record ``<root>/networks/<name>.yaml`` is the commit point: it is written
once the bridge is up and configured, and anything this module made for a name without a record is
a leftover that the next `NetworkManager.create` of that name (or `cleanup_leftovers`) removes.

Ownership: a bridge made by this root carries the root's tag as its interface alias. A link with
the network's name that carries another tag (or none) is a host interface, or another root's
bridge, and is never touched. The one exception is a link created by this root that was killed
before its alias was set: ``link-pending`` in the network's run directory marks that window.

The first half of the module is pure (config validation, subnet choice); the rest has effects.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import ipaddress
import json
import os
import random
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from .. import state
from ..config.text import check_description, is_utf8
from ..errors import (
    TYPE_CHECKING,
    AlreadyExists,
    Busy,
    CorruptRecord,
    InUse,
    InvalidArgument,
    InvalidConfig,
    InvalidName,
    LxdlibError,
    NetworkError,
    NotFound,
    ToolMissing,
)
from ..journal import crashpoint
from ..logs import get_logger
from ..patterns import Pattern
from ..values import Value, assign
from . import bridge, dhcphosts, dnsmasq, nat

if TYPE_CHECKING:
    from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
log = get_logger("lxdlib.network")

IPv4Range = tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]
#: ``stale(holder key, network, mac)``: whether the nic that holds a MAC on a network no longer
#: has it (``Context.nic_claim_stale``), asked before a MAC it holds is refused to another nic.
StaleClaim = Callable[[str, str, str], bool]

# -- pure: names and config --------------------------------------------------------------------
_NAME_RE = Pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_MAC_RE = Pattern(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_EXPIRY_RE = Pattern(r"(\d+)([smhdw]?)")
_EXPIRY_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

TRUE_WORDS = frozenset({"true", "yes", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "0", "off"})

BOOL_KEYS = frozenset({"ipv4.nat", "ipv4.dhcp", "ipv6.nat", "ipv6.dhcp"})
KNOWN_KEYS = frozenset({
    "ipv4.address", "ipv4.nat", "ipv4.dhcp", "ipv4.dhcp.ranges", "ipv4.dhcp.expiry",
    "ipv6.address", "ipv6.nat", "ipv6.dhcp",
    "bridge.mtu", "bridge.hwaddr", "dns.domain", "dns.mode", "raw.dnsmasq",
})
DEFAULT_MTU = 1500


def validate_name(name: object) -> str:
    """A network name is a Linux interface name, limited to ``[A-Za-z0-9_.-]`` (1 to 15 chars,
    starting with a letter or digit) so it is also safe in nft, dnsmasq and file names."""
    if not isinstance(name, str):
        raise InvalidName("network", repr(name), "must be a string")
    if not 1 <= len(name) <= 15:
        raise InvalidName("network", name, "must be 1 to 15 characters (a Linux interface name)")
    if not _NAME_RE.fullmatch(name):
        raise InvalidName("network", name, "may only hold letters, digits, '_', '.' and '-', and "
                                           "must start with a letter or digit")
    return name


def parse_bool(key: str, value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise InvalidConfig(key, "must be a boolean (true/false, yes/no, 1/0, on/off)", value)


def _check_ipv4_interface(key: str, value: str) -> ipaddress.IPv4Interface:
    if "/" not in value:
        raise InvalidConfig(key, "must be auto, none or an address with prefix (a.b.c.d/nn)",
                            value)
    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise InvalidConfig(key, "not an IPv4 address with prefix", value) from None
    net = iface.network
    if net.prefixlen > 30:
        raise InvalidConfig(key, "the prefix must be /30 or shorter", value)
    if iface.ip in (net.network_address, net.broadcast_address):
        raise InvalidConfig(key, "must be a host address, not the network or broadcast address",
                            value)
    ip = iface.ip
    if ip.is_loopback or ip.is_multicast or ip.is_link_local or ip.is_unspecified \
            or ip.is_reserved:
        raise InvalidConfig(key, "loopback, link-local, multicast and reserved addresses are "
                                 "refused", value)
    return iface


def _check_ipv6_interface(key: str, value: str) -> ipaddress.IPv6Interface:
    if "/" not in value:
        raise InvalidConfig(key, "must be auto, none or an address with prefix (addr/nn)", value)
    try:
        iface = ipaddress.IPv6Interface(value)
    except ValueError:
        raise InvalidConfig(key, "not an IPv6 address with prefix", value) from None
    if iface.scope_id is not None:  # Python takes `addr%anything/nn` for a zone
        raise InvalidConfig(key, "not an IPv6 address with prefix: no zone (%) allowed", value)
    if iface.network.prefixlen > 126:
        raise InvalidConfig(key, "the prefix must be /126 or shorter", value)
    if iface.ip == iface.network.network_address:
        raise InvalidConfig(key, "must be a host address, not the subnet address", value)
    ip = iface.ip
    if ip.is_loopback or ip.is_multicast or ip.is_link_local or ip.is_unspecified \
            or ip.ipv4_mapped is not None:
        raise InvalidConfig(key, "loopback, link-local, multicast and mapped addresses are "
                                 "refused", value)
    return iface


def parse_ranges(key: str, value: str) -> tuple[IPv4Range, ...]:
    """``start-end[,start-end...]`` into address pairs (start <= end)."""
    ranges: list[IPv4Range] = []
    for part in value.split(","):
        bounds = part.strip().split("-")
        if len(bounds) != 2:
            raise InvalidConfig(key, "must be start-end[,start-end...]", value)
        try:
            start = ipaddress.IPv4Address(bounds[0].strip())
            end = ipaddress.IPv4Address(bounds[1].strip())
        except ValueError:
            raise InvalidConfig(key, "range bounds must be IPv4 addresses", value) from None
        if start > end:
            raise InvalidConfig(key, f"range {part.strip()} ends before it starts", value)
        ranges.append((start, end))
    return tuple(ranges)


def parse_expiry(key: str, value: str) -> str:
    if value == "infinite":
        return value
    m = _EXPIRY_RE.fullmatch(value)
    if m is None:
        raise InvalidConfig(key, "must be a duration like 1h, 30m, 3600 or 'infinite'", value)
    if int(m.group(1)) * _EXPIRY_UNITS[m.group(2)] < 120:
        raise InvalidConfig(key, "must be at least 2 minutes (dnsmasq's minimum)", value)
    return value


def _check_domain(key: str, value: str) -> None:
    labels = value.split(".")
    if len(value) > 253 or not all(dhcphosts.DNS_LABEL.fullmatch(label) for label in labels):
        raise InvalidConfig(key, "must be a DNS domain name (letters, digits, '-' and dots)",
                            value)


def _normal_ipv4(value: str | None) -> str | None:
    """An IPv4 address as entries hold it (``dhcp_host_add`` writes it so); other text as is."""
    if value is None:
        return None
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        return value


def _check_mac(key: str, value: str) -> None:
    if not _MAC_RE.fullmatch(value):
        raise InvalidConfig(key, "must be a MAC address like 02:00:00:aa:bb:cc", value)
    first = int(value[:2], 16)
    if first & 1:
        raise InvalidConfig(key, "must be a unicast MAC address (even first octet)", value)
    if value.replace(":", "") == "000000000000":
        raise InvalidConfig(key, "must not be all zeros", value)


def validate_config(config: object) -> dict[str, str]:
    """Check every key and value on its own (no host lookups) and return a plain copy.

    Unknown keys, non-string values and line breaks or NUL in values are refused (values end up
    on command lines and in config files). ``raw.dnsmasq`` is the one key allowed to hold several
    lines: it is dnsmasq config by definition.
    """
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise InvalidConfig("config", "must be a mapping of keys to strings")
    out: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise InvalidConfig(repr(key), "keys must be strings")
        if not isinstance(value, str):
            raise InvalidConfig(key, "values must be strings", repr(value))
        forbidden = "\r\0" if key == "raw.dnsmasq" else "\n\r\0"
        if any(ch in value for ch in forbidden):
            raise InvalidConfig(key, "line breaks and NUL characters are not allowed", value)
        if not is_utf8(key + value):
            raise InvalidConfig(key, "bytes that are not UTF-8 are not allowed", value)
        if key.startswith("user."):
            if len(key) == len("user.") or any(ch in key for ch in "\n\r\0"):
                raise InvalidConfig(key, "user keys need a name after 'user.'")
        elif key not in KNOWN_KEYS:
            raise InvalidConfig(key, "unknown network config key")
        elif key in BOOL_KEYS:
            parse_bool(key, value)
        elif key == "ipv4.address":
            if value not in ("auto", "none"):
                _check_ipv4_interface(key, value)
        elif key == "ipv6.address":
            if value not in ("auto", "none"):
                _check_ipv6_interface(key, value)
        elif key == "ipv4.dhcp.ranges":
            parse_ranges(key, value)
        elif key == "ipv4.dhcp.expiry":
            parse_expiry(key, value)
        elif key == "bridge.mtu":
            if not value.isdigit() or not 68 <= int(value) <= 65535:
                raise InvalidConfig(key, "must be an integer from 68 to 65535", value)
        elif key == "bridge.hwaddr":
            _check_mac(key, value)
        elif key == "dns.domain":
            _check_domain(key, value)
        elif key == "dns.mode" and value not in ("managed", "none"):
            raise InvalidConfig(key, "must be managed or none", value)
        out[key] = value
    return out


def default_ranges(iface: ipaddress.IPv4Interface) -> tuple[IPv4Range, ...]:
    """Every host address of the subnet except the gateway."""
    net = iface.network
    first = net.network_address + 1
    last = net.broadcast_address - 1
    gw = iface.ip
    if gw == first:
        return ((first + 1, last),) if first + 1 <= last else ()
    if gw == last:
        return ((first, last - 1),)
    return ((first, gw - 1), (gw + 1, last))


class NetworkSpec(Value, frozen=True):
    """The typed view of a network's resolved config (no ``auto`` left)."""

    _fields = ("ipv4", "ipv4_nat", "ipv4_dhcp", "ipv4_ranges", "ipv4_expiry", "ipv6",
               "ipv6_nat", "ipv6_dhcp", "mtu", "hwaddr", "dns_domain", "dns_mode", "raw_dnsmasq")
    __slots__ = _fields

    ipv4: ipaddress.IPv4Interface | None
    ipv4_nat: bool
    ipv4_dhcp: bool
    ipv4_ranges: tuple[IPv4Range, ...]
    ipv4_expiry: str
    ipv6: ipaddress.IPv6Interface | None
    ipv6_nat: bool
    ipv6_dhcp: bool
    mtu: int | None
    hwaddr: str | None
    dns_domain: str
    dns_mode: str
    raw_dnsmasq: str

    def __init__(self, ipv4: ipaddress.IPv4Interface | None, ipv4_nat: bool, ipv4_dhcp: bool,
                 ipv4_ranges: tuple[IPv4Range, ...], ipv4_expiry: str,
                 ipv6: ipaddress.IPv6Interface | None, ipv6_nat: bool, ipv6_dhcp: bool,
                 mtu: int | None, hwaddr: str | None, dns_domain: str, dns_mode: str,
                 raw_dnsmasq: str) -> None:
        assign(self, "ipv4", ipv4)
        assign(self, "ipv4_nat", ipv4_nat)
        assign(self, "ipv4_dhcp", ipv4_dhcp)
        assign(self, "ipv4_ranges", ipv4_ranges)
        assign(self, "ipv4_expiry", ipv4_expiry)
        assign(self, "ipv6", ipv6)
        assign(self, "ipv6_nat", ipv6_nat)
        assign(self, "ipv6_dhcp", ipv6_dhcp)
        assign(self, "mtu", mtu)
        assign(self, "hwaddr", hwaddr)
        assign(self, "dns_domain", dns_domain)
        assign(self, "dns_mode", dns_mode)
        assign(self, "raw_dnsmasq", raw_dnsmasq)

    @property
    def addresses(self) -> list[bridge.IPInterface]:
        found: list[bridge.IPInterface] = []
        if self.ipv4 is not None:
            found.append(self.ipv4)
        if self.ipv6 is not None:
            found.append(self.ipv6)
        return found


def parse_spec(config: dict[str, str]) -> NetworkSpec:
    """Interpret a validated, resolved config and check the rules that span keys."""
    v4 = config.get("ipv4.address", "none")
    v6 = config.get("ipv6.address", "none")
    if v4 == "auto" or v6 == "auto":
        raise InvalidConfig("ipv4.address" if v4 == "auto" else "ipv6.address",
                            "auto must be resolved before use", "auto")
    ipv4 = None if v4 == "none" else _check_ipv4_interface("ipv4.address", v4)
    ipv6 = None if v6 == "none" else _check_ipv6_interface("ipv6.address", v6)
    ranges: tuple[IPv4Range, ...] = ()
    if ipv4 is not None:
        if "ipv4.dhcp.ranges" in config:
            ranges = parse_ranges("ipv4.dhcp.ranges", config["ipv4.dhcp.ranges"])
            net = ipv4.network
            for start, end in ranges:
                if start <= net.network_address or end >= net.broadcast_address \
                        or start not in net or end not in net:
                    raise InvalidConfig("ipv4.dhcp.ranges",
                                        f"range {start}-{end} is not inside the host addresses "
                                        f"of {net}", config["ipv4.dhcp.ranges"])
                if start <= ipv4.ip <= end:
                    raise InvalidConfig("ipv4.dhcp.ranges",
                                        f"range {start}-{end} holds the gateway {ipv4.ip}",
                                        config["ipv4.dhcp.ranges"])
        else:
            ranges = default_ranges(ipv4)
    mtu = int(config["bridge.mtu"]) if "bridge.mtu" in config else None
    if ipv6 is not None and mtu is not None and mtu < 1280:
        raise InvalidConfig("bridge.mtu", "IPv6 needs an MTU of at least 1280",
                            config["bridge.mtu"])

    def flag(key: str, default: bool) -> bool:
        return parse_bool(key, config[key]) if key in config else default

    return NetworkSpec(
        ipv4=ipv4,
        ipv4_nat=flag("ipv4.nat", False),
        ipv4_dhcp=flag("ipv4.dhcp", True),
        ipv4_ranges=ranges,
        ipv4_expiry=config.get("ipv4.dhcp.expiry", "1h"),
        ipv6=ipv6,
        ipv6_nat=flag("ipv6.nat", False),
        ipv6_dhcp=flag("ipv6.dhcp", True),
        mtu=mtu,
        hwaddr=config["bridge.hwaddr"].lower() if "bridge.hwaddr" in config else None,
        dns_domain=config.get("dns.domain", "lxd"),
        dns_mode=config.get("dns.mode", "managed"),
        raw_dnsmasq=config.get("raw.dnsmasq", ""),
    )


def pick_ipv4_subnet(used: Iterable[IPNetwork], rng: random.Random,
                     attempts: int = 256, prefix: int = 24) -> ipaddress.IPv4Interface:
    """A ``10.x.y.1/<prefix>`` (``/24`` for ``ipv4.address=auto``; a shorter prefix for more
    than ~250 instances on one bridge) overlapping none of ``used``: random first, then a scan."""
    if not 8 < prefix <= 30:
        raise InvalidArgument(f"prefix /{prefix}: between /9 and /30")
    taken = [n for n in used if isinstance(n, ipaddress.IPv4Network)]
    shift = 32 - prefix
    count = 1 << (prefix - 8)  # subnets of that size inside 10.0.0.0/8

    def pick(i: int) -> ipaddress.IPv4Interface | None:
        net = ipaddress.IPv4Network(((10 << 24) | (i << shift), prefix))
        if any(net.overlaps(other) for other in taken):
            return None
        return ipaddress.IPv4Interface((int(net.network_address) + 1, prefix))

    for _ in range(attempts):
        found = pick(rng.randrange(count))
        if found is not None:
            return found
    for i in range(count):
        found = pick(i)
        if found is not None:
            return found
    raise NetworkError(f"no free 10.x.y.0/{prefix} subnet left on this host")


def pick_ipv6_subnet(used: Iterable[IPNetwork], rng: random.Random,
                     attempts: int = 256) -> ipaddress.IPv6Interface:
    """A random unique local ``fdXX:XXXX:XXXX:XXXX::1/64`` that overlaps none of ``used``."""
    taken = [n for n in used if isinstance(n, ipaddress.IPv6Network)]
    for _ in range(attempts):
        prefix = (0xFD << 56) | rng.getrandbits(56)
        net = ipaddress.IPv6Network((prefix << 64, 64))
        if not any(net.overlaps(other) for other in taken):
            return ipaddress.IPv6Interface((int(net.network_address) + 1, 64))
    raise NetworkError("no free fd00::/8 /64 subnet found for ipv6.address=auto")


def bridge_mac(tag: str, name: str) -> str:
    """A stable MAC for a bridge without ``bridge.hwaddr``, in LXD's range (``00:16:3e``, as
    LXD 5.0 gives its bridges and nics).

    A bridge with no MAC of its own takes its lowest port's and changes it as instances come and
    go, which breaks the neighbours' ARP caches; a derived one stays the same across re-creation.
    """
    digest = hashlib.sha256(f"{tag}/{name}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x00, 0x16, 0x3E, *digest[:3]))


def probe_order(ranges: tuple[IPv4Range, ...],
                 hwaddr: str) -> Iterator[ipaddress.IPv4Address]:
    """Every address of ``ranges`` once, starting at a point derived from ``hwaddr`` and
    wrapping around: pins spread over the ranges, so finding a free one takes few tries."""
    sizes = [int(end) - int(start) + 1 for start, end in ranges]
    total = sum(sizes)
    if total == 0:
        return
    first = int.from_bytes(hashlib.sha256(hwaddr.lower().encode()).digest()[:8], "big") % total
    for step in range(total):
        offset = (first + step) % total
        for (start, _), size in zip(ranges, sizes, strict=True):
            if offset < size:
                yield start + offset
                break
            offset -= size


#: Searches of the lease file `_first_unleased` makes before it reads every lease at once.
PROBES_BEFORE_INDEX = 16


def _first_unleased(candidates: Iterable[ipaddress.IPv4Address],
                    pinnable: Callable[[ipaddress.IPv4Address], bool],
                    leases: dnsmasq.LeaseFile) -> str | None:
    """The first of ``candidates`` that may be pinned and that no client holds a lease on.

    Most searches end within a few tries (the start is spread by MAC), each one search of the
    lease file. A range that leases fill — a container may take every free address, as in
    LXD — would make that one search per address of the range, under the network's lock: ~40 s
    for a full /16. After `PROBES_BEFORE_INDEX` tries the leased addresses are read into a set
    once, so the rest of the walk costs one pass over the file.
    """
    held: set[str] | None = None
    for tried, addr in enumerate(candidates):
        if not pinnable(addr):
            continue
        text = str(addr)
        if held is None and tried >= PROBES_BEFORE_INDEX:
            held = leases.addresses()
        if not (text in held if held is not None else leases.holds(text)):
            return text
    return None


# -- effects -----------------------------------------------------------------------------------
def _sysctl_on(path: str) -> bool:
    try:
        return (Path("/proc/sys") / path).read_text().strip() == "1"
    except FileNotFoundError:
        return False


PENDING = "link-pending"
APPLIED = "applied"
DHCP_HOSTS = "dhcp-hosts.yaml"  # older roots: every static host in one file (moved on start)
#: The lock a network's delete or rename holds from ``withdraw`` to its end (the network's own
#: lock it cannot hold meanwhile: a start holds an instance's lock and then takes it).
WITHDRAW_LOCK = "network-withdraw"
#: Renames of a root's networks, one at a time (object ``all``), held from before the intent
#: (``RENAME_INTENT`` in the records' directory: old name, new name, whether it was up) is
#: written to its removal. Whoever finds the intent while this lock is free settles it: the
#: rename that wrote it was killed (``NetworkManager._settle_rename``).
RENAME_LOCK = "network-rename"
RENAME_INTENT = ".rename.yaml"


class NetworkManager:
    """Create, change, inspect and remove managed bridge networks under one lxdlib root."""

    def __init__(self, paths: state.Paths) -> None:
        self.paths = paths
        self.tag = "lxdlib:" + hashlib.sha256(str(paths.root).encode()).hexdigest()[:16]
        self._rng = random.SystemRandom()

    # -- paths and records ---------------------------------------------------------------------
    def _record_path(self, name: str) -> Path:
        return self.paths.networks / f"{name}.yaml"

    def run_dir(self, name: str) -> Path:
        return self.paths.run / "networks" / name

    @contextlib.contextmanager
    def _global_lock(self) -> Iterator[None]:
        with state.lock(self.paths, "networks", "all"):
            yield

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        with state.lock(self.paths, "network", name):
            yield

    def _away_path(self, name: str) -> Path:
        """Where a delete or rename in progress keeps the record out of sight (``withdraw``)."""
        return self.paths.networks / f".{name}.away"

    def _put_back(self, name: str) -> bool:
        """Settle what a killed rename or delete left that concerns ``name``; True if its record
        is there now or is withdrawn by a delete or rename under way."""
        self._settle_rename()
        if self._record_path(name).exists():
            return True
        return state.put_back(self.paths, WITHDRAW_LOCK, name, self._record_path(name),
                              self._away_path(name))

    def withdraw(self, name: str, *, unreadable: bool = False) -> None:
        """Take the network out of sight of new users: its record renamed to
        ``.<name>.away``, where no look-up finds it (a nic's check then says it is gone), its
        bridge left as it is. The caller (``lxdlib.networks``) holds ``WITHDRAW_LOCK`` of the
        name until it has deleted or renamed the network or called ``restore``; a kill in
        between leaves the file, which the next look-up puts back. ``unreadable``: a record
        that is there but cannot be read is withdrawn too (a delete needs nothing of it)."""
        with self._global_lock(), self._lock(name):
            self._present(name, unreadable=unreadable)
            os.rename(self._record_path(name), self._away_path(name))

    def restore(self, name: str) -> None:
        """Undo ``withdraw``."""
        with self._global_lock(), self._lock(name):
            away = self._away_path(name)
            if os.path.lexists(away) and not os.path.lexists(self._record_path(name)):
                os.rename(away, self._record_path(name))

    def _read(self, name: str, withdrawn: bool = False) -> dict[str, Any]:
        validate_name(name)
        path = self._away_path(name) if withdrawn else self._record_path(name)
        try:
            try:
                data = state.read_record(path)
            except FileNotFoundError:
                # withdrawn by a delete or rename under way (still away: gone for now), or
                # left so by a killed one (put back, or moved on to its new name)
                if withdrawn or not self._put_back(name):
                    raise
                data = state.read_record(path)
        except FileNotFoundError:
            raise NotFound("network", name) from None
        except state.RecordSyntaxError as e:  # hand-edited, cut short: this network alone
            raise CorruptRecord("network", name, path, e.reason) from None
        if not isinstance(data, dict) or not isinstance(data.get("config") or {}, dict):
            raise CorruptRecord("network", name, path, "not a mapping with a config mapping")
        data["name"] = name  # the file name is authoritative (rename moves the file first)
        data["config"] = {str(k): str(v) for k, v in (data.get("config") or {}).items()}
        return data

    def _present(self, name: str, withdrawn: bool = False, *,
                 unreadable: bool = False) -> CorruptRecord | None:
        """``NotFound`` unless the network's record is there; ``CorruptRecord`` for one that
        cannot be read, unless ``unreadable`` (a delete: what it removes is found by the name,
        and a record nobody can read must not keep its bridge and the name forever), which
        returns that error instead."""
        try:
            self._read(name, withdrawn)
        except CorruptRecord as e:
            if not unreadable:
                raise
            return e
        return None

    def _write(self, record: dict[str, Any]) -> None:
        self.paths.networks.mkdir(parents=True, exist_ok=True)
        state.write_record(self._record_path(record["name"]), record)

    def get(self, name: str) -> dict[str, Any]:
        return self._read(name)

    __getitem__ = get

    def _ipython_key_completions_(self) -> builtins.list[str]:
        return [n["name"] for n in self.list()]

    def _repr_html_(self) -> str:
        from ..notebook import networks_html
        return networks_html(self.list())

    def list(self) -> builtins.list[dict[str, Any]]:
        if not self.paths.networks.is_dir():
            return []
        out = []
        self._settle_rename()  # a killed rename: both names are settled before either is listed
        entries = sorted(os.listdir(self.paths.networks))
        for entry in entries:  # what a killed delete or rename withdrew: put back first
            if entry.startswith(".") and entry.endswith(".away") and \
                    self._put_back(entry[1:-len(".away")]):
                entries = sorted(os.listdir(self.paths.networks))
        for entry in entries:
            name = entry[: -len(".yaml")]
            if entry.startswith(".") or not entry.endswith(".yaml") or \
                    not _NAME_RE.fullmatch(name):
                continue
            try:
                out.append(self._read(name))
            except NotFound:
                continue
            except CorruptRecord as e:  # one bad network breaks no listing
                log.warning("%s", e)
        return out

    def _used_subnets(self, exclude: str | None) -> builtins.list[IPNetwork]:
        used: builtins.list[IPNetwork] = []
        for rec in self.list():
            if rec["name"] == exclude:
                continue
            for key in ("ipv4.address", "ipv6.address"):
                value = rec["config"].get(key, "none")
                if value not in ("auto", "none"):
                    with contextlib.suppress(ValueError):
                        used.append(ipaddress.ip_interface(value).network)
        return used

    def _resolve(self, name: str, config: dict[str, str], *, creating: bool,
                 previous: dict[str, str] | None = None) -> dict[str, str]:
        """Fill create-time defaults, turn ``auto`` into real subnets, refuse overlaps."""
        config = dict(config)
        if creating:
            config.setdefault("ipv4.address", "auto")
            if config["ipv4.address"] == "auto":
                config.setdefault("ipv4.nat", "true")
            if config.get("ipv6.address") == "auto":
                config.setdefault("ipv6.nat", "true")
        others = self._used_subnets(exclude=name)
        if config.get("ipv4.address") == "auto" or config.get("ipv6.address") == "auto":
            used = [*bridge.host_networks(exclude=name), *others]
            if config.get("ipv4.address") == "auto":
                config["ipv4.address"] = str(pick_ipv4_subnet(used, self._rng))
            if config.get("ipv6.address") == "auto":
                config["ipv6.address"] = str(pick_ipv6_subnet(used, self._rng))
        parse_spec(config)  # cross-key rules, before anything on the host changes
        previous = previous or {}
        host: builtins.list[IPNetwork] | None = None
        for key in ("ipv4.address", "ipv6.address"):
            value = config.get(key, "none")
            if value == "none" or value == previous.get(key):
                continue
            net = ipaddress.ip_interface(value).network
            for other in others:
                if net.overlaps(other):
                    raise InvalidConfig(key, f"overlaps {other}, used by another network", value)
            if host is None:
                host = bridge.host_networks(exclude=name, routes=False)
            for other in host:
                if net.overlaps(other):
                    raise InvalidConfig(key, f"overlaps {other}, an address on the host", value)
        return config

    # -- runtime -------------------------------------------------------------------------------
    def _dnsmasq_config(self, name: str, spec: NetworkSpec) -> dnsmasq.DnsmasqConfig:
        run = self.run_dir(name)
        user, group = dnsmasq.choose_user(run)
        return dnsmasq.DnsmasqConfig(
            bridge=name, run_dir=run, ipv4=spec.ipv4, ipv4_dhcp=spec.ipv4_dhcp,
            ipv4_ranges=spec.ipv4_ranges, ipv4_expiry=spec.ipv4_expiry, ipv6=spec.ipv6,
            ipv6_dhcp=spec.ipv6_dhcp, mtu=spec.mtu, dns_domain=spec.dns_domain,
            dns_mode=spec.dns_mode, user=user, group=group)

    def _nat_spec(self, name: str, spec: NetworkSpec) -> nat.TableSpec:
        return nat.bridge_table(
            name, name,
            nat4=spec.ipv4.network if spec.ipv4 is not None and spec.ipv4_nat else None,
            nat6=spec.ipv6.network if spec.ipv6 is not None and spec.ipv6_nat else None)

    def _fingerprint(self, record: dict[str, Any]) -> str:
        """What the runtime was built from; ``user.*`` keys change nothing on the host."""
        config = {k: v for k, v in record["config"].items() if not k.startswith("user.")}
        blob = json.dumps({"tag": self.tag, "config": config}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _owns_link(self, name: str) -> bool | None:
        """True: our bridge. False: someone else's interface. None: no such link."""
        current = bridge.alias(name)
        if current is None:
            return None
        if current == self.tag:
            return True
        return current == "" and bridge.is_bridge(name) and (self.run_dir(name) / PENDING).exists()

    def _is_ready(self, name: str, record: dict[str, Any], spec: NetworkSpec) -> bool:
        run = self.run_dir(name)
        if (run / DHCP_HOSTS).exists():
            return False  # an older root's hosts file: `_apply` moves it (and restarts dnsmasq)
        try:
            if (run / APPLIED).read_text() != self._fingerprint(record):
                return False
        except FileNotFoundError:
            return False
        if bridge.alias(name) != self.tag or not bridge.is_up(name):
            return False
        if not bridge.has_addresses(name, spec.addresses):
            return False
        if spec.ipv4 is not None and spec.ipv4_nat and not _sysctl_on("net/ipv4/ip_forward"):
            return False
        if spec.ipv6 is not None and spec.ipv6_nat \
                and not _sysctl_on("net/ipv6/conf/all/forwarding"):
            return False
        cfg = self._dnsmasq_config(name, spec)
        if dnsmasq.needed(cfg):
            if not dnsmasq.is_current(run, dnsmasq.build_argv(cfg)):
                return False
        elif dnsmasq.running_pid(run) is not None:
            return False
        return nat.table_exists(nat.table_name(name))

    def _apply(self, name: str, record: dict[str, Any], spec: NetworkSpec) -> None:
        """Make the host match the record (idempotent): bridge, addresses, NAT, dnsmasq.

        dnsmasq is restarted only when its command line or the record changed since the last
        apply, so clients keep being served while a flushed ruleset is put back.
        """
        run = self.run_dir(name)
        run.mkdir(parents=True, exist_ok=True)
        # An unprivileged dnsmasq re-reads its hosts file here: others may search, not list.
        os.chmod(run.parent, 0o711)
        os.chmod(run, 0o711)
        state.remove_stale_tmp(run)
        fingerprint = self._fingerprint(record)
        try:
            changed = (run / APPLIED).read_text() != fingerprint
            (run / APPLIED).unlink()
        except FileNotFoundError:
            changed = True
        owned = self._owns_link(name)
        if owned is False:
            raise NetworkError(f"interface {name!r} exists on the host and is not a bridge of "
                               "this lxdlib root")
        if owned and bridge.alias(name) != self.tag:
            bridge.delete(name)  # killed before its alias was set: start over
            owned = None
        if owned is None:
            state.atomic_write(run / PENDING, b"")
            try:
                bridge.create(name, self.tag, hwaddr=spec.hwaddr or bridge_mac(self.tag, name))
            finally:
                # Once the alias is set (or the create failed) the marker must not vouch for a
                # link of that name any more: it could be someone else's.
                (run / PENDING).unlink()
        bridge.configure(name, mtu=spec.mtu or DEFAULT_MTU,
                         hwaddr=spec.hwaddr or bridge_mac(self.tag, name),
                         addresses=spec.addresses, ipv6=spec.ipv6 is not None)
        if spec.ipv4 is not None and spec.ipv4_nat:
            bridge.write_sysctl("net/ipv4/ip_forward", "1")
        if spec.ipv6 is not None and spec.ipv6_nat:
            bridge.write_sysctl("net/ipv6/conf/all/forwarding", "1")
        nat.apply(self._nat_spec(name, spec))
        cfg = self._dnsmasq_config(name, spec)
        if dnsmasq.needed(cfg):
            self._hosts(name)  # an older root's single hosts file moves to the directory first
            with contextlib.suppress(FileNotFoundError):
                (run / dnsmasq.LEGACY_HOSTS).unlink()  # its rendering: no daemon reads it now
            if changed or not dnsmasq.is_current(run, dnsmasq.build_argv(cfg)):
                dnsmasq.start(cfg, spec.raw_dnsmasq)
        else:
            dnsmasq.stop(run)
        state.atomic_write(run / APPLIED, fingerprint.encode())

    def _teardown(self, name: str) -> None:
        """Remove the runtime parts this root owns (dnsmasq, nft table, bridge); idempotent."""
        run = self.run_dir(name)
        with contextlib.suppress(FileNotFoundError):
            (run / APPLIED).unlink()
        if run.is_dir():
            dnsmasq.stop(run)
        owned = self._owns_link(name)
        if owned is False:
            return  # someone else's interface of that name: neither it nor its table are ours
        nat.delete(name)
        if owned:
            bridge.delete(name)
        with contextlib.suppress(FileNotFoundError):
            (run / PENDING).unlink()

    def _cleanup_leftover(self, name: str) -> None:
        """Remove what an interrupted create/delete of ``name`` (no record) left behind."""
        if self._record_path(name).exists() or self._put_back(name):
            return  # a withdrawn network: its delete or rename decides
        run = self.run_dir(name)
        if run.is_dir() or self._owns_link(name):
            self._teardown(name)
        if run.is_dir():
            shutil.rmtree(run)

    # -- public operations ---------------------------------------------------------------------
    def create(self, name: str, config: dict[str, str] | None = None,
               description: str = "") -> dict[str, Any]:
        """Create the bridge and everything it serves; on any failure nothing is left."""
        validate_name(name)
        cfg = validate_config(config)
        check_description(description)
        self.paths.networks.mkdir(parents=True, exist_ok=True)
        with self._global_lock():
            state.remove_stale_tmp(self.paths.networks)
            self._put_back(name)
            if self._record_path(name).exists() or os.path.lexists(self._away_path(name)):
                raise AlreadyExists("network", name)
            with self._lock(name):
                self._cleanup_leftover(name)
                if bridge.exists(name):
                    raise AlreadyExists("interface", name)
                resolved = self._resolve(name, cfg, creating=True)
                spec = parse_spec(resolved)
                record = {"name": name, "type": "bridge", "managed": True,
                          "description": description, "config": resolved}
                try:
                    self._apply(name, record, spec)
                    self._write(record)
                except BaseException:
                    with contextlib.suppress(Exception):
                        self._teardown(name)
                    with contextlib.suppress(Exception):
                        shutil.rmtree(self.run_dir(name))
                    raise
        return self._read(name)

    def ensure_up(self, name: str) -> None:
        """Make sure the network is up (after a host reboot, a crash, a flushed ruleset…).

        Cheap when everything is in place: a few file reads and one netlink query.
        """
        record = self._read(name)
        spec = parse_spec(record["config"])
        if self._is_ready(name, record, spec):
            return
        with self._lock(name):
            record = self._read(name)
            spec = parse_spec(record["config"])
            if not self._is_ready(name, record, spec):
                self._apply(name, record, spec)

    def update(self, name: str, config: dict[str, str],
               description: str | None = None) -> dict[str, Any]:
        """Replace the network's config with ``config`` and apply it live if the network is up.

        Like LXD's ``PUT``: keys left out are unset (an empty value also unsets a key), so
        ``update(name, {**get(name)["config"], "k": "v"})`` sets one key. ``auto`` addresses are
        resolved to new subnets. If applying fails, the old record is put back and re-applied
        before the error is raised; bad input changes nothing. ``description`` replaces the
        description when given.
        """
        validate_name(name)
        if not isinstance(config, dict):
            raise InvalidConfig("config", "must be a mapping of keys to strings")
        if description is not None:
            check_description(description)
        with self._global_lock(), self._lock(name):
            old = self._read(name)
            merged = {key: value for key, value in config.items() if value != ""}
            resolved = self._resolve(name, validate_config(merged), creating=False,
                                     previous=old["config"])
            spec = parse_spec(resolved)
            record = {**old, "config": resolved}
            if description is not None:
                record["description"] = description
            live = self._owns_link(name) is True  # a network that is down stays down
            self._write(record)
            crashpoint("network.recorded")  # the record new, the host not yet: `settle`
            if live:
                try:
                    self._apply(name, record, spec)
                except BaseException:
                    self._write(old)
                    with contextlib.suppress(Exception):
                        self._apply(name, old, parse_spec(old["config"]))
                    raise
        return self._read(name)

    def modify(self, name: str, change: Callable[[dict[str, str]], object],
               description: str | None = None) -> dict[str, Any]:
        """Read-modify-write of a network's config: ``change`` edits a copy of the config read
        under the network's lock, then ``update`` validates and applies it (with
        ``description`` when given). Concurrent ``network set``s each keep the others' keys
        (``update`` alone replaces the whole config with what the caller read before)."""
        validate_name(name)
        with self._global_lock(), self._lock(name):
            cfg = dict(self._read(name)["config"])
            change(cfg)
            return self.update(name, cfg, description)

    def delete(self, name: str, *, used_by: builtins.list[str] | None = None,
               withdrawn: bool = False) -> None:
        """Remove the network; ``used_by`` (instance names from the caller) must be empty.
        ``withdrawn``: the caller withdrew it (``withdraw``) and holds ``WITHDRAW_LOCK``.
        A record that cannot be read (hand-edited, cut short, a directory) is deleted too:
        the bridge, dnsmasq and nft table are found by the name."""
        self._present(name, withdrawn, unreadable=True)
        if used_by:
            raise InUse(f"network {name!r} is used by {', '.join(sorted(used_by))}")
        with self._global_lock(), self._lock(name):
            if (corrupt := self._present(name, withdrawn, unreadable=True)) is not None:
                log.warning("%s: deleting it all the same", corrupt)
            self._teardown(name)
            with contextlib.suppress(FileNotFoundError):  # a directory: only an empty one
                state.unlink_record(self._away_path(name) if withdrawn
                                    else self._record_path(name))
            state.fsync_dir(self.paths.networks)
            shutil.rmtree(self.run_dir(name), ignore_errors=True)

    def rename(self, old: str, new: str, withdrawn: bool = False) -> None:
        """Rename a network that nothing uses (the caller checks); it comes back up if it was.
        ``withdrawn``: as for ``delete``.

        The bridge cannot be renamed in place (its nft table, dnsmasq and addresses name it), so
        the old one is taken down and the new one made. Under ``RENAME_INTENT`` (written after
        the record is withdrawn, before the bridge goes) the record is written under the new
        name, still withdrawn (``.<new>.away``: the commit point), the old one dropped, the new
        bridge brought up if the old one was, and only then the record put in sight. A kill
        before the commit is undone by the next call that looks up either name, lists the
        networks or renames one (the old name back, up again if it was); one after it is
        finished (the bridge up under the new name)."""
        validate_name(new)
        with state.lock(self.paths, RENAME_LOCK, "all"):
            self._settle_rename(held=True)
            with self._global_lock():
                record = self._read(old, withdrawn)
                if old == new:
                    return
                self._put_back(new)
                if self._record_path(new).exists() or os.path.lexists(self._away_path(new)):
                    raise AlreadyExists("network", new)
                with self._lock(old), self._lock(new):
                    self._cleanup_leftover(new)
                    if bridge.exists(new):
                        raise AlreadyExists("interface", new)
                    if not withdrawn:  # out of sight while it moves, as a caller's withdraw
                        os.rename(self._record_path(old), self._away_path(old))
                    was_up = self._owns_link(old) is True
                    state.write_record(self.paths.networks / RENAME_INTENT,
                                       {"old": old, "new": new, "up": was_up})
                    crashpoint("network.rename.intent")
                    try:
                        self._teardown(old)
                        crashpoint("network.rename.down")
                        src, dst = self.run_dir(old), self.run_dir(new)
                        if src.is_dir():
                            with contextlib.suppress(FileNotFoundError):
                                (src / dnsmasq.PIDFILE).unlink()
                            dst.parent.mkdir(parents=True, exist_ok=True)
                            os.rename(src, dst)
                        crashpoint("network.rename.moved")
                        state.write_record(self._away_path(new), {**record, "name": new})
                    except BaseException:
                        if os.path.lexists(self._away_path(new)):  # failed after its commit
                            self._finish_rename(old, new, was_up)
                        else:
                            self._undo_rename(old, new, was_up, put_back=not withdrawn,
                                              quiet=True)
                        raise
                    crashpoint("network.rename.recorded")
                    self._finish_rename(old, new, was_up)

    def _finish_rename(self, old: str, new: str, up: bool) -> None:
        """After the commit (``.<new>.away`` written): the old record goes, the bridge comes
        up under the new name if it was up, the intent goes, and the record comes in sight.
        The intent goes first: a kill after it leaves a withdrawn record alone, which the
        next look-up puts back. If the bridge cannot come up the rename stands, down."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._away_path(old))
        state.fsync_dir(self.paths.networks)
        src, dst = self.run_dir(old), self.run_dir(new)
        if src.is_dir() and not os.path.lexists(dst):  # moved before the commit; belt and braces
            os.rename(src, dst)
        try:
            if up:
                record = self._read(new, withdrawn=not self._record_path(new).exists())
                self._apply(new, record, parse_spec(record["config"]))
            crashpoint("network.rename.up")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.networks / RENAME_INTENT)
            crashpoint("network.rename.settled")
            state.put_back(self.paths, WITHDRAW_LOCK, new, self._record_path(new),
                           self._away_path(new))

    def _undo_rename(self, old: str, new: str, up: bool, *, put_back: bool,
                     quiet: bool = False) -> None:
        """Before the commit: the run directory back under the old name, the record put
        back (``put_back``; else the caller that withdrew it does), the bridge up again if it
        was, the intent removed. ``quiet``: a failure to bring it up is logged, not raised
        (the caller raises its own error)."""
        src, dst = self.run_dir(new), self.run_dir(old)
        if src.is_dir() and not os.path.lexists(dst):
            os.rename(src, dst)
        if put_back:
            state.put_back(self.paths, WITHDRAW_LOCK, old, self._record_path(old),
                           self._away_path(old))
        try:
            if up:
                there = self._record_path(old).exists()
                record = self._read(old, withdrawn=not there)
                self._apply(old, record, parse_spec(record["config"]))
        except (LxdlibError, OSError) as e:
            if not quiet:
                raise
            log.warning("network %s: not brought up again after its rename failed: %s", old, e)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.networks / RENAME_INTENT)

    def _settle_rename(self, held: bool = False) -> None:
        """Finish or undo the rename a killed process left (``RENAME_INTENT``): finished when
        the record under the new name was written, else undone. A probe (one ``lstat`` when
        there is none): a live rename holds ``RENAME_LOCK`` and decides itself. ``held``: the
        caller holds that lock."""
        intent = self.paths.networks / RENAME_INTENT
        if not os.path.lexists(intent):
            return
        if not held:
            with contextlib.suppress(Busy), \
                    state.lock(self.paths, RENAME_LOCK, "all", timeout=0):
                self._settle_rename(held=True)
            return
        try:
            op = state.read_record(intent)
            old, new, up = validate_name(op["old"]), validate_name(op["new"]), op["up"] is True
        except (FileNotFoundError, state.RecordSyntaxError, KeyError, TypeError,
                InvalidName) as e:
            log.warning("network rename intent %s unreadable (%s): removed", intent, e)
            with contextlib.suppress(FileNotFoundError):
                intent.unlink()
            return
        with self._lock(old), self._lock(new):
            try:
                if os.path.lexists(self._away_path(new)) or self._record_path(new).exists():
                    log.info("network rename %s -> %s: finished after a crash", old, new)
                    self._finish_rename(old, new, up)
                else:
                    log.info("network rename %s -> %s: undone after a crash", old, new)
                    self._undo_rename(old, new, up, put_back=True)
            except (LxdlibError, OSError) as e:  # settled on disk; the bridge stays down
                log.warning("network rename %s -> %s: %s", old, new, e)

    def down(self, name: str) -> None:
        """Remove the runtime parts (dnsmasq, nft table, bridge) but keep the record."""
        self._read(name)
        with self._lock(name):
            self._teardown(name)

    def settle(self) -> builtins.list[str]:
        """Bring each network that is up (its bridge ours) but not as its record says to
        what the record says; the names of those changed. What a kill amid ``update`` leaves
        (the record new, the host old or half new) or amid ``down`` (half torn down): no
        listing looks at the host, so ``lxdlib recover`` calls this (as a start of one of its
        instances would, ``ensure_up``). A network that is down stays down; one another
        process holds is left to it."""
        done: builtins.list[str] = []
        for record in self.list():
            name = record["name"]
            try:
                if self._owns_link(name) is not True or \
                        self._is_ready(name, record, parse_spec(record["config"])):
                    continue
                with state.lock(self.paths, "network", name, timeout=0):
                    record = self._read(name)
                    spec = parse_spec(record["config"])
                    if self._owns_link(name) is True and not self._is_ready(name, record, spec):
                        self._apply(name, record, spec)
                        done.append(name)
            except Busy:
                continue
            except LxdlibError as e:  # this network alone
                log.warning("network %s: %s", name, e)
        return done

    def stop_all(self) -> None:
        """`down` every network of this root; the first failure is raised after trying all."""
        errors: builtins.list[Exception] = []
        for record in self.list():
            try:
                self.down(record["name"])
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def cleanup_leftovers(self) -> None:
        """Remove run directories, bridges and daemons of networks that have no record."""
        base = self.paths.run / "networks"
        if not base.is_dir():
            return
        with self._global_lock():
            for entry in sorted(base.iterdir()):
                if entry.is_dir() and _NAME_RE.fullmatch(entry.name) \
                        and not self._record_path(entry.name).exists():
                    with self._lock(entry.name):
                        self._cleanup_leftover(entry.name)

    # -- inspection ----------------------------------------------------------------------------
    def info(self, name: str) -> dict[str, Any]:
        """Live state in LXD's shape: state, type, mtu, hwaddr, addresses, counters."""
        self._read(name)
        if self._owns_link(name) is not True:
            return {"state": "down", "type": "broadcast", "mtu": 0, "hwaddr": "",
                    "addresses": [], "counters": {"bytes_received": 0, "bytes_sent": 0,
                                                  "packets_received": 0, "packets_sent": 0}}
        return bridge.state(name)

    def leases(self, name: str) -> builtins.list[dict[str, Any]]:
        """Current DHCP leases: hwaddr, address, hostname, expiry (Unix time), type."""
        self._read(name)
        run = self.run_dir(name)
        if (run / DHCP_HOSTS).exists():
            with self._lock(name):
                self._hosts(name)
        # static as LXD says it: an address pinned by the nic's ipv4.address; an instance's
        # entry that pins only its hostname still gets a dynamic lease
        static = {h.hwaddr for h in dhcphosts.HostStore(run).all_hosts().values() if h.ipv4}
        out = []
        for lease in dnsmasq.read_leases(run):
            lease["type"] = "static" if lease["hwaddr"] in static else "dynamic"
            out.append(lease)
        return out

    # -- static DHCP hosts -----------------------------------------------------------------------
    # Each step touches one owner's file and the index files of the MAC and address it claims
    # (see `lxdlib.network.dhcphosts`): its cost does not depend on how many instances the
    # network serves. dnsmasq picks up new files itself; after a removal or a change it is told
    # to re-read (SIGHUP), as it never drops a record on its own.
    def _hosts(self, name: str) -> dhcphosts.HostStore:
        """The network's static hosts, with an older root's single ``dhcp-hosts.yaml`` moved in
        first (once). The caller holds the network's lock."""
        run = self.run_dir(name)
        store = dhcphosts.HostStore(run)
        legacy = run / DHCP_HOSTS
        if legacy.exists():
            store.migrate(legacy)
        return store

    def _put_host(self, name: str, store: dhcphosts.HostStore, host: dhcphosts.StaticHost) -> None:
        due = store.reread_due(changed=host)  # its MAC's removed entry is still in dnsmasq
        if store.put(host) or due:
            self._reread(name, store)

    def _reread(self, name: str, store: dhcphosts.HostStore) -> None:
        """Tell dnsmasq to read its hosts again, and forget what it held that is gone."""
        dnsmasq.reread_hosts(self.run_dir(name))
        store.reread_sent()

    def mac_holder(self, name: str, hwaddr: str) -> str | None:
        """The key (``<instance>/<device>``) that holds ``hwaddr`` on network ``name``, if any:
        one index read, without the lock (a MAC being chosen is checked again, under the lock,
        when its nic is rendered)."""
        run = self.run_dir(name)
        if (run / DHCP_HOSTS).exists():  # an older root's single file, not moved in yet
            with self._lock(name):
                return self._hosts(name).holder_of_mac(hwaddr)
        return dhcphosts.HostStore(run).holder_of_mac(hwaddr)

    def _take_mac(self, name: str, store: dhcphosts.HostStore, key: str, hwaddr: str,
                  stale: StaleClaim | None) -> None:
        """Refuse ``hwaddr`` for ``key`` while another nic of the network holds it, unless
        ``stale`` says that holder no longer has it: then its entry goes and ``key`` may take
        the MAC (a holder killed before its record said so). Under the network's lock."""
        mac = hwaddr.lower()
        other = store.holder_of_mac(mac)
        if other in (None, key):
            return
        if stale is not None and stale(other, name, mac):
            log.info("network %s: MAC %s taken from %s, which no longer has it", name, mac,
                     other)
            gone = store.remove(other)
            if store.reread_due(gone=gone):
                self._reread(name, store)
            return
        raise InvalidConfig("hwaddr", f"already assigned to {other}", hwaddr)

    def dhcp_host_add(self, name: str, key: str, hwaddr: str, ipv4: str | None = None,
                      hostname: str | None = None, *,
                      stale: StaleClaim | None = None) -> None:
        """Pin ``hwaddr`` to ``ipv4`` and/or ``hostname`` on this network (idempotent).

        ``key`` identifies the owner (e.g. ``<instance>/<device>``); adding the same key again
        replaces its entry. A running dnsmasq sees a new entry by itself and is told of a
        changed one (SIGHUP). This runs on every render of a nic (create, copy, edit, start):
        an unchanged entry costs one small file read. The entry is the nic's hold on its MAC
        too: another key's entry with that MAC refuses it (``InvalidConfig``), unless
        ``stale(holder, network, mac)`` says the holder no longer has it.
        """
        record = self._read(name)
        if not isinstance(key, str) or not key or any(ch in key for ch in "\n\r\0"):
            raise InvalidConfig("key", "must be a non-empty single-line string", str(key))
        _check_mac("hwaddr", hwaddr)
        if hostname is not None and not dhcphosts.DNS_LABEL.fullmatch(hostname):
            raise InvalidConfig("hostname", "must be a DNS label", hostname)
        spec = parse_spec(record["config"])
        if ipv4 is not None:
            try:
                addr = ipaddress.IPv4Address(ipv4)
            except ValueError:
                raise InvalidConfig("ipv4.address", "not an IPv4 address", ipv4) from None
            if spec.ipv4 is not None and not spec.ipv4_dhcp:
                # as LXD refuses it: with no DHCPv4 the address would be given to nobody
                raise InvalidConfig("ipv4.address", f"network {name} runs no DHCPv4 "
                                                    "(ipv4.dhcp is false)", ipv4)
            net = spec.ipv4.network if spec.ipv4 is not None else None
            if net is None or addr not in net or addr in (net.network_address,
                                                          net.broadcast_address):
                raise InvalidConfig("ipv4.address", f"not a host address of network {name} "
                                                    f"({net})", ipv4)
            if spec.ipv4 is not None and addr == spec.ipv4.ip:
                raise InvalidConfig("ipv4.address", "is the network's gateway address", ipv4)
            ipv4 = str(addr)
        host = dhcphosts.StaticHost(key=key, hwaddr=hwaddr.lower(), ipv4=ipv4, hostname=hostname)
        with self._lock(name):
            store = self._hosts(name)
            current = store.get(key)
            if current == host:
                return  # unchanged: no write, no SIGHUP (this runs on every instance start)
            if ipv4 is not None:
                other = store.holder_of_ipv4(ipv4)
                if other not in (None, key):
                    raise InvalidConfig("ipv4.address", f"already assigned to {other}", ipv4)
            self._take_mac(name, store, key, host.hwaddr, stale)
            self._put_host(name, store, host)

    def check_nic_ipv6(self, name: str, ipv6: str) -> None:
        """Refuse a nic's ``ipv6.address`` that the network could never be the subnet of, as
        LXD does: the network has no IPv6 subnet, or the address lies outside it, or is its
        subnet (router anycast) address or the bridge's own. The address is what
        ``security.ipv6_filtering`` lets the nic send from, so one outside the subnet would let
        the container use a foreign source address."""
        spec = parse_spec(self._read(name)["config"])
        try:
            addr = ipaddress.IPv6Address(ipv6)
        except ValueError:
            raise InvalidConfig("ipv6.address", "not an IPv6 address", ipv6) from None
        if spec.ipv6 is None:
            raise InvalidConfig("ipv6.address", f"network {name} has no IPv6 subnet", ipv6)
        net = spec.ipv6.network
        if addr not in net or addr == net.network_address:
            raise InvalidConfig("ipv6.address", f"not a host address of network {name} "
                                                f"({net})", ipv6)
        if addr == spec.ipv6.ip:
            raise InvalidConfig("ipv6.address", "is the network's gateway address", ipv6)

    def nic_filter_subnets(self, name: str) -> tuple[ipaddress.IPv4Network | None,
                                                     ipaddress.IPv6Network | None]:
        """The subnets from which this network hands out addresses to nics: IPv4 when it runs
        DHCPv4, IPv6 (SLAAC) when it has an IPv6 subnet. None: the family is not served, so
        IP filtering blocks it (as LXD does)."""
        spec = parse_spec(self._read(name)["config"])
        v4 = spec.ipv4.network if spec.ipv4 is not None and spec.ipv4_dhcp else None
        v6 = spec.ipv6.network if spec.ipv6 is not None else None
        return v4, v6

    def dhcp_host_allocate(self, name: str, key: str, hwaddr: str,
                           hostname: str | None = None, *,
                           stale: StaleClaim | None = None) -> str | None:
        """Pin ``hwaddr`` to an IPv4 address of its own (what ``security.ipv4_filtering`` without
        a static ``ipv4.address`` needs, as in LXD): the one already pinned for ``key``, else the
        address the MAC holds a lease on, else a free one of the DHCP ranges — the first two
        only while they lie in the network's current ranges (a change of its subnet leaves a
        pin dnsmasq no longer hands out). None when the network runs no DHCPv4. Idempotent;
        dnsmasq is told when it changes.

        The search for a free address starts at a point derived from the MAC (as dnsmasq's own
        choice does), so it meets few taken addresses however many are pinned; each try is one
        index lookup and one search of the lease file, read once.
        """
        record = self._read(name)
        _check_mac("hwaddr", hwaddr)
        spec = parse_spec(record["config"])
        if spec.ipv4 is None or not spec.ipv4_dhcp:
            return None
        gateway = spec.ipv4
        net = gateway.network
        mac = hwaddr.lower()
        with self._lock(name):
            store = self._hosts(name)

            def pinnable(addr: ipaddress.IPv4Address) -> bool:
                # served by the network as it is now: a pin (or a lease) from before a
                # change of its subnet or ranges is given up, as LXD allocates again then
                return any(start <= addr <= end for start, end in spec.ipv4_ranges) \
                    and addr in net and addr not in (net.network_address,
                                                     net.broadcast_address, gateway.ip) \
                    and store.holder_of_ipv4(str(addr)) in (None, key)

            current = store.get(key)
            if current is not None and current.ipv4 and current.hwaddr == mac and \
                    pinnable(ipaddress.IPv4Address(current.ipv4)):
                if current.hostname != hostname:
                    self._put_host(name, store, current.evolve(hostname=hostname))
                return current.ipv4
            self._take_mac(name, store, key, mac, stale)
            leases = dnsmasq.LeaseFile.read(self.run_dir(name))
            leased = leases.address_of(mac)
            choice = leased if leased and pinnable(ipaddress.IPv4Address(leased)) else None
            if choice is None:
                choice = _first_unleased(probe_order(spec.ipv4_ranges, mac), pinnable, leases)
            if choice is None:
                raise NetworkError(f"no free IPv4 address left on network {name} to pin for "
                                   f"{key} (security.ipv4_filtering)")
            self._put_host(name, store, dhcphosts.StaticHost(key=key, hwaddr=mac, ipv4=choice,
                                                       hostname=hostname))
            log.info("network %s: pinned %s to %s (%s)", name, choice, mac, key)
            return choice

    def dhcp_host_remove(self, name: str, key: str) -> None:
        """Drop ``key``'s static entry (a missing one is fine)."""
        self._read(name)
        with self._lock(name):
            store = self._hosts(name)
            gone = store.remove(key)
            if store.reread_due(gone=gone):
                self._reread(name, store)

    def dhcp_hosts_forget(self, owner: str) -> None:
        """Drop, on every network, the entries keyed ``owner`` or ``owner/<anything>`` (e.g. all
        nics of a deleted instance), and release their leases so their addresses are free at
        once. Per network this is a look for the owner's one file, and, when it is there, that
        file, its index files, and one read of the lease file."""
        self.dhcp_hosts_retain(owner, {})

    def dhcp_hosts_retain(self, owner: str,
                          keep: Mapping[str, Mapping[str, str | None]]) -> None:
        """``dhcp_hosts_forget``, but for the entries ``keep`` names: ``{network: {key: static
        address or None}}`` (None: any address, or none). What an instance's nics claim once its
        record is saved (or kept, after a refused change): a removed nic, or one moved to
        another network or given another static address, leaves nothing that blocks others.
        The same cost: one look per network for the owner's file."""
        for record in self.list():
            name = record["name"]
            run = self.run_dir(name)
            probe = dhcphosts.HostStore(run)
            if not probe.owner_path(dhcphosts.owner_of(owner)).exists() and \
                    not (run / DHCP_HOSTS).exists():
                continue
            wanted = {key: _normal_ipv4(ipv4) for key, ipv4 in keep.get(name, {}).items()}
            if not (run / DHCP_HOSTS).exists() and not probe.unkept(owner, wanted):
                continue  # nothing to drop (every start asks): no lock taken
            with self._lock(name):
                store = self._hosts(name)
                gone = store.retain(owner, wanted)
                if not gone:
                    continue
                if store.reread_due(gone=gone):
                    self._reread(name, store)
                self._release_leases(name, record, {h.hwaddr for h in gone})

    def _release_leases(self, name: str, record: dict[str, Any], hwaddrs: set[str]) -> None:
        """Free the leases of MACs that left (as LXD does on instance delete), so their
        addresses — a static one included — are free for the next instance at once.

        A running dnsmasq is sent a DHCPRELEASE per lease (`dnsmasq.release`): it needs the
        address, which only the lease file knows (a dynamic lease is dnsmasq's choice); the file
        is read once and searched per MAC. A stopped dnsmasq reads the lease file when it
        starts, so the lines are dropped from the file. Without ``dhcp_release`` the daemon is
        restarted around that edit instead.
        """
        run = self.run_dir(name)
        leases = dnsmasq.LeaseFile.read(run)
        held = {mac: addr for mac in sorted(hwaddrs) if (addr := leases.address_of(mac))}
        if not held:
            return
        if dnsmasq.running_pid(run) is None:
            self._drop_lease_lines(run, hwaddrs)
            return
        try:
            dnsmasq.release(name, held)
        except ToolMissing as exc:
            log.warning("%s: restarting dnsmasq of %s to drop the leases of %s", exc, name,
                        ", ".join(sorted(held)))
            spec = parse_spec(record["config"])
            dnsmasq.stop(run)
            self._drop_lease_lines(run, hwaddrs)
            dnsmasq.start(self._dnsmasq_config(name, spec), spec.raw_dnsmasq)

    @staticmethod
    def _drop_lease_lines(run: Path, hwaddrs: set[str]) -> None:
        """Remove the leases of ``hwaddrs`` from the lease file of a dnsmasq that is stopped."""
        data = dnsmasq.LeaseFile.read(run).without(hwaddrs)
        if data is not None:
            state.atomic_write(run / dnsmasq.LEASES, data, 0o600)
