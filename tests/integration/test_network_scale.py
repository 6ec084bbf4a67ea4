"""Many instances on one managed bridge: every one gets an IPv4 address from dnsmasq, the DHCP
host step of a launch does not slow down as the network fills, and deleting them all releases
every lease without restarting dnsmasq."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import lxdlib
from lxdlib.network import NetworkManager, dnsmasq
from tests.integration.network_fixtures import free_subnet

pytestmark = pytest.mark.root

COUNT = int(os.environ.get("LXDLIB_TEST_DHCP_SCALE", "300"))


@pytest.fixture
def net(host: lxdlib.Host) -> Iterator[str]:
    name = f"lxt{secrets.token_hex(3)}"
    # a /22: 1,022 hosts, more than a /24 holds
    host.networks.create(name, {"ipv4.address": str(free_subnet(22)), "ipv4.nat": "false",
                                "ipv6.address": "none"})
    p = host.profiles.get("default")
    host.update_profile("default", devices={**p.devices, "eth0": {
        "type": "nic", "name": "eth0", "network": name}})
    try:
        yield name
    finally:
        # every instance goes whatever happened (the host fixture would too, but its network
        # must not be deleted under them)
        for inst in host.instances.list():
            with contextlib.suppress(Exception):
                inst.delete(force=True)
        with contextlib.suppress(Exception):
            host.networks.delete(name)


def timed_host_steps(manager: NetworkManager, name: str) -> dict[str, float]:
    """Median milliseconds of adding and forgetting one more instance's DHCP host entry: wall
    clock, and this process's CPU time (the wall clock also counts fsync waits and, on a busy
    host, the CPU that hundreds of booting instances and dnsmasq take)."""
    times: dict[str, list[float]] = {"add": [], "forget": [], "add cpu": [], "forget cpu": []}

    def timed(step: str, fn: Callable[..., None], *args: str | None) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn(*args)
        times[step].append(time.perf_counter() - wall)
        times[f"{step} cpu"].append(time.process_time() - cpu)

    for i in range(10):
        timed("add", manager.dhcp_host_add, name, f"probe{i}/eth0", f"02:fe:00:00:00:{i:02x}",
              None, f"probe{i}")
        timed("forget", manager.dhcp_hosts_forget, f"probe{i}")
    return {step: statistics.median(values) * 1000 for step, values in times.items()}


def test_hundreds_of_instances_get_addresses(host: lxdlib.Host, net: str) -> None:
    manager = host.ctx.networks
    run = manager.run_dir(net)
    gateway = ipaddress.IPv4Interface(manager.get(net)["config"]["ipv4.address"])
    pid = dnsmasq.running_pid(run)
    assert pid is not None
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"--dhcp-lease-max=1022" in cmd  # not dnsmasq's default of 1000
    assert f"--dhcp-hostsdir={run / dnsmasq.HOSTS_DIR}".encode() in cmd

    costs = {}
    macs: dict[str, str] = {}
    t0 = time.monotonic()
    # in batches (``launch_many``: several processes add their DHCP records side by side), the
    # DHCP host step timed with 10 instances and with all but one
    for first, end in ((0, 10), (10, COUNT - 1), (COUNT - 1, COUNT)):
        if first:
            costs[first] = timed_host_steps(manager, net)
        # each on an id map of its own (isolated maps, as fleets often run them): the DHCP
        # records and leases are what is under test here, not the id maps
        for inst in host.launch_many([f"s{i:03d}" for i in range(first, end)], image="busybox",
                                     config={"security.idmap.isolated": "true"}):
            macs[inst.config["volatile.eth0.hwaddr"]] = inst.name
    launched = time.monotonic() - t0

    # every instance leased an address of the subnet (read from dnsmasq's lease file: asking
    # each instance would cost a process per instance)
    deadline = time.monotonic() + 120
    while True:
        leases = {le["hwaddr"]: le["address"] for le in manager.leases(net)}
        missing = sorted(name for mac, name in macs.items() if mac not in leases)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # a read of the lease file is cheap: a coarser poll only waits longer
    assert not missing, f"{len(missing)} instances got no lease: {missing[:10]}"
    addresses = [ipaddress.IPv4Address(leases[mac]) for mac in macs]
    assert len(set(addresses)) == COUNT
    assert all(a in gateway.network and a != gateway.ip for a in addresses)
    # the instances themselves hold them (a sample: each exec is a process)
    for name in ("s000", f"s{COUNT // 2:03d}", f"s{COUNT - 1:03d}"):
        inst = host.instances.get(name)
        mac = inst.config["volatile.eth0.hwaddr"]
        assert inst.wait_for(lambda i=inst, m=mac: leases[m] in i.addresses(), timeout=20)
    assert len(list((run / dnsmasq.HOSTS_DIR).iterdir())) == COUNT

    # deleting releases each lease at once, through the running dnsmasq (not by restarting it)
    t0 = time.monotonic()
    for inst in host.instances.list():
        inst.delete(force=True)
    deleted = time.monotonic() - t0
    deadline = time.monotonic() + 10
    while dnsmasq.read_leases(run) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dnsmasq.read_leases(run) == []
    assert dnsmasq.running_pid(run) == pid
    assert list((run / dnsmasq.HOSTS_DIR).iterdir()) == []

    few, many = costs[10], costs[COUNT - 1]
    print(f"\n{COUNT} launches {launched:.0f}s, deletes {deleted:.0f}s")
    for n, c in ((10, few), (COUNT - 1, many)):
        print(f"DHCP host step at {n} instances, ms wall/CPU: add {c['add']:.2f}/"
              f"{c['add cpu']:.2f}, forget {c['forget']:.2f}/{c['forget cpu']:.2f}")
    # printed, not asserted (speed is measured, not asserted): that one instance's step touches
    # only its own files is what tests/unit/test_dhcphosts.py checks
