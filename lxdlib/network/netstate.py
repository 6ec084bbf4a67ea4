"""What ``lxc info`` shows of an instance's interfaces, in LXD's shape.

One ``ip -json -stats addr`` run inside the instance's network namespace (``nsenter --net``, so
this process never changes namespace) gives each interface's addresses with their prefix length
and scope, its MAC, MTU, state and counters. The host end of a veth is found from the
interface's peer ifindex, which the kernel reports in the host's numbering.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..runtime import Container

log = logging.getLogger(__name__)

_SCOPES = {"host": "local", "link": "link", "global": "global", "site": "site"}


def _host_name(link: dict[str, Any]) -> str:
    """The host end of a veth whose peer lives in another namespace (the host's)."""
    if link.get("link_netnsid") is None or not link.get("link_index"):
        return ""
    try:
        return socket.if_indextoname(int(link["link_index"]))
    except OSError:
        return ""


def _counters(link: dict[str, Any]) -> dict[str, int]:
    st = link.get("stats64") or {}
    rx, tx = st.get("rx") or {}, st.get("tx") or {}
    return {"bytes_received": int(rx.get("bytes", 0)), "bytes_sent": int(tx.get("bytes", 0)),
            "packets_received": int(rx.get("packets", 0)),
            "packets_sent": int(tx.get("packets", 0)),
            "errors_received": int(rx.get("errors", 0)), "errors_sent": int(tx.get("errors", 0)),
            "packets_dropped_inbound": int(rx.get("dropped", 0)),
            "packets_dropped_outbound": int(tx.get("dropped", 0))}


def parse(links: list[dict[str, Any]]) -> dict[str, Any]:
    """``ip -json -stats addr`` output → ``{ifname: state}`` as LXD's instance state has it."""
    out: dict[str, Any] = {}
    for link in links:
        name = link.get("ifname")
        if not name:
            continue
        addrs = [{"family": a.get("family", ""), "address": a.get("local", ""),
                  "netmask": str(a.get("prefixlen", "")),
                  "scope": _SCOPES.get(str(a.get("scope")), str(a.get("scope", "")))}
                 for a in link.get("addr_info") or [] if a.get("local")]
        loopback = link.get("link_type") == "loopback"
        out[name] = {
            "addresses": addrs,
            "counters": _counters(link),
            "hwaddr": "" if loopback else str(link.get("address", "")),
            "host_name": _host_name(link),
            "mtu": int(link.get("mtu", 0)),
            "state": "up" if "UP" in (link.get("flags") or []) else "down",
            "type": "loopback" if loopback else "broadcast",
        }
    return dict(sorted(out.items()))


def interfaces(pid: int) -> dict[str, Any]:
    """The interfaces of the network namespace ``pid`` lives in ({} if it is gone)."""
    try:
        r = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "--", "ip", "-json",
                            "-stats", "addr", "show"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.debug("cannot read the interfaces of pid %d: %s", pid, e)
        return {}
    if r.returncode != 0:
        log.debug("cannot read the interfaces of pid %d: %s", pid,
                  r.stderr.decode(errors="replace").strip())
        return {}
    try:
        links = json.loads(r.stdout or b"[]")
    except ValueError as e:
        log.warning("ip -json printed something that is not JSON for pid %d: %s", pid, e)
        return {}

    return parse(links if isinstance(links, list) else [])


def interfaces_of(c: Container) -> dict[str, Any]:
    pid = c.init_pid
    return interfaces(pid) if pid and pid > 0 else {}
