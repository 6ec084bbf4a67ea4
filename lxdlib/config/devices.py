"""Device validation: the per-type option allow-lists and checks LXD applies, without I/O.

Each type has LXD's option list (``lxd/device/*.go``) restricted to what a container can use, and
LXD's messages, notably the whole proxy matrix. Checks that need the host (does a source path
exist, is a network created, is a port free) belong to the device modules that start devices.

Every option name and value is refused if it holds a newline, carriage return or NUL: device
options end up in liblxc config lines (mount entries, network keys). Errors are
:class:`~lxdlib.errors.InvalidConfig`; ``key`` is the device option and the message names the
device.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping

from ..errors import TYPE_CHECKING, InvalidArgument, InvalidConfig
from ..unixsock import SUN_PATH_MAX
from ..values import Value, assign
from .text import has_control, is_utf8
from .units import is_bool, is_true, parse_bit_rate, parse_size

if TYPE_CHECKING:
    from typing import Any

Check = Callable[[str], None]

SUPPORTED_TYPES = ("disk", "nic", "proxy", "unix-char", "unix-block", "none")
UNSUPPORTED_TYPES = ("gpu", "usb", "infiniband", "tpm", "pci", "unix-hotplug")
NIC_TYPES = ("bridged", "macvlan", "p2p", "physical", "routed", "ipvlan")
UNSUPPORTED_NIC_TYPES = ("sriov", "ovn")
PROPAGATION_TYPES = ("private", "shared", "slave", "unbindable", "rshared", "rslave",
                     "runbindable", "rprivate")
DEVICE_NAME_MAX = 63


def _err(device: str, key: str, reason: str, value: str | None = None) -> InvalidConfig:
    e = InvalidConfig(key, reason, value)
    e.args = (f"device {device!r}: {e.args[0]}",)
    e.device = device  # type: ignore[attr-defined]  # which device (the command's words)
    return e


# ------------------------------------------------------------------------------------------------
# Option validators (raise InvalidArgument with LXD's reason)


def _bool(value: str) -> None:
    if not is_bool(value):
        raise InvalidArgument(f"Invalid value for a boolean {value!r}")


def _uint(bits: int, message: str) -> Check:
    def check(value: str) -> None:
        if not re.fullmatch(r"[0-9]+", value) or int(value) >= 2**bits:
            raise InvalidArgument(message)

    return check


_unix_id = _uint(32, "Invalid value for a UNIX ID")
# LXD takes any uint32, but Linux's device numbers are 12 bits of major and 20 of minor:
# beyond them the node cannot be made, and the start failed in its hook (an OverflowError)
_major = _uint(12, "Invalid value for a UNIX device number (a major is 0-4095)")
_minor = _uint(20, "Invalid value for a UNIX device number (a minor is 0-1048575)")
_uint32 = _uint(32, "Invalid value for uint32")


def _octal_mode(value: str) -> None:
    if not re.fullmatch(r"[0-7]+", value) or int(value, 8) >= 2**32:
        raise InvalidArgument("Invalid value for an octal file mode")


def _size(value: str) -> None:
    parse_size(value)


def _bit_rate(value: str) -> None:
    parse_bit_rate(value)


def _one_of(*valid: str) -> Check:
    def check(value: str) -> None:
        if value not in valid:
            raise InvalidArgument(f"Invalid value {value!r} (not one of {list(valid)})")

    return check


def _interface_name(value: str) -> None:
    """LXD ``IsInterfaceName``."""
    if len(value) < 2:
        raise InvalidArgument("Network interface is too short (minimum 2 characters)")
    if len(value) > 15:
        raise InvalidArgument("Network interface is too long (maximum 15 characters)")
    if ".." in value:
        raise InvalidArgument("Network interface name must not contain '..'")
    if not re.fullmatch(r"[-_a-zA-Z0-9.]+", value):
        raise InvalidArgument("Network interface contains invalid characters")


def _mac(value: str) -> None:
    if not re.fullmatch(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}", value):
        raise InvalidArgument("Invalid MAC address, must be 6 bytes of hex separated by colons")


def _mtu(value: str) -> None:
    if not re.fullmatch(r"[0-9]+", value) or int(value) >= 2**32:
        raise InvalidArgument(f"Invalid MTU {value!r}")
    if not 68 <= int(value) <= 16384:
        raise InvalidArgument(f"Out of MTU range (68-16384) {value!r}")


def _vlan(value: str) -> None:
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise InvalidArgument(f"Invalid VLAN ID {value!r}")
    if not 0 <= int(value) <= 4094:
        raise InvalidArgument(f"Out of VLAN ID range (0-4094) {value!r}")


def _ipv4(value: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidArgument(f"Not an IPv4 address {value!r}") from None


def _ipv6(value: str) -> None:
    try:
        addr = ipaddress.IPv6Address(value)
    except ValueError:
        raise InvalidArgument(f"Not an IPv6 address {value!r}") from None
    if addr.scope_id is not None:
        # Python takes ``addr%anything`` for a zone; LXD (Go's ParseIP) refuses it, and the
        # nic filter's nft rule, which names the address, fails to load with it at start
        raise InvalidArgument(f"Not an IPv6 address {value!r}: no zone (%) allowed")


def _container_path(value: str) -> None:
    """A path inside the container: no ``..`` component (it would climb out of the rootfs)."""
    if ".." in value.split("/"):
        raise InvalidArgument("Path cannot contain '..' components")


def _host_path(value: str) -> None:
    if not value.startswith("/"):
        raise InvalidArgument("Source path must be absolute for local sources")
    if ".." in value.split("/"):
        raise InvalidArgument("Path cannot contain '..' components")


def _any(value: str) -> None:
    pass


def _opt(check: Check) -> Check:
    def wrapped(value: str) -> None:
        if value != "":
            check(value)

    return wrapped


# ------------------------------------------------------------------------------------------------
# Proxy addresses


class ProxyAddress(Value, frozen=True):
    """A parsed proxy ``listen``/``connect``: ``tcp:1.2.3.4:80-82``, ``udp:[::1]:53``,
    ``unix:/run/x.sock``, ``unix:@abstract``. ``host`` is "" for a wildcard-by-omission and None
    for unix sockets; ``ports`` is None for unix sockets."""

    _fields = ("proto", "host", "ports", "path", "abstract")
    __slots__ = _fields

    proto: str
    host: str | None
    ports: tuple[int, ...] | None
    path: str | None
    abstract: bool

    def __init__(self, proto: str, host: str | None, ports: tuple[int, ...] | None,
                 path: str | None, abstract: bool) -> None:
        assign(self, "proto", proto)
        assign(self, "host", host)
        assign(self, "ports", ports)
        assign(self, "path", path)
        assign(self, "abstract", abstract)

    @property
    def ip_version(self) -> int | None:
        if not self.host:
            return None
        return ipaddress.ip_address(self.host).version

    @property
    def is_wildcard(self) -> bool:
        return self.host is not None and (self.host == "" or ipaddress.ip_address(self.host)
                                          .is_unspecified)


def _split_host_port(addr: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort``."""
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            raise InvalidArgument(f"address {addr}: missing ']' in address")
        host = addr[1:end]
        rest = addr[end + 1:]
        if not rest.startswith(":"):
            raise InvalidArgument(f"address {addr}: missing port in address")
        return host, rest[1:]
    host, colon, port = addr.rpartition(":")
    if not colon:
        raise InvalidArgument(f"address {addr}: missing port in address")
    if ":" in host:
        raise InvalidArgument(f"address {addr}: too many colons in address")
    return host, port


def _port_range(r: str) -> list[int]:
    base_s, dash, end_s = r.partition("-")
    if not re.fullmatch(r"[0-9]+", base_s):
        raise InvalidArgument(f"Invalid port {r!r}")
    base = int(base_s)
    end = base
    if dash:
        if "-" in end_s:
            raise InvalidArgument(f"Invalid port range {r!r}")
        if not re.fullmatch(r"[0-9]+", end_s):
            raise InvalidArgument(f"Invalid port {r!r}")
        end = int(end_s)
        if end <= base:
            raise InvalidArgument("End port should be higher than start port")
    if not 1 <= base <= 65535 or end > 65535:
        raise InvalidArgument(f"Invalid port {r!r}: ports are 1-65535")
    return list(range(base, end + 1))


def parse_proxy_address(s: str) -> ProxyAddress:
    """LXD's ``ProxyParseAddr``: ``<tcp|udp|unix>:<address>``; IP literals only (no host names)."""
    proto, colon, addr = s.partition(":")
    if proto not in ("tcp", "udp", "unix"):
        raise InvalidArgument(f"Unknown protocol type {proto!r}")
    if not colon or addr == "":
        raise InvalidArgument("Missing address")
    if proto == "unix":
        abstract = addr.startswith("@")
        if abstract and len(addr) == 1:
            raise InvalidArgument("Missing abstract socket name")
        if not abstract and not addr.startswith("/"):
            raise InvalidArgument(f"Unix socket path {addr!r} must be absolute")
        if not abstract and ".." in addr.split("/"):
            raise InvalidArgument("Path cannot contain '..' components")
        if not abstract and addr.endswith("/"):
            raise InvalidArgument(f"Unix socket path {addr!r} names no socket file")
        return ProxyAddress(proto, None, None, addr, abstract)
    host, port = _split_host_port(addr)
    if host != "":
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise InvalidArgument(f"Not an IP address {host!r}") from None
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
            raise InvalidArgument(f"Not an IP address {host!r}: no zone (%) allowed")
    ports: list[int] = []
    for p in port.split(","):
        ports.extend(_port_range(p))
    if not ports:
        raise InvalidArgument("At least one port is required")
    return ProxyAddress(proto, host, tuple(ports), None, False)


#: the longest ``/proc/self/fd/<dirfd>/`` a host-side listen socket is bound through
#: (``unixsock.via_dir``; a forwarder's directory handle is one of its first few files)
_HELD_PREFIX = len("/proc/self/fd/9999/")


def _socket_room(a: ProxyAddress, *, held: bool) -> str | None:
    """Why a unix address has no ``sockaddr_un`` (``None`` if it has one): an abstract name
    and a path take at most ``SUN_PATH_MAX - 1`` bytes; a host-side listen path (``held``)
    may be longer when its file name fits after its directory's handle."""
    if a.proto != "unix" or a.path is None:
        return None
    room = SUN_PATH_MAX - 1
    size = len(a.path.encode())
    if a.abstract:
        return None if size <= SUN_PATH_MAX else \
            f"Abstract socket name is too long ({size - 1} bytes, at most {room})"
    if size <= room:
        return None
    name = len(a.path.rsplit("/", 1)[1].encode())
    if held and name <= room - _HELD_PREFIX:
        return None
    return f"Unix socket path is too long for a socket address ({size} bytes, at most {room})"


def _proxy_addr(value: str) -> None:
    if value == "":
        raise InvalidArgument("Required value")
    parse_proxy_address(value)


def _bind(value: str) -> None:
    if value not in ("host", "instance", "guest", "container"):
        raise InvalidArgument('Invalid binding side given. Must be "host" or "instance"')


# ------------------------------------------------------------------------------------------------
# Per-type rules

_DISK_RULES: dict[str, Check] = {
    "path": _container_path,
    "source": _any,
    "pool": _any,
    "size": _opt(_size),
    "readonly": _opt(_bool),
    "propagation": _opt(_one_of(*PROPAGATION_TYPES)),
    "recursive": _opt(_bool),
    "shift": _opt(_bool),
    "required": _opt(_bool),
    "boot.priority": _opt(_uint32),
}

_NIC_RULES: dict[str, Check] = {
    "nictype": _any,
    "network": _any,
    "parent": _opt(_interface_name),
    "name": _opt(_interface_name),
    "hwaddr": _opt(_mac),
    "mtu": _opt(_mtu),
    "host_name": _opt(_interface_name),
    "ipv4.address": _opt(_ipv4),
    "ipv6.address": _opt(_ipv6),
    "limits.ingress": _opt(_bit_rate),
    "limits.egress": _opt(_bit_rate),
    "limits.max": _opt(_bit_rate),
    "limits.priority": _opt(_uint32),
    "security.mac_filtering": _opt(_bool),
    "security.ipv4_filtering": _opt(_bool),
    "security.ipv6_filtering": _opt(_bool),
    "security.port_isolation": _opt(_bool),
    "vlan": _opt(_vlan),
    "boot.priority": _opt(_uint32),
}
_NIC_COMMON = ("nictype", "name", "hwaddr", "mtu", "boot.priority")
_NIC_LIMITS = ("limits.ingress", "limits.egress", "limits.max", "limits.priority")
# Bridged nics only: enforced on the host (nftables bridge rules, the bridge port's isolated flag)
NIC_SECURITY_KEYS = ("security.mac_filtering", "security.ipv4_filtering",
                     "security.ipv6_filtering", "security.port_isolation")
NIC_OPTIONS: dict[str, frozenset[str]] = {
    "bridged": frozenset((*_NIC_COMMON, "network", "parent", "host_name", *_NIC_LIMITS,
                          "ipv4.address", "ipv6.address", *NIC_SECURITY_KEYS, "vlan")),
    "macvlan": frozenset((*_NIC_COMMON, "network", "parent", "vlan")),
    "p2p": frozenset((*_NIC_COMMON, "host_name", *_NIC_LIMITS)),
    "physical": frozenset((*_NIC_COMMON, "network", "parent", "vlan")),
    "routed": frozenset((*_NIC_COMMON, "parent", "host_name", "vlan", *_NIC_LIMITS,
                         "ipv4.address", "ipv6.address")),
    "ipvlan": frozenset((*_NIC_COMMON, "parent", "vlan", "ipv4.address", "ipv6.address")),
}
_NIC_PARENT_REQUIRED = ("macvlan", "physical", "ipvlan")

_PROXY_RULES: dict[str, Check] = {
    "listen": _proxy_addr,
    "connect": _proxy_addr,
    "bind": _opt(_bind),
    "mode": _opt(_octal_mode),
    "nat": _opt(_bool),
    "uid": _opt(_unix_id),
    "gid": _opt(_unix_id),
    "security.uid": _opt(_unix_id),
    "security.gid": _opt(_unix_id),
    "proxy_protocol": _opt(_bool),
}

_UNIX_RULES: dict[str, Check] = {
    "source": _opt(_host_path),
    "path": _opt(_container_path),
    "major": _opt(_major),
    "minor": _opt(_minor),
    "uid": _opt(_unix_id),
    "gid": _opt(_unix_id),
    "mode": _opt(_octal_mode),
    "required": _opt(_bool),
}

_RULES: dict[str, dict[str, Check]] = {
    "disk": _DISK_RULES,
    "nic": _NIC_RULES,
    "proxy": _PROXY_RULES,
    "unix-char": _UNIX_RULES,
    "unix-block": _UNIX_RULES,
    "none": {},
}


def validate_device_name(name: str) -> None:
    """LXD ``IsDeviceName`` without ``/`` (lxdlib uses device names in file names):
    1-63 characters of ``[-.:_a-zA-Z0-9]``, not starting with ``.``."""
    if not isinstance(name, str) or not 1 <= len(name) <= DEVICE_NAME_MAX:
        raise InvalidConfig("devices", "Name must be 1-63 characters long", str(name))
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        # said first: a name carrying a newline must not get another rule's message
        raise InvalidConfig("devices", "Name cannot contain control characters (such as a "
                            "newline)", name)
    if name.startswith("."):
        raise InvalidConfig("devices", 'Name must not start with "." character', name)
    if "/" in name:
        raise InvalidConfig("devices", 'Device names cannot contain "/" in lxdlib', name)
    if not re.fullmatch(r"[.\-:_a-zA-Z0-9]+", name):
        raise InvalidConfig(
            "devices",
            "Name can only contain alphanumeric, hyphen, colon, underscore and full stop "
            "characters",
            name,
        )


def _coerce(name: str, key: str, value: Any) -> str:
    """A device option as text, as a config value is (``schema``'s ``_coerce``): ints and
    bools as LXD writes them, anything else refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise _err(name, key, f"Values must be strings, got {type(value).__name__}", repr(value))


def _check_text(name: str, key: str, value: str) -> None:
    if key == "" or has_control(key) or any(ch.isspace() for ch in key):
        raise _err(name, key, "Device option names cannot be empty or contain whitespace or "
                              "control characters")
    for ch, what in (("\n", "line breaks"), ("\r", "carriage returns"), ("\0", "NUL characters")):
        if ch in value:
            raise _err(name, key, f"Device options cannot contain {what}", value)
    if not is_utf8(value):
        raise _err(name, key, "Device options cannot hold bytes that are not UTF-8", value)


def _apply_rules(name: str, dev: Mapping[str, str], rules: Mapping[str, Check],
                 allowed: frozenset[str] | None = None) -> None:
    for key in sorted(dev):
        if key == "type" or key.startswith("user."):
            continue
        if key not in rules or (allowed is not None and key not in allowed):
            raise _err(name, key, f"Invalid device option {key!r}", dev[key])
    for key in sorted(rules):
        if key not in dev or (allowed is not None and key not in allowed):
            continue
        try:
            rules[key](dev[key])
        except InvalidArgument as e:
            raise _err(name, key, f"Invalid value for device option {key!r}: {e}", dev[key]) from e


def _validate_disk(name: str, d: Mapping[str, str]) -> None:
    _apply_rules(name, d, _DISK_RULES)
    path, source, pool = d.get("path", ""), d.get("source", ""), d.get("pool", "")
    if source == "" and path != "/":
        raise _err(name, "source", 'Disk entry is missing the required "source" or "path" property')
    if path == "/" and source != "":
        raise _err(name, "source", 'Root disk entry may not have a "source" property set', source)
    if path == "/" and pool == "":
        raise _err(name, "pool", 'Root disk entry must have a "pool" property set')
    if path == "":
        raise _err(name, "path", 'Disk devices require the "path" property')
    if d.get("size", "") != "" and path != "/":
        raise _err(name, "size", "Only the root disk may have a size quota", d["size"])
    if d.get("recursive", "") != "" and path == "/":
        raise _err(name, "recursive",
                   "The recursive option is only supported for additional bind-mounted paths")
    if is_true(d.get("recursive")) and is_true(d.get("readonly")):
        raise _err(name, "recursive",
                   "Recursive read-only bind-mounts are not currently supported by the kernel")
    if source and re.match(r"^(ceph|cephfs):", source):
        raise _err(name, "source", "Ceph sources are not supported by lxdlib", source)
    if source and pool == "":
        try:
            _host_path(source)
        except InvalidArgument as e:
            raise _err(name, "source", str(e), source) from e
    if source and pool != "":
        if source.startswith("/"):
            raise _err(name, "source", "Storage volumes cannot be specified as absolute paths",
                       source)
        if "/" in source:
            raise _err(name, "source",
                       '"source" cannot include a snapshot, use "source.snapshot" instead', source)
    if pool and "/" in pool:
        raise _err(name, "pool", 'Pool names cannot contain "/"', pool)


def _validate_nic(name: str, d: Mapping[str, str]) -> None:
    _apply_rules(name, d, _NIC_RULES)
    if d.get("network", ""):
        for banned in ("nictype", "parent", "mtu"):
            if d.get(banned, ""):
                raise _err(name, banned,
                           f'Cannot use "{banned}" property in conjunction with "network" property',
                           d[banned])
        nictype = "bridged"
    else:
        nictype = d.get("nictype", "")
        if nictype == "":
            raise _err(name, "nictype", 'NIC devices need a "nictype" or a "network" property')
    if nictype in UNSUPPORTED_NIC_TYPES:
        raise _err(name, "nictype", f"NIC type {nictype!r} is not supported by lxdlib", nictype)
    if nictype not in NIC_TYPES:
        raise _err(name, "nictype",
                   f"Invalid value {nictype!r} (not one of {list(NIC_TYPES)})", nictype)
    _apply_rules(name, d, _NIC_RULES, NIC_OPTIONS[nictype])
    needs_parent = nictype in _NIC_PARENT_REQUIRED or (nictype == "bridged"
                                                        and not d.get("network", ""))
    if needs_parent and d.get("parent", "") == "" and d.get("network", "") == "":
        raise _err(name, "parent", 'Invalid value for device option "parent": Required value')
    for v in ("4", "6"):
        key = f"security.ipv{v}_filtering"
        if not is_true(d.get(key)):
            continue
        # Which addresses are the nic's own must be known: a managed network allocates one (or
        # blocks the family when it serves none); on a host bridge it has to be given.
        if not d.get("network", "") and not d.get(f"ipv{v}.address", ""):
            raise _err(name, key, f"IPv{v} filtering requires a manually specified "
                                  f"ipv{v}.address when using an unmanaged parent bridge", d[key])
        if d.get("vlan", ""):
            raise _err(name, key, "IP filtering cannot be used with VLAN filtering", d[key])


def validate_proxy(name: str, d: Mapping[str, str]) -> tuple[ProxyAddress, ProxyAddress]:
    """The proxy validation matrix (LXD ``proxy.validateConfig``) with LXD's messages."""
    _apply_rules(name, d, _PROXY_RULES)
    if "listen" not in d:
        raise _err(name, "listen", 'Invalid value for device option "listen": Required value')
    if "connect" not in d:
        raise _err(name, "connect", 'Invalid value for device option "connect": Required value')
    listen = parse_proxy_address(d["listen"])
    connect = parse_proxy_address(d["connect"])
    nat = is_true(d.get("nat"))
    # what the forwarder could only find out at each start, or at each connection
    seen: set[int] = set()
    for port in listen.ports or ():
        if port in seen:
            raise _err(name, "listen", f"Duplicate port {port}", d["listen"])
        seen.add(port)
    host_listen = d.get("bind", "") in ("", "host")
    for key, addr in (("listen", listen), ("connect", connect)):
        why = _socket_room(addr, held=key == "listen" and host_listen)
        if why:
            raise _err(name, key, why, d[key])

    listen_ports = len(listen.ports or ())
    connect_ports = len(connect.ports or ())
    if listen.proto == "unix":
        mismatch = connect_ports > 1
    else:
        mismatch = connect_ports not in (0, 1, listen_ports)
    if mismatch:
        raise _err(name, "connect", "Mismatch between listen port(s) and connect port(s) count",
                   d["connect"])
    if is_true(d.get("proxy_protocol")) and (connect.proto != "tcp" or nat):
        raise _err(name, "proxy_protocol",
                   "The PROXY header can only be sent to tcp servers in non-nat mode")
    if (listen.proto != "unix" or listen.abstract) and any(
        d.get(k, "") != "" for k in ("uid", "gid", "mode")
    ):
        key = next(k for k in ("uid", "gid", "mode") if d.get(k, "") != "")
        raise _err(name, key,
                   "Only proxy devices for non-abstract unix sockets can carry uid, gid, or mode "
                   "properties")
    if nat:
        if d.get("bind", "") not in ("", "host"):
            raise _err(name, "bind", "Only host-bound proxies can use NAT", d["bind"])
        if listen.proto == "unix" or connect.proto == "unix" or listen.proto != connect.proto:
            raise _err(name, "nat",
                       f"Proxying {listen.proto} <-> {connect.proto} is not supported when "
                       "using NAT")
        if listen.is_wildcard:
            raise _err(name, "listen",
                       f'Cannot listen on wildcard address "{listen.host}" when in nat mode',
                       d["listen"])
        if connect.ip_version is not None and connect.ip_version != listen.ip_version:
            raise _err(name, "connect",
                       "Cannot mix IP versions between listen and connect in nat mode",
                       d["connect"])
    elif listen.proto == "udp" and connect.proto != "udp":
        raise _err(name, "connect",
                   "Proxying from udp to non-udp protocol is not supported", d["connect"])
    return listen, connect


def _validate_unix(name: str, d: Mapping[str, str]) -> None:
    _apply_rules(name, d, _UNIX_RULES)
    if d.get("source", "") == "" and d.get("path", "") == "":
        raise _err(name, "source",
                   'Unix device entry is missing the required "source" or "path" property')
    if (d.get("major", "") == "") != (d.get("minor", "") == ""):
        raise _err(name, "major", '"major" and "minor" must be set together')


def validate_device(name: str, device: Mapping[str, Any]) -> dict[str, str]:
    """Validate one device of a container (or profile); return a normalised copy.

    ``type`` is required. Supported: disk, nic, proxy, unix-char, unix-block, none. Other LXD
    types are refused as unsupported. ``user.*`` options are allowed on every type, as in LXD.
    """
    validate_device_name(name)
    if not isinstance(device, Mapping):
        raise _err(name, "type", "A device must be a mapping of options")
    dev: dict[str, str] = {}
    for key in sorted(device, key=str):
        if not isinstance(key, str):
            raise _err(name, repr(key), "Device option names must be strings")
        value = _coerce(name, key, device[key])
        _check_text(name, key, value)
        dev[key] = value
    dtype = dev.get("type", "")
    if dtype == "":
        raise _err(name, "type", "Missing device type in config")
    if dtype in UNSUPPORTED_TYPES:
        raise _err(name, "type", f"device type {dtype!r} is not supported by lxdlib", dtype)
    if dtype not in _RULES:
        raise _err(name, "type", "Unsupported device type", dtype)
    if dtype == "disk":
        _validate_disk(name, dev)
    elif dtype == "nic":
        _validate_nic(name, dev)
    elif dtype == "proxy":
        validate_proxy(name, dev)
    elif dtype in ("unix-char", "unix-block"):
        _validate_unix(name, dev)
    else:
        _apply_rules(name, dev, {})
    return dev


def check_devices_mapping(devices: Any) -> None:
    """A device set's shape before its items are read: a mapping of name to options (each
    device's own shape is ``validate_device``'s)."""
    if not isinstance(devices, Mapping):
        raise InvalidConfig("devices", "Devices must be a mapping of name to options",
                            repr(devices))


def validate_devices(devices: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Validate every device of a set and the rules across them: no two disks on one path, no
    two NICs with one interface name."""
    check_devices_mapping(devices)
    out = {name: validate_device(name, devices[name]) for name in sorted(devices, key=str)}
    paths: set[str] = set()
    nic_names: set[str] = set()
    for name, dev in out.items():
        if dev["type"] == "disk":
            path = dev["path"]
            if path in paths:
                raise _err(name, "path",
                           f"More than one disk device uses the same path {path!r}", path)
            paths.add(path)
        elif dev["type"] == "nic" and dev.get("name", ""):
            if dev["name"] in nic_names:
                raise _err(name, "name", f"Duplicate NIC name detected {dev['name']!r}",
                           dev["name"])
            nic_names.add(dev["name"])
    return out


def dhcp_claims(instance: str, devices: Mapping[str, Mapping[str, str]]
                ) -> dict[str, dict[str, str | None]]:
    """The static DHCP entries the nics of ``devices`` (expanded) may hold, ``{network: {key:
    static ipv4.address or None}}`` (None: a name, or the address ipv4_filtering pinned): the
    render writes them, and whatever else the instance holds is what a removed, moved or
    refused nic left (see ``InstanceCore._keep_dhcp``). Here, in the devices' pure
    layer, rather than with the nic driver: every start asks it, nics or none."""
    out: dict[str, dict[str, str | None]] = {}
    for dname, dev in devices.items():
        if dev.get("type") == "nic" and dev.get("network"):
            out.setdefault(dev["network"], {})[f"{instance}/{dname}"] = \
                dev.get("ipv4.address") or None
    return out
