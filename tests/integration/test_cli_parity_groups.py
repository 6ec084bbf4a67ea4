"""The `lxdlib` command's network, image, profile and config groups printing what LXD 5.0.2's
`lxc` prints (issue 13), word for word, as compared side by side with a real LXD 5.0.2:
`network show`'s fields and users, `network info`'s text, `network list-leases`' gateway rows
and lease types, `get` of a key that is not set; `image show` (ImagePut alone) and its edit
round trip, `image get-property` of a property that is not set; `config metadata show` in
api.ImageMetadata's shape, edited back unchanged."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import lxdlib

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def run(host: lxdlib.Host, *args: str, input: str | None = None, check: bool = True
        ) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} failed ({r.returncode}): {r.stderr}")
    return r


def name(prefix: str) -> str:
    """Container and bridge names are global on the machine: each test makes its own."""
    return f"{prefix}{secrets.token_hex(3)}"


@pytest.fixture
def net(host: lxdlib.Host) -> Iterator[str]:
    """A managed bridge without NAT or IPv6 (the root's teardown removes it)."""
    bridge = name("lxg")
    host.networks.create(bridge, {"ipv4.address": "auto", "ipv4.nat": "false",
                                  "ipv6.address": "none"})
    yield bridge


def test_network_show_info_leases_and_get_as_lxc(host: lxdlib.Host, net: str) -> None:
    c = name("al")  # sorts before the gateway row, as lxc sorts the rows
    host.profiles.create(name("np"), {}, {"eth0": {"type": "nic", "network": net,
                                                   "name": "eth0"}})
    prof = next(p.name for p in host.profiles.list() if p.name.startswith("np"))
    host.launch("busybox", c, devices={"eth0": {"type": "nic", "network": net,
                                               "name": "eth0"}})
    addr = host.networks.get(net).config["ipv4.address"]
    shown = run(host, "network", "show", net).stdout
    assert shown == (f"config:\n  ipv4.address: {addr}\n  ipv4.nat: \"false\"\n"
                     f"  ipv6.address: none\ndescription: \"\"\nname: {net}\ntype: bridge\n"
                     f"used_by:\n- /1.0/instances/{c}\n- /1.0/profiles/{prof}\n"
                     "managed: true\nstatus: Created\nlocations:\n- none\n")

    # (the bridge's link-local IPv6 address, which LXD's bridge without IPv6 lacks, left out)
    info = [x for x in run(host, "network", "info", net).stdout.split("\n")
            if not x.startswith("  inet6\tfe80:")]
    veth = host.instances[c].config["volatile.eth0.host_name"]
    assert info[0] == f"Name: {net}"
    assert re.fullmatch(r"MAC address: ([0-9a-f]{2}:){5}[0-9a-f]{2}", info[1])
    assert info[2:8] == ["MTU: 1500", "State: up", "Type: broadcast", "", "IP addresses:",
                         f"  inet\t{addr} (global)"]
    assert info[8:11] == ["", "Network usage:", info[10]]
    assert re.fullmatch(r"  Bytes received: [0-9.]+k?B", info[10])
    assert info[14:] == ["", "Bridge:", info[16], "  STP: false", "  Forward delay: 1500",
                         "  Default VLAN ID: 0", "  VLAN filtering: false",
                         f"  Upper devices: {veth}", ""]
    assert re.fullmatch(r"  ID: 8000\.[0-9a-f]{12}", info[16])

    hwaddr = host.instances[c].config["volatile.eth0.hwaddr"]
    gw = addr.split("/")[0]
    deadline = time.monotonic() + 30
    while True:
        rows = run(host, "network", "list-leases", net, "--format", "csv").stdout.split("\n")
        if len(rows) > 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rows[1:] == [f"{net}.gw,,{gw},GATEWAY", ""]
    assert re.fullmatch(rf"{c},{hwaddr},[0-9.]+,DYNAMIC", rows[0])

    r = run(host, "network", "get", net, "ipv4.dhcp")
    assert r.stdout == ""
    assert run(host, "network", "get", net, "ipv4.nat").stdout == "false\n"


def test_image_show_is_its_imageput_and_edits_back(host: lxdlib.Host) -> None:
    props = host.images["busybox"].properties
    shown = run(host, "image", "show", "busybox").stdout
    assert shown == ("auto_update: false\nproperties:\n"
                     + "".join(f"  {k}: {v}\n" for k, v in sorted(props.items()))
                     + "public: false\nexpires_at: 1970-01-01T00:00:00Z\nprofiles:\n- default\n")
    run(host, "image", "edit", "busybox", input=shown)  # as shown: nothing changes
    assert host.images["busybox"].record().expires_at is None
    run(host, "image", "edit", "busybox",
        input=shown.replace("1970-01-01T00:00:00Z", "2030-01-02T03:04:05Z"))
    assert "expires_at: 2030-01-02T03:04:05Z\n" in run(host, "image", "show", "busybox").stdout
    assert "    Expires: 2030/01/02 03:04 UTC\n" in run(host, "image", "info", "busybox").stdout
    run(host, "image", "edit", "busybox", input=shown)  # the epoch: never again
    assert "    Expires: never\n" in run(host, "image", "info", "busybox").stdout

    r = run(host, "image", "get-property", "busybox", "nope", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "Error: Property not found\n")
    assert run(host, "image", "get-property", "busybox", "os").stdout == f"{props['os']}\n"


def test_config_metadata_show_has_imagemetadatas_fields(host: lxdlib.Host) -> None:
    c = name("md")
    run(host, "init", "busybox", c)
    shown = run(host, "config", "metadata", "show", c).stdout
    lines = shown.split("\n")
    assert [x.split(":")[0] for x in lines if x and not x.startswith(" ")] == \
        ["architecture", "creation_date", "expiry_date", "properties", "templates"]
    assert "expiry_date: 0" in lines
    i = lines.index("  /etc/hostname:")
    assert lines[i + 1:i + 10] == ["    when:", "    - create", "    - copy", "    - rename",
                                   "    create_only: false", "    template: hostname.tpl",
                                   "    properties: {}", ""]
    run(host, "config", "metadata", "edit", c, input=shown)
    assert run(host, "config", "metadata", "show", c).stdout == shown
