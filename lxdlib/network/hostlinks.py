"""The host's own interfaces as LXD 5.0 names them (its unmanaged networks), read from sysfs.

``lxc network list`` shows the host's interfaces beside the managed bridges, and ``lxc launch
--network <iface>`` attaches an instance to one that lxdlib does not manage. Both need only the
interface's kind, which sysfs gives without netlink (pyroute2 costs start-up time).
"""

from __future__ import annotations

import os
from pathlib import Path

SYS_NET = Path("/sys/class/net")
PROC_VLAN = Path("/proc/net/vlan")


def kind(name: str) -> str | None:
    """LXD's type for the host interface ``name``: ``loopback``, ``bridge``, ``vlan``,
    ``physical``, ``bond`` or ``unknown`` (veth, macvlan, dummy…); None if there is no such
    interface. A name that is not one path component is no interface (no path tricks)."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        return None
    link = SYS_NET / name
    if not link.exists():
        return None
    if name == "lo":
        return "loopback"
    if (link / "bridge").exists():
        return "bridge"
    if (PROC_VLAN / name).exists():
        return "vlan"
    if (link / "device").exists():
        return "physical"
    if (link / "bonding").exists():
        return "bond"
    return "unknown"


def _ifindex(name: str) -> int:
    try:
        return int((SYS_NET / name / "ifindex").read_text())
    except (OSError, ValueError):
        return 0


def interfaces() -> dict[str, str]:
    """Every host interface and its LXD type, in one pass over sysfs, in the kernel's order
    (by index: the order LXD's API lists them in)."""
    try:
        names = os.listdir(SYS_NET)
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for name in sorted(names, key=_ifindex):
        k = kind(name)
        if k is not None:  # gone since the listing: not shown
            out[name] = k
    return out
