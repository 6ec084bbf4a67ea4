"""Helpers for the managed-network integration tests: unique names, a free test subnet, a client
network namespace wired to the bridge, and a cleanup that removes everything a test made (bridge,
nft table, dnsmasq by pid, namespace, veth) even when the test failed.

Traffic only ever goes between the test's own namespace and the test's own bridge.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import secrets
import signal
import string
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxdlib.network import NetworkManager
from lxdlib.state import Paths

BUSYBOX = "/bin/busybox"

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc event hook: put the leased address on the interface and note it for the test.
case "$1" in
    deconfig)
        ip addr flush dev "$interface"
        ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/$mask" dev "$interface"
        echo "$ip" > "$OUT"
        ;;
esac
exit 0
"""


def unique(prefix: str, n: int = 6) -> str:
    return prefix + "".join(secrets.choice(string.ascii_lowercase + string.digits)
                            for _ in range(n))


def run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check,
                          timeout=timeout)


def host_subnets() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Subnets in use on the host, read with iproute2 (independent of the code under test)."""
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for link in json.loads(run("ip", "-j", "addr").stdout):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network)
    for fam in ("-4", "-6"):
        for r in json.loads(run("ip", "-j", fam, "route", "show", "table", "all").stdout):
            dst = r.get("dst", "default")
            if dst == "default":
                continue
            if "/" not in dst:
                dst += "/32" if fam == "-4" else "/128"
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.ip_network(dst, strict=False))
    return nets


def free_subnet(prefix: int = 24) -> ipaddress.IPv4Interface:
    """A random 10.a.b.1/<prefix> that overlaps nothing on the host (picked here, not by the
    code under test)."""
    used = [n for n in host_subnets() if n.version == 4]
    for _ in range(1000):
        net = ipaddress.IPv4Network(((10 << 24) | random.randrange(1 << (prefix - 8))
                                     << (32 - prefix), prefix))
        if not any(net.overlaps(u) for u in used):
            return ipaddress.IPv4Interface((int(net.network_address) + 1, prefix))
    raise RuntimeError(f"no free /{prefix} test subnet")


def pid_alive(pid: int) -> bool:
    """True for a live process (a zombie waiting for its parent to reap it counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return not pid_alive(pid)


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def nft_table_exists(name: str) -> bool:
    return run("nft", "list", "table", "inet", name, check=False).returncode == 0


def dnsmasq_pid(paths: Paths, network: str) -> int | None:
    pidfile = paths.run / "networks" / network / "dnsmasq.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def listening(pid: int) -> set[str]:
    """``addr:port/proto`` sockets that ``pid`` listens on, from ``ss``."""
    found: set[str] = set()
    for proto, flag in (("udp", "-lunpH"), ("tcp", "-ltnpH")):
        for line in run("ss", flag).stdout.splitlines():
            if f"pid={pid}," in line:
                found.add(f"{line.split()[3]}/{proto}")
    return found


class NetEnv:
    """Everything one test creates, so `cleanup` can remove it whatever happened."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = Paths.at(root)
        self.manager = NetworkManager(self.paths)
        self.bridges: list[str] = []
        self.namespaces: list[str] = []
        self.veths: list[str] = []
        self.foreign: list[str] = []  # links a test makes itself to play "not ours"
        self.ip_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()

    def bridge_name(self) -> str:
        name = unique("lxt")
        self.bridges.append(name)
        return name

    def netns(self) -> str:
        name = unique("lxtns")
        self.namespaces.append(name)
        run("ip", "netns", "add", name)
        run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        return name

    def plug(self, bridge: str, mac: str | None = None) -> tuple[str, str]:
        """A veth pair: the host end in ``bridge``, the other end (``eth0``) in a new netns."""
        ns = self.netns()
        host_end = unique("lxv")
        self.veths.append(host_end)
        run("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "link", "set", host_end, "master", bridge, "up")
        if mac is not None:
            run("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "address", mac)
        run("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
        return ns, host_end

    def dhcp(self, ns: str, timeout: float = 60) -> str | None:
        """Run busybox udhcpc once in ``ns``; the leased address, or None."""
        script = self.root / f"udhcpc-{ns}.sh"
        out = self.root / f"udhcpc-{ns}.out"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o700)
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        env = {**os.environ, "OUT": str(out)}
        subprocess.run(["ip", "netns", "exec", ns, BUSYBOX, "udhcpc", "-i", "eth0", "-n", "-q",
                        "-f", "-t", "10", "-T", "1", "-s", str(script)],
                       capture_output=True, text=True, env=env, timeout=timeout, check=False)
        return out.read_text().strip() if out.exists() else None

    def in_ns(self, ns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", ns, *argv, check=False, timeout=timeout)

    def cleanup(self) -> list[str]:
        """Delete what the test left (gracefully first), then remove by force anything still
        there; returns what had to be removed by force."""
        for name in self.bridges:
            with contextlib.suppress(Exception):
                self.manager.delete(name)
        errors: list[str] = []
        for ns in self.namespaces:
            run("ip", "netns", "del", ns, check=False)
        for link in self.foreign:
            if link_exists(link):
                run("ip", "link", "del", link, check=False)
        for veth in self.veths:
            if link_exists(veth):
                run("ip", "link", "del", veth, check=False)
        base = self.paths.run / "networks"
        for name in self.bridges:
            pid = dnsmasq_pid(self.paths, name)
            if pid is not None:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if str(self.root).encode() in cmd:  # ours: its pid file lies under our root
                    errors.append(f"dnsmasq {pid} of {name} was still running")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    wait_dead(pid)
            if nft_table_exists(f"lxdlib_{name}"):
                errors.append(f"nft table lxdlib_{name} was left")
                run("nft", "delete", "table", "inet", f"lxdlib_{name}", check=False)
            if link_exists(name):
                alias = Path(f"/sys/class/net/{name}/ifalias").read_text().strip()
                if alias.startswith("lxdlib:") or alias == "":
                    errors.append(f"bridge {name} was left")
                    run("ip", "link", "del", name, check=False)
        for leftover in base.glob("*/dnsmasq.pid") if base.is_dir() else []:
            with contextlib.suppress(FileNotFoundError, ValueError):
                pid = int(leftover.read_text().strip())
                if pid_alive(pid) and str(self.root).encode() in \
                        Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
        current = Path("/proc/sys/net/ipv4/ip_forward").read_text()
        if current != self.ip_forward:
            Path("/proc/sys/net/ipv4/ip_forward").write_text(self.ip_forward)
        return errors


def netenv_for(tmp_path: Path) -> Iterator[NetEnv]:
    """Body of the ``netenv`` fixture: a NetEnv on a fresh root; everything it made is removed
    afterwards, and a resource that survived ``NetworkManager.delete`` fails the test."""
    env = NetEnv(tmp_path / "root")
    try:
        yield env
    finally:
        leaks = env.cleanup()
    if leaks:
        pytest.fail("left behind after delete: " + "; ".join(leaks))
