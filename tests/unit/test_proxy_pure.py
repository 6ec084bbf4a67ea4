"""The pure parts of proxy devices: PROXY v1 lines, port mapping, UDP idle expiry, NAT rules and
target choice, and how a forwarder is recognised before any signal."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lxdlib.config.devices import parse_proxy_address
from lxdlib.devices import proxy
from lxdlib.errors import InvalidConfig
from lxdlib.forwarder import (
    SetupError,
    describe,
    idle_keys,
    proxy_header,
    sockaddrs,
    targets,
)
from lxdlib.network import nat


@pytest.mark.parametrize(("family", "peer", "local", "line"), [
    (socket.AF_INET, ("10.0.0.5", 40000), ("10.0.0.1", 80),
     b"PROXY TCP4 10.0.0.5 10.0.0.1 40000 80\r\n"),
    (socket.AF_INET6, ("fd00::5", 40000, 0, 0), ("fd00::1", 443, 0, 0),
     b"PROXY TCP6 fd00::5 fd00::1 40000 443\r\n"),
    # a dual-stack listener sees IPv4 clients as mapped addresses: sent as TCP4
    (socket.AF_INET6, ("::ffff:192.0.2.7", 5555, 0, 0), ("::ffff:192.0.2.1", 22, 0, 0),
     b"PROXY TCP4 192.0.2.7 192.0.2.1 5555 22\r\n"),
    (socket.AF_UNIX, "", "/run/x.sock", b"PROXY UNKNOWN\r\n"),
    (socket.AF_INET6, ("::ffff:192.0.2.7", 5555, 0, 0), ("fd00::1", 22, 0, 0),
     b"PROXY UNKNOWN\r\n"),
])
def test_proxy_header(family: int, peer: object, local: object, line: bytes) -> None:
    assert proxy_header(family, peer, local) == line  # type: ignore[arg-type]


@pytest.mark.parametrize(("listen", "connect", "pairs"), [
    ("tcp:127.0.0.1:80", "tcp:10.0.0.1:8080", [(("127.0.0.1", 80), ("10.0.0.1", 8080))]),
    ("tcp:127.0.0.1:80-82", "tcp:10.0.0.1:90-92",
     [(("127.0.0.1", 80 + i), ("10.0.0.1", 90 + i)) for i in range(3)]),
    ("tcp:127.0.0.1:80,81,90", "tcp:10.0.0.1:22",
     [(("127.0.0.1", p), ("10.0.0.1", 22)) for p in (80, 81, 90)]),
    ("tcp::8080", "unix:/run/s.sock", [(("0.0.0.0", 8080), "/run/s.sock")]),
    ("unix:@abs", "tcp:[::1]:80", [("\0abs", ("::1", 80))]),
    ("udp:[::]:53", "udp:127.0.0.1:5353", [(("::", 53), ("127.0.0.1", 5353))]),
])
def test_port_mapping(listen: str, connect: str, pairs: list[tuple[object, object]]) -> None:
    lst, con = parse_proxy_address(listen), parse_proxy_address(connect)
    assert list(zip(sockaddrs(lst), targets(lst, con), strict=True)) == pairs


def test_port_mapping_mismatch() -> None:
    with pytest.raises(SetupError, match="Mismatch"):
        targets(parse_proxy_address("tcp:1.2.3.4:1-3"), parse_proxy_address("tcp:1.2.3.4:1-2"))


def test_describe() -> None:
    assert describe(("::1", 80)) == "[::1]:80"
    assert describe(("1.2.3.4", 80)) == "1.2.3.4:80"
    assert describe("\0name") == "@name"
    assert describe("/run/x") == "/run/x"


def test_udp_idle_expiry() -> None:
    seen = {("1.1.1.1", 1): 100.0, ("1.1.1.1", 2): 150.0, ("1.1.1.1", 3): 189.0}
    assert idle_keys(seen, 190.0, 40.0) == [("1.1.1.1", 1), ("1.1.1.1", 2)]
    assert idle_keys(seen, 190.0, 1800.0) == []


@pytest.mark.parametrize(("ports", "text"), [
    ((80,), "80"),
    ((80, 81, 82), "{ 80-82 }"),
    ((90, 80, 81), "{ 80-81, 90 }"),
    ((22, 22), "22"),
])
def test_port_set(ports: tuple[int, ...], text: str) -> None:
    assert proxy._port_set(ports) == text


def _rules(listen: str, connect: str, target: str) -> str:
    spec = proxy.nat_spec("p_abc", parse_proxy_address(listen), parse_proxy_address(connect),
                          target)
    assert spec.name == "lxdlib_p_abc"
    assert [(c.name, c.hook, c.priority) for c in spec.chains] == [
        ("prert", "prerouting", -100), ("out", "output", -100), ("pstrt", "postrouting", 100)]
    assert spec.chains[0].rules == spec.chains[1].rules
    return nat.render(spec)


def test_nat_rules_v4_one_to_one_and_hairpin() -> None:
    text = _rules("tcp:10.0.0.1:8000-8001", "tcp:10.0.0.5:80-81", "10.0.0.5")
    assert ("ip daddr 10.0.0.1 tcp dport { 8000-8001 } dnat ip to 10.0.0.5:tcp dport map "
            "{ 8000 : 80, 8001 : 81 }") in text
    assert "ip saddr 10.0.0.5 ip daddr 10.0.0.5 tcp dport { 80-81 } masquerade" in text


def test_nat_rules_many_to_one_udp_and_v6() -> None:
    text = _rules("udp:10.0.0.1:53,5353", "udp:0.0.0.0:53", "10.0.0.5")
    assert "ip daddr 10.0.0.1 udp dport { 53, 5353 } dnat ip to 10.0.0.5:53" in text
    text = _rules("tcp:[fd00::1]:443", "tcp:[fd00::5]:8443", "fd00::5")
    assert "ip6 daddr fd00::1 tcp dport 443 dnat ip6 to [fd00::5]:8443" in text
    assert "ip6 saddr fd00::5 ip6 daddr fd00::5 tcp dport 8443 masquerade" in text


DEVICES = {
    "eth0": {"type": "nic", "network": "br0", "ipv4.address": "10.0.0.5"},
    "eth1": {"type": "nic", "nictype": "bridged", "parent": "br1", "ipv4.address": "10.1.0.5",
             "ipv6.address": "fd00::5"},
    "mv": {"type": "nic", "nictype": "macvlan", "parent": "eno1", "ipv4.address": "10.2.0.5"},
    "root": {"type": "disk", "path": "/", "pool": "default"},
}


@pytest.mark.parametrize(("connect", "version", "chosen"), [
    ("tcp:10.1.0.5:80", 4, ("eth1", "10.1.0.5")),
    ("tcp:0.0.0.0:80", 4, ("eth0", "10.0.0.5")),
    ("tcp:[fd00::5]:80", 6, ("eth1", "fd00::5")),
    ("tcp:[::]:80", 6, ("eth1", "fd00::5")),
])
def test_nat_target(connect: str, version: int, chosen: tuple[str, str]) -> None:
    assert proxy.nat_target(DEVICES, parse_proxy_address(connect), version) == chosen


@pytest.mark.parametrize(("devices", "connect", "version", "message"), [
    (DEVICES, "tcp:10.2.0.5:80", 4,
     "Connect IP '10.2.0.5' must be one of the instance's static IPv4 addresses"),
    ({"eth0": {"type": "nic", "network": "br0"}}, "tcp:0.0.0.0:80", 4,
     "Instance has no static IPv4 address assigned to be used as the connect IP"),
    ({"eth0": {"type": "nic", "network": "br0", "ipv4.address": "10.0.0.5"}},
     "tcp:[::]:80", 6,
     "Instance has no static IPv6 address assigned to be used as the connect IP"),
])
def test_nat_target_errors(devices: dict[str, dict[str, str]], connect: str, version: int,
                           message: str) -> None:
    with pytest.raises(InvalidConfig, match=message):
        proxy.nat_target(devices, parse_proxy_address(connect), version)


def test_nat_table_key_per_root_instance_device() -> None:
    keys = {proxy.nat_table_key(r, i, d) for r in ("/a", "/b") for i in ("c1", "c2")
            for d in ("p", "q")}
    assert len(keys) == 8
    assert all(k.startswith("p_") and len(k) == 14 for k in keys)
    assert proxy.nat_table_key("/a", "c1", "p") == proxy.nat_table_key("/a", "c1", "p")


def _cmdline(*args: str) -> bytes:
    return b"\0".join(a.encode() for a in args) + b"\0"


@pytest.mark.parametrize(("cmdline", "ok"), [
    (_cmdline("/py", "-m", "lxdlib.forwarder", "--root", "/r", "--instance", "c1", "--device",
              "web", "--init-pid", "5"), True),
    (_cmdline("/py", "-m", "lxdlib.forwarder", "--root", "/other", "--instance", "c1",
              "--device", "web"), False),
    (_cmdline("/py", "-m", "lxdlib.forwarder", "--root", "/r", "--instance", "c1", "--device",
              "web2"), False),
    (_cmdline("/py", "-m", "something.else", "--root", "/r", "--instance", "c1", "--device",
              "web"), False),
    (b"", False),  # a zombie
])
def test_is_forwarder(cmdline: bytes, ok: bool) -> None:
    assert proxy.is_forwarder(cmdline, "/r", "c1", "web") is ok


@pytest.mark.parametrize(("bind", "side"), [
    (None, "host"), ("host", "host"), ("instance", "instance"), ("guest", "instance"),
    ("container", "instance"),
])
def test_side_of(bind: str | None, side: str) -> None:
    dev = {"type": "proxy"} if bind is None else {"type": "proxy", "bind": bind}
    assert proxy.side_of(dev) == side


#: In a child: the files of ``planted`` stand for what the container's root put at the paths
#: Python reads (here ``encodings``' directory, and the file a traceback names); a traceback
#: is formatted, a module and a codec are asked for. Prints what got through.
SEALED_CHILD = r"""
import codecs, encodings, os, sys, traceback
from lxdlib import forwarder
planted, seal = sys.argv[1], sys.argv[2] == "seal"
encodings.__path__.append(planted)
sys.path.append(planted)
ns = {}
exec(compile("def boom():\n    raise ValueError('x')\n", os.path.join(planted, "src.py"),
             "exec"), ns)
if seal:
    forwarder.seal()
try:
    ns["boom"]()
except ValueError:
    text = traceback.format_exc()
try:
    import lxdlib_mod
except ImportError:
    pass
try:
    codecs.lookup("lxdlib_codec")
except LookupError:
    pass
print("source shown" if "raise ValueError" in text else "no source")
"""


@pytest.mark.parametrize("seal", [False, True])
def test_a_sealed_forwarder_runs_nothing_the_container_planted(tmp_path: Path, seal: bool) -> None:
    """The forwarder joins the instance's mount namespace (``connect=unix:`` in the instance)
    for its whole life, as host root for a privileged instance. There a module Python loads, or a
    codec a traceback's ``# coding:`` line names, comes from the container's files: unsealed
    (the first case) each one below runs as the process's user; sealed, none does."""
    ran = tmp_path / "ran"
    for mod in ("lxdlib_planted", "lxdlib_mod", "lxdlib_codec"):
        (tmp_path / f"{mod}.py").write_text(
            f"open({str(ran)!r} + '.{mod}', 'w').close()\n"
            "def getregentry():\n    raise LookupError\n")
    (tmp_path / "src.py").write_text("# coding: lxdlib_planted\ndef boom():\n"
                                     "    raise ValueError('x')\n")
    out = subprocess.run([sys.executable, "-c", SEALED_CHILD, str(tmp_path),
                          "seal" if seal else "open"], capture_output=True, text=True,
                         check=True).stdout
    got = sorted(p.name.split(".", 1)[1] for p in tmp_path.glob("ran.*"))
    if not seal:  # the way in is real: every planted file ran
        assert got == ["lxdlib_codec", "lxdlib_mod", "lxdlib_planted"]
        return
    assert got == []
    assert out.strip() == "no source"


def test_a_host_socket_lands_in_the_directory_its_path_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listen path passes a directory a host user may rename: right after the forwarder
    took the path's directory, the user puts a link to another directory in its place. The
    socket is still made in the directory the path named, never where the link points (before,
    root's socket landed there, with the device's mode and owner)."""
    from lxdlib import forwarder
    home = tmp_path / "home"
    (home / "socks").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    real_clear = forwarder.UnixPath.clear_stale

    def swap_then_clear(self: forwarder.UnixPath, path: str) -> None:
        (home / "socks").rename(home / "moved")
        (home / "socks").symlink_to(elsewhere)
        real_clear(self, path)

    monkeypatch.setattr(forwarder.UnixPath, "clear_stale", swap_then_clear)
    path = str(home / "socks" / "app.sock")
    s, made = forwarder.make_listener(parse_proxy_address(f"unix:{path}"), path, mode=0o600,
                                      uid=None, gid=None, via_dir=True)
    try:
        assert list(elsewhere.iterdir()) == []
        assert [p.name for p in (home / "moved").iterdir()] == ["app.sock"]
        assert ((home / "moved" / "app.sock").stat().st_mode & 0o777) == 0o600
    finally:
        s.close()
        assert made is not None
        made.remove()
    assert list((home / "moved").iterdir()) == []


def test_a_host_socket_owner_goes_to_the_socket_not_a_file_swapped_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``uid``/``gid`` of a host-side unix socket below a directory a host user controls:
    right before the forwarder gives the socket its owner, the user renames it away and puts a
    hard link to another file at its name. The owner goes to the socket the forwarder made;
    before, the ownership check and the chown each looked the name up, and the file linked in
    between was given to the device's uid."""
    from lxdlib import forwarder
    home = tmp_path / "home"
    home.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("not yours\n")
    real_chown = os.chown
    swapped: list[bool] = []

    def swap_then_chown(path: object, uid: int, gid: int, **kw: object) -> None:
        if not swapped:
            (home / "app.sock").rename(home / "moved.sock")
            os.link(victim, home / "app.sock")
            swapped.append(True)
        real_chown(path, uid, gid, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "chown", swap_then_chown)
    path = str(home / "app.sock")
    s, made = forwarder.make_listener(parse_proxy_address(f"unix:{path}"), path, mode=0o600,
                                      uid=12345, gid=23456, via_dir=True)
    monkeypatch.setattr(os, "chown", real_chown)
    try:
        assert swapped
        assert (victim.stat().st_uid, victim.stat().st_gid) == (0, 0)
        st = (home / "moved.sock").stat()
        assert (st.st_uid, st.st_gid) == (12345, 23456)
    finally:
        s.close()
        assert made is not None
        made.remove()


NO_DESCRIPTORS_LEFT = r"""
import os, resource
from lxdlib import forwarder
from lxdlib.config.devices import parse_proxy_address
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
try:
    forwarder.make_listener(parse_proxy_address("tcp:127.0.0.1:1"), ("127.0.0.1", 1), mode=0,
                            uid=None, gid=None)
except forwarder.SetupError as e:
    print(e)
"""


def test_a_range_past_the_descriptor_limit_says_which_port() -> None:
    """A listen range larger than the forwarder's descriptor limit fails as a bind would,
    naming the port (before: a bare ``OSError: [Errno 24]`` from outside the setup's checks)."""
    out = subprocess.run([sys.executable, "-c", NO_DESCRIPTORS_LEFT], capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.strip() == "Failed listening on 127.0.0.1:1: Too many open files", out


def test_throttle_logs_a_burst_then_a_count(monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    from lxdlib import forwarder
    now = [100.0]
    monkeypatch.setattr(forwarder.time, "monotonic", lambda: now[0])
    t = forwarder.Throttle(burst=3, window=60.0)
    with caplog.at_level("WARNING", logger="lxdlib.forwarder"):
        for i in range(10):
            t.warning("refused %d", i)
        now[0] += 61
        t.warning("refused again")
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0", "refused 1", "refused 2", "7 more such lines were not logged",
        "refused again"]
