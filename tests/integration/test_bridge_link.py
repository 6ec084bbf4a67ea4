"""The bridge link a managed network makes is LXD 5.0's: a MAC of LXD's 00:16:3e range, and no
IPv6 at all (not even link-local) while ``ipv6.address=none``. Read off the kernel."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

import lxdlib

pytestmark = pytest.mark.root


def ipv6_addresses(name: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "-6", "addr", "show", "dev", name], capture_output=True,
                         text=True, check=True).stdout
    return [a["local"] for link in json.loads(out) for a in link.get("addr_info", [])]


def test_bridge_mac_and_ipv6_as_lxds(host: lxdlib.Host) -> None:
    if not Path("/proc/sys/net/ipv6").is_dir():
        pytest.skip("no IPv6 on this host")
    net = f"hkbr{secrets.token_hex(3)}"
    conf = Path(f"/proc/sys/net/ipv6/conf/{net}/disable_ipv6")
    host.networks.create(net, {"ipv4.address": "none", "ipv6.address": "none"})
    try:
        assert Path(f"/sys/class/net/{net}/address").read_text().startswith("00:16:3e:")
        assert conf.read_text().strip() == "1" and ipv6_addresses(net) == []
        v6 = f"fd42:{secrets.randbelow(0xffff):x}:{secrets.randbelow(0xffff):x}:1::1/64"
        host.networks.update(net, {"ipv4.address": "none", "ipv6.address": v6,
                                   "ipv6.nat": "false"})
        assert conf.read_text().strip() == "0"
        assert v6.split("/")[0] in ipv6_addresses(net)
        host.networks.update(net, {"ipv4.address": "none", "ipv6.address": "none"})
        assert conf.read_text().strip() == "1" and ipv6_addresses(net) == []
    finally:
        host.networks.delete(net)
