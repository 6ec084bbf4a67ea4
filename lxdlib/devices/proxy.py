"""``proxy`` devices: a forwarder process per device, or nftables DNAT rules with ``nat=true``.

There is no daemon to own the forwarders, so they follow the container through liblxc hooks:
the start-host hook starts one per device with the init pid (every start: ``lxdlib start``,
``lxc-start``, a reboot from inside), the post-stop hook stops it, and the forwarder itself exits
when the init it watches dies — so none outlives its container, whoever stopped it, even when
the device was added while the container ran and its liblxc monitor (which read the config at
start) runs no hooks. For the same case, a NAT-mode device added live gets a small watcher
process that removes its table when the init dies.
:func:`start` waits for the forwarder to say ``ready`` or why not, so a listen address in use
fails the start or the live device add at once with that reason.

Runtime files live in the instance's device dir: ``proxy.<dev>.pid`` (the forwarder's pid; its
argv names the root, the instance and the device, checked before any signal) and
``proxy.<dev>.log``. NAT mode keeps a per-device table ``inet lxdlib_p_<hash>``.

Ids: ``uid``/``gid`` of a unix listen socket are ids of the listening side (the instance's own
ids with ``bind=instance``); ``security.uid``/``security.gid`` are ids of the connecting side.
A forwarder that connects to a unix path inside the instance, or has those ids, does it as the
instance's root (or those ids) in the instance's user namespace: never as host root, whatever
the container's root pointed a connect path at. A TCP, UDP or abstract target inside checks no
ids, and stays with host root's unbounded splice pipes.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..config.devices import ProxyAddress, validate_proxy
from ..config.units import is_true
from ..errors import InvalidConfig, NetworkError
from ..logs import get_logger
from ..network import nat
from ..unixsock import refuses_connections, via_dir
from . import BaseDriver, DeviceContext, Rendered

log = get_logger(__name__)

READY_TIMEOUT = 15.0  # seconds a forwarder may take to report
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL, and after SIGKILL
LOG_MAX = 1 << 20  # the log is started afresh past this size
FORWARDER = "lxdlib.forwarder"
NAT_NICTYPES = ("bridged", "routed")


def side_of(dev: Mapping[str, str]) -> str:
    """Which side listens: ``host`` or ``instance`` (LXD's legacy ``guest``/``container``)."""
    return "instance" if dev.get("bind", "") in ("instance", "guest", "container") else "host"


def pidfile(ctx: DeviceContext, name: str) -> Path:
    return ctx.device_dir / f"proxy.{name}.pid"


def logfile(ctx: DeviceContext, name: str) -> Path:
    return ctx.device_dir / f"proxy.{name}.log"


def nat_table_key(root: Path | str, instance: str, device: str) -> str:
    """The per-device NAT table's name after ``lxdlib_`` (root, instance and device hashed: the
    kernel's tables are shared by every root on the host)."""
    digest = hashlib.sha256(f"{root}\0{instance}\0{device}".encode()).hexdigest()
    return f"p_{digest[:12]}"


# -- forwarder argv -------------------------------------------------------------------------------
def forwarder_argv(ctx: DeviceContext, name: str, dev: Mapping[str, str], status_fd: int,
                   pid_path: Path) -> list[str]:
    assert ctx.pid is not None
    side = side_of(dev)
    argv = [sys.executable, "-m", FORWARDER, "--root", str(ctx.host.paths.root),
            "--instance", ctx.name, "--device", name, "--init-pid", str(ctx.pid),
            "--listen", dev["listen"], "--connect", dev["connect"], "--bind", side,
            "--mode", dev.get("mode") or "0644", "--pidfile", str(pid_path),
            "--status-fd", str(status_fd)]
    # the owner of a unix listen socket: ids of the side that listens (the instance's own ids
    # there: the forwarder creates that socket as the instance's root)
    for flag, key in (("--uid", "uid"), ("--gid", "gid")):
        if dev.get(key):
            argv += [flag, dev[key]]
    # ids of the connecting side as they are: connecting inside, the forwarder is in the
    # instance's user namespace, whose map shifts them
    for flag, key in (("--security-uid", "security.uid"), ("--security-gid", "security.gid")):
        if dev.get(key):
            argv += [flag, dev[key]]
    if is_true(dev.get("proxy_protocol")):
        argv.append("--proxy-protocol")
    return argv


def nat_watcher_argv(ctx: DeviceContext, name: str, status_fd: int, pid_path: Path) -> list[str]:
    assert ctx.pid is not None
    return [sys.executable, "-m", FORWARDER, "--root", str(ctx.host.paths.root),
            "--instance", ctx.name, "--device", name, "--init-pid", str(ctx.pid),
            "--nat-table", nat_table_key(ctx.host.paths.root, ctx.name, name),
            "--pidfile", str(pid_path), "--status-fd", str(status_fd)]


def is_forwarder(cmdline: bytes, root: str, instance: str, device: str) -> bool:
    """Whether a process's ``/proc/<pid>/cmdline`` is the forwarder of this device."""
    args = [a.decode(errors="replace") for a in cmdline.split(b"\0")]
    if FORWARDER not in args:
        return False
    want = {"--root": root, "--instance": instance, "--device": device}
    found = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a in want}
    return found == want


# -- forwarder lifecycle ------------------------------------------------------------------------
def _wait_exit(pidfd: int, timeout: float) -> bool:
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    return bool(p.poll(int(timeout * 1000)))


def kill_forwarder(ctx: DeviceContext, name: str) -> None:
    """Stop the device's forwarder if one runs (checked by its argv: a pid file may be stale and
    its pid reused) and wait until it is gone, so that its ports are free on return."""
    path = pidfile(ctx, name)
    try:
        pid = int(path.read_text().split()[0])
    except FileNotFoundError:
        return
    except (ValueError, IndexError, OSError):
        path.unlink(missing_ok=True)
        return
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        path.unlink(missing_ok=True)
        return
    try:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        if is_forwarder(cmdline, str(ctx.host.paths.root), ctx.name, name):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, sig)
                if _wait_exit(pidfd, STOP_TIMEOUT):
                    log.debug("proxy %s of %s: forwarder (pid %d) stopped by %s", name,
                              ctx.name, pid, sig.name)

                    break
            else:
                log.warning("proxy %s of %s: forwarder (pid %d) still runs after SIGKILL",
                            name, ctx.name, pid)
    finally:
        os.close(pidfd)
    path.unlink(missing_ok=True)


def _wait_no_forwarder(ctx: DeviceContext, name: str) -> None:
    """After a failed start: a forwarder that reported an error may have dropped its pid file
    while still exiting; return only when no process of this device is left (its ports free)."""
    root = str(ctx.host.paths.root)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        alive = False
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if is_forwarder((d / "cmdline").read_bytes(), root, ctx.name, name) and \
                        (d / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    alive = True
                    break
            except (OSError, IndexError):
                continue
        if not alive:
            return
        time.sleep(0.02)


def _read_status(fd: int, timeout: float) -> str | None:
    """The forwarder's first status line, or None if it said nothing in time."""
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    line = buf.decode(errors="replace").split("\n", 1)[0].strip()
    return line or None


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def spawn_forwarder(ctx: DeviceContext, name: str,
                    make_argv: Callable[[int, Path], list[str]]) -> None:
    """Start the forwarder detached (its own session, re-parented away from us) and wait for
    its ``ready``; raise with its reason otherwise. ``make_argv(status_fd, pidfile)``."""
    pid_path = pidfile(ctx, name)
    log_path = logfile(ctx, name)
    with contextlib.suppress(FileNotFoundError):
        if log_path.stat().st_size > LOG_MAX:
            log_path.unlink()
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        argv = make_argv(w, pid_path)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    pass_fds=(w,), start_new_session=True, cwd="/")
        os.close(w)
        w = -1
        try:
            proc.wait(READY_TIMEOUT)  # the first process forks the forwarder and exits
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        status = _read_status(r, READY_TIMEOUT)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    if status == "ready":
        return
    kill_forwarder(ctx, name)
    _wait_no_forwarder(ctx, name)
    if status is not None and status.startswith("error "):
        raise NetworkError(f'Failed to start device "{name}": {status[len("error "):]}')
    raise NetworkError(f'Failed to start device "{name}": the forwarder did not report ready '
                       f"within {READY_TIMEOUT:.0f}s ({_log_tail(log_path)})")


def _remove_host_socket(dev: Mapping[str, str]) -> None:
    """A host-side unix listen socket left by the device's forwarder goes with it. Only a dead
    one: the path may as well be another program's live socket (a device that failed to start
    because of it is stopped too), and a regular file is never touched."""
    listen = dev.get("listen", "")
    if side_of(dev) != "host" or not listen.startswith("unix:/"):
        return
    path = listen[len("unix:"):]
    parent, name = os.path.split(path)
    # one directory for the check, the probe and the unlink: a host user who swapped a
    # directory on the path meanwhile would have root remove a socket of that name elsewhere
    try:
        dirfd = os.open(parent or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        try:
            if not stat.S_ISSOCK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode):
                return
        except OSError:
            return
        if refuses_connections(via_dir(dirfd, name, path)):
            try:
                os.unlink(name, dir_fd=dirfd)
                log.debug("removed the dead proxy socket %s", path)
            except OSError as e:
                log.warning("cannot remove the dead proxy socket %s: %s", path, e)
    finally:
        os.close(dirfd)


# -- NAT mode -----------------------------------------------------------------------------------
def _port_set(ports: tuple[int, ...]) -> str:
    """``80`` or ``{ 80-82, 90 }``: consecutive ports as ranges."""
    runs: list[list[int]] = []
    for p in sorted(set(ports)):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    items = [str(a) if a == b else f"{a}-{b}" for a, b in runs]
    return items[0] if len(items) == 1 and "-" not in items[0] else "{ " + ", ".join(items) + " }"


def nat_spec(key: str, listen: ProxyAddress, connect: ProxyAddress, target: str
             ) -> nat.TableSpec:
    """DNAT from the listen address to the instance (``prerouting`` for traffic from outside,
    ``output`` for the host's own), and masquerade of the instance reaching itself through the
    listen address (hairpin)."""
    assert listen.ports is not None and connect.ports is not None and listen.host
    version = ipaddress.ip_address(target).version
    fam = "ip" if version == 4 else "ip6"
    dst = target if version == 4 else f"[{target}]"
    proto = listen.proto
    match = f"{fam} daddr {listen.host} {proto} dport {_port_set(listen.ports)}"
    if len(connect.ports) == 1:
        action = f"dnat {fam} to {dst}:{connect.ports[0]}"
    else:
        pairs = ", ".join(f"{lp} : {cp}" for lp, cp in zip(listen.ports, connect.ports,
                                                            strict=True))
        action = f"dnat {fam} to {dst}:{proto} dport map {{ {pairs} }}"
    dnat = (f"{match} {action}",)
    hairpin = (f"{fam} saddr {target} {fam} daddr {target} {proto} dport "
               f"{_port_set(connect.ports)} masquerade",)
    return nat.TableSpec(nat.table_name(key), (
        nat.Chain("prert", "nat", "prerouting", -100, dnat),
        nat.Chain("out", "nat", "output", -100, dnat),
        nat.Chain("pstrt", "nat", "postrouting", 100, hairpin),
    ))


def nat_target(devices: Mapping[str, Mapping[str, str]], connect: ProxyAddress, version: int
               ) -> tuple[str, str]:
    """The nic and static address NAT sends to: the one equal to the connect address, or the
    first with a static address when connect is a wildcard (LXD's rule and messages)."""
    key = f"ipv{version}.address"
    for dname in sorted(devices):
        d = devices[dname]
        if d.get("type") != "nic" or not d.get(key):
            continue
        if d.get("nictype", "bridged" if d.get("network") else "") not in NAT_NICTYPES:
            continue
        addr = ipaddress.ip_address(d[key])
        if connect.is_wildcard or addr == ipaddress.ip_address(connect.host or "0.0.0.0"):
            return dname, str(addr)
    if connect.is_wildcard:
        raise InvalidConfig("connect", f"Instance has no static IPv{version} address assigned "
                                       "to be used as the connect IP", connect.host)
    raise InvalidConfig("connect", f"Connect IP {connect.host!r} must be one of the instance's "
                                   f"static IPv{version} addresses", connect.host)


def _hairpin(pid: int, bridge: str) -> None:
    """With br_netfilter, DNAT back to the same bridge port needs the port's hairpin mode:
    set it on the bridge's ports whose veth peer lives in the instance's network namespace."""
    try:
        if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() != "1":
            return
    except OSError:
        return
    from pyroute2 import IPRoute
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with IPRoute() as ipr:
            nsid = ipr.get_netnsid(fd=fd).get("nsid")
            links = ipr.link_lookup(ifname=bridge)
            if not links:
                return
            for link in ipr.get_links():
                if link.get_attr("IFLA_MASTER") != links[0] or nsid is None:
                    continue
                if link.get_attr("IFLA_LINK_NETNSID") != nsid:
                    continue
                port = Path(f"/sys/class/net/{link.get_attr('IFLA_IFNAME')}/brport/hairpin_mode")
                try:
                    port.write_text("1")
                    log.debug("bridge %s: hairpin mode on for port %s", bridge,
                              link.get_attr("IFLA_IFNAME"))
                except OSError as e:
                    log.warning("bridge %s: cannot set hairpin mode on port %s: %s", bridge,
                                link.get_attr("IFLA_IFNAME"), e)
    finally:
        os.close(fd)


def nat_start(ctx: DeviceContext, name: str, listen: ProxyAddress, connect: ProxyAddress
              ) -> None:
    assert ctx.pid is not None
    version = listen.ip_version or 4
    dname, target = nat_target(ctx.devices, connect, version)
    nic = ctx.devices[dname]
    bridge = nic.get("network") or nic.get("parent")
    if bridge:
        _hairpin(ctx.pid, bridge)
    nat.apply(nat_spec(nat_table_key(ctx.host.paths.root, ctx.name, name), listen, connect,
                       target))


# -- the driver ---------------------------------------------------------------------------------
class ProxyDriver(BaseDriver):
    """Hot-pluggable; changes restart the forwarder (or reload the NAT table)."""

    hotplug = True

    def render(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> Rendered:
        validate_proxy(name, dev)
        return Rendered(start_hook=True)

    def start(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None:
        if ctx.pid is None:
            return
        listen, connect = validate_proxy(name, dev)
        # whatever a crash, a kill -9 or an earlier run left is cleared first
        kill_forwarder(ctx, name)
        key = nat_table_key(ctx.host.paths.root, ctx.name, name)
        if not is_true(dev.get("nat")):
            nat.delete(key)
            spawn_forwarder(ctx, name, lambda fd, pid: forwarder_argv(ctx, name, dev, fd, pid))
            log.debug("proxy %s of %s: forwarder started (%s -> %s, bind=%s, log %s)", name,
                      ctx.name, dev["listen"], dev["connect"], side_of(dev),
                      logfile(ctx, name))
            return
        nat_start(ctx, name, listen, connect)
        log.debug("proxy %s of %s: NAT table %s loaded (%s -> %s)", name, ctx.name,
                  nat.table_name(key), dev["listen"], dev["connect"])
        if os.environ.get("LXC_HOOK_TYPE") != "start-host":
            # added to a running instance whose liblxc monitor may run no post-stop hook (it
            # had none when it started): a watcher removes the table when the init dies
            try:
                spawn_forwarder(ctx, name, lambda fd, pid: nat_watcher_argv(ctx, name, fd, pid))
            except BaseException:
                nat.delete(key)
                raise
            log.debug("proxy %s of %s: watcher started to remove %s when the instance stops",
                      name, ctx.name, nat.table_name(key))

    def stop(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None:
        kill_forwarder(ctx, name)
        nat.delete(nat_table_key(ctx.host.paths.root, ctx.name, name))
        _remove_host_socket(dev)


def driver_for(dtype: str) -> ProxyDriver:
    return ProxyDriver()
