"""``launch|init --network`` and ``network list``'s host interfaces, as ``lxc`` 5.0.2 has them
(read off a running LXD 5.0.2 for the same command lines): real bridges, a real unmanaged one."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

import lxdlib

pytestmark = pytest.mark.root


def run(host: lxdlib.Host, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def ok(host: lxdlib.Host, *args: str) -> str:
    r = run(host, *args)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


@pytest.fixture
def unmanaged() -> Iterator[str]:
    """A bridge of the host's that no lxdlib root manages."""
    name = f"hkux{secrets.token_hex(3)}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


def test_network_flag_gives_eth0(host: lxdlib.Host, unmanaged: str) -> None:
    net = f"hkbr{secrets.token_hex(3)}"
    host.networks.create(net, {"ipv4.address": "auto", "ipv4.nat": "false",
                               "ipv6.address": "none"})
    # a profile whose nic has another name: lxc still adds its own eth0, the profile's stays
    host.profiles.create("other", {}, {
        "net0": {"type": "nic", "network": net},
        "root": {"type": "disk", "path": "/", "pool": "default"}})
    ok(host, "init", "busybox", "c1", "--network", net)
    assert host.instances["c1"].devices == {
        "eth0": {"name": "eth0", "type": "nic", "network": net}}
    ok(host, "init", "busybox", "c2", "-p", "other", "-n", net)
    c2 = host.instances["c2"]
    assert c2.devices == {"eth0": {"name": "eth0", "type": "nic", "network": net}}
    assert set(c2.expanded_devices) == {"eth0", "net0", "root"}
    # -d overrides the --network nic itself (LXD then refuses mtu beside network=)
    r = run(host, "init", "busybox", "c3", "-n", net, "-d", "eth0,mtu=1400")
    assert r.returncode == 1 and r.stderr.strip() == (
        'Error: Failed creating instance record: Cannot use "mtu" property in conjunction '
        'with "network" property')
    ok(host, "init", "busybox", "c4", "-n", net, "-d", "eth0,hwaddr=00:16:3e:00:00:42")
    assert host.instances["c4"].devices["eth0"] == {
        "name": "eth0", "type": "nic", "network": net, "hwaddr": "00:16:3e:00:00:42"}
    # a host bridge lxdlib does not manage: a bridged nic with it as parent
    ok(host, "init", "busybox", "c5", "-n", unmanaged)
    assert host.instances["c5"].devices == {
        "eth0": {"name": "eth0", "type": "nic", "nictype": "bridged", "parent": unmanaged}}
    r = run(host, "init", "busybox", "c6", "-n", "hknonet")
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "Creating c6\n", 'Error: Failed loading network "hknonet": Network not found\n')
    assert "c6" not in host.instances
    for c in ("c1", "c2", "c4", "c5"):
        host.instances[c].delete()
    host.profiles.delete("other")
    host.networks.delete(net)


def test_network_list_shows_the_hosts_interfaces(host: lxdlib.Host, unmanaged: str) -> None:
    """lxc 5.0.2: the host's bridges and physical links as MANAGED ``NO`` rows, in name order
    with the managed ones, USED BY counting the instances with a nic on them; its loopback and
    the kinds it calls ``unknown`` (a veth) only in json/yaml, which keep the API's order."""
    net = f"hkbr{secrets.token_hex(3)}"
    veth = f"hkve{secrets.token_hex(3)}"
    host.networks.create(net, {"ipv4.address": "none", "ipv6.address": "none"})
    subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", veth + "p"],
                   check=True)
    try:
        ok(host, "init", "busybox", "c1", "-n", unmanaged)
        rows = [line.split(",") for line in ok(host, "network", "list", "-f", "csv").split()]
        names = [r[0] for r in rows]
        assert names == sorted(names)
        by_name = {r[0]: r for r in rows}
        assert by_name[net] == [net, "bridge", "YES", "none", "none", "", "0", "CREATED"]
        assert by_name[unmanaged] == [unmanaged, "bridge", "NO", "", "", "", "1", ""]
        assert "lo" not in by_name and veth not in by_name
        physical = {n for n in os.listdir("/sys/class/net")
                    if os.path.exists(f"/sys/class/net/{n}/device")}
        assert {n for n, r in by_name.items() if r[1] == "physical"} == physical
        listed = json.loads(ok(host, "network", "list", "-f", "json"))
        assert listed[0]["name"] == net and listed[0]["managed"] is True
        shown = {n["name"]: n for n in listed}
        assert shown["lo"]["type"] == "loopback" and shown[veth]["type"] == "unknown"
        assert shown[unmanaged] == {
            "config": {}, "description": "", "name": unmanaged, "type": "bridge",
            "used_by": ["/1.0/instances/c1"], "managed": False, "status": "",
            "locations": None}
        assert shown[veth]["used_by"] is None
    finally:
        subprocess.run(["ip", "link", "del", veth], check=False)
