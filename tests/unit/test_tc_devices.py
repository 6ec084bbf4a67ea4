"""Pure parts of nic shaping, disk, unix devices and custom volumes: rates, names, mount options,
node specs, interface state parsing, volume names and keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from lxdlib.devices import disk, unix
from lxdlib.devices.nic import default_host_name, ifb_for
from lxdlib.errors import InvalidConfig, InvalidName, NotFound
from lxdlib.network import netstate, tc
from lxdlib.volumes import strip_type, validate_config, validate_name


@pytest.mark.parametrize(("dev", "want"), [
    ({}, tc.Limits()),
    ({"limits.ingress": "8Mbit"}, tc.Limits(8_000_000, None)),
    ({"limits.egress": "1Gbit"}, tc.Limits(None, 1_000_000_000)),
    ({"limits.ingress": "1Mbit", "limits.egress": "2Mbit"}, tc.Limits(1_000_000, 2_000_000)),
    ({"limits.max": "10Mbit", "limits.ingress": "1Mbit"}, tc.Limits(10_000_000, 10_000_000)),
    ({"limits.ingress": ""}, tc.Limits()),
    ({"limits.egress": "1Kibit"}, tc.Limits(None, 1024)),
])
def test_nic_limits(dev: dict[str, str], want: tc.Limits) -> None:
    assert tc.nic_limits(dev) == want
    assert bool(tc.nic_limits(dev)) == bool(want.ingress or want.egress)


@pytest.mark.parametrize("value", ["fast", "-1Mbit", "0"])
def test_nic_limits_refused(value: str) -> None:
    with pytest.raises(InvalidConfig):
        tc.nic_limits({"limits.egress": value})


def test_rate_bytes_clamped() -> None:
    assert tc.rate_bytes(8_000_000) == 1_000_000
    assert tc.rate_bytes(1) == 1
    assert tc.rate_bytes(10**12) == tc.MAX_RATE_BYTES


def test_interface_names() -> None:
    names = {default_host_name(r, i, d) for r in ("/a", "/b") for i in ("c1", "c2")
             for d in ("eth0", "eth1")}
    assert len(names) == 8 and all(n.startswith("veth") and len(n) == 12 for n in names)
    assert default_host_name("/a", "c1", "eth0") == default_host_name("/a", "c1", "eth0")
    ifb = ifb_for("/a", "c1", "eth0")
    assert ifb.startswith(tc.IFB_PREFIX) and len(ifb) == 15
    assert ifb != ifb_for("/a", "c1", "eth1")
    assert len(tc.ifb_name("lxthost0")) == 15


def test_netstate_parse() -> None:
    links = [
        {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP"], "mtu": 65536,
         "link_type": "loopback", "address": "00:00:00:00:00:00",
         "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8,
                        "scope": "host"}],
         "stats64": {"rx": {"bytes": 5, "packets": 1}, "tx": {"bytes": 5, "packets": 1}}},
        {"ifindex": 2, "ifname": "eth0", "flags": ["BROADCAST", "UP", "LOWER_UP"], "mtu": 1400,
         "link_type": "ether", "address": "00:16:3e:00:00:01", "link_index": 10 ** 6,
         "link_netnsid": 0,
         "addr_info": [{"family": "inet", "local": "10.0.0.5", "prefixlen": 24,
                        "scope": "global"},
                       {"family": "inet6", "local": "fe80::1", "prefixlen": 64,
                        "scope": "link"}],
         "stats64": {"rx": {"bytes": 100, "packets": 2, "dropped": 1},
                     "tx": {"bytes": 50, "packets": 1}}},
    ]
    out = netstate.parse(links)
    assert list(out) == ["eth0", "lo"]
    eth0 = out["eth0"]
    assert eth0["addresses"] == [
        {"family": "inet", "address": "10.0.0.5", "netmask": "24", "scope": "global"},
        {"family": "inet6", "address": "fe80::1", "netmask": "64", "scope": "link"}]
    assert eth0["mtu"] == 1400 and eth0["state"] == "up" and eth0["type"] == "broadcast"
    assert eth0["counters"]["bytes_received"] == 100
    assert eth0["counters"]["packets_dropped_inbound"] == 1
    assert eth0["host_name"] == ""  # no such ifindex on this host
    assert out["lo"]["addresses"][0]["scope"] == "local" and out["lo"]["hwaddr"] == ""


def _plan(source: Path, **kw: object) -> disk.Plan:
    base: dict[str, object] = {"source": str(source), "path": "/mnt/x", "idmap": False,
                               "readonly": False, "recursive": False, "propagation": "",
                               "required": True, "by_liblxc": True}
    base.update(kw)
    return disk.Plan(**base)  # type: ignore[arg-type]


def test_mount_entry_options(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    cases = [
        (_plan(tmp_path), "bind,create=dir"),
        (_plan(f), "bind,create=file"),
        (_plan(tmp_path, readonly=True, idmap=True), "bind,create=dir,ro,idmap=container"),
        (_plan(tmp_path, recursive=True, propagation="rslave"), "rbind,create=dir,rslave"),
        (_plan(tmp_path, required=False), "bind,create=dir,optional"),
    ]
    for plan, opts in cases:
        entry = disk.mount_entry(plan)
        assert (entry.source, entry.target, entry.options) == (plan.source, "/mnt/x", opts)


def test_idmap_support(tmp_path: Path) -> None:
    assert disk.fs_type("/proc/self") == "proc" and disk.fs_type("/") != ""
    assert not disk.supports_idmap("/proc")
    assert not disk.supports_idmap("/dev/null")  # a device node has nothing to map
    assert not disk.supports_idmap(tmp_path / "absent")
    assert disk.supports_idmap(tmp_path) is (disk.fs_type(tmp_path) in disk.IDMAP_FILESYSTEMS)


@pytest.mark.parametrize(("dtype", "dev", "want"), [
    ("unix-char", {"major": "1", "minor": "5", "path": "/dev/z"},
     unix.Node("c", 1, 5, "/dev/z", 0, 0, 0o660)),
    ("unix-block", {"major": "7", "minor": "3", "path": "dev/b", "uid": "5", "gid": "6",
                    "mode": "0600"}, unix.Node("b", 7, 3, "/dev/b", 5, 6, 0o600)),
    ("unix-char", {"source": "/dev/null"}, unix.Node("c", 1, 3, "/dev/null", 0, 0, 0o666)),
    ("unix-char", {"source": "/dev/null", "path": "/dev/n2", "mode": "640"},
     unix.Node("c", 1, 3, "/dev/n2", 0, 0, 0o640)),
    ("unix-char", {"source": "/dev/absent-x", "required": "false"}, None),
    ("unix-char", {"path": "/dev/null"}, unix.Node("c", 1, 3, "/dev/null", 0, 0, 0o666)),
])
def test_unix_node_spec(dtype: str, dev: dict[str, str], want: unix.Node | None) -> None:
    assert unix.node_spec(dtype, "d", dev) == want


def test_unix_node_spec_refusals() -> None:
    with pytest.raises(NotFound, match="'d'"):
        unix.node_spec("unix-char", "d", {"source": "/dev/absent-x"})
    with pytest.raises(InvalidConfig, match=r"'d'.*not a block device"):
        unix.node_spec("unix-block", "d", {"source": "/dev/null"})


@pytest.mark.parametrize(("rule", "rules", "want"), [
    ("c 1:3 rwm", ("c 1:3 rwm",), True),
    ("c 10:234 rwm", ("c *:* m", "b *:* m"), False),
    ("c 136:4 rwm", ("c 136:* rwm",), True),
    ("b 7:0 rwm", ("c 7:0 rwm",), False),
    ("c 4:1 rwm", ("a *:* rwm",), True),
])
def test_devices_rule_covered(rule: str, rules: tuple[str, ...], want: bool) -> None:
    assert unix.covered(rule, rules) is want


@pytest.mark.parametrize("name", ["v", "data-1", "a.b:c_d", "x" * 63])
def test_volume_names_ok(name: str) -> None:
    validate_name(name)


@pytest.mark.parametrize("name", ["", "-a", ".a", "a/b", "a b", "x" * 64, "a\n"])
def test_volume_names_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_name(name)


def test_volume_config_and_type_prefix() -> None:
    assert validate_config({"size": "1GiB", "user.x": "y"}) == {"size": "1GiB", "user.x": "y"}
    for bad in ({"zfs.blocksize": "8k"}, {"size": "lots"}, {"user.x": "a\nb"}, {"size": "0"}):
        with pytest.raises(InvalidConfig):
            validate_config(bad)
    assert strip_type("custom/v") == "v" and strip_type("v") == "v"
    with pytest.raises(InvalidName):
        strip_type("container/c1")
