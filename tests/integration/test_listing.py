"""The one-pass listing (``host.instances.list_state()``, ``lxdlib list``) against the exact
per-instance view, on real containers with DHCP on a managed bridge: running, frozen, stopped,
and an address set inside an instance without DHCP. The listing runs no program (for hundreds
of instances a fork of the process reads most namespaces, tested here with the threshold down)."""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import lxdlib
from lxdlib.state import ParsedCache

pytestmark = pytest.mark.root


@pytest.fixture
def net(host: lxdlib.Host) -> str:
    name = f"lxt{secrets.token_hex(3)}"
    host.networks.create(name, {"ipv4.address": "auto", "ipv4.nat": "false",
                                "ipv6.address": "auto", "ipv6.nat": "false"})
    p = host.profiles.get("default")
    host.update_profile("default", devices={**p.devices, "eth0": {
        "type": "nic", "name": "eth0", "network": name}})
    return name


def cli(host: lxdlib.Host, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root),
                        *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def without_counters(network: dict[str, Any]) -> dict[str, Any]:
    return {n: {k: v for k, v in nic.items() if k != "counters"} for n, nic in network.items()}


def forbid_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to start a process in this Python process fails the test."""
    def refuse(*a: Any, **kw: Any) -> Any:
        raise AssertionError(f"the listing started a process: {a[:2]}")
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    for fn in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv", "execve"):
        if hasattr(os, fn):
            monkeypatch.setattr(os, fn, refuse)


def test_listing_agrees_with_the_exact_view(host: lxdlib.Host, net: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run = host.launch("busybox", "run")
    frozen = host.launch("busybox", "frozen")
    static = host.launch("busybox", "static")
    host.create("busybox", "stopped")
    for c in (run, frozen, static):
        assert c.wait_for(lambda c=c: bool(c.addresses()), timeout=30), c.network_state()
    # an address the host's DHCP server knows nothing about, set inside the instance
    gw = ipaddress.ip_interface(host.networks.get(net)["config"]["ipv4.address"])
    # not an address DHCP handed out, to this instance or another (the lease check below
    # would find it: 3 instances picking among ~250 addresses do hold .250 now and then)
    taken = {le["address"] for le in host.networks.leases(net)} | {
        a for c in (run, frozen, static) for a in c.addresses("inet")}
    extra = next(str(gw.network.network_address + k) for k in (250, 251, 252, 253)
                 if str(gw.network.network_address + k) not in taken)
    static.exec(["ip", "addr", "add", f"{extra}/{gw.network.prefixlen}", "dev", "eth0"]).check()
    for c in (run, frozen, static):  # SLAAC from the bridge's router advertisements
        assert c.wait_for(lambda c=c: bool(c.addresses("inet6")), timeout=30), c.network_state()
    frozen.pause()

    with monkeypatch.context() as m:
        forbid_processes(m)
        listing = host.instances.list_state()
        full = host.instances.list_state(network="full")
    assert listing.names() == full.names() == ["frozen", "run", "static", "stopped"]
    assert [e.state for e in listing] == ["FROZEN", "RUNNING", "RUNNING", "STOPPED"]
    for e in listing:
        inst = host.instances[e.name]
        assert e.state == inst.state and e.status == inst.status and e.error is None
        assert e.record is not None and e.record.to_dict() == inst.record().to_dict()
        if e.running:
            assert e.pid == full[e.name].pid == inst.pid > 0
            exact = inst.network_state()
            assert without_counters(full[e.name].network or {}) == without_counters(exact)
            assert full[e.name].network["eth0"]["host_name"]  # type: ignore[index]
            # by default, the same addresses alone
            assert e.network == {n: {"addresses": nic["addresses"]}
                                 for n, nic in exact.items() if nic["addresses"]}
            assert e.ipv4 == inst.addresses("inet")
            assert e.ipv6 == inst.addresses("inet6") and e.ipv6
            assert not [a for a in e.ipv6 if a.startswith("fe80:")]
        else:
            assert e.pid == -1 and e.network == {} and e.ipv4 == []
    assert extra in listing["static"].ipv4
    leases = {le["address"] for le in host.networks.leases(net)}
    assert extra not in leases  # only the in-namespace read can know it

    # the command shows the same, one line per address, no link-local IPv6
    out = cli(host, "list", "-f", "csv", "-c", "ns46p")
    rows = {r[0]: r[1:] for r in csv.reader(io.StringIO(out))}
    assert sorted(rows) == listing.names()
    for e in listing:
        state, v4, v6, pid = rows[e.name]
        assert state == e.state
        assert v4.splitlines() == [f"{a} ({n})" for a, n in e.addresses("inet")]
        assert v6.splitlines() == [f"{a} ({n})" for a, n in e.addresses("inet6")]
        # no link-local address (a global one may hold "fe80:" inside: an EUI-64 of a MAC
        # whose fourth byte is 0x80 reads …:3eff:fe80:…)
        assert not [a for a in v6.splitlines() if a.lower().startswith("fe80:")]
        assert pid == (str(e.pid) if e.running else "")

    # a listing without addresses reads no namespace; a second listing parses no record
    assert all(e.network is None for e in host.instances.list_state(network=False))
    monkeypatch.setattr(ParsedCache, "RECENT_NS", -1)
    host.instances.list_state(network=False)  # every record parsed once more, now kept

    def no_parsing(*a: Any, **kw: Any) -> Any:
        raise AssertionError("a record was parsed again")
    with monkeypatch.context() as m:
        forbid_processes(m)
        m.setattr("lxdlib.state.parse_record", no_parsing)
        again = host.instances.list_state()
    assert [e.state for e in again] == [e.state for e in listing]
    frozen.resume()
    assert host.instances.list_state()["frozen"].state == "RUNNING"
    run.stop(force=True)
    after = host.instances.list_state(["run", "static"])
    assert after.names() == ["run", "static"] and after["run"].state == "STOPPED"
    assert after["run"].pid == -1 and after["static"].running


# Lists the root given in a fresh process (one thread: the case that forks) with the fork
# threshold at 1, and tells how many forks it made and whether each was reaped; with "dies",
# the forked reader exits before giving anything, and this process must read those itself.
_FORKED_LISTING = """
import json, os, signal, sys
import lxdlib
from lxdlib.network import netstate
netstate.FORK_FROM = 1
parent, forks, real_fork, real_visit = os.getpid(), [], os.fork, netstate._visit
def fork():
    pid = real_fork()
    if pid:
        forks.append(pid)
    return pid
def visit(*args):
    if os.getpid() != parent and sys.argv[2] == "dies":
        os._exit(3)
    if os.getpid() != parent and sys.argv[2] == "signalled":
        os.kill(os.getpid(), signal.SIGTERM)
    return real_visit(*args)
os.fork, netstate._visit = fork, visit
# who checked how many cgroups: the fork its share, this process the rest
from lxdlib import livestate
real_read = livestate.read
def read(lxcpath, running, *args, **kwargs):
    running = list(running)
    with open(sys.argv[1] + "/checked", "a") as f:
        f.write(f"{'parent' if os.getpid() == parent else 'child'} {len(running)}\\n")
    return real_read(lxcpath, running, *args, **kwargs)
livestate.read = read
# the caller's handler, which must not run in the fork (it ends by the signal instead)
def handler(*args):
    with open(sys.argv[1] + "/handled", "a") as f:
        f.write(f"{os.getpid()} ")
signal.signal(signal.SIGTERM, handler)
host = lxdlib.Host(sys.argv[1])
if sys.argv[2] == "caller fails":  # while the fork reads, the records cannot be read
    import lxdlib.record
    def refuse(*args, **kwargs):
        raise RuntimeError("no records today")
    lxdlib.record.load_file = refuse
    try:
        host.instances.list_state()
    except RuntimeError as e:
        out = {"error": str(e)}
else:
    out = {str(n): {e.name: e.network for e in host.instances.list_state(network=n)}
           for n in (True, "full")}
print(json.dumps({"forks": len(forks), "left": [p for p in forks if os.path.exists(f"/proc/{p}")],
                  "listings": out, "cached": len(livestate.cache_entries()),
                  "gc": __import__("gc").isenabled()}))
"""


@pytest.mark.parametrize("child", ["reads", "dies", "signalled", "caller fails"])
def test_a_forked_reader_gives_the_same_listing(host: lxdlib.Host, net: str, child: str) -> None:
    """Hundreds of namespaces, in a process that runs one thread, are read mostly by a fork of
    the process (``netstate.CHILD_SHARE``): the same listing as one thread reads, every fork
    reaped; a fork that gives nothing back costs only time (this process reads those), also
    one ended by a signal, which the caller's handler must not see; a listing that fails on
    its own side meanwhile still reaps its fork."""
    insts = [host.launch("busybox", f"c{i}") for i in range(3)]
    for c in insts:
        assert c.wait_for(lambda c=c: bool(c.addresses("inet")), timeout=30), c.network_state()
    r = subprocess.run([sys.executable, "-c", _FORKED_LISTING, str(host.paths.root), child],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    checked = sorted((host.paths.root / "checked").read_text().splitlines())
    if child == "caller fails":
        # the fork's checks are kept even so
        assert got == {"forks": 1, "left": [], "listings": {"error": "no records today"},
                       "cached": 3, "gc": True}
        assert checked == ["child 1", "parent 2"]
        return
    assert got["forks"] == 2 and got["left"] == []  # one per listing, each reaped
    # the fork checked its share's cgroups (one of three) from the start, and handed what it
    # checked back: the second listing here found all three known; a fork that died did its
    # checks in vain, and this process checked its share again
    if child == "reads":
        assert checked == ["child 1", "child 1", "parent 2", "parent 2"]
    else:
        assert checked == ["child 1", "child 1", "parent 1", "parent 1", "parent 2", "parent 2"]
    assert got["cached"] == 3
    assert got["gc"]  # off while the fork ran (its pages stay shared), on again after
    assert not (host.paths.root / "handled").exists()
    here = {e.name: e.network for e in host.instances.list_state()}
    assert got["listings"]["True"] == here and all(here.values())
    full = {e.name: without_counters(e.network or {})
            for e in host.instances.list_state(network="full")}
    assert {n: without_counters(v) for n, v in got["listings"]["full"].items()} == full


def test_listing_falls_back_to_liblxc_when_the_cgroup_is_unknown(
        host: lxdlib.Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel's view cannot be tied to the instance, liblxc is asked: same answer."""
    c = host.launch("busybox", "c1")
    host.create("busybox", "c2")
    # its init brings lo up a moment after the start returns: wait for that through the
    # usual path, so the fallback's answer is compared with something that is there
    assert c.wait_for(lambda: "lo" in (host.instances.list_state()["c1"].network or {}),
                      timeout=30)
    monkeypatch.setattr("lxdlib.livestate.layout", lambda: None)
    listing = host.instances.list_state()
    assert listing["c1"].state == "RUNNING" and listing["c1"].pid == c.pid
    assert listing["c1"].network is not None and "lo" in listing["c1"].network
    assert listing["c2"].state == "STOPPED"


def test_init_is_found_after_the_hosts_pids_wrapped(host: lxdlib.Host) -> None:
    """Once the host's pids have wrapped around (at ``kernel.pid_max``: 32,768 on a 2-core
    host, reached during this suite), a process an init starts can have a lower pid than the
    init, and cgroup v1 lists a cgroup's pids in numeric order: the kernel's view must still
    find the init (not fall back to liblxc, nor name the wrong process). The wrap is made by
    setting ``kernel.ns_last_pid`` below the init's pid just before the instance starts a
    process that stays."""
    from lxdlib import livestate
    name = f"wrap{secrets.token_hex(2)}"
    c = host.launch("busybox", name)
    init = c.pid
    where = livestate.layout()
    assert where is not None
    cgroup = f"{where.bases[0]}/lxc.payload.{name}"
    Path("/proc/sys/kernel/ns_last_pid").write_text("300")
    c.exec(["sh", "-c", "sleep 600 </dev/null >/dev/null 2>&1 &"])
    pids = livestate.pids_of(Path(cgroup, "cgroup.procs").read_bytes())
    assert init in pids and min(pids) < init, (init, pids)  # the wrap was made
    livestate.clear_cache()
    got = livestate.read(host.paths.lxcpath, [name], where)[name]
    assert got is not None and (got.state, got.pid) == ("RUNNING", init)
    assert host.instances.list_state()[name].pid == init
    # a process of the instance, not the init, is never taken for it, whatever the order
    monitor = livestate.monitor_cmdline(host.paths.lxcpath, name)
    assert livestate.init_among(sorted(pids, reverse=True), monitor) == init
    assert livestate.init_among([p for p in pids if p != init], monitor) == -1


def test_running_instances_are_those_liblxc_lists(host: lxdlib.Host) -> None:
    """``runtime.list_running`` reads the monitors' sockets as liblxc does: same answer, for
    running, frozen and stopped instances, and after a stop."""
    import lxc

    from lxdlib import runtime

    lxcpath = host.paths.lxcpath

    def liblxc() -> set[str]:
        return set(lxc.list_containers(active=True, defined=False, config_path=str(lxcpath)))
    a = host.launch("busybox", "a")
    host.launch("busybox", "b").freeze()
    host.create("busybox", "c")
    assert runtime.list_running(lxcpath) == liblxc() == {"a", "b"}
    a.stop(force=True)
    assert runtime.list_running(lxcpath) == liblxc() == {"b"}


def test_cli_list_opens_no_host_unless_needed(host: lxdlib.Host) -> None:
    """A table of a settled root is read without the façade (a fast start); a leftover of a
    killed operation makes it open the Host, which finishes or undoes it first, as any
    command does; JSON (expanded config) opens it too."""
    host.launch("busybox", "c1")

    def imports(*args: str) -> tuple[str, str]:
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "lxdlib.cli.main",
                            "--root", str(host.paths.root), *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout, r.stderr

    out, trace = imports("list", "-f", "csv", "-c", "ns")
    assert out.split() == ["c1,RUNNING"]
    assert "lxdlib.host" not in trace and "lxdlib.images" not in trace
    # every instance runs and the monitors' sockets say so: liblxc is not even loaded, nor
    # subprocess, nor the socket module (its enums: the netlink reader uses _socket)
    loaded = {line.rpartition("|")[2].strip() for line in trace.splitlines()
              if line.startswith("import time:")}
    assert "lxdlib.listing" in loaded
    assert not loaded & {"lxc", "_lxc", "lxdlib.runtime", "subprocess", "socket"}
    ghost = host.paths.instance_dir("ghost")  # a create killed before its record
    ghost.mkdir()
    out, trace = imports("list", "-f", "csv", "-c", "ns")
    assert out.split() == ["c1,RUNNING"] and "lxdlib.host" in trace
    assert not ghost.exists()  # undone by the Host it opened
    out, trace = imports("list", "-f", "json")
    assert "lxdlib.host" in trace and json.loads(out)[0]["expanded_devices"]["root"]
