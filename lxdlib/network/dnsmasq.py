"""One dnsmasq per managed network: DHCP (v4, and RA/stateless DHCPv6) and the network's DNS zone.

dnsmasq runs as a daemon that outlives the Python process, like the containers do; lxdlib finds it
again through its pid file. Before signalling that pid, lxdlib checks ``/proc/<pid>/cmdline``
names dnsmasq *and this network's pid file*, so a recycled pid is never hit. The argv is fully
explicit (``--conf-file`` always points at the network's own ``raw.dnsmasq`` file, so
``/etc/dnsmasq.conf`` is never read), which also lets `is_current` tell whether the running
daemon matches the record by comparing command lines.

dnsmasq drops root after binding its sockets. It re-reads the static hosts file on SIGHUP as that
unprivileged user, so it only drops privileges when that user can reach the file (every parent
directory searchable by others); otherwise (e.g. a root under a 0700 temporary directory) it
keeps root.

Files in ``<root>/run/networks/<name>/``: ``dnsmasq.pid``, ``dnsmasq.leases``, ``dnsmasq.hosts``
(rendered from ``dhcp-hosts.yaml``), ``dnsmasq.raw``, ``dnsmasq.log``.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

from ..errors import NetworkError, ToolMissing
from ..state import atomic_write

log = logging.getLogger(__name__)

PIDFILE = "dnsmasq.pid"
LEASES = "dnsmasq.leases"
HOSTS = "dnsmasq.hosts"
RAW = "dnsmasq.raw"
LOG = "dnsmasq.log"

IPv4Range = tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]


@attrs.frozen
class DnsmasqConfig:
    """Everything that goes on dnsmasq's command line for one network."""

    bridge: str
    run_dir: Path
    ipv4: ipaddress.IPv4Interface | None = None
    ipv4_dhcp: bool = True
    ipv4_ranges: tuple[IPv4Range, ...] = ()
    ipv4_expiry: str = "1h"
    ipv6: ipaddress.IPv6Interface | None = None
    ipv6_dhcp: bool = True
    mtu: int | None = None
    dns_domain: str = "lxd"
    dns_mode: str = "managed"
    user: str = "root"
    group: str = "root"


def needed(cfg: DnsmasqConfig) -> bool:
    """dnsmasq is only started when it has something to serve on an address of the bridge."""
    serves_v4 = cfg.ipv4 is not None and (cfg.ipv4_dhcp or cfg.dns_mode != "none")
    return serves_v4 or cfg.ipv6 is not None


def build_argv(cfg: DnsmasqConfig, exe: str = "dnsmasq") -> list[str]:
    run = cfg.run_dir
    argv = [
        exe,
        f"--conf-file={run / RAW}",
        "--strict-order",
        "--bind-interfaces",
        "--except-interface=lo",
        "--no-ping",
        f"--interface={cfg.bridge}",
        "--dhcp-rapid-commit",
        "--dhcp-no-override",
        "--dhcp-authoritative",
        "--quiet-dhcp",
        "--quiet-dhcp6",
        "--quiet-ra",
        f"--pid-file={run / PIDFILE}",
        f"--dhcp-leasefile={run / LEASES}",
        f"--dhcp-hostsfile={run / HOSTS}",
        f"--log-facility={run / LOG}",
        f"--user={cfg.user}",
        f"--group={cfg.group}",
        "--no-resolv",
        "--no-hosts",
    ]
    if cfg.ipv4 is not None:
        argv.append(f"--listen-address={cfg.ipv4.ip}")
        if cfg.ipv4_dhcp:
            argv.extend(f"--dhcp-range={start},{end},{cfg.ipv4_expiry}"
                        for start, end in cfg.ipv4_ranges)
            if cfg.mtu is not None:
                argv.append(f"--dhcp-option-force=26,{cfg.mtu}")
    if cfg.ipv6 is not None:
        argv.append(f"--listen-address={cfg.ipv6.ip}")
        argv.append("--enable-ra")
        mode = "ra-stateless,ra-names" if cfg.ipv6_dhcp else "ra-only"
        argv.append(f"--dhcp-range=::,constructor:{cfg.bridge},{mode}")
    if cfg.dns_mode == "none":
        argv.append("--port=0")
    else:
        domain = cfg.dns_domain
        argv.extend([f"--domain={domain}", f"--local=/{domain}/",
                     f"--interface-name=_gateway.{domain},{cfg.bridge}"])
    return argv


def choose_user(run_dir: Path) -> tuple[str, str]:
    """The user and group dnsmasq drops to: ``dnsmasq`` (or ``nobody``) if it can read the run
    directory, else root (see the module docstring)."""
    for candidate in ("dnsmasq", "nobody"):
        try:
            entry = pwd.getpwnam(candidate)
        except KeyError:
            continue
        try:
            group = grp.getgrgid(entry.pw_gid).gr_name
        except KeyError:
            continue
        if _others_can_read(run_dir):
            return candidate, group
        break
    return "root", "root"


def _others_can_read(directory: Path) -> bool:
    """Whether any user may reach files in ``directory`` (search permission all the way)."""
    try:
        chain = [directory.absolute(), *directory.absolute().parents]
        return all(d.stat().st_mode & stat.S_IXOTH for d in chain)
    except FileNotFoundError:
        return False


# -- process control ------------------------------------------------------------------------------
def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if not raw:
        return None  # a zombie, or a kernel thread
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def running_pid(run_dir: Path) -> int | None:
    """The pid of this network's dnsmasq if it is alive, else ``None``."""
    try:
        text = (run_dir / PIDFILE).read_text().strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    cmd = _cmdline(pid)
    if cmd is None or not cmd[0].endswith("dnsmasq"):
        return None
    if f"--pid-file={run_dir / PIDFILE}" not in cmd:
        return None
    return pid


def is_current(run_dir: Path, argv: list[str]) -> bool:
    """Whether this network's dnsmasq runs, with exactly ``argv`` (ignoring the program path)."""
    pid = running_pid(run_dir)
    if pid is None:
        return False
    cmd = _cmdline(pid)
    return cmd is not None and cmd[1:] == argv[1:]


def start(cfg: DnsmasqConfig, raw: str = "") -> int:
    """Start dnsmasq for ``cfg`` (stopping an earlier one first) and return its pid.

    dnsmasq reports start-up failures (an address it cannot bind, a bad raw option) through its
    exit status before it detaches, so a zero exit means the daemon is serving.
    """
    exe = shutil.which("dnsmasq")
    if exe is None:
        raise ToolMissing("dnsmasq (Debian package dnsmasq-base) is needed for managed networks")
    stop(cfg.run_dir)
    run = cfg.run_dir
    _write(run / RAW, raw + ("\n" if raw and not raw.endswith("\n") else ""))
    if not (run / HOSTS).exists():
        _write(run / HOSTS, "")
    with contextlib.suppress(FileNotFoundError):
        (run / LOG).unlink()  # one log per daemon: restarts would otherwise grow it forever
    argv = build_argv(cfg, exe)
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=err, timeout=60, check=False)
        except subprocess.TimeoutExpired as exc:
            raise NetworkError(f"dnsmasq for {cfg.bridge} did not start within 60s") from exc
        err.seek(0)
        message = err.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise NetworkError(f"dnsmasq for {cfg.bridge} failed to start: {message}")
    pid = running_pid(run)
    if pid is None:
        raise NetworkError(f"dnsmasq for {cfg.bridge} exited right after it started: {message}")
    log.debug("dnsmasq for %s started (pid %d, user %s): %s", cfg.bridge, pid, cfg.user,
              " ".join(argv[1:]))
    return pid


def stop(run_dir: Path, timeout: float = 10.0) -> None:
    """Stop this network's dnsmasq (verified by pid file and command line); idempotent."""
    pid = running_pid(run_dir)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            log.warning("dnsmasq (pid %d, %s) ignored SIGTERM for %.0fs: killing it", pid,
                        run_dir, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not _wait_gone(pid, timeout):
                raise NetworkError(f"dnsmasq (pid {pid}) did not exit")
        log.debug("dnsmasq (pid %d, %s) stopped", pid, run_dir)
    with contextlib.suppress(FileNotFoundError):
        (run_dir / PIDFILE).unlink()


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while time.monotonic() < deadline:
        if _cmdline(pid) is None:
            return True
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return _cmdline(pid) is None


def reload_hosts(run_dir: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Rewrite the static hosts file and make a running dnsmasq re-read it (SIGHUP)."""
    _write(run_dir / HOSTS, render_hosts(entries))
    log.debug("dnsmasq hosts file %s written: %s", run_dir / HOSTS,
              ", ".join(sorted(entries)) or "no hosts")

    pid = running_pid(run_dir)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)
            log.debug("dnsmasq (pid %d) told to re-read its hosts", pid)



def _write(path: Path, text: str) -> None:
    # Readable by others: an unprivileged dnsmasq re-reads the hosts file on SIGHUP.
    atomic_write(path, text.encode(), mode=0o644)


# -- file formats ----------------------------------------------------------------------------------
def render_hosts(entries: dict[str, dict[str, Any]]) -> str:
    """``--dhcp-hostsfile`` lines (``mac[,ipv4][,hostname]``), one per entry, sorted by key."""
    lines = []
    for key in sorted(entries):
        entry = entries[key]
        fields = [str(entry["hwaddr"]).lower()]
        if entry.get("ipv4"):
            fields.append(str(entry["ipv4"]))
        if entry.get("hostname"):
            fields.append(str(entry["hostname"]))
        if len(fields) > 1:
            lines.append(",".join(fields))
    return "".join(f"{line}\n" for line in lines)


def parse_leases(text: str) -> list[dict[str, Any]]:
    """Parse dnsmasq's lease file.

    IPv4 lines are ``<expiry> <mac> <ip> <hostname|*> <client-id|*>``; a ``duid <server-duid>``
    line starts the IPv6 part, whose lines are ``<expiry> <iaid> <ip> <hostname|*> <duid|*>``.
    ``expiry`` is a Unix time (0 = never). Malformed lines are skipped: the file is written by
    dnsmasq and read while it may be rewriting it.
    """
    leases: list[dict[str, Any]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] == "duid" or not fields[0].isdigit():
            continue
        try:
            address = ipaddress.ip_address(fields[2])
        except ValueError:
            continue
        hostname = "" if fields[3] == "*" else fields[3]
        hwaddr = fields[1].lower() if address.version == 4 else ""
        leases.append({"hwaddr": hwaddr, "address": str(address), "hostname": hostname,
                       "expiry": int(fields[0])})
    return leases


def read_leases(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return parse_leases((run_dir / LEASES).read_text(errors="replace"))
    except FileNotFoundError:
        return []
