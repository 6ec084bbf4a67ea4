"""Device validation: per-type allow-lists and the proxy matrix with LXD's messages."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lxdlib.config.devices import (
    ProxyAddress,
    parse_proxy_address,
    validate_device,
    validate_device_name,
    validate_devices,
    validate_proxy,
)
from lxdlib.errors import InvalidArgument, InvalidConfig


def proxy(**kw: str) -> dict[str, str]:
    return {"type": "proxy", **kw}


GOOD: list[dict[str, Any]] = [
    {"type": "disk", "path": "/", "pool": "default"},
    {"type": "disk", "path": "/", "pool": "default", "size": "5GiB"},
    {"type": "disk", "path": "/mnt/data", "source": "/srv/data", "readonly": "true"},
    {"type": "disk", "path": "/mnt/data", "source": "/srv/data", "recursive": "true",
     "propagation": "rslave", "shift": "false", "required": "false", "boot.priority": "1"},
    {"type": "disk", "path": "/mnt/vol", "source": "myvol", "pool": "default"},
    {"type": "disk", "path": "/", "pool": "default", "user.note": "x"},
    {"type": "nic", "nictype": "bridged", "parent": "lxdbr0"},
    {"type": "nic", "network": "lxdbr0", "name": "eth0"},
    {"type": "nic", "network": "lxdbr0", "name": "eth0", "hwaddr": "00:16:3e:aa:bb:cc",
     "ipv4.address": "10.0.0.5", "ipv6.address": "fd00::5", "limits.ingress": "100Mbit",
     "limits.egress": "10Mbit", "limits.max": "1Gbit", "limits.priority": "3",
     "security.mac_filtering": "true", "host_name": "veth-web", "vlan": "10"},
    {"type": "nic", "nictype": "bridged", "parent": "br0", "mtu": "1500"},
    {"type": "nic", "network": "lxdbr0", "security.ipv4_filtering": "true",
     "security.ipv6_filtering": "1", "security.port_isolation": "yes"},
    {"type": "nic", "nictype": "bridged", "parent": "br0", "security.ipv4_filtering": "true",
     "ipv4.address": "10.0.0.5", "security.ipv6_filtering": "false"},
    {"type": "nic", "nictype": "macvlan", "parent": "eth0"},
    {"type": "nic", "nictype": "p2p", "host_name": "vethx", "limits.max": "1Mbit"},
    {"type": "nic", "nictype": "physical", "parent": "eth1", "name": "eth0"},
    {"type": "nic", "nictype": "routed", "ipv4.address": "192.0.2.2"},
    {"type": "nic", "nictype": "ipvlan", "parent": "eth0", "ipv4.address": "192.0.2.3"},
    {"type": "unix-char", "path": "/dev/net/tun"},
    {"type": "unix-char", "source": "/dev/fuse", "mode": "0666", "uid": "0", "gid": "0"},
    {"type": "unix-block", "path": "/dev/loop9", "major": "7", "minor": "9", "required": "no"},
    {"type": "none"},
    {"type": "none", "user.why": "mask the profile's eth0"},
    {"type": "disk", "path": "/", "pool": "default", "size": "5"},
    {"type": "disk", "path": "/", "pool": "default", "size": 5},  # an int: its text
]


@pytest.mark.parametrize("value", [None, b"5", ["5"], 1.5])
def test_values_without_a_text_are_refused(value: Any) -> None:
    with pytest.raises(InvalidConfig, match="Values must be strings"):
        validate_device("root", {"type": "disk", "path": "/", "pool": "p", "size": value})


@pytest.mark.parametrize("dev", GOOD)
def test_good_devices(dev: dict[str, Any]) -> None:
    out = validate_device("d0", dev)
    assert out == {k: str(v) for k, v in dev.items()}


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({}, "type", "Missing device type in config"),
    ({"path": "/"}, "type", "Missing device type in config"),
    ({"type": "floppy"}, "type", "Unsupported device type"),
    ({"type": "gpu"}, "type", "device type 'gpu' is not supported by lxdlib"),
    ({"type": "usb"}, "type", "device type 'usb' is not supported by lxdlib"),
    ({"type": "infiniband"}, "type", "device type 'infiniband' is not supported by lxdlib"),
    ({"type": "tpm"}, "type", "device type 'tpm' is not supported by lxdlib"),
    ({"type": "none", "path": "/"}, "path", "Invalid device option 'path'"),
    # disk
    ({"type": "disk", "path": "/"}, "pool", 'Root disk entry must have a "pool" property set'),
    ({"type": "disk", "path": "/", "pool": "p", "source": "/x"}, "source",
     'Root disk entry may not have a "source" property set'),
    ({"type": "disk", "path": "/mnt"}, "source",
     'Disk entry is missing the required "source" or "path" property'),
    ({"type": "disk", "size": "5GB"}, "source",
     'Disk entry is missing the required "source" or "path" property'),
    ({"type": "disk", "source": "/srv"}, "path", 'Disk devices require the "path" property'),
    ({"type": "disk", "path": "/mnt", "source": "/srv", "size": "1GiB"}, "size",
     "Only the root disk may have a size quota"),
    ({"type": "disk", "path": "/", "pool": "p", "size": "lots"}, "size",
     "Invalid value for device option 'size'"),
    ({"type": "disk", "path": "/", "pool": "p", "recursive": "true"}, "recursive",
     "The recursive option is only supported for additional bind-mounted paths"),
    ({"type": "disk", "path": "/m", "source": "/s", "recursive": "true", "readonly": "true"},
     "recursive", "Recursive read-only bind-mounts are not currently supported by the kernel"),
    ({"type": "disk", "path": "/m", "source": "srv"}, "source",
     "Source path must be absolute for local sources"),
    ({"type": "disk", "path": "/m", "source": "/srv/../etc"}, "source", "'..'"),
    ({"type": "disk", "path": "/../../etc", "source": "/srv"}, "path", "'..'"),
    ({"type": "disk", "path": "/m", "source": "/vol", "pool": "p"}, "source",
     "Storage volumes cannot be specified as absolute paths"),
    ({"type": "disk", "path": "/m", "source": "vol/snap0", "pool": "p"}, "source",
     '"source" cannot include a snapshot, use "source.snapshot" instead'),
    ({"type": "disk", "path": "/m", "source": "ceph:pool/vol"}, "source", "Ceph sources"),
    ({"type": "disk", "path": "/", "pool": "p", "propagation": "weird"}, "propagation",
     "not one of"),
    ({"type": "disk", "path": "/", "pool": "p", "readonly": "maybe"}, "readonly",
     "Invalid value for a boolean"),
    ({"type": "disk", "path": "/m", "source": "/s", "shift": "maybe"}, "shift",
     "Invalid value for a boolean"),
    ({"type": "disk", "path": "/", "pool": "p", "io.bus": "nvme"}, "io.bus",
     "Invalid device option 'io.bus'"),
    ({"type": "disk", "path": "/", "pool": "p", "initial.zfs.blocksize": "8KiB"},
     "initial.zfs.blocksize", "Invalid device option"),
    # nic
    ({"type": "nic"}, "nictype", 'NIC devices need a "nictype" or a "network" property'),
    ({"type": "nic", "nictype": "bridged"}, "parent",
     'Invalid value for device option "parent": Required value'),
    ({"type": "nic", "nictype": "macvlan"}, "parent", "Required value"),
    ({"type": "nic", "nictype": "wifi", "parent": "x0"}, "nictype", "not one of"),
    ({"type": "nic", "nictype": "sriov", "parent": "x0"}, "nictype", "not supported by lxdlib"),
    ({"type": "nic", "network": "br", "nictype": "bridged"}, "nictype",
     'Cannot use "nictype" property in conjunction with "network" property'),
    ({"type": "nic", "network": "br", "parent": "br0"}, "parent",
     'Cannot use "parent" property in conjunction with "network" property'),
    ({"type": "nic", "network": "br", "mtu": "1400"}, "mtu",
     'Cannot use "mtu" property in conjunction with "network" property'),
    ({"type": "nic", "network": "br", "hwaddr": "zz"}, "hwaddr",
     "Invalid MAC address, must be 6 bytes of hex separated by colons"),
    ({"type": "nic", "network": "br", "hwaddr": "00-16-3e-aa-bb-cc"}, "hwaddr", "Invalid MAC"),
    ({"type": "nic", "nictype": "bridged", "parent": "b", "mtu": "50"}, "mtu",
     "Out of MTU range (68-16384)"),
    ({"type": "nic", "nictype": "bridged", "parent": "br0", "mtu": "x"}, "mtu", "Invalid MTU"),
    ({"type": "nic", "network": "br", "name": "a" * 16}, "name", "Network interface is too long"),
    ({"type": "nic", "network": "br", "name": "e"}, "name", "Network interface is too short"),
    ({"type": "nic", "network": "br", "name": "eth 0"}, "name", "invalid characters"),
    ({"type": "nic", "network": "br", "host_name": "a..b"}, "host_name", "must not contain '..'"),
    ({"type": "nic", "network": "br", "ipv4.address": "10.0.0.300"}, "ipv4.address",
     "Not an IPv4 address"),
    ({"type": "nic", "network": "br", "ipv4.address": "fd00::1"}, "ipv4.address",
     "Not an IPv4 address"),
    ({"type": "nic", "network": "br", "ipv6.address": "10.0.0.1"}, "ipv6.address",
     "Not an IPv6 address"),
    ({"type": "nic", "network": "br", "limits.ingress": "10MB"}, "limits.ingress",
     "Unsupported suffix: MB"),
    ({"type": "nic", "network": "br", "limits.priority": "-1"}, "limits.priority", "uint32"),
    ({"type": "nic", "network": "br", "vlan": "4095"}, "vlan", "Out of VLAN ID range (0-4094)"),
    ({"type": "nic", "network": "br", "security.mac_filtering": "x"}, "security.mac_filtering",
     "Invalid value for a boolean"),
    ({"type": "nic", "network": "br", "security.port_isolation": "x"},
     "security.port_isolation", "Invalid value for a boolean"),
    ({"type": "nic", "nictype": "bridged", "parent": "br0", "security.ipv4_filtering": "true"},
     "security.ipv4_filtering", "requires a manually specified ipv4.address"),
    ({"type": "nic", "nictype": "bridged", "parent": "br0", "security.ipv6_filtering": "on"},
     "security.ipv6_filtering", "requires a manually specified ipv6.address"),
    ({"type": "nic", "network": "br", "security.ipv6_filtering": "true", "vlan": "5"},
     "security.ipv6_filtering", "cannot be used with VLAN filtering"),
    ({"type": "nic", "nictype": "macvlan", "parent": "eth0", "security.port_isolation": "1"},
     "security.port_isolation", "Invalid device option"),
    ({"type": "nic", "network": "br", "ipv4.routes": "10.0.0.0/8"}, "ipv4.routes",
     "Invalid device option"),
    ({"type": "nic", "nictype": "macvlan", "parent": "eth0", "host_name": "v1"}, "host_name",
     "Invalid device option 'host_name'"),
    ({"type": "nic", "nictype": "p2p", "parent": "eth0"}, "parent", "Invalid device option"),
    # unix
    ({"type": "unix-char"}, "source",
     'Unix device entry is missing the required "source" or "path" property'),
    ({"type": "unix-char", "path": "/dev/x", "major": "1"}, "major",
     '"major" and "minor" must be set together'),
    ({"type": "unix-char", "path": "/dev/x", "major": "x", "minor": "1"}, "major",
     "Invalid value for a UNIX device number"),
    ({"type": "unix-block", "path": "/dev/x", "uid": "-1"}, "uid", "Invalid value for a UNIX ID"),
    ({"type": "unix-block", "path": "/dev/x", "mode": "0999"}, "mode",
     "Invalid value for an octal file mode"),
    ({"type": "unix-char", "source": "dev/fuse"}, "source", "must be absolute"),
    ({"type": "unix-char", "path": "/dev/x", "bogus": "1"}, "bogus", "Invalid device option"),
    # text rules
    ({"type": "disk", "path": "/mnt\nlxc.hook.pre-start = /x", "source": "/s"}, "path",
     "line breaks"),
    ({"type": "nic", "network": "br\r"}, "network", "carriage returns"),
    ({"type": "none", "user.x": "a\0b"}, "user.x", "NUL characters"),
    ({"type": "none", "user x": "a"}, "user x", "whitespace"),
    ({"type": "none", "user.x": 1.5}, "user.x", "must be strings"),
]


@pytest.mark.parametrize(("dev", "key", "reason"), BAD)
def test_bad_devices(dev: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        validate_device("d0", dev)
    assert exc.value.key == key
    assert reason in exc.value.reason, exc.value.reason
    assert "device 'd0'" in str(exc.value)


# -- proxy: ref §7 / §13 item 12 -----------------------------------------------------------------
PROXY_GOOD = [
    proxy(listen="tcp:127.0.0.1:8080", connect="tcp:127.0.0.1:80"),
    proxy(listen="tcp:0.0.0.0:80-82", connect="tcp:127.0.0.1:80-82"),
    proxy(listen="tcp:0.0.0.0:80-82", connect="tcp:127.0.0.1:80"),
    proxy(listen="tcp:[::1]:80,81,90-91", connect="tcp:[::1]:8080"),
    proxy(listen="tcp::80", connect="tcp:127.0.0.1:80"),
    proxy(listen="tcp:127.0.0.1:80", connect="unix:/run/app.sock"),
    proxy(listen="unix:/run/host.sock", connect="tcp:127.0.0.1:80"),
    proxy(listen="unix:/run/host.sock", connect="unix:/run/app.sock", uid="1000", gid="1000",
          mode="0660"),
    proxy(listen="unix:@abstract", connect="unix:/run/app.sock"),
    proxy(listen="tcp:127.0.0.1:53", connect="udp:127.0.0.1:53"),
    proxy(listen="unix:/run/x.sock", connect="udp:127.0.0.1:53"),
    proxy(listen="udp:127.0.0.1:53", connect="udp:10.0.0.2:53"),
    proxy(listen="tcp:127.0.0.1:80", connect="tcp:127.0.0.1:80", bind="instance"),
    proxy(listen="tcp:127.0.0.1:80", connect="tcp:127.0.0.1:80", bind="container"),
    proxy(listen="tcp:127.0.0.1:80", connect="tcp:127.0.0.1:80", proxy_protocol="true"),
    proxy(listen="tcp:127.0.0.1:80", connect="tcp:127.0.0.1:80", **{"security.uid": "1000",
                                                                   "security.gid": "1000"}),
    proxy(listen="tcp:192.0.2.1:80", connect="tcp:10.0.0.5:80", nat="true"),
    proxy(listen="tcp:192.0.2.1:80", connect="tcp:0.0.0.0:80", nat="true"),
    proxy(listen="udp:192.0.2.1:53", connect="udp:10.0.0.5:53", nat="true", bind="host"),
    proxy(listen="tcp:[2001:db8::1]:80", connect="tcp:[fd00::5]:80", nat="true"),
]


@pytest.mark.parametrize("dev", PROXY_GOOD)
def test_proxy_good(dev: dict[str, str]) -> None:
    validate_device("p", dev)


PROXY_BAD: list[tuple[dict[str, str], str]] = [
    (proxy(connect="tcp:127.0.0.1:80"), "Required value"),
    (proxy(listen="tcp:127.0.0.1:80"), "Required value"),
    (proxy(listen="", connect="tcp:127.0.0.1:80"), "Required value"),
    (proxy(listen="sctp:1.2.3.4:80", connect="tcp:127.0.0.1:80"), "Unknown protocol type 'sctp'"),
    (proxy(listen="tcp:", connect="tcp:127.0.0.1:80"), "Missing address"),
    (proxy(listen="tcp", connect="tcp:127.0.0.1:80"), "Missing address"),
    (proxy(listen="tcp:127.0.0.1", connect="tcp:127.0.0.1:80"), "missing port in address"),
    (proxy(listen="tcp:::1:80", connect="tcp:127.0.0.1:80"), "too many colons"),
    (proxy(listen="tcp:127.0.0.1:80", connect="tcp:localhost:4321"), "Not an IP address"),
    (proxy(listen="tcp:127.0.0.1:80-70", connect="tcp:127.0.0.1:80"),
     "End port should be higher than start port"),
    (proxy(listen="tcp:127.0.0.1:80-80", connect="tcp:127.0.0.1:80"),
     "End port should be higher than start port"),
    (proxy(listen="tcp:127.0.0.1:1-2-3", connect="tcp:127.0.0.1:80"), "Invalid port range"),
    (proxy(listen="tcp:127.0.0.1:70000", connect="tcp:127.0.0.1:80"), "ports are 1-65535"),
    (proxy(listen="tcp:127.0.0.1:0", connect="tcp:127.0.0.1:80"), "ports are 1-65535"),
    (proxy(listen="tcp:127.0.0.1:http", connect="tcp:127.0.0.1:80"), "Invalid port"),
    (proxy(listen="tcp:127.0.0.1:", connect="tcp:127.0.0.1:80"), "Invalid port"),
    (proxy(listen="unix:", connect="tcp:127.0.0.1:80"), "Missing address"),
    (proxy(listen="unix:run/x.sock", connect="tcp:127.0.0.1:80"), "must be absolute"),
    (proxy(listen="unix:@", connect="tcp:127.0.0.1:80"), "Missing abstract socket name"),
    (proxy(listen="tcp:127.0.0.1:80", connect="tcp:127.0.0.1:80-81"),
     "Mismatch between listen port(s) and connect port(s) count"),
    (proxy(listen="tcp:127.0.0.1:80-82", connect="tcp:127.0.0.1:80-81"),
     "Mismatch between listen port(s) and connect port(s) count"),
    (proxy(listen="unix:/run/x.sock", connect="tcp:127.0.0.1:80-81"),
     "Mismatch between listen port(s) and connect port(s) count"),
    (proxy(listen="tcp:127.0.0.1:80", connect="unix:/run/a.sock", proxy_protocol="true"),
     "The PROXY header can only be sent to tcp servers in non-nat mode"),
    (proxy(listen="tcp:192.0.2.1:80", connect="tcp:10.0.0.5:80", proxy_protocol="1", nat="1"),
     "The PROXY header can only be sent to tcp servers in non-nat mode"),
    (proxy(listen="tcp:127.0.0.1:80", connect="unix:/run/a.sock", uid="1000"),
     "Only proxy devices for non-abstract unix sockets can carry uid, gid, or mode properties"),
    (proxy(listen="tcp:127.0.0.1:80", connect="unix:/run/a.sock", gid="1", mode="0600"),
     "Only proxy devices for non-abstract unix sockets can carry uid, gid, or mode properties"),
    (proxy(listen="unix:@abs", connect="unix:/run/a.sock", mode="0600"),
     "Only proxy devices for non-abstract unix sockets can carry uid, gid, or mode properties"),
    (proxy(listen="tcp:192.0.2.1:80", connect="tcp:10.0.0.5:80", nat="true", bind="instance"),
     "Only host-bound proxies can use NAT"),
    (proxy(listen="tcp:192.0.2.1:80", connect="udp:10.0.0.5:80", nat="true"),
     "Proxying tcp <-> udp is not supported when using NAT"),
    (proxy(listen="unix:/run/x", connect="tcp:10.0.0.5:80", nat="true"),
     "Proxying unix <-> tcp is not supported when using NAT"),
    (proxy(listen="tcp:0.0.0.0:80", connect="tcp:10.0.0.5:80", nat="true"),
     'Cannot listen on wildcard address "0.0.0.0" when in nat mode'),
    (proxy(listen="tcp:[::]:80", connect="tcp:[fd00::5]:80", nat="true"),
     'Cannot listen on wildcard address "::" when in nat mode'),
    (proxy(listen="tcp::80", connect="tcp:10.0.0.5:80", nat="true"),
     "Cannot listen on wildcard address"),
    (proxy(listen="tcp:192.0.2.1:80", connect="tcp:[fd00::5]:80", nat="true"),
     "Cannot mix IP versions between listen and connect in nat mode"),
    (proxy(listen="udp:127.0.0.1:53", connect="tcp:127.0.0.1:53"),
     "Proxying from udp to non-udp protocol is not supported"),
    (proxy(listen="tcp:127.0.0.1:80", connect="tcp:127.0.0.1:80", bind="guestt"),
     'Invalid binding side given. Must be "host" or "instance"'),
    (proxy(listen="tcp:127.0.0.1:80", connect="tcp:127.0.0.1:80", nat="maybe"),
     "Invalid value for a boolean"),
    (proxy(listen="unix:/a", connect="unix:/b", mode="rw"), "Invalid value for an octal file mode"),
    (proxy(listen="unix:/a", connect="unix:/b", uid="root"), "Invalid value for a UNIX ID"),
    (proxy(listen="tcp:127.0.0.1:80", connect="tcp:127.0.0.1:80", **{"security.uid": "-5"}),
     "Invalid value for a UNIX ID"),
    (proxy(listen="tcp:127.0.0.1:80", connect="tcp:127.0.0.1:80", target="x"),
     "Invalid device option 'target'"),
    # what could only fail at start (a stopped instance's device saved, every start failing)
    # or at every connection (a connect path no socket address holds)
    (proxy(listen="unix:/run/", connect="tcp:127.0.0.1:80"), "names no socket file"),
    (proxy(listen="unix:/", connect="tcp:127.0.0.1:80"), "names no socket file"),
    (proxy(listen="tcp:127.0.0.1:80,80", connect="tcp:127.0.0.1:80"), "Duplicate port 80"),
    (proxy(listen="udp:127.0.0.1:80-82,81", connect="udp:127.0.0.1:53"), "Duplicate port 81"),
    (proxy(listen="unix:@" + "a" * 108, connect="tcp:127.0.0.1:80"), "too long"),
    (proxy(listen="tcp:127.0.0.1:80", connect="unix:/" + "a" * 107), "too long"),
    (proxy(listen="unix:/" + "a" * 107, connect="tcp:127.0.0.1:80", bind="instance"),
     "too long"),
    (proxy(listen="unix:/" + "a" * 107, connect="tcp:127.0.0.1:80"), "too long"),
]

PROXY_GOOD_EDGES = [
    proxy(listen="unix:@" + "a" * 107, connect="tcp:127.0.0.1:80"),
    proxy(listen="tcp:127.0.0.1:80", connect="unix:/" + "a" * 106),
    # on the host the socket is bound through its directory's handle: a long path with a
    # short name fits
    proxy(listen="unix:/" + "d" * 200 + "/x.sock", connect="tcp:127.0.0.1:80"),
    proxy(listen="tcp:127.0.0.1:80,81", connect="tcp:127.0.0.1:80,80"),
]


@pytest.mark.parametrize("dev", PROXY_GOOD_EDGES)
def test_proxy_good_edges(dev: dict[str, str]) -> None:
    validate_device("p", dev)


@pytest.mark.parametrize(("dev", "reason"), PROXY_BAD)
def test_proxy_bad(dev: dict[str, str], reason: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        validate_device("p", dev)
    assert reason in exc.value.reason, exc.value.reason


@pytest.mark.parametrize(
    ("text", "addr"),
    [
        ("tcp:127.0.0.1:80", ProxyAddress("tcp", "127.0.0.1", (80,), None, False)),
        ("udp:[::1]:53,55-56", ProxyAddress("udp", "::1", (53, 55, 56), None, False)),
        ("tcp::8080", ProxyAddress("tcp", "", (8080,), None, False)),
        ("unix:/run/a.sock", ProxyAddress("unix", None, None, "/run/a.sock", False)),
        ("unix:@name", ProxyAddress("unix", None, None, "@name", True)),
    ],
)
def test_parse_proxy_address(text: str, addr: ProxyAddress) -> None:
    assert parse_proxy_address(text) == addr


def test_proxy_address_properties() -> None:
    assert parse_proxy_address("tcp:[::]:1").is_wildcard
    assert parse_proxy_address("tcp::1").is_wildcard
    assert not parse_proxy_address("tcp:1.2.3.4:1").is_wildcard
    assert parse_proxy_address("tcp:1.2.3.4:1").ip_version == 4
    assert parse_proxy_address("tcp:[fd00::1]:1").ip_version == 6
    assert parse_proxy_address("unix:/x").ip_version is None
    listen, connect = validate_proxy("p", proxy(listen="tcp:127.0.0.1:80-81",
                                                connect="tcp:127.0.0.1:90-91"))
    assert listen.ports == (80, 81) and connect.ports == (90, 91)


@settings(max_examples=60)
@given(st.integers(1, 65535), st.integers(0, 100), st.ip_addresses())
def test_proxy_port_range_expansion(start: int, span: int, ip: Any) -> None:
    end = min(start + span, 65535)
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    rng = f"{start}-{end}" if end > start else str(start)
    addr = parse_proxy_address(f"tcp:{host}:{rng}")
    assert addr.ports == tuple(range(start, end + 1))


@given(st.text(max_size=30))
def test_parse_proxy_address_total(text: str) -> None:
    with contextlib.suppress(InvalidArgument):
        parse_proxy_address(text)


# -- names and sets ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["eth0", "root", "my-dev_1.a:b", "x" * 63])
def test_device_name_ok(name: str) -> None:
    validate_device_name(name)


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "a b", "x" * 64, "a\nb", "caf\u00e9"])
def test_device_name_refused(name: str) -> None:
    with pytest.raises(InvalidConfig):
        validate_device_name(name)
    with pytest.raises(InvalidConfig):
        validate_device(name, {"type": "none"})


def test_validate_devices_same_path() -> None:
    ok = validate_devices({"a": {"type": "disk", "path": "/m", "source": "/s"},
                           "b": {"type": "disk", "path": "/n", "source": "/s"}})
    assert set(ok) == {"a", "b"}
    with pytest.raises(InvalidConfig, match="More than one disk device uses the same path"):
        validate_devices({"a": {"type": "disk", "path": "/m", "source": "/s"},
                          "b": {"type": "disk", "path": "/m", "source": "/t"}})
    with pytest.raises(InvalidConfig):
        validate_devices([])  # type: ignore[arg-type]
    with pytest.raises(InvalidConfig, match="Duplicate NIC name detected 'eth0'"):
        validate_devices({"a": {"type": "nic", "network": "br", "name": "eth0"},
                          "b": {"type": "nic", "nictype": "p2p", "name": "eth0"}})
    validate_devices({"a": {"type": "nic", "network": "br", "name": "eth0"},
                      "b": {"type": "nic", "nictype": "p2p", "name": "eth1"}})


def test_input_not_modified() -> None:
    dev: dict[str, Any] = {"type": "disk", "path": "/", "pool": "p", "size": "5GiB"}
    validate_device("root", dev)
    assert dev == {"type": "disk", "path": "/", "pool": "p", "size": "5GiB"}
