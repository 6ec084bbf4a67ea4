"""Host-wide kernel limits that many instances run into, checked before a launch.

Every running container takes a few things the kernel counts host-wide, and liblxc fails half
way through a start when one runs out, with a message that names none of them ("Disk quota
exceeded - Failed to create kernel keyring", "Exchange full - Failed to attach ... to bridge").
These are read here from the kernel's own counters and compared with what the instances about
to start need, so a launch that cannot succeed is refused before anything is made, with
``HostLimit`` naming the setting and the value to give it:

* **bridge ports**: a Linux bridge takes at most 1,023 ports (its port numbers run from 1 to
  the kernel's ``BR_MAX_PORTS`` - 1); each nic of a running instance is one. More instances
  need several bridges (networks), e.g. one profile per network. Read from
  ``/sys/class/net/<bridge>/brif`` (one directory).
* **session keyrings**: liblxc gives each container a new session keyring
  (``lxc.keyring.session``), charged to the host uid the container's root maps to. Instances
  that share the default id map share one uid, so the non-root quota ``kernel.keys.maxkeys``
  (200 by default) and ``kernel.keys.maxbytes`` cap them all together. Read from
  ``/proc/key-users`` (one line per uid that holds keys).
* **ptys**: a container's console is a pty of its own devpts instance; those may use at most
  ``kernel.pty.max - kernel.pty.reserve`` ptys together. Read from ``/proc/sys/kernel/pty/nr``.

What the instances' own programs use later (inotify instances of systemd, more keys, ptys of
getty and ssh sessions) is not knowable at launch; ``advice`` lists those settings with values
that suit a number of instances, for the documentation and the scale benchmark.

A check costs a few small reads (about 0.1 ms, counting 1,000 ports of a bridge included), so
it runs before every start, not only before bulk launches.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from .errors import HostLimit

log = logging.getLogger(__name__)

# A bridge numbers its ports 1..BR_MAX_PORTS-1 (BR_MAX_PORTS is 1024 in net/bridge/br_private.h,
# port 0 is reserved): the 1,024th port is refused with EXFULL ("Exchange full"), measured.
BRIDGE_PORTS_MAX = 1023
PTYS_PER_INSTANCE = 1  # the console; lxdlib renders lxc.tty.max = 0
KEYS_PER_INSTANCE = 1  # the session keyring liblxc makes for the container's init

PROC_SYS = Path("/proc/sys")
KEY_USERS = Path("/proc/key-users")
SYS_NET = Path("/sys/class/net")


@attrs.frozen
class KeyUse:
    """One line of ``/proc/key-users``: keys and bytes a uid holds, against its quota."""

    keys: int
    maxkeys: int
    bytes: int
    maxbytes: int


@attrs.frozen
class Readings:
    """The counters the checks compare against, read at one moment (tests build their own)."""

    pty_nr: int
    pty_max: int
    pty_reserve: int
    maxkeys: int
    maxbytes: int
    key_users: Mapping[int, KeyUse]
    bridge_ports: Mapping[str, int]


@attrs.frozen
class Need:
    """What the instances about to start will take.

    ``instances`` start; ``bridge_ports`` maps a bridge to the nics that plug into it;
    ``key_owners`` maps a host uid to the instances whose session keyring it will be charged
    (the host uid of their root; isolated id maps each have their own and are left out)."""

    instances: int = 0
    bridge_ports: Mapping[str, int] = attrs.field(factory=dict)
    key_owners: Mapping[int, int] = attrs.field(factory=dict)


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


def read_key_users(text: str) -> dict[int, KeyUse]:
    """``/proc/key-users`` parsed: ``uid: usage nkeys/ninstantiated qnkeys/maxkeys
    qnbytes/maxbytes``."""
    out: dict[int, KeyUse] = {}
    for line in text.splitlines():
        try:
            uid, rest = line.split(":", 1)
            fields = rest.split()
            qkeys, maxkeys = fields[2].split("/")
            qbytes, maxbytes = fields[3].split("/")
            out[int(uid)] = KeyUse(int(qkeys), int(maxkeys), int(qbytes), int(maxbytes))
        except (ValueError, IndexError):
            continue
    return out


def read(bridges: Iterable[str] = ()) -> Readings:
    """The counters now, with the port counts of ``bridges``."""
    try:
        key_users = read_key_users(KEY_USERS.read_text())
    except OSError:
        key_users = {}
    return Readings(
        pty_nr=_int(PROC_SYS / "kernel/pty/nr", 0),
        pty_max=_int(PROC_SYS / "kernel/pty/max", 4096),
        pty_reserve=_int(PROC_SYS / "kernel/pty/reserve", 1024),
        maxkeys=_int(PROC_SYS / "kernel/keys/maxkeys", 200),
        maxbytes=_int(PROC_SYS / "kernel/keys/maxbytes", 20000),
        key_users=key_users,
        bridge_ports={b: bridge_port_count(b) for b in set(bridges)})


# Bytes one session keyring charges to its owner's quota: its description, "_ses" and its NUL
# (measured: 65 busybox containers took 65 keys and 325 bytes of uid 1000000's quota).
KEYRING_BYTES = 5


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
        usable = now.pty_max - now.pty_reserve  # containers' own devpts may not use the rest
        add = need.instances * PTYS_PER_INSTANCE
        if now.pty_nr + add > usable:
            target = now.pty_nr + add + now.pty_reserve
            found.append(HostLimit(
                "kernel.pty.max", now.pty_max, now.pty_nr, add,
                f"containers may use kernel.pty.max - kernel.pty.reserve ({usable}) ptys "
                f"together: sysctl -w kernel.pty.max={_round_up(target)}"))
    for uid, count in sorted(need.key_owners.items()):
        if not count:
            continue
        use = now.key_users.get(uid)
        maxkeys = use.maxkeys if use else now.maxkeys
        maxbytes = use.maxbytes if use else now.maxbytes
        keys = use.keys if use else 0
        used_bytes = use.bytes if use else 0
        add_keys = count * KEYS_PER_INSTANCE
        if keys + add_keys > maxkeys:
            found.append(HostLimit(
                "kernel.keys.maxkeys" if uid else "kernel.keys.root_maxkeys", maxkeys, keys,
                add_keys,
                f"liblxc gives each container a session keyring, charged to host uid {uid} "
                "(the root of instances on the default id map): sysctl -w "
                f"kernel.keys.{'maxkeys' if uid else 'root_maxkeys'}="
                f"{_round_up(keys + add_keys)}"))
        add_bytes = add_keys * KEYRING_BYTES
        if used_bytes + add_bytes > maxbytes:
            found.append(HostLimit(
                "kernel.keys.maxbytes" if uid else "kernel.keys.root_maxbytes", maxbytes,
                used_bytes, add_bytes,
                f"the session keyrings of host uid {uid} take {KEYRING_BYTES} bytes each: "
                "sysctl -w kernel.keys.{'maxbytes' if uid else 'root_maxbytes'}="
                f"{_round_up(used_bytes + add_bytes)}"))
    return found


def check(need: Need, now: Readings | None = None) -> None:
    """Raise ``HostLimit`` for the first limit ``need`` would cross (the message lists every
    one), reading the counters unless given."""
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


def _round_up(n: int) -> int:
    """A value with room to spare: the next power of two at or above twice ``n``."""
    v = 1
    while v < 2 * n:
        v *= 2
    return v


@attrs.frozen
class Advice:
    """A host setting, its value now and one that suits the number of instances asked for."""

    sysctl: str
    current: int
    suggested: int
    why: str


def advice(instances: int) -> list[Advice]:
    """The host settings that many instances need, with values for ``instances`` of them.

    Beyond what ``check`` refuses: inotify instances and watches (systemd, journald and udev
    in each container take several; containers made by root are charged to root's uid 0
    quota), the neighbour table of the host (one entry per instance it talks to), the pid
    space. Only settings below the suggestion are listed."""
    n = max(instances, 1)
    rows = [
        ("kernel.keys.maxkeys", (n + 50) * KEYS_PER_INSTANCE,
         "a session keyring per container on the shared id map"),
        ("kernel.keys.maxbytes", (n + 50) * KEYRING_BYTES, "the bytes of those keyrings"),
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


def _key_owner(cfg: Mapping[str, str], default_uid: int) -> int | None:
    """The host uid a container's session keyring is charged to (None: one of its own, or no
    keyring at all)."""
    raw = cfg.get("raw.lxc", "")
    if "lxc.keyring.session" in raw:
        for line in raw.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "lxc.keyring.session" and value.strip() in ("0", "false"):
                return None
    if cfg.get("security.privileged", "").lower() in ("true", "1", "yes", "on"):
        return 0
    if cfg.get("security.idmap.isolated", "").lower() in ("true", "1", "yes", "on"):
        return None  # a range of its own: its quota is its own too
    base = cfg.get("security.idmap.base", "")
    return int(base) if base.isdigit() else default_uid


def bridge_of(dev: Mapping[str, str]) -> str | None:
    """The bridge a nic device plugs into (a managed network's bridge has its name)."""
    if dev.get("type") != "nic":
        return None
    if dev.get("network"):
        return dev["network"]
    if dev.get("nictype") == "bridged" and dev.get("parent"):
        return dev["parent"]
    return None


def need_for(expanded: Iterable[tuple[Mapping[str, str], Mapping[str, Mapping[str, str]]]],
             default_uid: int) -> Need:
    """What instances with these expanded (config, devices) take when they start;
    ``default_uid`` is the host uid of the root of instances on the shared id map."""
    count = 0
    ports: dict[str, int] = {}
    owners: dict[int, int] = {}
    for cfg, devs in expanded:
        count += 1
        for dev in devs.values():
            bridge = bridge_of(dev)
            if bridge:
                ports[bridge] = ports.get(bridge, 0) + 1
        uid = _key_owner(cfg, default_uid)
        if uid is not None:
            owners[uid] = owners.get(uid, 0) + 1
    return Need(instances=count, bridge_ports=ports, key_owners=owners)
