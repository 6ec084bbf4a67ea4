"""``network attach-profile|detach-profile`` and ``storage volume attach-profile|detach-profile``:
the device they write is the one ``lxc`` 5.0.2 writes, an instance of the profile gets it (a real
bridge, a real btrfs volume), and the refusals are LXD's lines (read off ``lxc`` of a running
LXD 5.0.2 for the same command lines)."""

from __future__ import annotations

import secrets
import subprocess
import sys

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


def refused(host: lxdlib.Host, *args: str) -> str:
    """The error line of a command that must fail with exit status 1."""
    r = run(host, *args)
    assert r.returncode == 1, (args, r.stdout, r.stderr)
    return r.stderr.strip()


def test_network_attach_and_detach_profile(host: lxdlib.Host) -> None:
    net = f"hhbr{secrets.token_hex(3)}"
    host.networks.create(net, {"ipv4.address": "auto", "ipv4.nat": "false",
                               "ipv6.address": "none"})
    host.profiles.create("web", {}, {})
    assert ok(host, "network", "attach-profile", net, "web") == ""
    # lxc 5.0.2's device: named after the network, no interface name unless one is given
    assert host.profiles.get("web").devices == {
        net: {"type": "nic", "nictype": "bridged", "parent": net}}
    assert refused(host, "network", "attach-profile", net, "web") == \
        f"Error: Device already exists: {net}"
    ok(host, "network", "attach-profile", net, "web", "nic1", "eth1")
    assert host.profiles.get("web").devices["nic1"] == {
        "type": "nic", "nictype": "bridged", "parent": net, "name": "eth1"}
    assert refused(host, "network", "attach-profile", "hhnonet", "web") == \
        "Error: Network not found"
    assert refused(host, "network", "attach-profile", net, "nope") == \
        "Error: Fetch profile: Profile not found"

    # an instance of the profile has both nics on the bridge
    c = host.launch("busybox", "c1", profiles=["default", "web"])
    links = c.exec(["ls", "/sys/class/net"], check=True).text.split()
    assert {net, "eth1"} <= set(links)
    c.delete(force=True)

    assert refused(host, "network", "detach-profile", net, "web") == \
        "Error: More than one device matches, specify the device name"
    assert refused(host, "network", "detach-profile", net, "web", "nosuch") == \
        "Error: The specified device doesn't exist"
    host.update_profile("web", devices={**host.profiles.get("web").devices,
                                        "other": {"type": "none"}})
    assert refused(host, "network", "detach-profile", net, "web", "other") == \
        "Error: The specified device doesn't match the network"
    ok(host, "network", "detach-profile", net, "web", "nic1")
    ok(host, "network", "detach-profile", net, "web")  # the one left
    assert set(host.profiles.get("web").devices) == {"other"}
    assert refused(host, "network", "detach-profile", net, "web") == \
        "Error: No device found for this network"


def test_storage_volume_attach_and_detach_profile(host: lxdlib.Host) -> None:
    store = host.volumes.store
    store.create("default", "data", {}, "")
    host.profiles.create("web", {}, {})
    assert ok(host, "storage", "volume", "attach-profile", "default", "data", "web",
              "/srv/data") == ""
    assert host.profiles.get("web").devices == {
        "data": {"type": "disk", "pool": "default", "source": "data", "path": "/srv/data"}}
    assert refused(host, "storage", "volume", "attach-profile", "default", "data", "web",
                   "/srv/other") == "Error: Device already exists: data"
    ok(host, "storage", "volume", "attach-profile", "default", "data", "web", "two", "/srv/two")
    assert refused(host, "storage", "volume", "attach-profile", "default", "data", "web",
                   "a", "/b", "c") == "Error: Invalid number of arguments"
    assert refused(host, "storage", "volume", "attach-profile", "default", "nope", "web",
                   "/x") == "Error: Storage pool volume not found"
    assert refused(host, "storage", "volume", "attach-profile", "default", "data", "nope",
                   "/x") == "Error: Fetch profile: Profile not found"

    # an instance of the profile sees the volume at both paths
    c = host.launch("busybox", "c1", profiles=["default", "web"])
    c.exec(["sh", "-c", "echo hi > /srv/data/f"], check=True)
    assert c.exec(["cat", "/srv/two/f"], check=True).text == "hi\n"
    c.delete(force=True)

    assert refused(host, "storage", "volume", "detach-profile", "default", "data", "web") == \
        "Error: More than one device matches, specify the device name"
    assert refused(host, "storage", "volume", "detach-profile", "default", "data", "web",
                   "nosuch") == "Error: The specified device doesn't exist"
    # lxc 5.0.2 would remove any device named here; a device that is not a disk of the
    # volume stays
    host.update_profile("web", devices={**host.profiles.get("web").devices,
                                        "other": {"type": "none"}})
    assert "is not a disk of volume 'data'" in refused(
        host, "storage", "volume", "detach-profile", "default", "data", "web", "other")
    host.update_profile("web", devices={k: v for k, v in host.profiles.get("web").devices.items()
                                        if k != "other"})
    ok(host, "storage", "volume", "detach-profile", "default", "data", "web", "two")
    ok(host, "storage", "volume", "detach-profile", "default", "data", "web")
    assert host.profiles.get("web").devices == {}
    assert refused(host, "storage", "volume", "detach-profile", "default", "data", "web") == \
        "Error: No device found for this storage volume"
    assert store.get("default", "data")["used_by"] == []
