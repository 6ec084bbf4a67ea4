"""The pieces a bulk listing reads the kernel with: cgroup and /proc parsing (livestate), netlink
dumps turned into ``ip -json`` links (netstate), the per-process record cache (state), and the
address columns' rule (listing). Table-driven; no container is needed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from lxdlib import listing, livestate, record, runtime, values
from lxdlib.errors import LxdlibError
from lxdlib.network import netstate
from lxdlib.state import (
    ParsedCache,
    Paths,
    RecordSyntaxError,
    dump_yaml,
    parse_record,
    write_record,
)

# -- livestate --------------------------------------------------------------------------------

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
PURE_V2 = """\
25 22 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw
26 22 0:5 / /proc rw,nosuid - proc proc rw
"""
COMBINED_V1 = "30 23 0:27 / /cg/cpu,freezer rw - cgroup cgroup rw,cpu,freezer\n"


def test_parse_hierarchies_names_every_controller() -> None:
    assert livestate.parse_hierarchies(HYBRID + COMBINED_V1) == {
        "cpu": "/sys/fs/cgroup/cpu", "freezer": "/sys/fs/cgroup/freezer",
        "name=systemd": "/sys/fs/cgroup/systemd", "": "/sys/fs/cgroup/unified"}
    assert livestate.parse_hierarchies(PURE_V2) == {"": "/sys/fs/cgroup"}
    assert livestate.parse_hierarchies("garbage\n1 2 3 - cgroup\n") == {}


MOUNTS = {"memory": "/cg/memory", "pids": "/cg/pids", "cpuacct": "/cg/cpuacct",
          "": "/cg/unified/"}


@pytest.mark.parametrize(("text", "name", "expected"), [
    ("4:memory:/lxc.payload.c1\n2:cpuacct:/lxc.payload.c1\n0::/lxc.payload.c1\n", "c1",
     {"memory": "/cg/memory/lxc.payload.c1", "cpuacct": "/cg/cpuacct/lxc.payload.c1",
      "": "/cg/unified/lxc.payload.c1"}),
    # under the monitor's own cgroup; the init moved itself into a child (systemd)
    ("4:memory:/user.slice/lxc.payload.c1/init.scope\n", "c1",
     {"memory": "/cg/memory/user.slice/lxc.payload.c1"}),
    # the name liblxc takes when lxc.payload.<name> is in use; a deeper payload name is the
    # container's own doing: the first one counts
    ("8:pids:/lxc.payload.web-2/lxc.payload.db\n", "web", {"pids": "/cg/pids/lxc.payload.web-2"}),
    ("8:pids:/lxc.payload.web-x\n", "web", {}),
    ("8:pids:/lxc.payload.other\n", "web", {}),  # not this container's payload
    ("8:pids:/user.slice\n", "web", {}),  # no payload at all
    ("5:devices:/lxc.payload.c1\n", "c1", {}),  # a hierarchy not asked for
    # a cgroup named with a newline (its root may name its own as it likes) makes up a line:
    # a hierarchy shown twice is not trusted
    ("4:memory:/lxc.payload.c1/x\n2:cpuacct:/lxc.payload.c1-7\n2:cpuacct:/lxc.payload.c1\n"
     "8:pids:/lxc.payload.c1\n", "c1",
     {"memory": "/cg/memory/lxc.payload.c1", "pids": "/cg/pids/lxc.payload.c1"}),
    ("", "c1", {}),
    ("garbage\n::\n", "c1", {}),
])
def test_payload_dirs(text: str, name: str, expected: dict[str, str]) -> None:
    assert livestate.payload_dirs(text, name, MOUNTS) == expected


@pytest.mark.parametrize(("text", "expected"), [
    (HYBRID, {"freezer": Path("/sys/fs/cgroup/freezer"), "": Path("/sys/fs/cgroup/unified")}),
    (PURE_V2, {"": Path("/sys/fs/cgroup")}),
    (COMBINED_V1, {"freezer": Path("/cg/cpu,freezer")}),
    ("", {}),
    ("garbage line\n1 2 3 - cgroup\n", {}),
])
def test_parse_mountinfo(text: str, expected: dict[str, Path]) -> None:
    assert livestate.parse_mountinfo(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("0::/user.slice/session-1.scope\n", {"": "/user.slice/session-1.scope"}),
    ("6:freezer:/\n4:memory:/a/b\n2:cpu,cpuacct:/c\n0::/\n",
     {"freezer": "/", "memory": "/a/b", "cpu": "/c", "cpuacct": "/c", "": "/"}),
    ("1:name=systemd:/x\n", {"name=systemd": "/x"}),
    ("broken\n", {}),
])
def test_parse_proc_cgroup(text: str, expected: dict[str, str]) -> None:
    assert livestate.parse_proc_cgroup(text) == expected


@pytest.mark.parametrize(("mounts", "own", "expected"), [
    # hybrid: the v1 freezer wins over the (controller-less) unified mount
    ({"freezer": Path("/f"), "": Path("/u")}, {"freezer": "/", "": "/"},
     livestate.Layout(1, (Path("/f"),))),
    # a process in a sub-cgroup: liblxc may have put the payload under it
    ({"": Path("/sys/fs/cgroup")}, {"": "/user.slice/x.scope"},
     livestate.Layout(2, (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/user.slice/x.scope")))),
    ({}, {}, None),
])
def test_layout_from(mounts: dict[str, Path], own: dict[str, str],
                     expected: livestate.Layout | None) -> None:
    assert livestate.layout_from(mounts, own) == expected


@pytest.mark.parametrize(("entries", "names", "expected"), [
    (["lxc.payload.web", "lxc.monitor.web", "cpu.stat"], ["web"],
     {"web": ["lxc.payload.web"]}),
    # a same-named container of another lxcpath took the plain name: both are candidates,
    # the plain one first; the monitor check tells them apart
    (["lxc.payload.web-1", "lxc.payload.web"], ["web"],
     {"web": ["lxc.payload.web", "lxc.payload.web-1"]}),
    # "web-2" is an instance name and a suffixed "web"
    (["lxc.payload.web-2"], ["web", "web-2"],
     {"web-2": ["lxc.payload.web-2"], "web": ["lxc.payload.web-2"]}),
    (["lxc.payload.web-x", "lxc.payload.other"], ["web"], {}),
    ([], ["web"], {}),
])
def test_candidates(entries: list[str], names: list[str],
                    expected: dict[str, list[str]]) -> None:
    assert livestate.candidates(entries, names) == expected


@pytest.mark.parametrize(("version", "text", "state"), [
    (1, "THAWED\n", "RUNNING"),
    (1, "FROZEN\n", "FROZEN"),
    (1, "FREEZING\n", "FREEZING"),
    (2, "populated 1\nfrozen 0\n", "RUNNING"),
    (2, "populated 1\nfrozen 1\n", "FROZEN"),
    (2, "populated 1\n", "RUNNING"),  # a kernel without the v2 freezer
])
def test_parse_freezer(version: int, text: str, state: str) -> None:
    assert livestate.parse_freezer(version, text) == state


@pytest.mark.parametrize(("stat", "ppid"), [
    (b"1234 (init) S 1200 1234 1234 0 -1", 1200),
    (b"1234 (we ird) (name)) R 77 1 1", 77),  # the name may hold spaces and parentheses
    (b"1234 (x)", -1),
])
def test_parse_ppid(stat: bytes, ppid: int) -> None:
    assert livestate.parse_ppid(stat) == ppid


UNIX_HEAD = b"Num       RefCount Protocol Flags    Type St Inode Path\n"


def unix_line(path: bytes, inode: int = 1000) -> bytes:
    return b"0000000000000000: 00000002 00000000 00010000 0001 01 %d %s\n" % (inode, path)


@pytest.mark.parametrize("lines, expected", [
    ([], set()),
    ([unix_line(b"@/r/containers/web/command"), unix_line(b"@/r/containers/db/command")],
     {"web", "db"}),
    # another root's monitors, a root whose path starts like this one, other sockets of ours
    ([unix_line(b"@/other/containers/web/command"), unix_line(b"@/r/containers2/x/command"),
      unix_line(b"@/r/containers/web/console"), unix_line(b"/run/systemd/notify"),
      unix_line(b"@/r/containers/a/b/command"), b"0000000000000000: 00000003 0 0 0001 03 12\n"],
     set()),
    # a socket listed twice (two listening descriptions) names one container
    ([unix_line(b"@/r/containers/web/command", 1), unix_line(b"@/r/containers/web/command", 2)],
     {"web"}),
    # a name liblxc hashed (a path past what a socket name holds): only liblxc can resolve it
    ([unix_line(b"@/r/containers/web/command"), unix_line(b"@lxc/0123456789abcdef/command")],
     None),
])
def test_running_from_sockets(lines: list[bytes], expected: set[str] | None) -> None:
    table = UNIX_HEAD + b"".join(lines)
    assert livestate.running_from_sockets(table, "/r/containers") == expected
    assert livestate.running_from_sockets(table, "/r/containers/") == expected


def test_running_from_sockets_reads_this_hosts_table() -> None:
    """The live table parses, and a socket bound here by the test is found as liblxc's would
    be (an abstract name, as a monitor's)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        lxcpath = f"/lxdlib-test-{os.getpid()}/containers"
        s.bind(f"\0{lxcpath}/probe/command")
        s.listen()
        with open(livestate.PROC_NET_UNIX, "rb") as f:
            assert livestate.running_from_sockets(f.read(), lxcpath) == {"probe"}
        assert runtime.list_running(Path(lxcpath)) == {"probe"}


def test_directories_and_scan(tmp_path: Path) -> None:
    """``directories``: every instance directory in name order; ``scan`` parts them into
    settled instances and leftovers (no record, or an intent not finished)."""
    paths = Paths(tmp_path)
    assert record.directories(paths) == [] and record.scan(paths) == ([], [])
    for name, files in {"b": ["instance.yaml"], "a": ["instance.yaml"], "c": [],
                        "d": ["instance.yaml", ".pending.yaml"]}.items():
        (paths.lxcpath / name).mkdir(parents=True)
        for f in files:
            (paths.lxcpath / name / f).write_text("{}")
    (paths.lxcpath / "file").write_text("")
    assert record.directories(paths) == ["a", "b", "c", "d"]
    assert record.scan(paths) == (["a", "b"], ["c", "d"])
    assert record.names(paths) == ["a", "b", "d"]


def test_read_ties_the_cgroup_to_this_lxcpaths_monitor(tmp_path: Path) -> None:
    """A fake payload cgroup holding a real child of a process named like the monitor: found
    for the right lxcpath and name only; anything unprovable is None (liblxc is asked)."""
    lxcpath = tmp_path / "containers"
    base = tmp_path / "cg"
    # the script comes on stdin, so the command line is the title alone, as liblxc sets it
    monitor = subprocess.Popen([f"[lxc monitor] {lxcpath} web"], executable=sys.executable,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = -1
    try:
        assert monitor.stdin is not None and monitor.stdout is not None
        monitor.stdin.write("import subprocess\nc = subprocess.Popen(['sleep', '30'])\n"
                            "print(c.pid, flush=True)\nc.wait()\n")
        monitor.stdin.close()
        child = int(monitor.stdout.readline())
        for d, pids, freezer in (
                # a same-named container of another lxcpath holds the plain name: ours is "-1"
                ("lxc.payload.web", f"{os.getpid()}\n", "THAWED\n"),
                ("lxc.payload.web-1", f"{child}\n", "FROZEN\n"),
                ("lxc.payload.db", f"{child}\n", "THAWED\n"),
                ("lxc.payload.empty", "", "THAWED\n")):
            (base / d).mkdir(parents=True)
            (base / d / "cgroup.procs").write_text(pids)
            (base / d / "freezer.state").write_text(freezer)
        where = livestate.Layout(1, (base,))
        livestate.clear_cache()
        out = livestate.read(lxcpath, ["web", "db", "empty", "gone"], where)
        assert out == {"web": livestate.Live("FROZEN", child), "db": None, "empty": None,
                       "gone": None}
        (base / "lxc.payload.web-1" / "freezer.state").write_text("THAWED\n")
        again = livestate.read(lxcpath, ["web"], where)  # from memory: same cgroup, alive
        assert again == {"web": livestate.Live("RUNNING", child)}
        # the same names in another lxcpath are not this monitor's
        assert livestate.read(tmp_path / "other", ["web"], where) == {"web": None}
        os.kill(child, signal.SIGKILL)  # the init is gone: not remembered any more
        monitor.wait(timeout=10)
        assert livestate.read(lxcpath, ["web"], where) == {"web": None}
    finally:
        if child > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        monitor.kill()
        monitor.wait()


def test_monitor_cmdline_matches_as_read(tmp_path: Path) -> None:
    """liblxc writes the title over the original argv and pads with NULs."""
    raw = b"[lxc monitor] /var/lib/x/containers web\0\0\0\0"
    assert raw.rstrip(b"\0") == livestate.monitor_cmdline(Path("/var/lib/x/containers"), "web")


# -- netstate: netlink dumps → ip -json links -------------------------------------------------

def _rta(kind: int, payload: bytes) -> bytes:
    head = struct.pack("=HH", 4 + len(payload), kind)
    return head + payload + b"\0" * ((-len(payload)) % 4)


def _link(index: int, name: str, arphrd: int, flags: int, mtu: int, mac: bytes,
          peer: int | None = None, netnsid: int | None = None,
          stats: tuple[int, ...] | None = None) -> tuple[int, bytes]:
    body = struct.pack("=BxHiII", 0, arphrd, index, flags, 0)
    body += _rta(3, name.encode() + b"\0") + _rta(4, struct.pack("=I", mtu)) + _rta(1, mac)
    if peer is not None:
        body += _rta(5, struct.pack("=I", peer))
    if netnsid is not None:
        body += _rta(37, struct.pack("=i", netnsid))
    if stats is not None:
        body += _rta(23, struct.pack("=24Q", *stats, *([0] * (24 - len(stats)))))
    return 16, body


def _addr(index: int, family: int, address: str, prefix: int, scope: int,
          local: bool = True) -> tuple[int, bytes]:
    body = struct.pack("=BBBBI", family, prefix, 0, scope, index)
    raw = socket.inet_pton(family, address)
    body += _rta(1, raw) + (_rta(2, raw) if local else b"")
    return 20, body


LINKS = [_link(1, "lo", 772, 0x1 | 0x8, 65536, b"\0" * 6, stats=(1, 1, 5, 5)),
         _link(7, "eth0", 1, 0x1 | 0x2, 1500, bytes.fromhex("00163e010203"), peer=1,
               netnsid=0, stats=(3, 2, 300, 200, 1, 0, 4, 0)),
         _link(8, "eth1", 1, 0x2, 1400, bytes.fromhex("00163e0a0b0c")),
         (3, b"")]  # anything but RTM_NEWLINK is skipped
ADDRS = [_addr(1, socket.AF_INET, "127.0.0.1", 8, 254),
         _addr(7, socket.AF_INET, "10.1.2.3", 24, 0),
         _addr(1, socket.AF_INET6, "::1", 128, 254, local=False),
         _addr(7, socket.AF_INET6, "fd42::5", 64, 0, local=False),
         _addr(7, socket.AF_INET6, "fe80::216:3eff:fe01:203", 64, 253, local=False),
         _addr(99, socket.AF_INET, "10.9.9.9", 24, 0)]  # a link that vanished meanwhile


def _dumped(*datagrams: list[tuple[int, bytes]]) -> dict[int, list[dict[str, str]]]:
    """``_dump_addresses`` reading ``datagrams`` as the kernel would send them."""
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, kernel:
        for messages in datagrams:
            kernel.send(_datagram(*messages))
        got = netstate._dump_addresses(ours)
        assert len(kernel.recv(4096)) == 24  # the request: a header and an ifaddrmsg
    return got


def test_state_from_netlink_gives_what_parse_gives_from_ip_json() -> None:
    got = netstate.state_from_netlink(LINKS, _dumped([*ADDRS, (3, b"\0" * 4)]))
    # the same interfaces as `ip -json -stats addr` would print them, through `parse`
    ip_json = [
        {"ifname": "lo", "flags": ["LOOPBACK", "UP"], "mtu": 65536, "link_type": "loopback",
         "address": "00:00:00:00:00:00",
         "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8,
                        "scope": "host"},
                       {"family": "inet6", "local": "::1", "prefixlen": 128, "scope": "host"}],
         "stats64": {"rx": {"bytes": 5, "packets": 1}, "tx": {"bytes": 5, "packets": 1}}},
        {"ifname": "eth0", "flags": ["BROADCAST", "UP"], "mtu": 1500, "link_type": "ether",
         "address": "00:16:3e:01:02:03", "link_index": 1, "link_netnsid": 0,
         "addr_info": [
             {"family": "inet", "local": "10.1.2.3", "prefixlen": 24, "scope": "global"},
             {"family": "inet6", "local": "fd42::5", "prefixlen": 64, "scope": "global"},
             {"family": "inet6", "local": "fe80::216:3eff:fe01:203", "prefixlen": 64,
              "scope": "link"}],
         "stats64": {"rx": {"bytes": 300, "packets": 3, "errors": 1, "dropped": 4},
                     "tx": {"bytes": 200, "packets": 2, "errors": 0, "dropped": 0}}},
        {"ifname": "eth1", "flags": ["BROADCAST"], "mtu": 1400, "link_type": "ether",
         "address": "00:16:3e:0a:0b:0c", "addr_info": []},
    ]
    assert got == netstate.parse(ip_json)
    assert list(got) == ["eth0", "eth1", "lo"]
    assert got["eth0"]["host_name"] == socket.if_indextoname(1)  # the peer, named here
    assert got["eth1"]["state"] == "down" and got["lo"]["hwaddr"] == ""


def test_attribute_walk_takes_only_what_is_asked() -> None:
    _, body = _link(7, "eth0", 1, 1, 1500, b"\1" * 6, peer=3)
    assert netstate._rtattrs(body, 16, frozenset({3})) == {3: b"eth0\0"}
    assert netstate._rtattrs(body + b"\x02\x00", 16, frozenset({5})) == {
        5: struct.pack("=I", 3)}  # a truncated attribute at the end is ignored


#: Names a container's root may give its interfaces (the kernel refuses only '/', ':' and
#: white space): a window title, a clear screen, C1's CSI, a bidi override, bytes not UTF-8.
HOSTILE_NAMES = {"\x1b]0;pwn\x07x": "\\x1b]0;pwn\\x07x", "\x1b[2Jx": "\\x1b[2Jx",
                 "a\x9b2J": "a\\x9b2J", "a\u202eb": "a\\u202eb", "e\x7f": "e\\x7f"}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_an_interface_name_reaches_no_terminal(name: str) -> None:
    """Whatever a container names its interfaces, what ``info`` and ``list`` get is printable
    (before, the escape sequences went to the admin's terminal as they were)."""
    links = [_link(7, name, 1, 0x1, 1500, b"\1" * 6)]
    got = netstate.state_from_netlink(links, _dumped([ADDRS[1], (3, b"\0" * 4)]))
    assert list(got) == [HOSTILE_NAMES[name]]
    assert list(netstate.parse([{"ifname": name, "flags": ["UP"]}])) == [HOSTILE_NAMES[name]]
    raw = _link(7, "x", 1, 0, 0, b"")[1][:16] + _rta(3, b"ab\xff\x1b\0")
    assert list(netstate.state_from_netlink([(16, raw)], {})) == ["ab\ufffd\\x1b"]
    assert all(n.isprintable() for n in got)


def _datagram(*messages: tuple[int, bytes]) -> bytes:
    out = b""
    for kind, body in messages:
        out += struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body
        out += b"\0" * (-len(out) % 4)
    return out


ODD_SCOPES = [_addr(3, socket.AF_INET, "10.5.0.1", 16, 255),  # "nowhere"
              _addr(3, socket.AF_INET, "10.6.0.1", 16, 100),  # a number ip has no name for
              (20, bytes([17]) + _addr(3, socket.AF_INET, "10.7.0.1", 16, 0)[1][1:]),
              # what the kernel puts after the addresses: a label, flags, cache info
              (20, _addr(4, socket.AF_INET, "10.8.0.1", 16, 0)[1] + _rta(3, b"eth3\0")
               + _rta(8, struct.pack("=I", 0x80)) + _rta(6, b"\0" * 16)),
              (20, _addr(4, socket.AF_INET6, "fd08::1", 64, 0, local=False)[1]
               + _rta(8, struct.pack("=I", 0x80)) + _rta(6, b"\0" * 16))]
# the third: a family that is not IP, skipped


@pytest.mark.parametrize("datagrams", [
    [ADDRS + ODD_SCOPES + [(3, b"\0" * 4)]],  # everything, then NLMSG_DONE, in one datagram
    [ADDRS[:2], [(2, struct.pack("=i", 0))], ADDRS[2:] + ODD_SCOPES, [(3, b"\0" * 4)]],
    [[(18, b"")], ADDRS + ODD_SCOPES, [(3, b"\0" * 4)]],  # not an address: skipped
], ids=["one datagram", "an ack between", "another message"])
def test_the_address_dump_read_as_it_arrives_is_what_the_messages_say(
        datagrams: list[list[tuple[int, bytes]]]) -> None:
    """The listing's reader parses the dump in place, whatever the kernel puts in each
    datagram: IFA_LOCAL where there is one, else IFA_ADDRESS; LXD's scope names; the
    addresses of each ifindex in the kernel's order; what is not an IP address skipped."""
    def a(family: str, address: str, netmask: str, scope: str) -> dict[str, str]:
        return {"family": family, "address": address, "netmask": netmask, "scope": scope}
    assert _dumped(*datagrams) == {
        1: [a("inet", "127.0.0.1", "8", "local"), a("inet6", "::1", "128", "local")],
        7: [a("inet", "10.1.2.3", "24", "global"), a("inet6", "fd42::5", "64", "global"),
            a("inet6", "fe80::216:3eff:fe01:203", "64", "link")],
        99: [a("inet", "10.9.9.9", "24", "global")],
        3: [a("inet", "10.5.0.1", "16", "nowhere"), a("inet", "10.6.0.1", "16", "100")],
        4: [a("inet", "10.8.0.1", "16", "global"), a("inet6", "fd08::1", "64", "global")]}


def test_an_error_in_the_address_dump_is_raised() -> None:
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, kernel:
        kernel.send(_datagram(ADDRS[0], (2, struct.pack("=i", -13))))
        with pytest.raises(OSError) as e:
            netstate._dump_addresses(ours)
    assert e.value.errno == 13


def _refusing_pidfds(setns: Any) -> Any:
    """A setns as a kernel before 5.8 has it: a pidfd is refused with EINVAL."""
    def call(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]":
            raise OSError(22, "Invalid argument")
        setns(fd)
    return call


@pytest.mark.skipif(os.geteuid() != 0, reason="entering a namespace needs root")
@pytest.mark.parametrize("how", ["pidfd", "no pidfd_open", "setns refuses pidfds"])
def test_reading_in_process_agrees_with_ip_in_the_namespace(
        how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read in-process or by ``ip`` in the namespace: the same dict; the addresses alone are
    the same addresses. The namespace is entered by pidfd, or by its /proc path where pidfds
    are unknown or refused."""
    if how == "no pidfd_open":
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    elif how == "setns refuses pidfds":
        real = netstate._setns_function
        monkeypatch.setattr(netstate, "_setns_function", lambda: _refusing_pidfds(real()))
    script = ("ip link set lo up; ip addr add 10.77.0.1/24 dev lo; "
              "ip addr add fd77::1/64 dev lo; exec sleep 30")
    procs = [subprocess.Popen(["unshare", "--net", "sh", "-c", script]) for _ in range(3)]
    try:
        deadline = time.monotonic() + 10
        pids = [p.pid for p in procs]
        while time.monotonic() < deadline and not all(
                "fd77::1" in str(netstate.interfaces(p)) for p in pids):
            time.sleep(0.05)
        many = netstate.interfaces_many([*pids, 2 ** 22 + 1])  # the last pid does not exist
        addrs = netstate.addresses_many([*pids, 2 ** 22 + 1])
        assert sorted(many) == sorted(addrs) == sorted(pids)
        for p in pids:
            assert many[p] == netstate.interfaces(p)
            assert addrs[p] == {"lo": {"addresses": many[p]["lo"]["addresses"]}}
            assert [a["address"] for a in many[p]["lo"]["addresses"]] == [
                "127.0.0.1", "10.77.0.1", "fd77::1", "::1"]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_interfaces_many_leaves_the_callers_namespace_alone() -> None:
    before = os.readlink("/proc/thread-self/ns/net")
    netstate.interfaces_many([os.getpid()])
    assert os.readlink("/proc/thread-self/ns/net") == before


def test_only_a_process_running_one_thread_counts_as_one() -> None:
    """The fork of a listing's reader is made only where nothing else runs: a fresh process
    counts as one thread, and not once it starts one (Python's count, then the kernel's)."""
    r = subprocess.run([sys.executable, "-c", "from lxdlib.network import netstate; "
                        "print(netstate._single_threaded())"],
                       capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.split() == ["True"]
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not netstate._single_threaded()
    finally:
        stop.set()
        other.join()


def test_a_thread_just_joined_does_not_count() -> None:
    """A thread Python has joined may still be leaving the kernel (it counted there in half of
    the tries): right after a join the process runs one thread again, every time — so a
    listing right after one whose thread read namespaces forks too. Run in a fresh process,
    which runs no other thread."""
    code = ("import threading; from lxdlib.network import netstate\n"
            "n = 0\n"
            "for _ in range(300):\n"
            "    t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
            "    n += netstate._single_threaded()\n"
            "print(n)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       check=True)
    assert r.stdout.split() == ["300"]


# -- the record cache ---------------------------------------------------------------------------

def _age(path: Path, seconds: float = 5) -> None:
    """Make the file look written ``seconds`` ago (its mtime; its ctime moves to now)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_parsed_cache_reuses_only_unchanged_files(tmp_path: Path, monkeypatch: Any) -> None:
    cache = ParsedCache()
    path = tmp_path / "r.yaml"
    write_record(path, {"a": 1})
    # just written: read again each time (a rewrite within the clock's tick could look
    # alike), its parse reused only while the bytes are the same
    assert cache.read(path) == {"a": 1}
    assert cache.read(path) is cache.read(path)
    path.write_text("a: 5\n")  # same size, within the tick
    assert cache.read(path) == {"a": 5}
    cache.remember(path, b"a: 6\n", {"a": 6})  # what a writer says it wrote ...
    assert cache.read(path) == {"a": 5}  # ... is taken only if the file holds those bytes
    path.write_text("a: 6\n")
    remembered = {"a": 6}
    cache.remember(path, b"a: 6\n", remembered)
    assert cache.read(path) is remembered
    write_record(path, {"a": 1})
    monkeypatch.setattr(ParsedCache, "RECENT_NS", -1)  # as if written long ago
    first = cache.read(path)
    assert cache.read(path) is first  # parsed once
    write_record(path, {"a": 2})  # a new file under the name: another key
    assert cache.read(path) == {"a": 2}
    path.write_text("a: 3\n")  # even an in-place rewrite of the same size
    assert cache.read(path) == {"a": 3}
    cache.clear()
    assert cache.read(path) == {"a": 3}


def test_parsed_cache_is_bounded_and_refuses_symlinks(tmp_path: Path, monkeypatch: Any
                                                      ) -> None:
    monkeypatch.setattr(ParsedCache, "RECENT_NS", -1)
    cache = ParsedCache(limit=3)
    paths = []
    for i in range(5):
        p = tmp_path / f"r{i}.yaml"
        write_record(p, {"i": i})
        paths.append(p)
        cache.read(p)
    assert len(cache._entries) == 3 and str(paths[-1]) in cache._entries
    (tmp_path / "link.yaml").symlink_to(paths[0])
    with pytest.raises(LxdlibError, match="symlink"):
        cache.read(tmp_path / "link.yaml")
    # a cached record replaced by a symlink is refused too, not served from memory
    os.replace(tmp_path / "link.yaml", paths[-1])
    with pytest.raises(LxdlibError, match="symlink"):
        cache.read(paths[-1])
    with pytest.raises(FileNotFoundError):
        cache.read(tmp_path / "missing.yaml")


def test_record_load_returns_a_private_copy(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(ParsedCache, "RECENT_NS", -1)
    paths = Paths(tmp_path)
    paths.instance_dir("c1").mkdir(parents=True)
    rec = record.InstanceRecord(name="c1", architecture="x86_64", created_at=record.now(),
                                pool="p", config={"k": "v"}, devices={"d": {"type": "none"}},
                                profiles=["default"])
    record.save(paths, rec, durable=False)
    record.clear_cache()
    a = record.load(paths, "c1")
    a.config["k"] = "changed"
    a.devices["d"]["type"] = "changed"
    a.profiles.append("x")
    b = record.load(paths, "c1")
    assert b.config == {"k": "v"} and b.devices == {"d": {"type": "none"}}
    assert b.profiles == ["default"]
    # the second load was copied from the record built at the first: a copy as deep
    b.config["k"] = "again"
    b.devices["d"]["x"] = "y"
    c = record.load(paths, "c1")
    assert c == record.InstanceRecord.from_dict(rec.to_dict()) and c is not b


def test_record_copy_shares_nothing_mutable() -> None:
    rec = record.InstanceRecord(
        name="c1", architecture="x86_64", created_at=record.now(), pool="p",
        config={"k": "v"}, devices={"d": {"type": "none"}}, profiles=["default"],
        snapshots=[record.SnapshotRecord(name="s0", created_at=record.now(),
                                         config={"a": "b"}, devices={"e": {"f": "g"}},
                                         profiles=["x"])])
    copy = record._copy(rec)
    assert copy == rec
    copy.snapshots[0].config["a"] = "changed"
    copy.snapshots[0].devices["e"]["f"] = "changed"
    copy.snapshots[0].profiles.append("y")
    copy.snapshots.append(copy.snapshots[0])
    copy.devices["d"]["type"] = "changed"
    assert rec.snapshots[0].config == {"a": "b"} and rec.snapshots[0].devices == {
        "e": {"f": "g"}} and rec.snapshots[0].profiles == ["x"] and len(rec.snapshots) == 1
    assert rec.devices == {"d": {"type": "none"}}
    fields = set(values.fields(record.InstanceRecord))
    assert fields == {"name", "architecture", "created_at", "pool", "profiles", "config",
                      "devices", "description", "ephemeral", "last_used_at", "snapshots",
                      "type"}, "a new field: copy it in record._copy too"
    assert set(values.fields(record.SnapshotRecord)) == {
        "name", "created_at", "expires_at", "stateful", "description", "config", "devices",
        "profiles"}, "a new field: copy it in record._copy too"


# -- the address columns ----------------------------------------------------------------------

NET = {
    "eth0": {"addresses": [
        {"family": "inet", "address": "10.0.0.5", "netmask": "24", "scope": "global"},
        {"family": "inet", "address": "169.254.1.1", "netmask": "16", "scope": "link"},
        {"family": "inet6", "address": "fd42::5", "netmask": "64", "scope": "global"},
        {"family": "inet6", "address": "fe80::1", "netmask": "64", "scope": "link"}]},
    "eth1": {"addresses": [
        {"family": "inet", "address": "192.168.1.9", "netmask": "24", "scope": "global"},
        {"family": "inet6", "address": "fe80::2", "netmask": "64", "scope": "link"}]},
    "lo0": {"type": "loopback", "addresses": [
        {"family": "inet6", "address": "fd00::1", "netmask": "128", "scope": "global"}]},
    "lo": {"addresses": [
        {"family": "inet", "address": "127.0.0.1", "netmask": "8", "scope": "local"},
        {"family": "inet", "address": "10.9.9.9", "netmask": "32", "scope": "global"}]},
}


@pytest.mark.parametrize(("family", "expected"), [
    # LXD's order: the "<address> (<interface>)" texts in reverse
    ("inet", [("192.168.1.9", "eth1"), ("10.0.0.5", "eth0")]),
    ("inet6", [("fd42::5", "eth0")]),  # no fe80::
])
def test_global_addresses(family: str, expected: list[tuple[str, str]]) -> None:
    assert listing.global_addresses(NET, family) == expected
    entry = listing.Listed("c1", "RUNNING", 42, network=NET)
    assert entry.addresses(family) == expected
    assert (entry.ipv4 if family == "inet" else entry.ipv6) == [a for a, _ in expected]


def test_listing_has_the_collections_shape() -> None:
    lst = listing.Listing([listing.Listed("b", "STOPPED"), listing.Listed("a", "FROZEN", 7)])
    assert lst.names() == ["a", "b"] and len(lst) == 2 and "a" in lst and "zz" not in lst
    assert [e.name for e in lst] == ["a", "b"]
    assert lst["a"].status == "Frozen" and lst["a"].running and not lst["b"].running
    assert lst["b"].status == "Stopped" and lst["b"].pid == -1
    with pytest.raises(LookupError):
        lst["zz"]


# -- records an older version wrote as YAML ---------------------------------------------------

DOCS = [
    "",
    "null\n",
    "name: c1\nephemeral: false\nlast_used_at: null\nprofiles:\n- default\nconfig: {}\n",
    "config:\n  limits.cpu: '2'\n  volatile.idmap.current: '[{\"Isuid\":true}]'\n  a: yes\n",
    "n: 12\nf: 1.5\no: 0o17\nx: 0x1F\nneg: -3\ninf: .inf\ns: '12'\n",
    "t: 2026-12-04 10:00:00\nd: 2026-12-04\nq: '2026-12-04T10:00:00+00:00'\n",
    "b: [true, True, TRUE, false, 'true', ~, Null]\n",
    "base: &b {x: 1, y: [1, 2]}\nother:\n  <<: *b\n  z: 3\n",
    "a: &l [1, 2]\nb: *l\n",
    "a: &s text\nb: *s\n",
    "? [1, 2]\n: unhashable\n",
    "dup: 1\ndup: 2\n",
    "bin: !!binary aGk=\nset: !!set {a, b}\nstr: !!str 12\n",
    "snapshots:\n- name: s0\n  created_at: '2026-01-01T00:00:00+00:00'\n  devices: {}\n",
    "- 1\n- [a, {b: c}]\n",
    "just a string\n",
    "unicode: \"caf\\u00e9 \\U0001F600\"\nempty: ''\nmulti: |\n  line1\n  line2\n",
]


@pytest.mark.parametrize("doc", DOCS)
def test_yaml_records_read_as_the_safe_loader_reads_them(doc: str) -> None:
    try:
        expected = yaml.load(doc, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        with pytest.raises(RecordSyntaxError):
            parse_record(doc.encode())
        assert e
        return
    got = parse_record(doc.encode())
    assert got == expected and type(got) is type(expected)
    if isinstance(expected, dict) and "b" in expected and "a" in expected \
            and isinstance(expected["a"], list):
        assert got["a"] is got["b"]  # an alias stays one object, as PyYAML makes it


@pytest.mark.parametrize("doc", ["a: [1\n", "a: 1\n---\nb: 2\n", "{a: 1, a\n", "\t- x\n"])
def test_record_reader_refuses_what_safe_loader_refuses(doc: str) -> None:
    with pytest.raises(yaml.YAMLError):
        yaml.load(doc, Loader=yaml.SafeLoader)
    with pytest.raises(RecordSyntaxError, match=r"not JSON .*, and not YAML either"):
        parse_record(doc.encode())


def test_an_older_yaml_record_reads_as_written() -> None:
    rec = record.InstanceRecord(
        name="c1", architecture="x86_64", created_at=record.now(), pool="default",
        profiles=["default", "x"], config={"volatile.eth0.hwaddr": "00:16:3e:00:00:01",
                                           "limits.memory": "1GiB", "user.n": "12"},
        devices={"eth0": {"type": "nic", "network": "lxdbr0"}}, ephemeral=True,
        snapshots=[record.SnapshotRecord(name="s0", created_at=record.now())])
    text = dump_yaml(rec.to_dict())
    assert parse_record(text.encode()) == yaml_safe(text)
    assert record.InstanceRecord.from_dict(parse_record(text.encode())) == rec


def yaml_safe(text: str) -> Any:
    return yaml.load(text, Loader=yaml.SafeLoader)
