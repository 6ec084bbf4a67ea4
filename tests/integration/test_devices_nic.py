"""nic devices on a bridge the test creates: limits.* measured by real transfers between the host
and the container (the only traffic is host <-> that container over that bridge), live limit
changes, the host end's name, MTU and MAC, and what ``info`` reports."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import lxdlib
from lxdlib.devices.nic import default_host_name, ifb_for
from lxdlib.network import tc

pytestmark = pytest.mark.root

RATE = 8_000_000  # bit/s


@pytest.fixture
def net(host: lxdlib.Host) -> Iterator[tuple[str, str]]:
    """A managed bridge without NAT; yields (name, gateway address). The instances' ifbs are
    removed afterwards even if a post-stop hook never ran."""
    name = f"lxt{secrets.token_hex(3)}"
    host.networks.create(name, {"ipv4.address": "auto", "ipv4.nat": "false"})
    gw = host.networks.get(name)["config"]["ipv4.address"].split("/")[0]
    try:
        yield name, gw
    finally:
        for inst in host.instances.list():
            with contextlib.suppress(Exception):
                inst.delete(force=True)
        for line in subprocess.run(["ip", "-o", "link", "show"], capture_output=True,
                                   text=True).stdout.splitlines():
            ifname = line.split(":")[1].strip().split("@")[0]
            if ifname.startswith(tc.IFB_PREFIX) and ifname in _ifbs(host):
                subprocess.run(["ip", "link", "del", ifname], capture_output=True)


def _ifbs(host: lxdlib.Host) -> set[str]:
    return {ifb_for(host.paths.root, i, d) for i in ("c1", "c2") for d in ("eth0", "eth1")}


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def measure_into(c: lxdlib.Instance, address: str, nbytes: int) -> float:
    """bit/s of a host -> container stream, timed until the container reports what it got."""
    c.exec(["sh", "-c", "nc -l -p 5001 -e wc -c >/dev/null 2>&1 &"])
    deadline = time.monotonic() + 10
    while True:
        try:
            s = socket.create_connection((address, 5001), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with s:
        s.settimeout(60)
        chunk = b"\0" * 65536
        start = time.monotonic()
        sent = 0
        while sent < nbytes:
            s.sendall(chunk)
            sent += len(chunk)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while data := s.recv(100):
            reply += data
        elapsed = time.monotonic() - start
    received = int(reply.split()[0])
    assert received == sent
    return received * 8 / elapsed


def measure_out_of(c: lxdlib.Instance, gateway: str, nbytes: int) -> float:
    """bit/s of a container -> host stream, timed at the host from first to last byte."""
    with socket.socket() as ls:
        ls.bind((gateway, 0))
        ls.listen(1)
        ls.settimeout(30)
        port = ls.getsockname()[1]
        c.exec(["sh", "-c", f"dd if=/dev/zero bs=65536 count={nbytes // 65536} 2>/dev/null | "
                            f"nc {gateway} {port} >/dev/null 2>&1 &"])
        conn, _ = ls.accept()
        with conn:
            conn.settimeout(60)
            got = 0
            first = last = 0.0
            while data := conn.recv(65536):
                last = time.monotonic()
                if not got:
                    first = last
                got += len(data)
    assert got == nbytes // 65536 * 65536
    return got * 8 / (last - first)


def within(measured: float, wanted: int, tolerance: float = 0.2) -> bool:
    return abs(measured - wanted) <= tolerance * wanted


def test_limits_measured_at_start_and_live(host: lxdlib.Host, net: tuple[str, str]) -> None:
    name, gw = net
    static = gw.rsplit(".", 1)[0] + ".61"
    nic = {"type": "nic", "network": name, "name": "eth0", "ipv4.address": static}
    c = host.launch("busybox", "c1", devices={"eth0": {**nic, "limits.ingress": "8Mbit",
                                                       "limits.egress": "8Mbit"}})
    veth = default_host_name(host.paths.root, "c1", "eth0")
    ifb = ifb_for(host.paths.root, "c1", "eth0")
    assert tc.read(veth, ifb) == tc.Limits(RATE, RATE)
    assert c.wait_for(lambda: static in c.addresses(), timeout=20), c.network_state()

    into = measure_into(c, static, 2_000_000)
    out = measure_out_of(c, gw, 2_000_000)
    print(f"limit 8Mbit: into {into / 1e6:.2f} Mbit/s, out of {out / 1e6:.2f} Mbit/s")
    assert within(into, RATE), into
    assert within(out, RATE), out

    # live: limits.max sets both directions at once
    c.update(devices={"eth0": {**nic, "limits.max": "16Mbit"}})
    assert tc.read(veth, ifb) == tc.Limits(2 * RATE, 2 * RATE)
    out = measure_out_of(c, gw, 4_000_000)
    print(f"limit 16Mbit (live): out of {out / 1e6:.2f} Mbit/s")
    assert within(out, 2 * RATE), out

    # a restart re-applies them from the start-host hook
    c.restart(force=True)
    assert tc.read(veth, ifb) == tc.Limits(2 * RATE, 2 * RATE)

    # live removal of the limits: no qdisc, no ifb, and the stream is far faster
    c.update(devices={"eth0": dict(nic)})
    assert tc.read(veth, ifb) == tc.Limits()
    assert not _link_exists(ifb)
    assert c.wait_for(lambda: static in c.addresses(), timeout=20)
    assert measure_into(c, static, 8_000_000) > 4 * RATE

    # the ifb goes with the instance's stop (post-stop hook)
    c.update(devices={"eth0": {**nic, "limits.egress": "8Mbit"}})
    assert _link_exists(ifb)
    c.stop(force=True)
    assert not _link_exists(ifb) and not _link_exists(veth)


def test_nic_options_and_info(host: lxdlib.Host, net: tuple[str, str]) -> None:
    name, _ = net
    veth = f"lxh{secrets.token_hex(4)}"
    c = host.launch("busybox", "c1", devices={
        "eth0": {"type": "nic", "nictype": "bridged", "parent": name, "name": "eth0",
                 "mtu": "1400", "hwaddr": "00:16:3e:aa:bb:cc", "host_name": veth}})
    link = c.exec(["ip", "link", "show", "eth0"]).text
    assert "mtu 1400" in link and "00:16:3e:aa:bb:cc" in link
    master = subprocess.run(["ip", "-o", "link", "show", veth], capture_output=True,
                            text=True).stdout
    assert f"master {name}" in master and "mtu 1400" in master
    assert c.wait_for(lambda: bool(c.addresses()), timeout=20), c.network_state()
    state = c.info()["network"]
    eth0 = state["eth0"]
    assert eth0["host_name"] == veth and eth0["mtu"] == 1400
    assert eth0["hwaddr"] == "00:16:3e:aa:bb:cc" and eth0["state"] == "up"
    inet = [a for a in eth0["addresses"] if a["family"] == "inet"]
    assert inet and inet[0]["netmask"] == "24" and inet[0]["scope"] == "global"
    assert eth0["counters"]["bytes_received"] > 0 and eth0["counters"]["packets_sent"] > 0
    assert state["lo"]["addresses"][0]["scope"] == "local"

    # limits added live to an instance started without hooks: its stop cannot clear the ifb
    # (liblxc runs the hooks of the config it started with); the next config write collects it
    eth0_dev = c.devices["eth0"]
    c.update(devices={**c.devices, "eth0": {**eth0_dev, "limits.egress": "2Mbit"}})
    ifb = ifb_for(host.paths.root, "c1", "eth0")
    assert tc.read(veth, ifb).egress == 2_000_000
    c.stop(force=True)
    assert _link_exists(ifb)
    c.update(devices={**c.devices, "eth0": eth0_dev})
    assert not _link_exists(ifb)
    c.start()

    # a nic added live waits for the next start; a bad rate is refused naming device and key
    c.update(devices={**c.devices, "eth1": {"type": "nic", "network": name, "name": "eth1",
                                            "limits.ingress": "1Mbit"}})
    assert "eth1" not in c.network_state()
    c.restart(force=True)
    assert "eth1" in c.network_state()
    assert tc.read(default_host_name(host.paths.root, "c1", "eth1")).ingress == 1_000_000
    before = c.devices
    with pytest.raises(lxdlib.InvalidConfig, match=r"eth1.*limits\.egress"):
        c.update(devices={**before, "eth1": {**before["eth1"], "limits.egress": "fast"}})
    assert c.devices == before


def _orphan_ifb(name: str, veth: str) -> None:
    """An ifb as a stop that never ran its hook leaves it: lxdlib's name, its veth's alias."""
    subprocess.run(["ip", "link", "add", name, "type", "ifb"], check=True)
    subprocess.run(["ip", "link", "set", "dev", name, "alias", veth], check=True)


def test_orphan_ifbs_go_with_their_nic_and_with_recover(host: lxdlib.Host,
                                                        net: tuple[str, str]) -> None:
    """A render (create, config, start) and a delete each look at their own nics' ifbs only —
    two sysfs reads, however many links the host has — and ``recover`` at every ifb: an ifb
    whose veth is gone is deleted, one whose veth lives is kept."""
    from lxdlib.housekeeping import recover
    name, _ = net
    ours = ifb_for(host.paths.root, "c1", "eth0")
    foreign = f"{tc.IFB_PREFIX}{secrets.token_hex(4)}"
    alive = f"{tc.IFB_PREFIX}{secrets.token_hex(4)}"
    try:
        _orphan_ifb(ours, "vethgone0c1")
        _orphan_ifb(foreign, "vethgone0xx")
        _orphan_ifb(alive, "lo")  # its "veth" exists: not an orphan
        c = host.create("busybox", "c1", devices={"eth0": {"type": "nic", "network": name,
                                                           "name": "eth0"}})
        assert not _link_exists(ours)  # the create's render collected its own
        assert _link_exists(foreign) and _link_exists(alive)  # and nobody else's
        _orphan_ifb(ours, "vethgone0c1")
        c.delete()
        assert not _link_exists(ours)  # the delete collected its own
        assert _link_exists(foreign)
        report = recover(host)
        assert f"ifb:{foreign}" in report.recovered
        assert not _link_exists(foreign) and _link_exists(alive)
    finally:
        for ifb in (ours, foreign, alive):
            subprocess.run(["ip", "link", "del", ifb], capture_output=True)


def test_dhcp_entry_and_a_static_address_are_held_from_the_create(
        host: lxdlib.Host, net: tuple[str, str]) -> None:
    """A nic's entry (its MAC and the instance's name) is written at its first render — a
    create or copy — so that its MAC, and a static ``ipv4.address``, are held from then: a
    second instance claiming either is refused there, with nothing left behind; a start
    finds the entry as it is; the entries go with their instances."""
    name, gw = net
    hosts_d = host.paths.run / "networks" / name / "hosts.d"
    nic = {"type": "nic", "network": name, "name": "eth0"}
    c1 = host.create("busybox", "c1", devices={"eth0": nic})
    entry = (hosts_d / "c1").read_text()
    assert c1.config["volatile.eth0.hwaddr"] in entry and "c1" in entry
    c2 = host.copy("c1", "c2")
    assert c2.config["volatile.eth0.hwaddr"] in (hosts_d / "c2").read_text()
    assert c2.config["volatile.eth0.hwaddr"] != c1.config["volatile.eth0.hwaddr"]
    before = os.stat(hosts_d / "c1").st_ino
    c1.start()
    assert (hosts_d / "c1").read_text() == entry and os.stat(hosts_d / "c1").st_ino == before

    fixed = gw.rsplit(".", 1)[0] + ".77"
    c2.update(devices={"eth0": {**nic, "ipv4.address": fixed}})
    assert fixed in (hosts_d / "c2").read_text()  # held while c2 is stopped
    with pytest.raises(lxdlib.InvalidConfig, match="already assigned to c2/eth0"):
        host.create("busybox", "c3", devices={"eth0": {**nic, "ipv4.address": fixed}})
    assert "c3" not in host.instances.names() and not (hosts_d / "c3").exists()
    c2.update(devices={"eth0": nic})  # an entry that is there is kept true
    assert fixed not in (hosts_d / "c2").read_text()
    c1.delete(force=True)
    c2.delete()
    assert not (hosts_d / "c1").exists() and not (hosts_d / "c2").exists()


def _qdiscs(link: str) -> str:
    return subprocess.run(["tc", "qdisc", "show", "dev", link], capture_output=True,
                          text=True).stdout


def test_a_host_name_that_is_not_the_instances_own_is_refused_and_left_alone(
        host: lxdlib.Host, net: tuple[str, str]) -> None:
    """``host_name`` naming a host interface that exists and is not the instance's (a veth pair
    of the host's own, with a qdisc of its own) is refused before anything changes — live add,
    edit, start — and that interface keeps its link and its qdisc, gets no filter and is never
    deleted: not by the undo of a refused live add, nor when a nic added live under a name the
    host takes only later is removed live or stopped (lxdlib acts only on a veth whose peer is
    in the instance)."""
    from lxdlib.hooks import post_stop
    from lxdlib.network import filtering
    name, gw = net
    foreign, later1, later2 = (f"lxf{secrets.token_hex(4)}" for _ in range(3))
    hosts_d = host.paths.run / "networks" / name / "hosts.d"

    def make(link: str) -> None:
        subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", link + "p"],
                       check=True)
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        subprocess.run(["tc", "qdisc", "add", "dev", link, "root", "handle", "1:", "htb"],
                       check=True)  # the host's own, in the place lxdlib's would be

    def untouched(link: str) -> bool:
        qdiscs = _qdiscs(link)
        return _link_exists(link) and "qdisc htb 1:" in qdiscs and "ingress" not in qdiscs \
            and not filtering.installed(name, link)

    nic = {"type": "nic", "network": name}
    try:
        make(foreign)
        c = host.launch("busybox", "c1", devices={"eth0": {**nic, "name": "eth0"}})
        before = c.devices
        for keys in ({"security.port_isolation": "true"},
                     {"limits.egress": "1Mbit", "security.mac_filtering": "true"},
                     {"limits.ingress": "1Mbit", "ipv4.address": gw.rsplit(".", 1)[0] + ".88"}):
            with pytest.raises(lxdlib.InvalidConfig,
                               match=rf"host interface {foreign} exists and is not a nic of "
                                     r"instance c1"):
                c.update(devices={**before, "e0": {**nic, "host_name": foreign, **keys}})
            assert c.devices == before and untouched(foreign)
        assert "/e0" not in (hosts_d / "c1").read_text()

        # a stopped instance: refused at the edit, and at the start if the name came later
        c2 = host.create("busybox", "c2", devices={"eth0": {**nic, "host_name": later1,
                                                             "limits.ingress": "1Mbit"}})
        with pytest.raises(lxdlib.InvalidConfig, match=rf"host interface {foreign} exists"):
            c2.update(devices={"eth0": {**nic, "host_name": foreign}})
        make(later1)
        with pytest.raises(lxdlib.InvalidConfig, match=rf"host interface {later1} exists and "
                                                       r"is not a nic of instance c2"):
            c2.start()
        assert c2.state == "STOPPED" and untouched(later1)
        c2.delete()
        subprocess.run(["ip", "link", "del", later1], check=True)

        # nics added live under free names (plugged only at the next start); the host then
        # takes the names: a change is refused, a live remove and the stop leave them alone
        def secured(link: str) -> dict[str, str]:
            return {**nic, "host_name": link, "limits.egress": "1Mbit",
                    "security.mac_filtering": "true", "security.port_isolation": "true"}
        c.update(devices={**before, "e1": secured(later1), "e2": secured(later2)})
        make(later1)
        with pytest.raises(lxdlib.InvalidConfig, match=rf"host interface {later1} exists"):
            c.update(devices={**before, "e1": {**secured(later1), "limits.egress": "2Mbit"},
                              "e2": secured(later2)})
        c.update(devices={**before, "e2": secured(later2)})
        assert untouched(later1)
        make(later2)
        c.stop(force=True)
        post_stop(host.paths.root, "c1", "stop")  # what liblxc (or the watcher) runs at a stop
        assert untouched(later2)

        # the instance's own host end still takes live changes
        c.update(devices=before)
        c.start()
        veth = default_host_name(host.paths.root, "c1", "eth0")
        c.update(devices={"eth0": {**nic, "name": "eth0", "limits.ingress": "1Mbit"}})
        assert tc.read(veth).ingress == 1_000_000
    finally:
        for link in (foreign, later1, later2):
            subprocess.run(["ip", "link", "del", link], capture_output=True)


def test_a_refused_or_removed_nic_leaves_no_static_address_behind(
        host: lxdlib.Host, net: tuple[str, str]) -> None:
    """The static address of a nic is held from its first render, so it must go when the nic
    does not stay: a refused edit (the nic next to a disk whose source is missing) saves nothing
    and leaves no entry, nor does one killed (``kill -9``) between its render and its save once
    the next operation on the instance has run; a nic removed, or given another address, frees
    the old one. Each time another instance takes the address at once."""
    import os
    import signal
    import sys
    name, gw = net
    base = gw.rsplit(".", 1)[0]
    a, b, d = f"{base}.71", f"{base}.72", f"{base}.73"
    hosts_d = host.paths.run / "networks" / name / "hosts.d"
    nic = {"type": "nic", "network": name}
    c1 = host.create("busybox", "c1")
    c2 = host.create("busybox", "c2")
    before = c1.devices

    with pytest.raises(lxdlib.LxdlibError, match="nosuch"):
        c1.update(devices={**before, "e0": {**nic, "ipv4.address": a},
                           "zz": {"type": "disk", "source": str(host.paths.root / "nosuch"),
                                  "path": "/mnt"}})
    assert c1.devices == before and not (hosts_d / "c1").exists()
    c2.update(devices={"e0": {**nic, "ipv4.address": a}})

    c1.update(devices={**before, "e1": {**nic, "ipv4.address": b}})
    assert b in (hosts_d / "c1").read_text()
    c1.update(devices=before)
    assert not (hosts_d / "c1").exists()
    c2.update(devices={"e0": {**nic, "ipv4.address": b}})

    c1.update(devices={**before, "e1": {**nic, "ipv4.address": a}})
    c1.update(devices={**before, "e1": {**nic, "ipv4.address": d}})
    assert a not in (hosts_d / "c1").read_text()
    c2.update(devices={"e0": {**nic, "ipv4.address": a}})

    # killed after the render wrote the entry, before the record was saved
    step = ("import sys, lxdlib; c = lxdlib.Host(sys.argv[1]).instances['c1']; "
            f"c.update(devices={{**c.devices, 'e2': {{**{nic!r}, 'ipv4.address': {b!r}}}}})")
    r = subprocess.run([sys.executable, "-c", step, str(host.paths.root)], timeout=120,
                       env={**os.environ, "LXDLIB_CRASHPOINT": "update.config-written"},
                       capture_output=True, text=True, start_new_session=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert b in (hosts_d / "c1").read_text()  # what the kill left
    fresh = lxdlib.Host(host.paths.root)
    fresh.instances["c1"].update(description="the next operation")
    assert "e2" not in fresh.instances["c1"].devices
    assert b not in (hosts_d / "c1").read_text()
    fresh.instances["c2"].update(devices={"e0": {**nic, "ipv4.address": b}})


def test_a_change_of_a_running_instance_with_a_nic_loads_no_pyroute2(
        host: lxdlib.Host, net: tuple[str, str]) -> None:
    """Every render of a running instance's nic asks the kernel whether its host end is the
    instance's own (above). Asked through pyroute2, whose import alone is ~140 ms, that made
    `config set` of such an instance 3 times slower; two netlink requests through ``_socket`` ask
    it in ~0.05 ms."""
    import sys
    c = host.launch("busybox", "c1", devices={"eth0": {"type": "nic", "name": "eth0",
                                                       "network": net[0]}})
    assert tc.exists(c.config["volatile.eth0.host_name"])
    code = ("import sys, lxdlib; h = lxdlib.Host(sys.argv[1]); "
            "h.instances['c1'].set_config('user.x', 'y'); print('pyroute2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(host.paths.root)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "False"
    assert c.config["user.x"] == "y"


def test_a_nic_removed_while_running_keeps_its_address_until_the_next_start(
        host: lxdlib.Host, net: tuple[str, str]) -> None:
    """A nic removed from a running instance stays plugged until its next start (one without
    security keys), and its address in use: its static entry must stay until then, or the
    network would give the address to another instance while this one still uses it."""
    name, gw = net
    static = gw.rsplit(".", 1)[0] + ".78"
    nic = {"type": "nic", "name": "eth0", "network": name, "ipv4.address": static}
    c = host.launch("busybox", "c1", devices={"eth0": nic})
    assert c.wait_for(lambda: static in c.addresses(), timeout=30)
    c.update(devices={})
    assert static in c.exec(["ip", "-4", "addr", "show", "eth0"]).text  # still plugged
    with pytest.raises(lxdlib.InvalidConfig, match="already assigned to c1/eth0"):
        host.create("busybox", "c2", devices={"eth0": nic})
    c.restart(force=True)  # unplugged now: the address is free
    c2 = host.create("busybox", "c2", devices={"eth0": nic})
    assert c2.devices["eth0"]["ipv4.address"] == static


_SAME_MAC_CHILD = """
import sys, lxdlib
from lxdlib.errors import InvalidConfig
root, name, net, mac = sys.argv[1:5]
try:
    lxdlib.Host(root).create("busybox", name, devices={"eth0": {
        "type": "nic", "network": net, "name": "eth0", "hwaddr": mac}})
except InvalidConfig as e:
    print("refused", e)
else:
    print("made")
"""


def test_a_mac_another_nic_of_the_network_holds_is_refused_and_nothing_changes(
        host: lxdlib.Host, net: tuple[str, str]) -> None:
    """LXD refuses a nic whose MAC another nic of its network has. lxdlib refused it only when
    both had started (a launch then left the second instance made, an ``init`` or an edit of a
    stopped one took it): now the MAC is held from the nic's first render, so a create, launch,
    copy or edit that would share it is refused with ``InvalidConfig`` and nothing is made or
    changed, stopped holders included. A hold a killed create or edit left is taken back once
    its instance says otherwise; a renamed or deleted holder lets it go. Each check reads one
    index file and one owner file, however many instances the network serves."""
    import signal
    import sys
    name, _ = net
    hosts_d = host.paths.run / "networks" / name / "hosts.d"
    nic = {"type": "nic", "network": name, "name": "eth0"}
    mac, mac2, mac3 = "00:16:3e:0a:0b:01", "00:16:3e:0a:0b:02", "00:16:3e:0a:0b:03"
    c1 = host.create("busybox", "c1", devices={"eth0": {**nic, "hwaddr": mac}})  # never started
    with pytest.raises(lxdlib.InvalidConfig, match="already assigned to c1/eth0"):
        host.create("busybox", "c2", devices={"eth0": {**nic, "hwaddr": mac.upper()}})
    with pytest.raises(lxdlib.InvalidConfig, match="already assigned to c1/eth0"):
        host.launch("busybox", "c2", devices={"eth0": {**nic, "hwaddr": mac}})
    with pytest.raises(lxdlib.InvalidConfig, match="already assigned to c1/eth0"):
        host.copy("c1", "c2")  # its hwaddr is the source's own
    assert "c2" not in host.instances and not (hosts_d / "c2").exists()
    c3 = host.create("busybox", "c3", devices={"eth0": nic})
    entry = (hosts_d / "c3").read_text()
    with pytest.raises(lxdlib.InvalidConfig, match="already assigned to c1/eth0"):
        c3.update(devices={"eth0": {**nic, "hwaddr": mac}})
    assert "hwaddr" not in c3.devices["eth0"] and (hosts_d / "c3").read_text() == entry
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root),
                        "config", "device", "set", "c3", "eth0", f"hwaddr={mac}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "c1/eth0" in r.stderr, r.stderr
    c1.start()  # the holder's own start finds its hold as it is
    c1.stop(force=True)

    # a create killed between its render (the hold written) and its record: taken back
    r = subprocess.run([sys.executable, "-c", _SAME_MAC_CHILD, str(host.paths.root), "c4",
                        name, mac2], env={**os.environ, "LXDLIB_CRASHPOINT": "create.rendered"},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert mac2 in (hosts_d / "c4").read_text()
    host.create("busybox", "c5", devices={"eth0": {**nic, "hwaddr": mac2}})
    assert not (hosts_d / "c4").exists()

    # an edit killed after its render: held while its intent is pending (its recovery may
    # bring it back), free once the next call on the instance has settled it
    step = ("import sys, lxdlib; c = lxdlib.Host(sys.argv[1]).instances['c3']; "
            f"c.update(devices={{'eth0': {{**{nic!r}, 'hwaddr': {mac3!r}}}}})")
    r = subprocess.run([sys.executable, "-c", step, str(host.paths.root)], timeout=120,
                       env={**os.environ, "LXDLIB_CRASHPOINT": "update.config-written"},
                       capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    with pytest.raises(lxdlib.InvalidConfig, match="already assigned to c3/eth0"):
        host.create("busybox", "c6", devices={"eth0": {**nic, "hwaddr": mac3}})
    fresh = lxdlib.Host(host.paths.root)
    fresh.instances["c3"].update(description="the next call")
    assert "hwaddr" not in fresh.instances["c3"].devices["eth0"]
    fresh.create("busybox", "c6", devices={"eth0": {**nic, "hwaddr": mac3}})

    # a rename moves the hold, a delete lets it go
    host.instances["c1"].rename("c1r")
    assert not (hosts_d / "c1").exists()
    with pytest.raises(lxdlib.InvalidConfig, match="already assigned to c1r/eth0"):
        host.create("busybox", "c7", devices={"eth0": {**nic, "hwaddr": mac}})
    host.instances["c1r"].delete()
    host.create("busybox", "c7", devices={"eth0": {**nic, "hwaddr": mac}})

    # eight creates at once with one MAC: one is made
    procs = [subprocess.Popen([sys.executable, "-c", _SAME_MAC_CHILD, str(host.paths.root),
                               f"r{i}", name, "00:16:3e:0a:0b:04"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(8)]
    outs = [p.communicate(timeout=300) for p in procs]
    made = [i for i, (out, _) in enumerate(outs) if out.startswith("made")]
    assert len(made) == 1 and all(o.startswith(("made", "refused")) for o, _ in outs), outs
    assert sorted(n for n in host.instances.names() if n.startswith("r")) == [f"r{made[0]}"]


def test_a_drawn_mac_never_meets_one_a_stopped_instance_holds(
        host: lxdlib.Host, net: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A MAC lxdlib draws is drawn again while the network's index names a holder. A nic that
    was made and never started held nothing, so the next draw could take its MAC (three
    random bytes: at 1,000 instances about one fill in 34): the draw is made to repeat one."""
    from lxdlib import instance
    name, _ = net
    nic = {"type": "nic", "network": name, "name": "eth0"}
    c1 = host.create("busybox", "c1", devices={"eth0": nic})
    taken = c1.config["volatile.eth0.hwaddr"]
    draws = iter([taken, taken, "00:16:3e:0a:0c:01"])
    monkeypatch.setattr(instance, "random_mac", lambda: next(draws))
    c2 = host.create("busybox", "c2", devices={"eth0": nic})
    assert c2.config["volatile.eth0.hwaddr"] == "00:16:3e:0a:0c:01"


def test_an_import_keeping_a_drawn_mac_another_nic_holds_draws_it_again(
        host: lxdlib.Host, net: tuple[str, str], tmp_path: Path) -> None:
    """A backup imported under its original's name keeps the MACs lxdlib drew for it (a
    restore keeps its DHCP lease). When another nic of the network holds such a MAC by then
    (the original renamed, its MAC going with it), the import was refused ("already assigned")
    since a nic holds its MAC from its create; it now draws that nic a new MAC, as a start
    does, and both instances run. A MAC the user set is still refused (the test above)."""
    name, _ = net
    nic = {"type": "nic", "network": name, "name": "eth0"}
    orig = host.create("busybox", "bm1", devices={"eth0": nic})
    mac = orig.config["volatile.eth0.hwaddr"]
    archive = tmp_path / "bm1.tar.gz"
    host.export_backup("bm1", archive)
    orig.rename("bm2")
    imp = host.import_backup(archive)  # the archive's own name, free again: bm1
    assert imp.name == "bm1"
    assert host.instances["bm2"].config["volatile.eth0.hwaddr"] == mac
    assert imp.config["volatile.eth0.hwaddr"] not in ("", mac)
    for inst in (imp, host.instances["bm2"]):
        inst.start()
    assert [i.state for i in (imp, host.instances["bm2"])] == ["RUNNING", "RUNNING"]


def test_a_nic_address_the_network_cannot_serve_is_refused_before_anything_is_made(
        host: lxdlib.Host, net: tuple[str, str]) -> None:
    """As LXD: a nic's ``ipv6.address`` outside the network's IPv6 subnet, its subnet address
    or the bridge's own, or on a network without IPv6, and a static ``ipv4.address`` on a
    network that runs no DHCPv4, are refused at the create, with no instance and no DHCP entry
    left; an address inside the subnet is taken."""
    v4only, _ = net
    dual = f"lxt{secrets.token_hex(3)}"
    nodhcp = f"lxt{secrets.token_hex(3)}"
    host.networks.create(dual, {"ipv4.address": "auto", "ipv4.nat": "false",
                                "ipv6.address": "auto"})
    host.networks.create(nodhcp, {"ipv4.address": "auto", "ipv4.nat": "false",
                                  "ipv4.dhcp": "false"})
    try:
        gw6 = ipaddress.IPv6Interface(host.networks.get(dual)["config"]["ipv6.address"])
        gw4 = host.networks.get(nodhcp)["config"]["ipv4.address"].split("/")[0]
        bad = [
            (dual, {"ipv6.address": "2001:db8::5"}),  # outside the subnet
            (dual, {"ipv6.address": "2001:db8::5", "security.ipv6_filtering": "true"}),
            (dual, {"ipv6.address": str(gw6.ip)}),
            (dual, {"ipv6.address": str(gw6.network.network_address)}),
            (v4only, {"ipv6.address": "fd00::5"}),
            (nodhcp, {"ipv4.address": gw4.rsplit(".", 1)[0] + ".9"}),
        ]
        for network, keys in bad:
            devices = {"eth0": {"type": "nic", "network": network, "name": "eth0", **keys}}
            with pytest.raises(lxdlib.InvalidConfig, match=r"ipv[46]\.address"):
                host.create("busybox", "c1", devices=devices)
            assert "c1" not in host.instances.names(), keys
            assert not (host.paths.run / "networks" / network / "hosts.d" / "c1").exists()
        good = str(gw6.network.network_address + 0x55)
        c1 = host.create("busybox", "c1", devices={"eth0": {
            "type": "nic", "network": dual, "name": "eth0", "ipv6.address": good}})
        assert c1.devices["eth0"]["ipv6.address"] == good
    finally:
        for inst in host.instances.list():
            with contextlib.suppress(Exception):
                inst.delete(force=True)
        for name in (dual, nodhcp):
            with contextlib.suppress(Exception):
                host.networks.delete(name)
