"""``Host.launch_many``: many instances over worker processes, all or report, and the host
limits refused with nothing left — on a real bridge filled up to the kernel's limit."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import lxdlib
from lxdlib import hostlimits

pytestmark = pytest.mark.root


def _made(host: lxdlib.Host) -> dict[str, list[str]]:
    """Everything an instance leaves: records, liblxc directories, volumes."""
    vols = host.pool("default").volume_path("containers", "x").parent
    return {"instances": host.instances.names(),
            "dirs": sorted(p.name for p in host.paths.lxcpath.iterdir() if p.is_dir()),
            "volumes": sorted(p.name for p in vols.iterdir()) if vols.is_dir() else []}


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture
def net(host: lxdlib.Host) -> str:
    name = f"lxt{secrets.token_hex(3)}"
    host.networks.create(name, {"ipv4.address": "auto", "ipv4.nat": "false",
                                "ipv6.address": "none"})
    p = host.profiles.get("default")
    host.update_profile("default", devices={**p.devices, "eth0": {
        "type": "nic", "name": "eth0", "network": name}})
    return name


def test_twenty_over_two_workers_all_running(host: lxdlib.Host, net: str) -> None:
    t = time.perf_counter()
    got = host.launch_many(20, image="busybox", prefix="m", workers=2)
    took = time.perf_counter() - t
    assert [i.name for i in got] == [f"m{i}" for i in range(1, 21)]
    assert all(i.state == "RUNNING" for i in got)
    assert hostlimits.bridge_port_count(net) == 20
    print(f"20 launches over 2 workers: {took:.2f} s")
    assert got[0].exec(["true"]).returncode == 0
    for inst in got:
        inst.delete(force=True)
    assert _made(host)["instances"] == []


def test_monitors_outlive_the_workers(host: lxdlib.Host) -> None:
    got = host.launch_many(["a", "b", "c", "d"], image="busybox", workers=2)
    monitors = {_ppid(i.pid) for i in got}
    for m in monitors:
        assert Path(f"/proc/{m}/cmdline").read_bytes().startswith(b"[lxc monitor]")
    # every worker has exited (launch_many waits for them); the monitors are no child of
    # this process either: liblxc daemonized them
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    assert not monitors & {int(c) for c in children}
    time.sleep(0.5)
    assert all(i.state == "RUNNING" for i in got)


def test_a_failed_start_is_undone_and_reported(host: lxdlib.Host) -> None:
    items = ["ok1", {"name": "bad", "config": {"security.protection.start": "true"}}, "ok2"]
    with pytest.raises(lxdlib.BulkError) as e:
        host.launch_many(items, image="busybox", workers=2, keep_going=True)
    assert list(e.value.failures) == ["bad"]
    assert "WrongState" in e.value.failures["bad"] and "protected" in e.value.failures["bad"]
    assert sorted(i.name for i in e.value.done) == ["ok1", "ok2"]
    assert all(i.state == "RUNNING" for i in e.value.done)
    assert _made(host)["instances"] == ["ok1", "ok2"]  # nothing of "bad" is left


def test_serial_batch_stops_at_the_first_failure(host: lxdlib.Host) -> None:
    items = ["a", {"name": "b", "config": {"security.protection.start": "true"}}, "c"]
    with pytest.raises(lxdlib.BulkError) as e:
        host.launch_many(items, image="busybox", workers=1)
    assert set(e.value.failures) == {"b", "c"}
    assert "not attempted" in e.value.failures["c"]
    assert [i.name for i in e.value.done] == ["a"]
    assert _made(host)["instances"] == ["a"]


def test_bad_batches_make_nothing(host: lxdlib.Host) -> None:
    before = _made(host)
    host.create("busybox", "taken")
    with pytest.raises(lxdlib.AlreadyExists):
        host.launch_many(["n1", "taken"], image="busybox", workers=2)
    with pytest.raises(lxdlib.InvalidArgument):
        host.launch_many(["n1", "n1"], image="busybox", workers=2)
    with pytest.raises(lxdlib.NotFound):
        host.launch_many(["n1", "n2"], image="busybox", profiles=["nope"], workers=2)
    with pytest.raises(lxdlib.InvalidConfig):
        host.launch_many(["n1", {"name": "n2", "config": {"limits.memory": "lots"}}],
                         image="busybox", workers=2)
    host.instances["taken"].delete()
    assert _made(host) == before


@pytest.fixture
def full_bridge() -> Iterator[str]:
    """A real bridge with 1,022 ports: one short of the kernel's limit (1,023). Its ports are veths
    whose peers live in a namespace of their own, so removing the namespace removes all of
    them in one go (one by one takes ~20 s)."""
    tag = secrets.token_hex(2)
    br, ns = f"lxf{tag}", f"lxf{tag}ns"
    ports = [f"lxf{tag}p{i}" for i in range(hostlimits.BRIDGE_PORTS_MAX - 1)]
    batch = [f"link add {br} type bridge"]
    batch += [f"link add {p} type veth peer name q{i} netns {ns}" for i, p in enumerate(ports)]
    batch += [f"link set {p} master {br}" for p in ports]
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
        subprocess.run(["ip", "-batch", "-"], input="\n".join(batch) + "\n", text=True,
                       check=True, capture_output=True)
        yield br
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", br], capture_output=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/sys/class/net/{ports[0]}").exists():
            time.sleep(0.05)


def test_a_full_bridge_is_refused_and_nothing_is_left(host: lxdlib.Host, full_bridge: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    t = time.perf_counter()
    assert hostlimits.bridge_port_count(full_bridge) == hostlimits.BRIDGE_PORTS_MAX - 1
    took = time.perf_counter() - t
    assert took < 0.05, f"counting 1,022 ports took {took * 1000:.1f} ms"
    nic = {"eth0": {"type": "nic", "nictype": "bridged", "parent": full_bridge,
                    "name": "eth0"}}
    before = _made(host)
    with pytest.raises(lxdlib.HostLimit) as e:
        host.launch_many(3, image="busybox", devices=nic, workers=2)
    assert e.value.limit == f"bridge {full_bridge} ports"
    assert (e.value.value, e.value.in_use, e.value.needed) == (1023, 1022, 3)
    assert "several networks" in str(e.value)
    assert _made(host) == before
    stopped = host.create("busybox", "stopped", devices=nic)
    # one more fits: the kernel's limit is the one checked, not a lower one; and a start that
    # succeeds does not count the ports (a count that grows with the instances)
    counted = hostlimits.bridge_port_count
    with monkeypatch.context() as m:
        def no_count(bridge: str) -> int:
            raise AssertionError(f"a single start counted the ports of {bridge}")
        m.setattr(hostlimits, "bridge_port_count", no_count)
        one = host.launch("busybox", "one", devices=nic)
    assert one.state == "RUNNING"
    assert counted(full_bridge) == hostlimits.BRIDGE_PORTS_MAX
    with pytest.raises(lxdlib.HostLimit) as e:  # liblxc refuses; the launch undoes itself
        host.launch("busybox", "two", devices=nic)
    assert (e.value.limit, e.value.in_use, e.value.needed) == (f"bridge {full_bridge} ports",
                                                               1023, 1)
    assert isinstance(e.value.__cause__, lxdlib.LXCError)  # liblxc's own words kept
    assert _made(host)["instances"] == ["one", "stopped"]
    with pytest.raises(lxdlib.HostLimit):  # a plain start is named the same, and stays stopped
        stopped.start()
    assert stopped.state == "STOPPED"
    assert counted(full_bridge) == hostlimits.BRIDGE_PORTS_MAX  # liblxc left no port behind
    one.delete(force=True)
    stopped.start()  # a port given back, it starts
    assert stopped.state == "RUNNING"


_FILL_PTYS = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
mnt = sys.argv[1]
if libc.mount(b"devpts", mnt.encode(), b"devpts", 0, b"newinstance,ptmxmode=0600") != 0:
    sys.exit("mount: " + os.strerror(ctypes.get_errno()))
fds = []
try:
    while True:
        fds.append(os.open(os.path.join(mnt, "ptmx"), os.O_RDWR | os.O_NOCTTY))
except OSError as e:
    print(len(fds), e.errno, flush=True)
sys.stdin.read()  # held until the test closes our stdin (or dies)
"""


@contextlib.contextmanager
def ptys_used_up(mnt: Path) -> Iterator[int]:
    """Every pty a container's devpts may still take, held by a process in a mount namespace
    of its own (a devpts instance there counts against the same host-wide limit) until the
    block ends; the host's own ptys (the initial instance, with its reserve) are untouched."""
    mnt.mkdir()
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", sys.executable,
                             "-c", _FILL_PTYS, str(mnt)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        held, errno_ = map(int, proc.stdout.readline().split())
        assert errno_ == 28  # ENOSPC: the limit, not something else
        yield held
    finally:
        proc.kill()
        proc.wait()


def test_no_pty_left_is_refused_before_anything_is_made(host: lxdlib.Host,
                                                        tmp_path: Path) -> None:
    stopped = host.create("busybox", "stopped")
    before = _made(host)
    with ptys_used_up(tmp_path / "pts") as held:
        assert held > 0
        with pytest.raises(lxdlib.HostLimit) as e:
            host.launch_many(3, image="busybox", workers=2)
        assert e.value.limit == "kernel.pty.max"
        assert "sysctl -w kernel.pty.max=" in str(e.value)
        assert _made(host) == before
        with pytest.raises(lxdlib.HostLimit):
            host.launch("busybox", "one")
        assert _made(host) == before
        with pytest.raises(lxdlib.HostLimit):  # a plain start asks too
            stopped.start()
        assert stopped.state == "STOPPED"
    stopped.start()  # the ptys given back, it starts
    assert stopped.state == "RUNNING"
