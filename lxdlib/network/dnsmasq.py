"""One dnsmasq per managed network: DHCP (v4, and RA/stateless DHCPv6) and the network's DNS zone.

dnsmasq runs as a daemon that outlives the Python process, like the containers do; lxdlib finds it
again through its pid file. Before signalling that pid, lxdlib checks ``/proc/<pid>/cmdline``
names dnsmasq *and this network's pid file*, so a recycled pid is never hit. The argv is fully
explicit (``--conf-file`` always points at the network's own ``raw.dnsmasq`` file, so
``/etc/dnsmasq.conf`` is never read), which also lets `is_current` tell whether the running
daemon matches the record by comparing command lines.

dnsmasq drops root after binding its sockets. It reads the static hosts directory as that
unprivileged user, so it only drops privileges when that user can reach it (every parent
directory searchable by others); otherwise (e.g. a root under a 0700 temporary directory) it
keeps root.

Static hosts live in a directory (``--dhcp-hostsdir``), one small file per owner (see
`lxdlib.network.dhcphosts`), so registering one instance never rewrites a file that lists them
all. What dnsmasq 2.90 does with that directory, as its manual says and as checked against the
running daemon: a new or changed file is read by itself (inotify), no SIGHUP needed; but records
are only ever *added* that way — a deleted file's records, and the old records of a changed
file, stay until a SIGHUP (or a restart) makes it re-read the whole directory. Files whose name
starts with ``.`` are skipped, so an atomic write's temporary file is never read half-written.
Hence `reread_hosts` (SIGHUP) after a change or a removal (a removed entry that pins only a
name: later, in a batch, see `lxdlib.network.dhcphosts`), and nothing after a new file. Each
new file and each re-read costs the daemon a pass matching every lease against every entry:
~48 ms (a new file) and ~90 ms (a re-read) of its CPU with 1,000 instances on the network.

Files in ``<root>/run/networks/<name>/``: ``dnsmasq.pid``, ``dnsmasq.leases``, ``hosts.d/``,
``dnsmasq.raw``, ``dnsmasq.log``.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .. import pidfd
from ..errors import TYPE_CHECKING, NetworkError, ToolMissing
from ..logs import get_logger
from ..state import atomic_write
from ..values import Value, assign

if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)

PIDFILE = "dnsmasq.pid"
LEASES = "dnsmasq.leases"
HOSTS_DIR = "hosts.d"
LEGACY_HOSTS = "dnsmasq.hosts"  # older roots: the single hosts file (see the network manager)
RAW = "dnsmasq.raw"
LOG = "dnsmasq.log"

IPv4Range = tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]


class DnsmasqConfig(Value, frozen=True):
    """Everything that goes on dnsmasq's command line for one network."""

    _fields = ("bridge", "run_dir", "ipv4", "ipv4_dhcp", "ipv4_ranges", "ipv4_expiry", "ipv6",
               "ipv6_dhcp", "mtu", "dns_domain", "dns_mode", "user", "group")
    __slots__ = _fields

    bridge: str
    run_dir: Path
    ipv4: ipaddress.IPv4Interface | None
    ipv4_dhcp: bool
    ipv4_ranges: tuple[IPv4Range, ...]
    ipv4_expiry: str
    ipv6: ipaddress.IPv6Interface | None
    ipv6_dhcp: bool
    mtu: int | None
    dns_domain: str
    dns_mode: str
    user: str
    group: str

    def __init__(self, bridge: str, run_dir: Path, ipv4: ipaddress.IPv4Interface | None = None,
                 ipv4_dhcp: bool = True, ipv4_ranges: tuple[IPv4Range, ...] = (),
                 ipv4_expiry: str = "1h", ipv6: ipaddress.IPv6Interface | None = None,
                 ipv6_dhcp: bool = True, mtu: int | None = None, dns_domain: str = "lxd",
                 dns_mode: str = "managed", user: str = "root", group: str = "root") -> None:
        assign(self, "bridge", bridge)
        assign(self, "run_dir", run_dir)
        assign(self, "ipv4", ipv4)
        assign(self, "ipv4_dhcp", ipv4_dhcp)
        assign(self, "ipv4_ranges", ipv4_ranges)
        assign(self, "ipv4_expiry", ipv4_expiry)
        assign(self, "ipv6", ipv6)
        assign(self, "ipv6_dhcp", ipv6_dhcp)
        assign(self, "mtu", mtu)
        assign(self, "dns_domain", dns_domain)
        assign(self, "dns_mode", dns_mode)
        assign(self, "user", user)
        assign(self, "group", group)


def needed(cfg: DnsmasqConfig) -> bool:
    """dnsmasq is only started when it has something to serve on an address of the bridge."""
    serves_v4 = cfg.ipv4 is not None and (cfg.ipv4_dhcp or cfg.dns_mode != "none")
    return serves_v4 or cfg.ipv6 is not None


def lease_max(cfg: DnsmasqConfig) -> int | None:
    """How many DHCPv4 leases dnsmasq may hold: every host address of the subnet.

    dnsmasq's own default (1000) would refuse the 1001st client of a large subnet ("no leases
    left"), whatever its ranges. The subnet, not the ranges, is the bound because a static
    ``ipv4.address`` may lie outside the ranges and still needs a lease. None when no DHCPv4
    is served (IPv6 here is stateless: no leases).
    """
    if cfg.ipv4 is None or not cfg.ipv4_dhcp:
        return None
    return max(1, cfg.ipv4.network.num_addresses - 2)


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
        f"--dhcp-hostsdir={run / HOSTS_DIR}",
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
            argv.append(f"--dhcp-lease-max={lease_max(cfg)}")
            # one lease per MAC: dnsmasq would otherwise give a client a new lease for every
            # client identifier it sends, so a container held to its own MAC by its nic filter
            # could still take every free address (see `filtering.dhcp_client_rules`)
            argv.append("--dhcp-ignore-clid")
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
    # the user's own options, read by dnsmasq as root before it drops its privileges (and
    # not re-read on SIGHUP): host root's alone, as every record of the root
    atomic_write(run / RAW, (raw + ("\n" if raw and not raw.endswith("\n") else "")).encode(),
                 mode=0o600)
    # who leased which address: opened by dnsmasq as root, before it drops its privileges,
    # and written through that descriptor; made (or, by an older version, closed) here so
    # that it is host root's alone
    fd = os.open(run / LEASES, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    hosts = run / HOSTS_DIR
    hosts.mkdir(mode=0o755, exist_ok=True)
    os.chmod(hosts, 0o755)  # the unprivileged dnsmasq lists it (on start and SIGHUP)
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
    """Stop this network's dnsmasq (verified by pid file and command line); idempotent.

    Returns once the process has finished exiting, sockets closed, so a new dnsmasq can bind
    the same addresses at once. The wait is on a pidfd, which becomes readable only then: an
    empty ``/proc/<pid>/cmdline`` comes earlier (the memory goes first), and closing dnsmasq's
    inotify instance (it watches the hosts directory) can hold its other descriptors open for a
    while after that. The pidfd also keeps the signals from reaching a recycled pid.
    """
    pid = running_pid(run_dir)
    if pid is not None:
        with pidfd.held(pid) as fd:
            if fd is not None and running_pid(run_dir) == pid:  # pinned: still our dnsmasq
                _end(fd, pid, run_dir, timeout)
        log.debug("dnsmasq (pid %d, %s) stopped", pid, run_dir)
    with contextlib.suppress(FileNotFoundError):
        (run_dir / PIDFILE).unlink()


def _end(fd: int, pid: int, run_dir: Path, timeout: float) -> None:
    pidfd.send(fd, signal.SIGTERM)
    if pidfd.exited(fd, timeout):
        return
    log.warning("dnsmasq (pid %d, %s) ignored SIGTERM for %.0fs: killing it", pid, run_dir,
                timeout)
    pidfd.send(fd, signal.SIGKILL)
    if not pidfd.exited(fd, timeout):
        raise NetworkError(f"dnsmasq (pid {pid}) did not exit")


def reread_hosts(run_dir: Path) -> None:
    """Make a running dnsmasq forget its static hosts and read the directory again (SIGHUP).

    Needed after a host file was removed or changed: dnsmasq only adds records on its own (see
    the module docstring). It re-reads every file then, which costs the daemon, not the caller.
    """
    pid = running_pid(run_dir)
    if pid is None:
        return
    with pidfd.held(pid) as fd:
        # pinned, and checked again: still this network's dnsmasq, not a process that took
        # the pid after it ended (SIGHUP ends most programs)
        if fd is not None and running_pid(run_dir) == pid:
            pidfd.send(fd, signal.SIGHUP)
            log.debug("dnsmasq (pid %d) told to re-read its hosts", pid)


def release(bridge: str, leases: dict[str, str]) -> None:
    """Free each lease (``hwaddr -> IPv4 address``) in the running dnsmasq of ``bridge`` now.

    ``dhcp_release`` (Debian package dnsmasq-utils) sends dnsmasq a DHCPRELEASE on the bridge
    as if the client had sent it; dnsmasq drops the lease and rewrites its lease file, so the
    address is free for the next client at once instead of when the lease expires. dnsmasq only
    accepts it for the address the lease really holds, hence the address, not just the MAC.
    """
    exe = shutil.which("dhcp_release")
    if exe is None:
        raise ToolMissing("dhcp_release (Debian package dnsmasq-utils) is needed to release "
                          "DHCP leases")
    for hwaddr, address in sorted(leases.items()):
        proc = subprocess.run([exe, bridge, address, hwaddr], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=30, check=False)
        if proc.returncode != 0:
            log.warning("dhcp_release %s %s %s failed: %s", bridge, address, hwaddr,
                        proc.stderr.decode(errors="replace").strip())
        else:
            log.debug("DHCP lease of %s on %s (%s) released", hwaddr, bridge, address)


# -- file formats ----------------------------------------------------------------------------------
def host_line(hwaddr: str, ipv4: str | None, hostname: str | None) -> str | None:
    """The ``--dhcp-hostsdir`` file line (``mac[,ipv4][,hostname]``) of one static host; None
    when there is nothing to pin (neither an address nor a name)."""
    fields = [hwaddr.lower()]
    if ipv4:
        fields.append(ipv4)
    if hostname:
        fields.append(hostname)
    return ",".join(fields) if len(fields) > 1 else None


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


class LeaseFile:
    """One read of dnsmasq's lease file, searched as bytes for single MACs or addresses.

    Used where one instance is added or deleted: the file holds a line per client of this one
    network, and a network's clients are bounded by its bridge (1,023 ports, the kernel's
    limit: more instances mean more networks, each with its own file), so its size stops
    growing there. Finding one MAC in it is one read and one C-level byte search: 0.062 ms
    with 1,000 leases (70 KB), measured, far below the ``dhcp_release`` that follows.

    Tried instead and measured worse: an index kept by dnsmasq itself (``--dhcp-script``
    writing a file per lease). Its lookup, with the check that the running dnsmasq keeps it,
    took 0.102 ms at 1,000, and every lease given cost dnsmasq a fork and exec of the script
    (~1 ms of CPU), on the CPUs a fill of 1,000 launches already saturates.
    """

    def __init__(self, data: bytes) -> None:
        self.raw = data
        self.data = data.lower()  # dnsmasq writes MACs in lower case; be sure of it

    @classmethod
    def read(cls, run_dir: Path) -> LeaseFile:
        try:
            return cls((run_dir / LEASES).read_bytes())
        except FileNotFoundError:
            return cls(b"")

    def _lines_with(self, field: str) -> Iterator[list[str]]:
        """The fields of the lines that hold ``field`` as a whole field (not at the start)."""
        needle = f" {field.lower()} ".encode()
        pos = self.data.find(needle)
        while pos != -1:
            start = self.data.rfind(b"\n", 0, pos) + 1
            end = self.data.find(b"\n", pos)
            line = self.data[start:] if end == -1 else self.data[start:end]
            yield line.decode(errors="replace").split()
            pos = self.data.find(needle, pos + 1)

    def address_of(self, hwaddr: str) -> str | None:
        """The IPv4 address ``hwaddr`` holds a lease on, if any."""
        for fields in self._lines_with(hwaddr):
            if len(fields) >= 4 and fields[0].isdigit() and fields[1] == hwaddr.lower():
                with contextlib.suppress(ValueError):
                    return str(ipaddress.IPv4Address(fields[2]))
        return None

    def holds(self, address: str) -> bool:
        """Whether some client holds a lease on ``address``."""
        return any(len(fields) >= 4 and fields[0].isdigit() and fields[2] == address
                   for fields in self._lines_with(address))

    def addresses(self) -> set[str]:
        """Every address some client holds a lease on: one pass over the file, for a search
        that would otherwise ask `holds` of many addresses (a range a container filled)."""
        held: set[str] = set()
        for line in self.data.split(b"\n"):
            fields = line.split()
            if len(fields) >= 4 and fields[0].isdigit():
                held.add(fields[2].decode(errors="replace"))
        return held

    def without(self, hwaddrs: set[str]) -> bytes | None:
        """The file without the IPv4 leases of ``hwaddrs`` (None: none of them had one)."""
        lines = self.raw.split(b"\n")
        macs = {m.lower().encode() for m in hwaddrs}
        keep = [ln for ln in lines if len(ln.split()) < 2 or ln.split()[1].lower() not in macs]
        return None if len(keep) == len(lines) else b"\n".join(keep)
