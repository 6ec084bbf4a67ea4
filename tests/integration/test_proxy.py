"""Proxy devices end to end against real containers: every mode, with servers inside the
container the test made (busybox ``nc``; for UDP and unix sockets, a host Python server in the
container's network namespace or behind a bind mount), and the forwarder's lifecycle — restart,
retarget, removal, kill -9, a busy listen address, a poweroff from inside, NAT mode on a bridge
the test made. Every check that no forwarder is left scans /proc, independent of the code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import lxdlib
from lxdlib.errors import InvalidConfig, LXCError, NetworkError

pytestmark = pytest.mark.root

TIMEOUT = 10.0


# -- helpers -----------------------------------------------------------------------------------
def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def talk(addr: tuple[str, int] | str, data: bytes = b"hello\n") -> bytes:
    """Connect, send, half-close, and read until the other side closes."""
    family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect(addr)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def udp_talk(port: int, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        for _ in range(10):  # datagrams may be lost before the server is up
            s.sendto(data, ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                return s.recv(65536)
    raise AssertionError("no UDP answer")


def forwarders(root: Path) -> list[int]:
    """Live lxdlib forwarders of this root, found in /proc (zombies are dead)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"lxdlib.forwarder" in cmd and str(root).encode() in cmd and state != "Z":
            out.append(int(d.name))
    return sorted(out)


def gone(pid: int) -> bool:
    """Whether process ``pid`` has finished exiting: absent or a zombie. A process being killed
    loses its cmdline before it closes its files, so a forwarder missing from ``forwarders``
    may still hold its listening socket for a moment; only this state says it no longer does."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def fwd_pid(host: lxdlib.Host, name: str, dev: str) -> int:
    return int((host.paths.instance_dir(name) / "devices" / f"proxy.{dev}.pid").read_text())


def serve(c: lxdlib.Instance, cmd: str, port: int, proto: str = "t") -> None:
    """Start a server inside the container in the background and wait until it listens."""
    c.exec(f"( {cmd} ) </dev/null >/dev/null 2>&1 &", check=True)
    assert c.wait_for(lambda: f":{port} " in c.exec(["netstat", f"-ln{proto}"]).stdout.decode(),
                      timeout=TIMEOUT)


def wait(pred: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def proxy(listen: str, connect: str, **extra: str) -> dict[str, str]:
    return {"type": "proxy", "listen": listen, "connect": connect, **extra}


def add(c: lxdlib.Instance, **devices: dict[str, str]) -> None:
    c.update(devices={**c.devices, **devices})


def remove(c: lxdlib.Instance, *names: str) -> None:
    c.update(devices={k: v for k, v in c.devices.items() if k not in names})


@contextlib.contextmanager
def host_process(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A server the test runs (killed by pid at the end, also on failure); it prints a line
    when it is ready."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        yield p
    finally:
        p.kill()
        p.wait()


UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65536)
    s.sendto(b"udp:" + data, peer)
"""

STREAM_SERVER = r"""
import os, socket, sys, threading
addr = sys.argv[1]
if addr.startswith("/"):
    s = socket.socket(socket.AF_UNIX)
    s.bind(addr)
    os.chmod(addr, 0o666)
else:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(addr)))
s.listen(16)
print("ready", flush=True)
def handle(c):
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    c.sendall(sys.argv[2].encode() + data)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"""


PEER_SERVER = r"""
import os, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], int(sys.argv[2], 8))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    pid, uid, gid = struct.unpack("3i", c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    c.sendall(f"uid={uid}".encode())
    c.close()
"""


# -- tcp: the seed's CLI form and the forwarder's lifecycle ------------------------------------
def unique(prefix: str) -> str:
    """Instance names differ per test run: liblxc's monitor cgroups are named after them."""
    return f"{prefix}{os.urandom(3).hex()}"


def test_tcp_proxy_lifecycle(host: lxdlib.Host) -> None:
    root = host.paths.root
    name = unique("px")
    c = host.launch("busybox", name)
    serve(c, "nc -ll -p 5000 -e cat", 5000)
    port = free_port()
    r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(root), "config",
                        "device", "add", name, "sshport", "proxy",
                        f"listen=tcp:127.0.0.1:{port}", "connect=tcp:127.0.0.1:5000"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert talk(("127.0.0.1", port)) == b"hello\n"
    first = fwd_pid(host, name, "sshport")
    assert forwarders(root) == [first]

    # a restart brings a new forwarder up with the container
    c.restart(force=True)
    serve(c, "nc -ll -p 5000 -e cat", 5000)
    assert talk(("127.0.0.1", port)) == b"hello\n"
    second = fwd_pid(host, name, "sshport")
    assert second != first and forwarders(root) == [second]

    # device set connect … retargets the running instance
    serve(c, "nc -ll -p 5001 -e echo second", 5001)
    devs = c.devices
    devs["sshport"]["connect"] = "tcp:127.0.0.1:5001"
    c.update(devices=devs)
    assert talk(("127.0.0.1", port)) == b"second\n"

    # kill -9 of the forwarder: the port closes, the next start works
    killed = fwd_pid(host, name, "sshport")
    os.kill(killed, signal.SIGKILL)
    assert wait(lambda: gone(killed)) and not forwarders(root)
    with pytest.raises(ConnectionRefusedError):
        talk(("127.0.0.1", port))
    c.restart(force=True)
    serve(c, "nc -ll -p 5001 -e echo second", 5001)
    assert talk(("127.0.0.1", port)) == b"second\n"
    assert len(forwarders(root)) == 1

    # a listen address in use fails the live add with the reason, and nothing is kept
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        before = c.devices
        clash = proxy(f"tcp:127.0.0.1:{busy_port}", "tcp:127.0.0.1:5000")
        with pytest.raises(NetworkError, match=r"(?i)address already in use"):
            add(c, clash=clash)
        assert c.devices == before and "clash" not in c.expanded_devices
        assert len(forwarders(root)) == 1
        # … and the start of an instance that has it: the start fails, nothing is left
        c.stop(force=True)
        assert wait(lambda: not forwarders(root))
        add(c, clash=clash)
        with pytest.raises(LXCError, match=r"(?i)address already in use"):
            c.start()
        assert c.state == "STOPPED" and not forwarders(root)
    c.start()
    assert len(forwarders(root)) == 2

    # removing devices frees their ports; re-adding the same listen works
    remove(c, "clash", "sshport")
    assert wait(lambda: not forwarders(root))
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    assert not (host.paths.instance_dir(name) / "devices" / "proxy.sshport.pid").exists()
    add(c, sshport=proxy(f"tcp:127.0.0.1:{port}", "tcp:127.0.0.1:5000"))
    serve(c, "nc -ll -p 5000 -e cat", 5000)
    assert talk(("127.0.0.1", port), b"again\n") == b"again\n"

    # port ranges: three ports one to one, and three ports to one
    base = free_port()
    while any(p_in_use(base + i) for i in range(3)):
        base = free_port()
    for i, word in enumerate(("one", "two", "three")):
        serve(c, f"nc -ll -p {6001 + i} -e echo {word}", 6001 + i)
    add(c, ranges=proxy(f"tcp:127.0.0.1:{base}-{base + 1},{base + 2}",
                        "tcp:127.0.0.1:6001-6003"))
    assert [talk(("127.0.0.1", base + i)) for i in range(3)] == [b"one\n", b"two\n",
                                                                 b"three\n"]
    devs = c.devices
    devs["ranges"]["connect"] = "tcp:127.0.0.1:6002"
    c.update(devices=devs)
    assert [talk(("127.0.0.1", base + i)) for i in range(3)] == [b"two\n"] * 3

    # a poweroff from inside leaves no forwarder (the monitor runs no hooks for devices added
    # while it ran: the forwarders watch the init themselves)
    c.exec(["poweroff"])
    assert c.wait_for(lambda: c.state == "STOPPED", timeout=30)
    assert wait(lambda: not forwarders(root))
    # started with the devices in its config, the hooks run as well
    c.start()
    assert len(forwarders(root)) == 2
    c.exec(["poweroff"])
    assert c.wait_for(lambda: c.state == "STOPPED", timeout=30)
    assert wait(lambda: not forwarders(root))
    # the post-stop hook removes the pid files (a forwarder in the instance's user namespace
    # may not); the kernel's STOPPED may come before it has run
    assert wait(lambda: not list((host.paths.instance_dir(name) / "devices").glob("*.pid")))


def p_in_use(port: int) -> bool:
    """Whether something listens on the port. SO_REUSEADDR: a connection the forwarder closed
    may leave the port in TIME_WAIT for a minute, which is not someone listening."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


# -- udp, unix sockets, bind=instance, the PROXY header, security ids --------------------------
@pytest.fixture
def share(root: Path) -> Iterator[Path]:
    """A host directory bind-mounted into the container at /mnt/share."""
    d = root.parent / "share"
    d.mkdir(mode=0o755)
    yield d


def test_udp_unix_instance_side_and_header(host: lxdlib.Host, share: Path) -> None:
    root = host.paths.root
    name = unique("pu")
    c = host.launch("busybox", name, devices={
        "share": {"type": "disk", "source": str(share), "path": "/mnt/share"}})
    base = int(c.config["volatile.idmap.base"])
    serve(c, "nc -ll -p 5000 -e cat", 5000)

    # udp → udp, server in the container's network namespace; the forwarder drops to
    # security.uid/gid (instance ids: the host sees them shifted by the idmap)
    udp_port = free_port(socket.SOCK_DGRAM)
    with host_process(["nsenter", f"--net=/proc/{c.pid}/ns/net", sys.executable, "-c",
                       UDP_ECHO, "5353"]):
        add(c, udp=proxy(f"udp:127.0.0.1:{udp_port}", "udp:127.0.0.1:5353",
                         **{"security.uid": "1000", "security.gid": "1001"}))
        assert udp_talk(udp_port, b"ping") == b"udp:ping"
        assert udp_talk(udp_port, b"pong") == b"udp:pong"
        status = Path(f"/proc/{fwd_pid(host, name, 'udp')}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()
        gids = next(line for line in status.splitlines() if line.startswith("Gid:")).split()
        assert uids[1:] == [str(base + 1000)] * 4 and gids[1:] == [str(base + 1001)] * 4

    # unix (host path, with owner and mode) → tcp in the container
    lsock = str(share.parent / "listen.sock")
    add(c, unix2tcp=proxy(f"unix:{lsock}", "tcp:127.0.0.1:5000", uid="1234", gid="2345",
                          mode="0660"))
    st = os.stat(lsock)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 2345, 0o660)
    assert talk(lsock, b"via unix\n") == b"via unix\n"
    # another program's live socket is neither taken over nor removed by the failed add
    with socket.socket(socket.AF_UNIX) as other:
        busy = str(share.parent / "busy.sock")
        other.bind(busy)
        other.listen()
        with pytest.raises(NetworkError, match="Address already in use"):
            add(c, busy=proxy(f"unix:{busy}", "tcp:127.0.0.1:5000"))
        assert Path(busy).is_socket() and "busy" not in c.devices

    # tcp → unix: the path is resolved in the container's mount namespace (it exists only
    # there, under the bind mount), and unix → unix
    with host_process([sys.executable, "-c", STREAM_SERVER, str(share / "srv.sock"),
                       "srv:"]):
        tport = free_port()
        add(c, tcp2unix=proxy(f"tcp:127.0.0.1:{tport}", "unix:/mnt/share/srv.sock"),
            unix2unix=proxy(f"unix:{share.parent / 'uu.sock'}", "unix:/mnt/share/srv.sock"))
        assert not Path("/mnt/share/srv.sock").exists()
        assert talk(("127.0.0.1", tport), b"t2u") == b"srv:t2u"
        assert talk(str(share.parent / "uu.sock"), b"u2u") == b"srv:u2u"

    # bind=instance: the container's 127.0.0.1:6000 leads to a host server; a unix socket
    # made inside belongs to the container's root
    hport = free_port()
    with host_process([sys.executable, "-c", STREAM_SERVER, str(hport), "host:"]):
        add(c, inside=proxy("tcp:127.0.0.1:6000-6001", f"tcp:127.0.0.1:{hport}",
                            bind="instance"),
            insock=proxy("unix:/tmp/in.sock", f"tcp:127.0.0.1:{hport}", bind="instance",
                         mode="0600"))
        for port in (6000, 6001):  # a range made inside: every port handed over
            out = c.exec(f"echo hi | nc 127.0.0.1 {port}", check=True, timeout=TIMEOUT)
            assert out.stdout == b"host:hi\n"
        assert c.exec(["stat", "-c", "%u %g %a %F", "/tmp/in.sock"]).stdout == \
            b"0 0 600 socket\n"
        assert not Path("/tmp/in.sock").exists() or not Path("/tmp/in.sock").is_socket()

    # proxy_protocol: the server sees the PROXY v1 line first
    serve(c, "nc -l -p 5005 > /tmp/pp", 5005)
    pport = free_port()
    add(c, pp=proxy(f"tcp:127.0.0.1:{pport}", "tcp:127.0.0.1:5005", proxy_protocol="true"))
    with socket.create_connection(("127.0.0.1", pport), timeout=TIMEOUT) as s:
        sport = s.getsockname()[1]
        s.sendall(b"payload")
    expected = f"PROXY TCP4 127.0.0.1 127.0.0.1 {sport} {pport}\r\npayload".encode()
    assert c.wait_for(lambda: c.exec(["cat", "/tmp/pp"]).stdout == expected, timeout=TIMEOUT), \
        c.exec(["cat", "/tmp/pp"]).stdout

    # removal: host unix sockets go with their devices, a stop ends every forwarder
    n = len(forwarders(root))
    assert n == 7
    remove(c, "unix2tcp", "unix2unix")
    assert not os.path.exists(lsock) and not (share.parent / "uu.sock").exists()
    assert len(forwarders(root)) == n - 2
    c.stop(force=True)
    assert wait(lambda: not forwarders(root))


def test_a_connect_path_in_the_instance_reaches_only_what_its_root_may(
        host: lxdlib.Host, share: Path) -> None:
    """``connect=unix:`` in an unprivileged instance is connected as the instance's root, not
    as host root: the container's root may point the path at any socket its mount namespace
    shows, here a host root's mode-0600 socket in a shared host directory, which it may not
    use itself. Before, the forwarder (host root) connected to it, and the server saw uid 0."""
    name = unique("pr")
    c = host.launch("busybox", name, devices={
        "share": {"type": "disk", "source": str(share), "path": "/mnt/share"}})
    base = int(c.config["volatile.idmap.base"])
    with host_process([sys.executable, "-c", PEER_SERVER, str(share / "secret.sock"), "600"]), \
            host_process([sys.executable, "-c", PEER_SERVER, str(share / "open.sock"), "666"]):
        port, oport = free_port(), free_port()
        c.exec(["ln", "-s", "/mnt/share/secret.sock", "/app.sock"], check=True)
        add(c, app=proxy(f"tcp:127.0.0.1:{port}", "unix:/app.sock"),
            open=proxy(f"tcp:127.0.0.1:{oport}", "unix:/mnt/share/open.sock"))
        assert talk(("127.0.0.1", port), b"") == b""  # refused: closed at once
        # a socket the instance's root may use is reached, as that root
        assert talk(("127.0.0.1", oport), b"") == f"uid={base}".encode()
        # security.uid is an id of the instance: one its map does not hold is refused (before,
        # shifted by the map's base, it was some other host uid, maybe another instance's)
        with pytest.raises(NetworkError, match=r"Cannot take security\.uid 1000000000"):
            add(c, far=proxy(f"tcp:127.0.0.1:{free_port()}", "unix:/mnt/share/open.sock",
                             **{"security.uid": "1000000000"}))
        assert "far" not in c.devices
        # the same after a restart (the forwarders started from the start-host hook)
        c.restart(force=True)
        assert talk(("127.0.0.1", port), b"") == b""
        assert talk(("127.0.0.1", oport), b"") == f"uid={base}".encode()
    c.stop(force=True)
    assert wait(lambda: not forwarders(host.paths.root))


# -- NAT mode ----------------------------------------------------------------------------------
@pytest.fixture
def bridge(host: lxdlib.Host) -> Iterator[str]:
    name = f"lxp{os.urandom(3).hex()}"
    host.networks.create(name, {"ipv4.address": "auto", "ipv4.nat": "false"})
    yield name
    for inst in host.instances.list():
        with contextlib.suppress(Exception):
            inst.delete(force=True)
    with contextlib.suppress(Exception):
        host.networks.delete(name)


def nat_table(host: lxdlib.Host, inst: str, dev: str) -> str:
    digest = hashlib.sha256(f"{host.paths.root}\0{inst}\0{dev}".encode()).hexdigest()[:12]
    return f"lxdlib_p_{digest}"


def nft_has(table: str) -> bool:
    r = subprocess.run(["nft", "list", "table", "inet", table], capture_output=True)
    return r.returncode == 0


def test_nat_mode(host: lxdlib.Host, bridge: str) -> None:
    gw = host.networks.get(bridge)["config"]["ipv4.address"].split("/")[0]
    static = gw.rsplit(".", 1)[0] + ".77"
    name = unique("pn")
    c = host.launch("busybox", name, devices={"eth0": {
        "type": "nic", "name": "eth0", "network": bridge, "ipv4.address": static}})
    assert c.wait_for(lambda: static in c.addresses(), timeout=20), c.addresses()
    serve(c, "nc -ll -p 80 -e cat", 80)
    serve(c, "nc -ll -p 81 -e echo hairpin", 81)
    port = free_port()
    table = nat_table(host, name, "web")
    try:
        add(c, web=proxy(f"tcp:{gw}:{port}-{port + 1}", f"tcp:{static}:80-81", nat="true"))
        assert nft_has(table)
        assert talk((gw, port), b"nat\n") == b"nat\n"
        # hairpin: the instance reaches itself through the host's listen address
        out = c.exec(f"nc {gw} {port + 1} </dev/null", timeout=TIMEOUT)
        assert out.stdout == b"hairpin\n", out
        # NAT mode sends to the instance's static address only (LXD's message); nothing kept
        before = c.devices
        with pytest.raises(InvalidConfig, match="must be one of the instance's static IPv4"):
            add(c, bad=proxy(f"tcp:{gw}:{port + 5}", "tcp:10.250.0.9:80", nat="true"))
        assert c.devices == before and not nft_has(nat_table(host, name, "bad"))
        # the table follows the container: gone at stop, back at start, gone with the device
        c.stop(force=True)
        assert wait(lambda: not nft_has(table))
        c.start()
        assert nft_has(table)
        serve(c, "nc -ll -p 80 -e cat", 80)
        assert talk((gw, port), b"again\n") == b"again\n"
        remove(c, "web")
        assert not nft_has(table)
        assert not forwarders(host.paths.root)
    finally:
        with contextlib.suppress(Exception):
            c.delete(force=True)
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)


# -- the validation matrix ---------------------------------------------------------------------
MATRIX: list[tuple[dict[str, str], str]] = [
    ({"listen": "tcp:127.0.0.1:80"}, 'option "connect": Required value'),
    ({"connect": "tcp:127.0.0.1:80"}, 'option "listen": Required value'),
    ({"listen": "tcp:localhost:80", "connect": "tcp:127.0.0.1:80"}, "Not an IP address"),
    ({"listen": "tcp:127.0.0.1:80", "connect": "tcp:localhost:4321"}, "Not an IP address"),
    ({"listen": "sctp:127.0.0.1:80", "connect": "tcp:127.0.0.1:80"}, "Unknown protocol"),
    ({"listen": "tcp:127.0.0.1:80-82", "connect": "tcp:127.0.0.1:80-81"},
     "Mismatch between listen port(s) and connect port(s) count"),
    ({"listen": "unix:/tmp/s", "connect": "tcp:127.0.0.1:80-81"},
     "Mismatch between listen port(s) and connect port(s) count"),
    ({"listen": "tcp:127.0.0.1:80", "connect": "udp:127.0.0.1:80", "proxy_protocol": "true"},
     "The PROXY header can only be sent to tcp servers in non-nat mode"),
    ({"listen": "tcp:10.0.0.1:80", "connect": "tcp:10.0.0.2:80", "nat": "true",
      "proxy_protocol": "true"},
     "The PROXY header can only be sent to tcp servers in non-nat mode"),
    ({"listen": "tcp:127.0.0.1:80", "connect": "unix:/tmp/s", "uid": "1000"},
     "Only proxy devices for non-abstract unix sockets can carry uid, gid, or mode"),
    ({"listen": "unix:@abstract", "connect": "tcp:127.0.0.1:80", "mode": "0600"},
     "Only proxy devices for non-abstract unix sockets can carry uid, gid, or mode"),
    ({"listen": "tcp:0.0.0.0:80", "connect": "tcp:10.0.0.2:80", "nat": "true"},
     'Cannot listen on wildcard address "0.0.0.0" when in nat mode'),
    ({"listen": "tcp:10.0.0.1:80", "connect": "tcp:[fd00::2]:80", "nat": "true"},
     "Cannot mix IP versions between listen and connect in nat mode"),
    ({"listen": "tcp:10.0.0.1:80", "connect": "udp:10.0.0.2:80", "nat": "true"},
     "Proxying tcp <-> udp is not supported when using NAT"),
    ({"listen": "unix:/tmp/s", "connect": "tcp:10.0.0.2:80", "nat": "true"},
     "Proxying unix <-> tcp is not supported when using NAT"),
    ({"listen": "tcp:10.0.0.1:80", "connect": "tcp:10.0.0.2:80", "nat": "true",
      "bind": "instance"}, "Only host-bound proxies can use NAT"),
    ({"listen": "udp:127.0.0.1:53", "connect": "tcp:127.0.0.1:53"},
     "Proxying from udp to non-udp protocol is not supported"),
    ({"listen": "tcp:127.0.0.1:80", "connect": "tcp:127.0.0.1:80", "bind": "sideways"},
     'Must be "host" or "instance"'),
    ({"listen": "tcp:127.0.0.1:80", "connect": "tcp:127.0.0.1:80", "mode": "999"},
     "octal file mode"),
    ({"listen": "tcp:127.0.0.1:80", "connect": "tcp:127.0.0.1:80", "security.uid": "x"},
     "UNIX ID"),
    ({"listen": "tcp:127.0.0.1:80", "connect": "tcp:127.0.0.1:80", "nat": "maybe"},
     "boolean"),
    ({"listen": "tcp:127.0.0.1:80", "connect": "tcp:127.0.0.1:80", "speed": "fast"},
     "Invalid device option 'speed'"),
    ({"listen": "tcp:127.0.0.1:90-80", "connect": "tcp:127.0.0.1:80"},
     "End port should be higher than start port"),
]


def test_validation_matrix(host: lxdlib.Host) -> None:
    name = unique("pv")
    c = host.create("busybox", name)
    record = host.paths.instance_record(name).read_bytes()
    for dev, message in MATRIX:
        with pytest.raises(InvalidConfig) as e:
            c.update(devices={**c.devices, "p": {"type": "proxy", **dev}})
        assert message in str(e.value), (dev, str(e.value))
        assert "'p'" in str(e.value)
        assert host.paths.instance_record(name).read_bytes() == record
    # the allowed combinations pass: tcp → udp, unix → udp, unix with owner and mode
    for dev in ({"listen": "tcp:127.0.0.1:80", "connect": "udp:127.0.0.1:53"},
                {"listen": "unix:/run/x.sock", "connect": "udp:127.0.0.1:53"},
                {"listen": "unix:/run/x.sock", "connect": "tcp:127.0.0.1:80", "uid": "1",
                 "gid": "2", "mode": "0600"},
                {"listen": "tcp:[::1]:80,81", "connect": "tcp:[::1]:80"}):
        c.update(devices={**c.devices, "p": {"type": "proxy", **dev}})
        assert c.devices["p"]["listen"] == dev["listen"]


# -- the forwarder alone, against a sleeper standing in for an instance's init -----------------
@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[Any]]:
    p = subprocess.Popen(["sleep", "300"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def start_forwarder(root: Path, init_pid: int, listen: str, connect: str, *extra: str,
                    log: Path | None = None) -> int:
    """Start one as devices/proxy.py does; return its pid once it reported ready."""
    r, w = os.pipe()
    try:
        with open(log or os.devnull, "ab") as err:
            p = subprocess.Popen([sys.executable, "-m", "lxdlib.forwarder", "--root",
                                  str(root), "--instance", "x", "--device", "d", "--init-pid",
                                  str(init_pid), "--listen", listen, "--connect", connect,
                                  "--pidfile", str(root / "fwd.pid"), "--status-fd", str(w),
                                  *extra], pass_fds=(w,), stderr=err)
        os.close(w)
        w = -1
        p.wait(TIMEOUT)
        with os.fdopen(r, "rb", closefd=False) as f:
            assert f.readline() == b"ready\n"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    return int((root / "fwd.pid").read_text())



def end_with_init(sleeper: subprocess.Popen[Any], pids: list[int], root: Path) -> bool:
    """End the stand-in init and whether the forwarders ``pids`` ended with it; any still
    running as this root's forwarders is killed either way (only those: an ended one's pid
    may already be another process's)."""
    sleeper.kill()
    sleeper.wait()
    ended = wait(lambda: not set(pids) & set(forwarders(root)))
    for p in set(pids) & set(forwarders(root)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return ended

def test_forwarder_relay_and_init_watch(root: Path, sleeper: subprocess.Popen[Any]) -> None:
    """Bulk data arrives intact both ways (splice path, half-close kept), many connections at
    once, a refused target closes the client, UDP sessions per client, tcp → udp, and the
    forwarders end with the process they watch."""
    port, lport, uport, ulport, tuport = (free_port() for _ in range(5))
    pids = []
    try:
        with host_process([sys.executable, "-c", STREAM_SERVER, str(port), "echo:"]):
            pids.append(start_forwarder(root, sleeper.pid, f"tcp:127.0.0.1:{lport}",
                                        f"tcp:127.0.0.1:{port}"))
            blob = os.urandom(24 << 20)
            assert talk(("127.0.0.1", lport), blob) == b"echo:" + blob
            socks = [socket.create_connection(("127.0.0.1", lport), timeout=TIMEOUT)
                     for _ in range(20)]
            for i, s in enumerate(socks):
                s.sendall(f"conn{i}".encode())
                s.shutdown(socket.SHUT_WR)
            for i, s in enumerate(socks):
                got = b""
                while chunk := s.recv(4096):
                    got += chunk
                s.close()
                assert got == f"echo:conn{i}".encode()
        assert talk(("127.0.0.1", lport), b"") == b""  # the server is gone: closed at once

        with host_process([sys.executable, "-c", UDP_ECHO, str(uport)]):
            pids.append(start_forwarder(root, sleeper.pid, f"udp:127.0.0.1:{ulport}",
                                        f"udp:127.0.0.1:{uport}"))
            pids.append(start_forwarder(root, sleeper.pid, f"tcp:127.0.0.1:{tuport}",
                                        f"udp:127.0.0.1:{uport}"))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                other.settimeout(TIMEOUT)
                other.sendto(b"b", ("127.0.0.1", ulport))
                assert udp_talk(ulport, b"a") == b"udp:a"
                assert other.recv(100) == b"udp:b"
            with socket.create_connection(("127.0.0.1", tuport), timeout=TIMEOUT) as s:
                s.sendall(b"dgram")
                assert s.recv(100) == b"udp:dgram"
        assert len(pids) == 3 and all(p in forwarders(root) for p in pids)
    finally:
        assert end_with_init(sleeper, pids, root)
    assert not (root / "fwd.pid").exists()
    assert not p_in_use(lport) and not p_in_use(tuport)


UDP_SQUAT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError as e:
    print(e.strerror)
    sys.exit()
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", int(sys.argv[1])))
s.settimeout(2)
print("got", s.recv(100))
"""


def test_a_udp_listen_port_is_the_forwarders_alone(root: Path,
                                                   sleeper: subprocess.Popen[Any]) -> None:
    """A UDP listen socket takes its port alone, as a TCP one does: a second device on the
    same port fails, and a host user cannot bind the same port (more specifically, or
    anew) and take the datagrams sent to the instance. Before, the forwarder set
    SO_REUSEADDR on UDP sockets too, which lets any later socket that sets it share the port."""
    port, target = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    pids = [start_forwarder(root, sleeper.pid, f"udp:0.0.0.0:{port}",
                            f"udp:127.0.0.1:{target}")]
    try:
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              sys.executable, "-c", UDP_SQUAT, str(port)],
                             capture_output=True, text=True, timeout=TIMEOUT)
        assert out.stdout.strip() == "Address already in use", out
        r, w = os.pipe()
        try:
            p = subprocess.Popen([sys.executable, "-m", "lxdlib.forwarder", "--root", str(root),
                                  "--instance", "x", "--device", "e", "--init-pid",
                                  str(sleeper.pid), "--listen", f"udp:127.0.0.1:{port}",
                                  "--connect", f"udp:127.0.0.1:{target}", "--pidfile",
                                  str(root / "second.pid"), "--status-fd", str(w)],
                                 pass_fds=(w,), stderr=subprocess.DEVNULL)
            os.close(w)
            w = -1
            p.wait(TIMEOUT)
            with os.fdopen(r, "rb", closefd=False) as f:
                line = f.readline()
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
        if line == b"ready\n":
            pids.append(int((root / "second.pid").read_text()))
        assert line.startswith(b"error Failed listening on 127.0.0.1:") and \
            b"Address already in use" in line, line
    finally:
        assert end_with_init(sleeper, pids, root)


def test_clients_cannot_fill_the_log(root: Path, sleeper: subprocess.Popen[Any]) -> None:
    """Each connection whose target refuses logs a line; a client that connects in a loop
    (with ``bind=instance``, any user of the container) wrote the host file at some
    5000 lines a second for as long as it liked. Now a burst is logged, then a count."""
    port, closed = free_port(), free_port()
    log = root / "fwd.log"
    pids = [start_forwarder(root, sleeper.pid, f"tcp:127.0.0.1:{port}",
                            f"tcp:127.0.0.1:{closed}", log=log)]
    try:
        for _ in range(2000):
            assert talk(("127.0.0.1", port), b"") == b""
        lines = log.read_text().splitlines()
        assert sum("Connection refused" in line for line in lines) >= 1
        assert len(lines) < 40, len(lines)
    finally:
        assert end_with_init(sleeper, pids, root)


def test_an_instance_side_range_listens_on_every_port(root: Path,
                                                       sleeper: subprocess.Popen[Any]) -> None:
    """``bind=instance`` with several listen ports: the child that makes them inside hands
    them all over. Before, each socket but the last was closed as the child made the next
    (its object dropped), and the hand-over failed on the closed descriptor ("Bad file
    descriptor") for any range; past 253 ports one message cannot carry them all. The
    sleeper's namespaces are the host's, so the ports are reached from here."""
    n = 300
    base = free_port()
    while base + n > 65535 or any(p_in_use(base + i) for i in range(n)):
        base = free_port()
    pids = []
    try:
        sport = free_port()
        with host_process([sys.executable, "-c", STREAM_SERVER, str(sport), "in:"]):
            pids.append(start_forwarder(root, sleeper.pid, f"tcp:127.0.0.1:{base}-{base + n - 1}",
                                        f"tcp:127.0.0.1:{sport}", "--bind", "instance"))
            for port in (base, base + 1, base + n - 1):
                assert talk(("127.0.0.1", port), b"x") == b"in:x"
    finally:
        assert end_with_init(sleeper, pids, root)


def test_udp_clients_cannot_use_up_the_forwarders_descriptors(
        root: Path, sleeper: subprocess.Popen[Any]) -> None:
    """Each UDP client address gets a socket towards the target; the source of a datagram is
    whatever its sender wrote, so clients could make the forwarder open one per address until
    it had no descriptor left. Past ``UDP_SESSIONS`` the least recently heard session goes:
    here 4200 clients leave it with its descriptors below that, and the newest is answered."""
    from lxdlib.forwarder import UDP_SESSIONS
    uport, ulport = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    pids = []
    clients: list[socket.socket] = []
    try:
        with host_process([sys.executable, "-c", UDP_ECHO, str(uport)]):
            pids.append(start_forwarder(root, sleeper.pid, f"udp:127.0.0.1:{ulport}",
                                        f"udp:127.0.0.1:{uport}"))
            for _ in range(UDP_SESSIONS + 104):  # one at a time: a burst would be dropped
                c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                c.settimeout(1.0)
                clients.append(c)
                for _ in range(5):
                    c.sendto(b"x", ("127.0.0.1", ulport))
                    with contextlib.suppress(TimeoutError):
                        assert c.recv(100) == b"udp:x"
                        break
                else:
                    raise AssertionError(f"client {len(clients)} got no answer")
            assert len(os.listdir(f"/proc/{pids[0]}/fd")) < UDP_SESSIONS + 50
    finally:
        for c in clients:
            c.close()
        assert end_with_init(sleeper, pids, root)
