"""What ``lxc info`` and ``lxc list`` show of an instance's interfaces, in LXD's shape.

Two ways to read the same thing:

- ``interfaces(pid)``: one ``ip -json -stats addr`` run inside the instance's network namespace
  (``nsenter --net``, so this process never changes namespace). One process per instance: right
  for one instance (``lxc info``), far too slow for a listing of hundreds.
- ``interfaces_many(pids)``: the same view of many namespaces read in-process, without a single
  subprocess. A private thread opens one netlink socket in each namespace in turn (``setns``
  moves only the calling thread, and a netlink socket stays bound to the namespace it was made
  in), dumps its links and addresses, and ends; the caller's threads never change namespace.
  The dumps are turned into what ``ip -json -stats addr`` prints, then go through the same
  ``parse``, so both ways give the same dict.

Each interface's addresses come with their prefix length and scope, its MAC, MTU, state and
counters. The host end of a veth is found from the interface's peer ifindex, which the kernel
reports in the host's numbering.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Iterable
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


# -- in-process: netlink in each namespace ------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_RTM_NEWLINK, _RTM_GETLINK, _RTM_NEWADDR, _RTM_GETADDR = 16, 18, 20, 22
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_LINK = 1, 3, 4, 5
_IFLA_STATS64, _IFLA_LINK_NETNSID = 23, 37
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_ARPHRD_LOOPBACK = 772
_IFF_UP = 0x1

_NLMSG = struct.Struct("=IHHII")        # struct nlmsghdr
_RTATTR = struct.Struct("=HH")          # struct rtattr
_IFINFOMSG = struct.Struct("=BxHiII")   # struct ifinfomsg
_IFADDRMSG = struct.Struct("=BBBBI")    # struct ifaddrmsg
_STATS64 = struct.Struct("=8Q")         # the first fields of struct rtnl_link_stats64
_IP_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
_FAMILIES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}


def _rtattrs(buf: bytes, off: int) -> dict[int, bytes]:
    """The route attributes of one message from ``off`` on (the last one of a type wins)."""
    out: dict[int, bytes] = {}
    end = len(buf)
    while off + 4 <= end:
        length, kind = _RTATTR.unpack_from(buf, off)
        if length < 4:
            break
        out[kind & 0x3FFF] = buf[off + 4:off + length]  # without NLA_F_NESTED / BYTEORDER
        off += (length + 3) & ~3
    return out


def _messages(data: bytes) -> Iterable[tuple[int, bytes]]:
    """(type, payload) of each netlink message in one datagram."""
    off = 0
    while off + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size:
            return
        yield kind, data[off + _NLMSG.size:off + length]
        off += (length + 3) & ~3


def _dump(sock: socket.socket, kind: int, body: bytes, seq: int) -> list[tuple[int, bytes]]:
    """Every message of one ``NLM_F_DUMP`` request (``OSError`` on a netlink error)."""
    sock.send(_NLMSG.pack(_NLMSG.size + len(body), kind, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0)
              + body)
    out: list[tuple[int, bytes]] = []
    while True:
        for mtype, payload in _messages(sock.recv(65536)):
            if mtype == _NLMSG_DONE:
                return out
            if mtype == _NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise OSError(code, f"netlink dump failed: {os.strerror(code)}")
                continue
            out.append((mtype, payload))


def _mac(raw: bytes | None) -> str:
    return ":".join(f"{b:02x}" for b in raw) if raw else ""


def links_from_netlink(links: list[tuple[int, bytes]], addrs: list[tuple[int, bytes]]
                       ) -> list[dict[str, Any]]:
    """``RTM_NEWLINK`` and ``RTM_NEWADDR`` payloads → what ``ip -json -stats addr`` prints
    (the keys ``parse`` reads), links in the kernel's order, each with its addresses."""
    out: dict[int, dict[str, Any]] = {}
    for mtype, m in links:
        if mtype != _RTM_NEWLINK or len(m) < _IFINFOMSG.size:
            continue
        _fam, arphrd, index, flags, _change = _IFINFOMSG.unpack_from(m)
        a = _rtattrs(m, _IFINFOMSG.size)
        link: dict[str, Any] = {
            "ifindex": index,
            "ifname": a.get(_IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace"),
            "flags": ["UP"] if flags & _IFF_UP else [],
            "mtu": struct.unpack_from("=I", a[_IFLA_MTU])[0] if _IFLA_MTU in a else 0,
            "link_type": "loopback" if arphrd == _ARPHRD_LOOPBACK else "ether",
            "address": _mac(a.get(_IFLA_ADDRESS)),
            "addr_info": [],
        }
        if _IFLA_LINK in a:
            peer = struct.unpack_from("=I", a[_IFLA_LINK])[0]
            if peer and peer != index:
                link["link_index"] = peer
        if _IFLA_LINK_NETNSID in a:
            link["link_netnsid"] = struct.unpack_from("=i", a[_IFLA_LINK_NETNSID])[0]
        raw = a.get(_IFLA_STATS64)
        if raw is not None and len(raw) >= _STATS64.size:
            rxp, txp, rxb, txb, rxe, txe, rxd, txd = _STATS64.unpack_from(raw)
            link["stats64"] = {"rx": {"bytes": rxb, "packets": rxp, "errors": rxe,
                                      "dropped": rxd},
                               "tx": {"bytes": txb, "packets": txp, "errors": txe,
                                      "dropped": txd}}
        out[index] = link
    for mtype, m in addrs:
        if mtype != _RTM_NEWADDR or len(m) < _IFADDRMSG.size:
            continue
        family, prefixlen, _flags, scope, index = _IFADDRMSG.unpack_from(m)
        a = _rtattrs(m, _IFADDRMSG.size)
        raw = a.get(_IFA_LOCAL) or a.get(_IFA_ADDRESS)  # ip's "local": IFA_LOCAL, else ADDRESS
        if family not in _FAMILIES or raw is None or index not in out:
            continue
        out[index]["addr_info"].append({
            "family": _FAMILIES[family], "local": socket.inet_ntop(family, raw),
            "prefixlen": prefixlen, "scope": _IP_SCOPES.get(scope, str(scope))})
    return list(out.values())


def _read_netlink(sock: socket.socket) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    links = _dump(sock, _RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), 1)
    addrs = _dump(sock, _RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), 2)
    return links, addrs


def _setns_function() -> Any:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        return lambda fd: setns(fd, _CLONE_NEWNET)
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    def call(fd: int) -> None:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    return call


def interfaces_many(pids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """``interfaces(pid)`` for many pids at once, read in-process: {pid: {ifname: state}}.

    A pid that is gone (or whose namespace cannot be entered, e.g. without CAP_SYS_ADMIN) is
    missing from the result rather than empty, so a caller can tell "no interfaces" from
    "not read". Only the private thread changes namespace; it returns to this process's
    namespace before it ends, and nothing but the netlink calls runs while it is away (no
    logging: a handler opening a socket there would open it in the instance's namespace).
    """
    wanted = [p for p in dict.fromkeys(pids) if p > 0]
    raw: dict[int, tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]] = {}
    failures: list[tuple[int, OSError]] = []
    if not wanted:
        return {}

    def work() -> None:
        try:
            setns = _setns_function()
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            failures.append((0, e))
            return
        try:
            for pid in wanted:
                try:
                    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:  # gone meanwhile
                    failures.append((pid, e))
                    continue
                try:
                    setns(fd)
                    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                       socket.NETLINK_ROUTE) as sock:
                        raw[pid] = _read_netlink(sock)
                except OSError as e:
                    failures.append((pid, e))
                    if e.errno in (errno.EPERM, errno.EACCES):
                        break  # no privilege: every other namespace refuses as well
                finally:
                    os.close(fd)
        finally:
            with contextlib.suppress(OSError):  # else the thread ends in it, which is harmless
                setns(home)
            os.close(home)

    thread = threading.Thread(target=work, name="lxdlib-netns-read", daemon=True)
    thread.start()
    thread.join()
    for pid, err in failures:
        log.debug("cannot read the interfaces of pid %d in-process: %s", pid, err)
    out: dict[int, dict[str, Any]] = {}
    for pid, (links, addrs) in raw.items():
        out[pid] = parse(links_from_netlink(links, addrs))
    return out
