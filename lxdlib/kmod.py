"""``linux.kernel_modules``: make sure the modules an instance needs are in the kernel.

LXD just runs ``modprobe``, and fails on kernels with everything built in and no ``modprobe``
(this machine's kind). lxdlib first asks the kernel whether the module is already there —
``/sys/module``, ``/proc/modules``, ``modules.builtin``, ``/proc/config.gz`` — and only then
loads it.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from .errors import InvalidConfig, ToolMissing
from .logs import get_logger
from .patterns import Pattern

log = get_logger(__name__)

_NAME = Pattern(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")  # a leading "-" would be a modprobe option


def _norm(name: str) -> str:
    return name.replace("-", "_")


def _builtin() -> set[str]:
    release = os.uname().release
    out: set[str] = set()
    try:
        for line in Path(f"/lib/modules/{release}/modules.builtin").read_text().splitlines():
            out.add(_norm(Path(line).name.removesuffix(".ko")))
    except FileNotFoundError:
        pass
    return out


def _config_builtin(name: str) -> bool:
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except (FileNotFoundError, OSError):
        return False
    symbol = {"overlay": "OVERLAY_FS", "nf_nat": "NF_NAT", "br_netfilter": "BRIDGE_NETFILTER",
              "ip_tables": "IP_NF_IPTABLES", "ip6_tables": "IP6_NF_IPTABLES",
              "ip_vs": "IP_VS", "xt_conntrack": "NETFILTER_XT_MATCH_CONNTRACK",
              "nf_conntrack": "NF_CONNTRACK", "veth": "VETH", "bridge": "BRIDGE",
              "vxlan": "VXLAN", "tun": "TUN", "fuse": "FUSE_FS",
              "btrfs": "BTRFS_FS"}.get(name, name.upper())
    return f"CONFIG_{symbol}=y" in text


def is_loaded(name: str) -> bool:
    n = _norm(name)
    if Path(f"/sys/module/{n}").exists():
        return True
    try:
        if any(line.split()[0] == n for line in Path("/proc/modules").read_text().splitlines()):
            return True
    except FileNotFoundError:
        pass
    return n in _builtin() or _config_builtin(n)


def ensure_loaded(modules: Iterable[str]) -> None:
    for m in modules:
        if not _NAME.match(m):
            raise InvalidConfig("linux.kernel_modules", f"invalid module name {m!r}", m)
        if is_loaded(m):
            continue
        modprobe = shutil.which("modprobe")
        if modprobe is None:
            raise ToolMissing(f"kernel module {m!r} is not loaded and there is no modprobe to "
                              "load it")
        r = subprocess.run([modprobe, "-b", "--", m], capture_output=True, text=True)
        if r.returncode != 0:
            raise InvalidConfig("linux.kernel_modules",
                                f"failed to load kernel module {m!r}: {r.stderr.strip()}", m)
        log.info("kernel module %s loaded (modprobe -b)", m)

