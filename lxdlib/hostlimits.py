"""Host-wide kernel limits that many instances run into, named when a launch would cross them.

Every running container takes a few things the kernel counts host-wide, and liblxc fails half
way through a start when one runs out, with a message that names none of them ("Exchange full
- Failed to attach ... to bridge").
These are read here from the kernel's own counters and compared with what the instances about
to start need, so a launch that cannot succeed fails with ``HostLimit`` naming the setting and
the value to give it, and leaves nothing made (a batch is refused before it starts; a single
launch undoes its create):

* **bridge ports**: a Linux bridge takes at most 1,023 ports (its port numbers run from 1 to
  the kernel's ``BR_MAX_PORTS`` - 1); each nic of a running instance is one. More instances
  need several bridges (networks), e.g. one profile per network. Read from
  ``/sys/class/net/<bridge>/brif`` (one directory), before a batch and after a refused start.
* **ptys**: a container's console is a pty of its own devpts instance; those are refused once
  all ptys together would reach ``kernel.pty.max - kernel.pty.reserve`` (3,072 by default).
  Read from ``/proc/sys/kernel/pty/nr``.

What does not stop a start is left to ``advice``, which lists those settings with values that
suit a number of instances (for the documentation and the scale benchmark): what the instances'
own programs use later (inotify instances of systemd, ptys of getty and ssh sessions), and the
key quota. liblxc gives each container a session keyring (``lxc.keyring.session``), charged to
the host uid of the container's root — one uid for every instance on the default id map — but
the kernel lets session keyrings overrun ``kernel.keys.maxkeys`` (200): measured, a container
whose uid had its 200 keys started, its keyring the 201st. Past the quota only programs inside
those containers that add keys of their own get EDQUOT.

What is read before a start must not grow with the number of instances, so each counter is
read where its cost is right:

* **before every start**, what costs the same however many instances run: the pty counters,
  three small reads (0.07 ms, measured with 1,000 running);
* **before a batch** (`Host.launch_many`), the ports of each bridge the batch plugs into too:
  one directory of the bridge (0.43 ms with 1,000 ports, measured), once for the whole batch,
  so the batch is refused before any of it is made;
* **after a start that liblxc refused**, the same port count, to name a full bridge in place of
  liblxc's "Exchange full" (`crossed_after_failure`); a successful start never reads it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import HostLimit
from .logs import get_logger
from .values import Value, assign

log = get_logger(__name__)

# A bridge numbers its ports 1..BR_MAX_PORTS-1 (BR_MAX_PORTS is 1024 in net/bridge/br_private.h,
# port 0 is reserved): the 1,024th port is refused with EXFULL ("Exchange full"), measured.
BRIDGE_PORTS_MAX = 1023
PTYS_PER_INSTANCE = 1  # the console; lxdlib renders lxc.tty.max = 0
KEYS_PER_INSTANCE = 1  # the session keyring liblxc makes for the container's init
# Bytes one session keyring charges to its owner's quota: its description, "_ses" and its NUL
# (measured: 65 busybox containers took 65 keys and 325 bytes of uid 1000000's quota).
KEYRING_BYTES = 5

PROC_SYS = Path("/proc/sys")
SYS_NET = Path("/sys/class/net")


class Readings(Value, frozen=True):
    """The counters the checks compare against, read at one moment (tests build their own)."""

    _fields = ("pty_nr", "pty_max", "pty_reserve", "bridge_ports")
    __slots__ = _fields

    pty_nr: int
    pty_max: int
    pty_reserve: int
    bridge_ports: Mapping[str, int]

    def __init__(self, pty_nr: int, pty_max: int, pty_reserve: int,
                 bridge_ports: Mapping[str, int]) -> None:
        assign(self, "pty_nr", pty_nr)
        assign(self, "pty_max", pty_max)
        assign(self, "pty_reserve", pty_reserve)
        assign(self, "bridge_ports", bridge_ports)


class Need(Value, frozen=True):
    """What the instances about to start will take: ``instances`` start, ``bridge_ports`` maps
    a bridge to the nics that plug into it."""

    _fields = ("instances", "bridge_ports")
    __slots__ = _fields

    instances: int
    bridge_ports: Mapping[str, int]

    def __init__(self, instances: int = 0, bridge_ports: Mapping[str, int] | None = None
                 ) -> None:
        assign(self, "instances", instances)
        assign(self, "bridge_ports", {} if bridge_ports is None else bridge_ports)


def _int(path: Path, default: int) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def bridge_port_count(bridge: str) -> int:
    """The ports of a bridge now (0 when it does not exist yet)."""
    try:
        with os.scandir(SYS_NET / bridge / "brif") as it:
            return sum(1 for _ in it)
    except (FileNotFoundError, NotADirectoryError):
        return 0


def read(bridges: Iterable[str] = ()) -> Readings:
    """The counters now, with the port counts of ``bridges``."""
    return Readings(
        pty_nr=_int(PROC_SYS / "kernel/pty/nr", 0),
        pty_max=_int(PROC_SYS / "kernel/pty/max", 4096),
        pty_reserve=_int(PROC_SYS / "kernel/pty/reserve", 1024),
        bridge_ports={b: bridge_port_count(b) for b in set(bridges)})


def problems(need: Need, now: Readings) -> list[HostLimit]:
    """Every limit ``need`` would cross with the counters in ``now``."""
    found: list[HostLimit] = []
    for bridge, add in sorted(need.bridge_ports.items()):
        have = now.bridge_ports.get(bridge, 0)
        if add and have + add > BRIDGE_PORTS_MAX:
            found.append(HostLimit(
                f"bridge {bridge} ports", BRIDGE_PORTS_MAX, have, add,
                f"a Linux bridge takes at most {BRIDGE_PORTS_MAX} ports; put the instances on "
                "several networks (e.g. a profile per network: `lxdlib network create br1`, "
                "a profile whose eth0 has network=br1, and `-p` that profile for some of them)"))
    if need.instances:
        # A pty of a container's own devpts is refused once the count of all ptys would reach
        # kernel.pty.max - kernel.pty.reserve (measured: with 3,071 of 4,096 - 1,024 in use, a
        # start failed "Failed to allocate console from container's devpts instance").
        usable = now.pty_max - now.pty_reserve - 1
        add = need.instances * PTYS_PER_INSTANCE
        if now.pty_nr + add > usable:
            target = now.pty_nr + add + now.pty_reserve
            found.append(HostLimit(
                "kernel.pty.max", now.pty_max, now.pty_nr, add,
                f"containers' consoles and shells may use {usable} ptys together "
                "(kernel.pty.max - kernel.pty.reserve - 1): sysctl -w "
                f"kernel.pty.max={_round_up(target)}"))
    return found


def check(need: Need, now: Readings | None = None, *, bridges: bool = True) -> None:
    """Raise ``HostLimit`` for the first limit ``need`` would cross (the message lists every
    one), reading the counters unless given. ``bridges=False`` leaves the bridge ports out,
    for a single start: counting them grows with the instances, and a start that finds a
    bridge full fails in liblxc at once, where `crossed_after_failure` names it."""
    if not bridges:
        need = Need(instances=need.instances)
    if now is None:
        now = read(need.bridge_ports)
    found = problems(need, now)
    if not found:
        return
    first = found[0]
    if len(found) > 1:
        raise HostLimit(first.limit, first.value, first.in_use, first.needed, first.fix,
                        others=found[1:])
    raise first


def crossed_after_failure(need: Need) -> HostLimit | None:
    """After liblxc refused a start: the limit it ran into, if the host is now at one (a full
    bridge is the case liblxc names worst), else None and liblxc's own error stands. Only the
    bridge ports are counted: the ptys were checked before the start."""
    found = problems(Need(bridge_ports=need.bridge_ports), read(need.bridge_ports))
    return found[0] if found else None


def _round_up(n: int) -> int:
    """A value with room to spare: the next power of two at or above twice ``n``."""
    v = 1
    while v < 2 * n:
        v *= 2
    return v


class Advice(Value, frozen=True):
    """A host setting, its value now and one that suits the number of instances asked for."""

    _fields = ("sysctl", "current", "suggested", "why")
    __slots__ = _fields

    sysctl: str
    current: int
    suggested: int
    why: str

    def __init__(self, sysctl: str, current: int, suggested: int, why: str) -> None:
        assign(self, "sysctl", sysctl)
        assign(self, "current", current)
        assign(self, "suggested", suggested)
        assign(self, "why", why)


def advice(instances: int) -> list[Advice]:
    """The host settings that many instances need, with values for ``instances`` of them.

    Beyond what ``check`` refuses: inotify instances and watches (systemd, journald and udev
    in each container take several; containers made by root are charged to root's uid 0
    quota), the neighbour table of the host (one entry per instance it talks to), the pid
    space. Only settings below the suggestion are listed."""
    n = max(instances, 1)
    rows = [
        ("kernel.keys.maxkeys", (n + 50) * KEYS_PER_INSTANCE,
         "a session keyring per container, all charged to one uid; past the quota, programs "
         "inside that add keys fail"),
        ("kernel.keys.maxbytes", (n + 50) * KEYRING_BYTES * 4,
         "the bytes of those keyrings and some keys of their own"),
        ("kernel.pty.max", 1024 + n * 4, "a console per container, and room for shells"),
        ("fs.inotify.max_user_instances", n * 16,
         "systemd-based containers take several each, all charged to root's quota"),
        ("fs.inotify.max_user_watches", n * 4096, "the watches of those instances"),
        ("net.ipv4.neigh.default.gc_thresh3", n * 2,
         "the host's neighbour table holds an entry per instance it exchanges packets with"),
        ("kernel.pid_max", 4096 + n * 64, "the processes of all containers share it"),
    ]
    out = []
    for key, want, why in rows:
        current = _int(PROC_SYS / key.replace(".", "/"), 0)
        if current < want:
            out.append(Advice(key, current, _round_up(want), why))
    return out


def bridge_of(dev: Mapping[str, str]) -> str | None:
    """The bridge a nic device plugs into (a managed network's bridge has its name)."""
    if dev.get("type") != "nic":
        return None
    if dev.get("network"):
        return dev["network"]
    if dev.get("nictype") == "bridged" and dev.get("parent"):
        return dev["parent"]
    return None


def need_for(expanded: Iterable[tuple[Mapping[str, str], Mapping[str, Mapping[str, str]]]]
             ) -> Need:
    """What instances with these expanded (config, devices) take when they start."""
    count = 0
    ports: dict[str, int] = {}
    for _, devs in expanded:
        count += 1
        for dev in devs.values():
            bridge = bridge_of(dev)
            if bridge:
                ports[bridge] = ports.get(bridge, 0) + 1
    return Need(instances=count, bridge_ports=ports)
