"""The search for an address to pin (``security.ipv4_filtering``) when a container has taken
the network's free addresses with leases of its own: it ends at once, whatever the range."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest

from lxdlib import state
from lxdlib.errors import NetworkError
from lxdlib.network import dnsmasq
from lxdlib.network.manager import NetworkManager
from lxdlib.state import Paths

GW = ipaddress.IPv4Interface("10.40.0.1/16")


def _manager(tmp_path: Path, free: str | None) -> NetworkManager:
    """A network record (never brought up) whose lease file holds every address of its
    range but ``free``, as a container that asked under made-up MACs leaves it."""
    paths = Paths(tmp_path)
    paths.ensure()
    paths.networks.mkdir(parents=True, exist_ok=True)
    m = NetworkManager(paths)
    state.write_record(paths.networks / "n0.yaml", {
        "name": "n0", "type": "bridge", "managed": True, "description": "",
        "config": {"ipv4.address": str(GW), "ipv4.nat": "false"}})
    run = m.run_dir("n0")
    run.mkdir(parents=True)
    lines = [f"1796687778 02:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:00:01 {a} * *"
             for i, a in enumerate(GW.network.hosts()) if a != GW.ip and str(a) != free]
    (run / dnsmasq.LEASES).write_text("\n".join(lines) + "\n")
    return m


def test_a_range_full_of_leases_is_refused_at_once(tmp_path: Path) -> None:
    m = _manager(tmp_path, None)
    started = time.monotonic()
    with pytest.raises(NetworkError, match="no free IPv4 address"):
        m.dhcp_host_allocate("n0", "c1/eth0", "02:00:00:00:00:99", "c1")
    # one search of the 4 MB lease file per address took ~40 s here (under the network's lock)
    assert time.monotonic() - started < 5


def test_the_one_free_address_of_a_full_range_is_found_at_once(tmp_path: Path) -> None:
    free = str(GW.network.network_address + 12345)
    m = _manager(tmp_path, free)
    started = time.monotonic()
    assert m.dhcp_host_allocate("n0", "c1/eth0", "02:00:00:00:00:99", "c1") == free
    assert time.monotonic() - started < 5
