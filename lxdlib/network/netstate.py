"""What ``lxc info`` and ``lxc list`` show of an instance's interfaces, in LXD's shape.

Two ways to read the same thing:

- ``interfaces(pid)``: one ``ip -json -stats addr`` run inside the instance's network namespace
  (``nsenter --net``, so this process never changes namespace). One process per instance: right
  for one instance (``lxc info``), far too slow for a listing of hundreds.
- ``interfaces_many(pids)``: the same view of many namespaces read in-process, without a single
  subprocess. A private thread opens one netlink socket in each namespace in turn (``setns``
  moves only the calling thread, and a netlink socket stays bound to the namespace it was made
  in), dumps its links and addresses, and ends; the caller's threads never change namespace.
  It enters each namespace through a pidfd of the instance's init, and parses the address dump
  as it arrives: a listing of a thousand spends its time there. For hundreds, in a process
  that runs one thread, a fork of the process reads most of them, with a GIL of its own.
  The dumps are turned into what ``ip -json -stats addr`` prints, then go through the same
  ``parse``, so both ways give the same dict.

Each interface's addresses come with their prefix length and scope, its MAC, MTU, state and
counters. The host end of a veth is found from the interface's peer ifindex, which the kernel
reports in the host's numbering.
"""

from __future__ import annotations

# ``_socket``, not ``socket``: the Python layer turns its constants into enums when imported,
# ~3 ms of every `lxdlib list` and `info` (measured), for nothing a netlink dump uses
import _socket
import contextlib
import errno
import fcntl
import json
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable

from ..errors import TYPE_CHECKING
from ..logs import get_logger

if TYPE_CHECKING:
    from typing import Any, TypeVar

    from ..runtime import Container

    T = TypeVar("T")

log = get_logger(__name__)


_SCOPES = {"host": "local", "link": "link", "global": "global", "site": "site"}


def _host_name(link: dict[str, Any]) -> str:
    """The host end of a veth whose peer lives in another namespace (the host's)."""
    if link.get("link_netnsid") is None or not link.get("link_index"):
        return ""
    try:
        return _socket.if_indextoname(int(link["link_index"]))
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
        name = shown_name(str(name))
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
    import subprocess  # here: the listing's one-pass reader, which runs no program, needs none
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
_IFLA_STATS64, _IFLA_LINKINFO, _IFLA_LINK_NETNSID = 23, 18, 37
_IFLA_INFO_KIND = 1
_RTM_GETNSID = 90
_NETNSA_NSID, _NETNSA_PID = 1, 2
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_ARPHRD_LOOPBACK = 772
_IFF_UP = 0x1

_NLMSG = struct.Struct("=IHHII")        # struct nlmsghdr
_RTATTR = struct.Struct("=HH")          # struct rtattr
_IFINFOMSG = struct.Struct("=BxHiII")   # struct ifinfomsg
_IFADDRMSG = struct.Struct("=BBBBI")    # struct ifaddrmsg
_STATS64 = struct.Struct("=8Q")         # the first fields of struct rtnl_link_stats64
#: The kernel's address scopes, named as LXD names them (``ip``'s "host" is LXD's "local").
_KERNEL_SCOPES = {0: "global", 200: "site", 253: "link", 254: "local", 255: "nowhere"}
_COUNTER_KEYS = ("bytes_received", "bytes_sent", "packets_received", "packets_sent",
                 "errors_received", "errors_sent", "packets_dropped_inbound",
                 "packets_dropped_outbound")
_FAMILIES = {_socket.AF_INET: "inet", _socket.AF_INET6: "inet6"}
_LINK_ATTRS = frozenset({_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_LINK, _IFLA_STATS64,
                         _IFLA_LINK_NETNSID})


def _rtattrs(buf: bytes, off: int, wanted: frozenset[int]) -> dict[int, bytes]:
    """The route attributes of types ``wanted`` in one message from ``off`` on (only those are
    copied: a link message carries some forty attributes, and a listing reads thousands)."""
    out: dict[int, bytes] = {}
    end = len(buf)
    unpack = _RTATTR.unpack_from
    while off + 4 <= end:
        length, kind = unpack(buf, off)
        if length < 4:
            break
        kind &= 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if kind in wanted:
            out[kind] = buf[off + 4:off + length]
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


def _dump(sock: _socket.socket, kind: int, body: bytes, seq: int) -> list[tuple[int, bytes]]:
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


def _request(sock: _socket.socket, kind: int, body: bytes) -> bytes:
    """The payload of the one reply to a plain (not dump) request (``OSError`` on an error)."""
    sock.send(_NLMSG.pack(_NLMSG.size + len(body), kind, _NLM_F_REQUEST, 1, 0) + body)
    for mtype, payload in _messages(sock.recv(65536)):
        if mtype == _NLMSG_ERROR:
            code = -struct.unpack_from("=i", payload)[0]
            raise OSError(code, f"netlink request failed: {os.strerror(code)}")
        return payload
    raise OSError(errno.EIO, "netlink request got no reply")


def veth_peer_in(name: str, pid: int) -> bool:
    """Whether host interface ``name`` is a veth whose other end lives in the network namespace
    of process ``pid`` (a container's init): the kernel's own proof that the interface is that
    container's nic, where a name proves nothing (anyone may have made an interface of that
    name). The veth's peer namespace id and that of ``pid``'s namespace, both as this
    namespace numbers them, must be the same; the container cannot forge either (an index
    could be: a container may give its own interfaces any). Two netlink requests through
    ``_socket``: pyroute2's import alone is ~140 ms, and a render of a running instance's nic
    (``config set``) asks this."""
    try:
        index = _socket.if_nametoindex(name)
    except OSError:
        return False
    with contextlib.closing(_socket.socket(_socket.AF_NETLINK,
                                           _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                                           _socket.NETLINK_ROUTE)) as sock:
        try:
            link = _request(sock, _RTM_GETLINK,
                            _IFINFOMSG.pack(_socket.AF_UNSPEC, 0, index, 0, 0))
        except OSError as e:
            if e.errno == errno.ENODEV:
                return False
            raise
        a = _rtattrs(link, _IFINFOMSG.size, frozenset({_IFLA_LINKINFO, _IFLA_LINK_NETNSID}))
        kind = _rtattrs(a.get(_IFLA_LINKINFO, b""), 0, frozenset({_IFLA_INFO_KIND}))
        if _name(kind.get(_IFLA_INFO_KIND)) != "veth" or _IFLA_LINK_NETNSID not in a:
            return False  # not a veth, or its peer is in this namespace: a host pair
        peer = struct.unpack_from("=i", a[_IFLA_LINK_NETNSID])[0]
        try:  # struct rtgenmsg (padded to 4), then NETNSA_PID
            ns = _request(sock, _RTM_GETNSID, struct.pack("=Bxxx", _socket.AF_UNSPEC)
                          + _RTATTR.pack(8, _NETNSA_PID) + struct.pack("=I", pid))
        except OSError as e:  # ESRCH: the process is gone, and its namespace with it
            log.debug("no namespace id for pid %d: %s", pid, e)
            return False
    got = _rtattrs(ns, 4, frozenset({_NETNSA_NSID}))
    return _NETNSA_NSID in got and struct.unpack_from("=i", got[_NETNSA_NSID])[0] == peer


def _mac(raw: bytes | None) -> str:
    return ":".join(f"{b:02x}" for b in raw) if raw else ""


def shown_name(name: str) -> str:
    """An interface name of an instance as lxdlib hands it on: the container's root names its
    interfaces, and the kernel takes any byte but ``/``, ``:`` and white space, so a name may
    hold a terminal's escape sequences (``ESC ] 0 ;`` sets the window title, others rewrite
    the screen or the clipboard) that ``list`` and ``info`` printed to the admin's terminal as
    they were. Characters that are not printable are spelled ``\\xNN`` (``\\uNNNN``)."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else
                   f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" for c in name)


def _name(raw: bytes | None) -> str:
    return shown_name((raw or b"").split(b"\0", 1)[0].decode(errors="replace"))


def state_from_netlink(links: list[tuple[int, bytes]],
                       by_index: dict[int, list[dict[str, str]]]) -> dict[str, Any]:
    """``RTM_NEWLINK`` payloads of one namespace and its addresses by ifindex
    (``_dump_addresses``) → ``{ifname: state}``, what ``parse`` makes of ``ip -json -stats
    addr``. Called in the host's namespace: the host end of a veth is named from its ifindex
    there."""
    out: dict[str, Any] = {}
    for mtype, m in links:
        if mtype != _RTM_NEWLINK or len(m) < _IFINFOMSG.size:
            continue
        _fam, arphrd, index, flags, _change = _IFINFOMSG.unpack_from(m)
        a = _rtattrs(m, _IFINFOMSG.size, _LINK_ATTRS)
        name = _name(a.get(_IFLA_IFNAME))
        if not name:
            continue
        loopback = arphrd == _ARPHRD_LOOPBACK
        host_name = ""
        if _IFLA_LINK_NETNSID in a and _IFLA_LINK in a:
            peer = struct.unpack_from("=I", a[_IFLA_LINK])[0]
            if peer and peer != index:
                with contextlib.suppress(OSError):
                    host_name = _socket.if_indextoname(peer)
        counters = dict.fromkeys(_COUNTER_KEYS, 0)
        raw = a.get(_IFLA_STATS64)
        if raw is not None and len(raw) >= _STATS64.size:
            rxp, txp, rxb, txb, rxe, txe, rxd, txd = _STATS64.unpack_from(raw)
            counters = {"bytes_received": rxb, "bytes_sent": txb, "packets_received": rxp,
                        "packets_sent": txp, "errors_received": rxe, "errors_sent": txe,
                        "packets_dropped_inbound": rxd, "packets_dropped_outbound": txd}
        out[name] = {
            "addresses": by_index.get(index, []),
            "counters": counters,
            "hwaddr": "" if loopback else _mac(a.get(_IFLA_ADDRESS)),
            "host_name": host_name,
            "mtu": struct.unpack_from("=I", a[_IFLA_MTU])[0] if _IFLA_MTU in a else 0,
            "state": "up" if flags & _IFF_UP else "down",
            "type": "loopback" if loopback else "broadcast",
        }
    return dict(sorted(out.items()))


def _read_full(sock: _socket.socket, pid: int
               ) -> tuple[list[tuple[int, bytes]], dict[int, list[dict[str, str]]]]:
    """The raw link dump (parsed by the caller, back in the host's namespace: the host end of
    a veth is named there) and the addresses by ifindex."""
    links = _dump(sock, _RTM_GETLINK, _IFINFOMSG.pack(_socket.AF_UNSPEC, 0, 0, 0, 0), 1)
    return links, _dump_addresses(sock)


_SIOCGIFNAME = 0x8910
_IFREQ = struct.Struct("16si20x")  # struct ifreq: the name, then the union (ifr_ifindex)


def _ifname(sock: _socket.socket, index: int) -> str:
    """The name of interface ``index`` in the socket's namespace ("" when it is gone): one
    ``ioctl``, where the link dump would cost three times the address dump."""
    try:
        reply = fcntl.ioctl(sock.fileno(), _SIOCGIFNAME, _IFREQ.pack(b"", index))
    except OSError:
        return ""
    return _name(reply[:16])


_ADDR_REQUEST = (_NLMSG.pack(_NLMSG.size + _IFADDRMSG.size, _RTM_GETADDR,
                             _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
                 + _IFADDRMSG.pack(_socket.AF_UNSPEC, 0, 0, 0, 0))


def _dump_addresses(sock: _socket.socket) -> dict[int, list[dict[str, str]]]:
    """The address dump, read as it arrives, by ifindex, each address in LXD's shape: no copy
    of each message and its attributes first (as ``_dump`` makes). A listing reads a thousand
    namespaces in one thread, and each step of Python there is taken from the caller's GIL
    time."""
    sock.send(_ADDR_REQUEST)
    out: dict[int, list[dict[str, str]]] = {}
    header, ifaddr, rtattr = _NLMSG.unpack_from, _IFADDRMSG.unpack_from, _RTATTR.unpack_from
    hsize, fsize = _NLMSG.size, _NLMSG.size + _IFADDRMSG.size
    while True:
        data = sock.recv(65536)
        off, end = 0, len(data)
        while off + hsize <= end:
            length, kind = header(data, off)[:2]
            if length < hsize:
                break
            if kind == _NLMSG_DONE:
                return out
            if kind == _NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, off + hsize)[0]
                if code:
                    raise OSError(code, f"netlink dump failed: {os.strerror(code)}")
            elif kind == _RTM_NEWADDR and length >= fsize:
                family, prefixlen, _flags, scope, index = ifaddr(data, off + hsize)
                name = _FAMILIES.get(family)
                raw = None
                at, stop = off + fsize, off + length
                # ip's "local": IFA_LOCAL, else IFA_ADDRESS. The kernel puts them first, side by
                # side (IPv4: ADDRESS then LOCAL; IPv6: LOCAL then the peer's ADDRESS, or
                # ADDRESS alone): the walk ends at the first other attribute after them
                while name is not None and at + 4 <= stop:
                    alen, akind = rtattr(data, at)
                    if alen < 4:
                        break
                    akind &= 0x3FFF
                    if akind == _IFA_LOCAL:
                        raw = data[at + 4:at + alen]
                        break
                    if akind == _IFA_ADDRESS:
                        raw = data[at + 4:at + alen]
                    elif raw is not None:
                        break
                    at += (alen + 3) & ~3
                if name is not None and raw is not None:
                    out.setdefault(index, []).append({
                        "family": name, "address": _socket.inet_ntop(family, raw),
                        "netmask": str(prefixlen),
                        "scope": _KERNEL_SCOPES.get(scope) or str(scope)})
            off += (length + 3) & ~3


def _read_addresses(sock: _socket.socket, pid: int) -> dict[str, Any]:
    """Only the addresses, by interface name: the address dump, and each interface's name
    asked by index. (IPv4 labels are not taken for names: the instance's root may set any
    label.)"""
    out: dict[str, Any] = {}
    for index, found in _dump_addresses(sock).items():
        name = _ifname(sock, index)
        if name:
            out[name] = {"addresses": found}
    return dict(sorted(out.items()))


def _setns_function() -> Any:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        return lambda fd: setns(fd, _CLONE_NEWNET)
    import ctypes

    from ..state import libc

    def call(fd: int) -> None:
        if libc().setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    return call


def _namespace_handle(pid: int, by_pidfd: bool, setns: Callable[[int], None]
                      ) -> tuple[int, bool]:
    """Enter the network namespace of ``pid``; returns the handle used (to be closed) and
    whether pidfds work here. A pidfd (Linux 5.8+ takes one for ``setns``) spares the
    path lookup of ``/proc/<pid>/ns/net``, ~3 µs of the ~45 a namespace costs a listing; the
    path is the way where it is refused (an older kernel)."""
    if by_pidfd:
        try:
            fd = os.pidfd_open(pid)
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EINVAL):
                raise  # ESRCH: gone
            by_pidfd = False
        else:
            try:
                setns(fd)
                return fd, True
            except OSError as e:
                os.close(fd)
                if e.errno != errno.EINVAL:
                    raise
                by_pidfd = False
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
    except OSError:
        os.close(fd)
        raise
    return fd, by_pidfd


def _visit(pids: list[int], read: Callable[[_socket.socket, int], T],
           setns: Callable[[int], None], out: dict[int, T],
           failures: list[tuple[int, OSError]]) -> None:
    """In the calling thread: enter each pid's network namespace in turn, ``read`` it with a
    netlink socket made there, and go back to the thread's own namespace at the end. It
    neither logs nor imports (it also runs in a forked child, see ``_in_each_namespace``)."""
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        failures.append((0, e))
        return
    by_pidfd = hasattr(os, "pidfd_open")
    try:
        for pid in pids:
            try:
                fd, by_pidfd = _namespace_handle(pid, by_pidfd, setns)
            except OSError as e:  # gone meanwhile, or not ours to enter
                failures.append((pid, e))
                if e.errno in (errno.EPERM, errno.EACCES):
                    break  # no privilege: every other namespace refuses as well
                continue
            try:
                with contextlib.closing(_socket.socket(
                        _socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                        _socket.NETLINK_ROUTE)) as sock:
                    out[pid] = read(sock, pid)
            except OSError as e:
                failures.append((pid, e))
                if e.errno in (errno.EPERM, errno.EACCES):
                    break  # no privilege: every other namespace refuses as well
            except Exception as e:  # a reply this code cannot read: said once back home
                failures.append((pid, OSError(f"{type(e).__name__}: {e}")))
            finally:
                os.close(fd)
    finally:
        with contextlib.suppress(OSError):  # else the thread ends in it, which is harmless
            setns(home)
        os.close(home)


def _in_thread(pids: list[int], read: Callable[[_socket.socket, int], T],
               setns: Callable[[int], None], out: dict[int, T],
               failures: list[tuple[int, OSError]]) -> threading.Thread:
    """``_visit`` in a private thread, started: the caller's threads never change namespace."""
    thread = threading.Thread(target=_visit, args=(pids, read, setns, out, failures),
                              name="lxdlib-netns-read", daemon=True)
    thread.start()
    return thread


#: From this many running instances on, a listing forks (``can_fork``, ``lxdlib.listing``): a
#: fork and its result's way back cost ~3 ms, and at 200 both ways took the same time
#: (measured on 1,000).
FORK_FROM = 200
#: The share of the instances the forked child checks and reads; the listing's process does
#: the rest besides the records. Measured on 1,000 (2 vCPUs): 0.6 best (0.5, 0.7 and 0.8
#: slower); at 1.0 the child alone takes as long as one process.
CHILD_SHARE = 0.6


def _kernel_threads() -> int:
    """This process's thread count as the kernel keeps it (``/proc/self/stat``, field 20);
    0 if it cannot be read."""
    try:
        fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            stat = os.read(fd, 4096)
        finally:
            os.close(fd)
        return int(stat.rsplit(b")", 1)[1].split()[17])
    except (OSError, ValueError, IndexError):
        return 0


def _single_threaded() -> bool:
    """Whether this process runs one thread (Python's and the kernel's count): a fork of a
    process with other threads may leave a lock taken in the child, and Python 3.12 warns.

    A thread Python has just joined may still be leaving the kernel: right after a join the
    kernel counted it in 251 of 500 tries (measured), so a listing right after another one,
    whose thread read namespaces, would not fork. Such a thread is gone within microseconds:
    the kernel's count is asked again for up to ~2 ms; a thread of a C library that stays
    makes the answer False after that wait."""
    if threading.active_count() != 1:
        return False
    for _ in range(10):
        count = _kernel_threads()
        if count == 1:
            return True
        if count == 0:
            return False
        time.sleep(0.0002)
    return False


def can_fork(count: int) -> bool:
    """Whether a reading of ``count`` namespaces forks (``FORK_FROM`` of them or more, in a
    process running one thread): a caller that forks for more than the namespaces (a listing
    also checks the cgroups of the fork's share there) asks first."""
    return count >= FORK_FROM and hasattr(os, "fork") and _single_threaded()


def _visit_for_marshal(pids: list[int], read: Callable[[_socket.socket, int], T],
                       setns: Callable[[int], None]
                       ) -> tuple[dict[int, T], list[tuple[int, int, str]]]:
    """``_visit``, its failures as plain tuples: what a forked child sends back."""
    out: dict[int, T] = {}
    failures: list[tuple[int, OSError]] = []
    _visit(pids, read, setns, out, failures)
    return out, [(p, e.errno or 0, str(e)) for p, e in failures]


def reader_for_fork(*, full: bool = False
                    ) -> Callable[[list[int]], tuple[dict[int, Any], list[tuple[int, int, str]]]]:
    """A reading of the given pids' namespaces to run inside a ``forkjob.ForkedJob`` (made
    before the fork, as the child must not import): it gives what `from_fork` turns into
    ``start_reading``'s result, back in the caller."""
    read = _read_full if full else _read_addresses
    setns = _setns_function()
    return lambda pids: _visit_for_marshal(pids, read, setns)


def from_fork(got: tuple[dict[int, Any], list[tuple[int, int, str]]], *, full: bool = False
              ) -> dict[int, dict[str, Any]]:
    """What a `reader_for_fork` reading gave in a child, as ``start_reading`` gives it."""
    out, failed = got
    _log_failures((p, OSError(err, text)) for p, err, text in failed)
    return _as_states(dict(out), full)


def _log_failures(failures: Iterable[tuple[int, OSError]]) -> None:
    for pid, err in failures:
        log.debug("cannot read the interfaces of pid %d in-process: %s", pid, err)


def _as_states(out: dict[int, Any], full: bool) -> dict[int, dict[str, Any]]:
    """``start_reading``'s shape: a full reading's raw dumps parsed here, in this thread's
    (the host's) namespace; addresses are read in that shape already."""
    if full:
        return {pid: state_from_netlink(links, addrs) for pid, (links, addrs) in out.items()}
    return out


def _in_each_namespace(pids: Iterable[int], read: Callable[[_socket.socket, int], T]
                       ) -> Callable[[], dict[int, T]]:
    """Start ``read(sock, pid)`` with a netlink socket made in the network namespace of each
    pid, in a private thread; returns the function that waits and gives {pid: result} for the
    pids whose namespace could be entered. The caller may work meanwhile (a listing parses the
    records).

    Only private threads change namespace, and they return to this process's before they
    end. Nothing but ``read`` runs while one is away, and ``read`` must not log (a handler
    opening a socket would open it in the instance's namespace); whatever it asks the kernel
    about interfaces is answered for the instance (``if_indextoname`` too), as it wants.

    The thread spends most of its time in the kernel but takes the GIL back a dozen times per
    namespace, while the caller's own Python work holds it: for hundreds of instances a
    listing also forks (``forkjob.ForkedJob``, ``reader_for_fork``), and this thread reads the rest.
    """
    wanted = [p for p in dict.fromkeys(pids) if p > 0]
    out: dict[int, T] = {}
    failures: list[tuple[int, OSError]] = []
    if not wanted:
        return lambda: out
    thread = _in_thread(wanted, read, _setns_function(), out, failures)

    def wait() -> dict[int, T]:
        thread.join()
        _log_failures(failures)
        failures.clear()
        return out
    return wait


def start_reading(pids: Iterable[int], *, full: bool = False
                  ) -> Callable[[], dict[int, dict[str, Any]]]:
    """Start reading the interfaces of many pids' namespaces in a thread, without running a
    program (see ``_in_each_namespace``); returns the function that waits and gives {pid:
    {ifname: state}}: with ``full``, each state as ``interfaces`` gives it (links, addresses,
    counters); otherwise ``{"addresses": [...]}`` alone (one small dump per namespace), for
    the interfaces that have an address.

    A pid that is gone (or whose namespace cannot be entered, e.g. without CAP_SYS_ADMIN) is
    missing from the result rather than empty, so a caller can tell "no interfaces" from
    "not read"."""
    wait = _in_each_namespace(pids, _read_full if full else _read_addresses)
    return lambda: _as_states(wait(), full)


def interfaces_many(pids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """``interfaces(pid)`` for many pids at once, read in-process: {pid: {ifname: state}}
    (see ``start_reading``)."""
    return start_reading(pids, full=True)()


def addresses_many(pids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The addresses alone, cheaper than ``interfaces_many``: {pid: {ifname: {"addresses":
    [...]}}}, the lists being those ``interfaces`` gives (see ``start_reading``)."""
    return start_reading(pids)()
