"""The proxy device's forwarder: one detached process per proxy device of a running instance.

``devices/proxy.py`` starts it (from the start-host hook, or on a live device add) as
``python -m lxdlib.forwarder --root ROOT --instance NAME --device DEV …``; the root in the argv
lets a clean-up tell its processes apart. The forwarder

1. forks away from its starter (the starter may be a short-lived hook) and writes its pid file;
2. opens a pidfd on the container's init and exits when it becomes readable, so it never outlives
   the container, however the container stopped (hook, ``kill -9``, poweroff from inside);
3. creates the listening sockets: on the host in its own namespaces; in the instance through a
   forked child that joins the instance's user, mount (for a unix path) and network namespaces
   as the instance's root — an idmapped rootfs takes no file from the host's root — and hands
   the sockets back over a socketpair; unix sockets get their owner and mode;
4. moves into the connecting side's network (and, for a unix path, mount) namespace — the
   instance's as its root, in its user namespace, for a unix path or with ``security.uid`` /
   ``security.gid``: host root's rights would follow whatever socket the container's root
   linked a connect path to — and drops to ``security.uid``/``security.gid``; in the
   instance's mount namespace it is then sealed (:func:`seal`): it loads no module and reads
   no source file there;
5. tells its starter ``ready`` or ``error <reason>`` over a pipe, so a busy listen address fails
   the start or the device add at once;
6. relays: streams through a kernel pipe with splice(2) (no copy through Python), UDP per client
   address with an idle timeout, a stream to UDP one datagram per read.

With ``--nat-table`` it relays nothing and only removes that nftables table when the init dies
(NAT-mode devices added to a running instance whose liblxc monitor has no post-stop hook).

Everything runs in one thread: ``setns`` of a mount namespace needs a single-threaded process, and
an epoll loop over splice keeps up with the kernel without threads. All imports happen at the top:
once in a container's mount namespace, the host's Python files are out of reach, and the paths
Python would load a module or a traceback's source lines from are the container's root's to
fill (``encodings/<codec>.py`` for a ``# coding:`` line it planted in the file a traceback
names), while the forwarder is the instance's root (host root for a privileged instance).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import encodings.idna  # noqa: F401  (loaded now: later the mount namespace may be the container's)
import errno
import fcntl
import ipaddress
import json
import linecache
import logging
import os
import resource
import select
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterable, Mapping

from . import unixsock
from .config.devices import ProxyAddress, parse_proxy_address
from .errors import TYPE_CHECKING
from .network import nat

if TYPE_CHECKING:
    from typing import Any

    Address = tuple[Any, ...] | str

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20  # bytes a splice pipe may hold (the default pipe-max-size)
COPY_BUF = 256 * 1024  # the buffer of the copy path (where splice cannot be used)
# Receive buffer of a TCP socket whose peer is on this host. Autotuning would let megabytes
# queue up before the relay when it is not scheduled at once; the data then falls out of the
# caches before the far end copies it, and a local stream through the proxy ran at half the
# speed of a direct one (bench/proxy.py). A local peer has no bandwidth-delay product to cover;
# remote peers keep autotuning.
LOCAL_RCVBUF = 256 * 1024
ROUNDS = 16  # splice rounds per event before other connections get their turn
UDP_IDLE = 30 * 60.0  # LXD's idle timeout of a UDP session
# Sessions (a connected socket each) of one UDP listener: past this the least recently heard
# client's goes. A datagram's source is whatever its sender wrote, so without a bound anyone
# reaching the port could have the forwarder open a socket per forged address until it had
# no descriptor left (and the proxy was dead for the idle timeout).
UDP_SESSIONS = 4096
MAX_DGRAM = 65535
STREAM_TO_DGRAM_BACKLOG = 4 << 20  # datagram bytes queued for a slow stream before dropping
SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
FDS_PER_MESSAGE = 200  # descriptors per SCM_RIGHTS message (the kernel's limit is 253)

IN = select.EPOLLIN
OUT = select.EPOLLOUT
ERR = select.EPOLLERR
HUP = select.EPOLLHUP


class SetupError(Exception):
    """A reason the forwarder cannot serve; sent to the starter as ``error <reason>``."""


# by its full name, not ``__name__``: run as ``python -m lxdlib.forwarder`` the module is
# ``__main__``, whose logger is outside ``lxdlib`` and so misses the handler and the level
# ``log_to_stderr`` sets there (INFO records were dropped, errors printed unformatted)
log = logging.getLogger("lxdlib.forwarder")


def log_to_stderr() -> None:
    """The forwarder is a program of its own: its records (and those of the modules it uses)
    go to its stderr, which its starter points at the device's ``proxy.<dev>.log``. The
    handler holds an open stream, so it keeps working after the forwarder changed its mount
    namespace."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(message)s",
                                           "%Y-%m-%dT%H:%M:%S"))
    top = logging.getLogger("lxdlib")
    top.addHandler(handler)
    top.setLevel(logging.INFO)


class Throttle:
    """The log lines a client can cause (one per refused connect, per failed accept, per
    error in a connection) are limited to ``burst`` per ``window`` seconds, and the excess is
    counted in one line at the next window: the log is a host file that grows for as long as
    the forwarder runs, and any user on the listening side (the container's, with
    ``bind=instance``) could write it at thousands of lines a second."""

    def __init__(self, burst: int = 20, window: float = 60.0) -> None:
        self.burst, self.window = burst, window
        self.until = 0.0
        self.count = self.dropped = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now >= self.until:
            if self.dropped:
                log.warning("%d more such lines were not logged", self.dropped)
            self.until, self.count, self.dropped = now + self.window, 0, 0
        if self.count < self.burst:
            self.count += 1
            return True
        self.dropped += 1
        return False

    def warning(self, msg: str, *args: object) -> None:
        if self.allow():
            log.warning(msg, *args)


#: the forwarder's per-connection log lines (one process, one thread: one throttle)
noisy = Throttle()


# -- namespaces --------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


class Namespaces:
    """Handles on the forwarder's own (host) namespaces and the instance's, opened at once so
    that the instance's stay valid for the forwarder's life."""

    KINDS = {"user": CLONE_NEWUSER, "net": CLONE_NEWNET, "mnt": CLONE_NEWNS}

    def __init__(self, init_pid: int) -> None:
        self.fds: dict[tuple[str, str], int] = {}
        self.current = {"net": "host", "mnt": "host"}
        try:
            for kind in self.KINDS:
                self.fds[("host", kind)] = os.open(f"/proc/self/ns/{kind}",
                                                   os.O_RDONLY | os.O_CLOEXEC)
                self.fds[("instance", kind)] = os.open(f"/proc/{init_pid}/ns/{kind}",
                                                       os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            self.close()
            raise SetupError(f"Cannot open the namespaces of the instance's init {init_pid}: "
                             f"{e.strerror}") from None
        host_user = os.fstat(self.fds[("host", "user")]).st_ino
        self.own_userns = os.fstat(self.fds[("instance", "user")]).st_ino != host_user

    def enter(self, side: str, *, mnt: bool) -> None:
        """Network namespace of ``side``; its mount namespace too when a unix path is used."""
        self._set("net", side)
        self._set("mnt", side if mnt else "host")

    def become_instance_root(self, *, mnt: bool) -> None:
        """Join the instance as its root: user namespace first (it owns the others), then
        mount and network. There is no way back: for the child that makes the listening
        sockets inside, and for the forwarder itself when it connects inside. The supplementary
        groups go first, while allowed: host root's group 0 would follow it in, and the
        instance may deny ``setgroups``."""
        os.setgroups([])
        if self.own_userns:
            setns(self.fds[("instance", "user")], CLONE_NEWUSER)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        if mnt:
            setns(self.fds[("instance", "mnt")], CLONE_NEWNS)
        setns(self.fds[("instance", "net")], CLONE_NEWNET)

    def _set(self, kind: str, side: str) -> None:
        if self.current[kind] != side:
            setns(self.fds[(side, kind)], self.KINDS[kind])
            self.current[kind] = side

    def close(self) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


class _Sealed:
    """A module finder that refuses every module: first on ``sys.meta_path`` once sealed."""

    @staticmethod
    def find_spec(fullname: str, path: object = None, target: object = None) -> None:
        raise ImportError(f"No module named {fullname!r} is loaded in the instance's mount "
                          "namespace")


def _no_lines(filename: str, module_globals: object = None) -> list[str]:
    return []


def seal() -> None:
    """Load no code and read no source from here on: called once the forwarder is in the
    instance's mount namespace, where every path is the container root's. A module not yet
    imported is refused (a codec looked up by name included: ``LookupError``), and a traceback
    is formatted without source lines (``linecache`` read the file each frame names, and
    ``tokenize`` looked up the codec its ``# coding:`` line names)."""
    if _Sealed not in sys.meta_path:
        sys.meta_path.insert(0, _Sealed)  # type: ignore[arg-type]
    sys.path_importer_cache.clear()
    linecache.clearcache()
    setattr(linecache, "getlines", _no_lines)  # noqa: B010 - mypy: a module's function


# -- addresses ---------------------------------------------------------------------------------
def family_of(a: ProxyAddress) -> socket.AddressFamily:
    if a.proto == "unix":
        return socket.AF_UNIX
    return socket.AF_INET6 if a.host and ipaddress.ip_address(a.host).version == 6 \
        else socket.AF_INET


def kind_of(a: ProxyAddress) -> socket.SocketKind:
    return socket.SOCK_DGRAM if a.proto == "udp" else socket.SOCK_STREAM


def sockaddrs(a: ProxyAddress) -> list[Address]:
    """The socket address of each port of ``a`` (one for a unix socket)."""
    if a.proto == "unix":
        assert a.path is not None
        return ["\0" + a.path[1:] if a.abstract else a.path]
    host = a.host or "0.0.0.0"
    return [(host, p) for p in a.ports or ()]


def targets(listen: ProxyAddress, connect: ProxyAddress) -> list[Address]:
    """The connect address for each listen address: port i to port i, or all to the one port."""
    n = len(sockaddrs(listen))
    dest = sockaddrs(connect)
    if len(dest) == 1:
        return dest * n
    if len(dest) != n:
        raise SetupError("Mismatch between listen port(s) and connect port(s) count")
    return dest


def describe(addr: Address) -> str:
    if isinstance(addr, str):
        return "@" + addr[1:] if addr.startswith("\0") else addr
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def proxy_header(family: int, peer: Address, local: Address) -> bytes:
    """HAProxy's PROXY protocol v1 line for a connection from ``peer`` to ``local``."""
    if family == socket.AF_UNIX or isinstance(peer, str) or isinstance(local, str):
        return b"PROXY UNKNOWN\r\n"
    src, dst = ipaddress.ip_address(peer[0]), ipaddress.ip_address(local[0])
    if isinstance(src, ipaddress.IPv6Address) and src.ipv4_mapped is not None:
        src = src.ipv4_mapped
    if isinstance(dst, ipaddress.IPv6Address) and dst.ipv4_mapped is not None:
        dst = dst.ipv4_mapped
    if src.version != dst.version:
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {proto} {src} {dst} {peer[1]} {local[1]}\r\n".encode()


def idle_keys(last_seen: Mapping[Any, float], now: float, idle: float) -> list[Any]:
    """The sessions not heard from for ``idle`` seconds."""
    return [k for k, t in last_seen.items() if now - t >= idle]


# -- listening sockets -------------------------------------------------------------------------
class UnixPath:
    """A unix socket file the forwarder made: removed at exit through a handle on its
    directory, whichever mount namespace the forwarder is in by then."""

    def __init__(self, path: str) -> None:
        parent, self.name = os.path.split(path)
        try:
            self.dirfd = os.open(parent or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise SetupError(f"Failed listening on {path}: {e.strerror}") from None
        self.ino = -1
        self.target = path  # what bind and the stale check use (``unixsock.via_dir``)

    @classmethod
    def adopt(cls, dirfd: int, name: str, ino: int) -> UnixPath:
        """One made by another process, known by a handle on its directory."""
        self = cls.__new__(cls)
        self.dirfd, self.name, self.ino = dirfd, name, ino
        self.target = name
        return self

    def clear_stale(self, path: str) -> None:
        """A socket file left by a killed forwarder is removed; a live one means in use."""
        try:
            st = os.stat(self.name, dir_fd=self.dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise SetupError(f"Failed listening on {path}: the path exists and is not a socket")
        if unixsock.refuses_connections(self.target):
            os.unlink(self.name, dir_fd=self.dirfd)
            return
        raise SetupError(f"Failed listening on {path}: Address already in use")

    def remember(self) -> None:
        self.ino = os.stat(self.name, dir_fd=self.dirfd, follow_symlinks=False).st_ino

    def chown(self, uid: int, gid: int, *, held: bool) -> None:
        """Give the socket its owner; never through a link put in its place. ``held`` (on
        the host, where ``/proc`` is ours): the file checked is the file chowned, through a
        handle on it — looked up twice by name, a host user owning the directory could swap
        a hard link to another file in between, and that file got the device's owner."""
        fd = os.open(self.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dirfd)
        try:
            st = os.fstat(fd)
            if st.st_ino != self.ino or not stat.S_ISSOCK(st.st_mode):
                raise SetupError(f"the socket {self.name!r} was replaced while being set up")
            if held:
                os.chown(f"/proc/self/fd/{fd}", uid, gid)
            else:  # the instance's root, in the instance's own directory
                os.chown(self.name, uid, gid, dir_fd=self.dirfd, follow_symlinks=False)
        finally:
            os.close(fd)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            if os.stat(self.name, dir_fd=self.dirfd, follow_symlinks=False).st_ino == self.ino:
                os.unlink(self.name, dir_fd=self.dirfd)
        with contextlib.suppress(OSError):
            os.close(self.dirfd)


def make_listener(a: ProxyAddress, addr: Address, *, mode: int, uid: int | None,
                  gid: int | None, via_dir: bool = False) -> tuple[socket.socket,
                                                                  UnixPath | None]:
    """A listening socket; a unix path's file is made in the directory its path names when
    this starts (``via_dir``, on the host: the path may pass a host user's directory, and
    root's socket landed where that user pointed a swapped component)."""
    try:  # a range of many ports may run out of descriptors here: said like a bind's failure
        s = socket.socket(family_of(a), kind_of(a) | socket.SOCK_CLOEXEC)
    except OSError as e:
        raise SetupError(f"Failed listening on {describe(addr)}: {e.strerror}") from None
    made: UnixPath | None = None
    try:
        if a.proto == "unix" and not a.abstract:
            assert isinstance(addr, str)
            made = UnixPath(addr)
            if via_dir:
                made.target = unixsock.via_dir(made.dirfd, made.name, addr)
            made.clear_stale(addr)
            # The mode comes from the umask at bind: a chmod afterwards would follow whatever
            # a user of a shared directory put in the socket's place meanwhile.
            old = os.umask(~mode & 0o777)
            try:
                s.bind(made.target)
            finally:
                os.umask(old)
            made.remember()
            if uid is not None or gid is not None:
                made.chown(-1 if uid is None else uid, -1 if gid is None else gid,
                           held=via_dir)
        else:
            if a.proto == "tcp":
                # a listening TCP port is never shared, SO_REUSEADDR or not (it only skips
                # TIME_WAIT); a UDP one is, with any later socket that sets it too: a host
                # user's socket bound to the same port took the datagrams meant for the
                # instance, and a second device on the port started without an error
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if s.family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(addr)
        if s.type == socket.SOCK_STREAM:
            s.listen(socket.SOMAXCONN)
        s.setblocking(False)
    except (SetupError, OSError) as e:
        s.close()
        if made is not None:
            made.remove()
        if isinstance(e, SetupError):
            raise
        raise SetupError(f"Failed listening on {describe(addr)}: {e.strerror or e}") from None
    return s, made


def is_local(peer: Address, local: Address) -> bool:
    """Whether a TCP peer is on this host: a loopback address, or the socket's own address."""
    if isinstance(peer, str) or isinstance(local, str):
        return False
    return peer[0] == local[0] or ipaddress.ip_address(peer[0]).is_loopback or \
        peer[0].startswith("::ffff:127.")


def target_is_local(addr: Address) -> bool:
    """Whether a connect address is on this host (in the current network namespace)."""
    if isinstance(addr, str):
        return False
    if ipaddress.ip_address(addr[0]).is_loopback:
        return True
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((addr[0], 0))
        except OSError:
            return False
    return True


def connect_socket(family: int, kind: int, addr: Address, rcvbuf: int = 0) -> socket.socket:
    """A non-blocking connect (streams) or a connected datagram socket."""
    s = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if family != socket.AF_UNIX and kind == socket.SOCK_STREAM:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = s.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
    except BaseException:
        s.close()
        raise
    return s


# -- event loop --------------------------------------------------------------------------------
Handler = Callable[[int], None]


class Loop:
    """epoll, level-triggered. A socket with nothing to wait for is taken out of the set
    (parked): epoll reports HUP and ERR whatever the mask, and a half-closed socket whose data
    waits for the other side would otherwise wake the loop forever."""

    def __init__(self) -> None:
        self.ep = select.epoll()
        self.handlers: dict[int, Handler] = {}
        self.masks: dict[int, int] = {}
        self.running = True

    def add(self, fd: int, mask: int, handler: Handler) -> None:
        self.handlers[fd] = handler
        self.masks[fd] = 0
        self.set(fd, mask)

    def set(self, fd: int, mask: int) -> None:
        old = self.masks.get(fd)
        if old is None or old == mask:
            return
        if mask == 0:
            self.ep.unregister(fd)
        elif old == 0:
            self.ep.register(fd, mask)
        else:
            self.ep.modify(fd, mask)
        self.masks[fd] = mask

    def remove(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None and self.masks.pop(fd, 0):
            with contextlib.suppress(OSError, ValueError):
                self.ep.unregister(fd)

    def run(self, tick: Callable[[], float | None]) -> None:
        while self.running:
            timeout = tick()
            for fd, ev in self.ep.poll(-1 if timeout is None else timeout, 512):
                handler = self.handlers.get(fd)
                if handler is not None:
                    try:
                        handler(ev)
                    except Exception:  # a bug in one connection must not end the others
                        if noisy.allow():
                            log.exception("unexpected error")
                        self.remove(fd)
                if not self.running:
                    break


# -- stream relay ------------------------------------------------------------------------------
class Pump:
    """One direction of a stream relay: ``src`` → a kernel pipe → ``dst`` with splice(2), or
    through a buffer where the kernel refuses to splice."""

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src, self.dst = src, dst
        self.sfd, self.dfd = src.fileno(), dst.fileno()
        self.pipe: tuple[int, int] | None = None
        self.buf: memoryview | None = None
        self.start = self.end = 0
        self.pending = 0
        self.eof = False
        self.done = False
        self.want_in, self.want_out = True, False

    def close(self) -> None:
        if self.pipe is not None:
            for fd in self.pipe:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.pipe = None

    def step(self) -> None:
        """Move what can move now; raises OSError when the connection is broken."""
        if self.done:
            return
        for _ in range(ROUNDS):
            if self.pending and not self._flush():
                self.want_in, self.want_out = False, True
                return
            if self.eof:
                with contextlib.suppress(OSError):
                    self.dst.shutdown(socket.SHUT_WR)
                self.done = True
                self.want_in = self.want_out = False
                self.close()
                return
            if not self._fill():
                self.want_in, self.want_out = True, False
                return
        self.want_in, self.want_out = not self.pending, bool(self.pending)

    def _fill(self) -> bool:
        if self.buf is None:
            if self.pipe is None:
                self.pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                with contextlib.suppress(OSError):
                    fcntl.fcntl(self.pipe[1], F_SETPIPE_SZ, PIPE_SIZE)
            try:
                n = os.splice(self.sfd, self.pipe[1], PIPE_SIZE, flags=SPLICE_FLAGS)
            except BlockingIOError:
                return False
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self.close()  # this pair of sockets cannot splice: copy instead
                self.buf = memoryview(bytearray(COPY_BUF))
                return self._fill()
        else:
            try:
                n = os.readv(self.sfd, [self.buf])
            except BlockingIOError:
                return False
            self.start, self.end = 0, n
        if n == 0:
            self.eof = True
        self.pending = n
        return True

    def _flush(self) -> bool:
        while self.pending:
            try:
                if self.buf is None:
                    assert self.pipe is not None
                    m = os.splice(self.pipe[0], self.dfd, self.pending, flags=SPLICE_FLAGS)
                else:
                    m = os.write(self.dfd, self.buf[self.start:self.end])
                    self.start += m
            except BlockingIOError:
                return False
            self.pending -= m
        return True


class StreamPair:
    """An accepted stream and its connection to the target."""

    def __init__(self, fwd: Forwarder, client: socket.socket, upstream: socket.socket,
                 header: bytes) -> None:
        self.fwd, self.loop = fwd, fwd.loop
        self.a, self.b = client, upstream
        self.header = header
        self.connecting = True
        self.ab = Pump(client, upstream)
        self.ba = Pump(upstream, client)
        self.closed = False
        fwd.conns.add(self)
        self.loop.add(upstream.fileno(), OUT, self._on_b)
        self.loop.add(client.fileno(), 0, self._on_a)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.fwd.conns.discard(self)
        for s in (self.a, self.b):
            self.loop.remove(s.fileno())
            s.close()
        self.ab.close()
        self.ba.close()

    def _connected(self) -> bool:
        err = self.b.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            noisy.warning("connect failed: %s", os.strerror(err))
            self.close()
            return False
        self.connecting = False
        try:
            sent = os.write(self.b.fileno(), self.header) if self.header else 0
        except OSError:
            sent = -1
        if sent != len(self.header):  # a fresh socket takes a hundred bytes at once
            noisy.warning("could not send the PROXY header")
            self.close()
            return False
        return True

    def _on_a(self, ev: int) -> None:
        if self.connecting:  # only HUP/ERR are asked for until the target answers
            self.close()
            return
        self._on(ev, self.ab, self.ba)

    def _on_b(self, ev: int) -> None:
        if self.connecting:
            if not self._connected():
                return
            ev |= IN
        self._on(ev, self.ba, self.ab)

    def _on(self, ev: int, reader: Pump, writer: Pump) -> None:
        """``reader`` reads from the socket the event is for, ``writer`` writes to it."""
        if ev & ERR and not ev & IN:
            self.close()
            return
        try:
            if ev & (IN | HUP | ERR):
                reader.step()
            if ev & OUT:
                writer.step()
        except OSError:
            self.close()
            return
        if self.ab.done and self.ba.done:
            self.close()
            return
        self.loop.set(self.a.fileno(), (IN if self.ab.want_in and not self.ab.done else 0)
                      | (OUT if self.ba.want_out else 0))
        self.loop.set(self.b.fileno(), (IN if self.ba.want_in and not self.ba.done else 0)
                      | (OUT if self.ab.want_out else 0))


class StreamToDgram:
    """An accepted stream relayed to a UDP target: each read becomes one datagram and each
    datagram is written back to the stream."""

    def __init__(self, fwd: Forwarder, client: socket.socket, upstream: socket.socket) -> None:
        self.fwd, self.loop = fwd, fwd.loop
        self.a, self.b = client, upstream
        self.out = bytearray()
        self.closed = False
        fwd.conns.add(self)
        self.loop.add(client.fileno(), IN, self._on_a)
        self.loop.add(upstream.fileno(), IN, self._on_b)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.fwd.conns.discard(self)
        for s in (self.a, self.b):
            self.loop.remove(s.fileno())
            s.close()

    def _on_a(self, ev: int) -> None:
        try:
            if ev & OUT:
                self._flush()
            if ev & (IN | HUP | ERR):
                data = self.a.recv(MAX_DGRAM)
                if not data:
                    self.close()
                    return
                with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                    self.b.send(data)
        except BlockingIOError:
            pass
        except OSError:
            self.close()

    def _on_b(self, ev: int) -> None:
        for _ in range(64):
            try:
                data = self.b.recv(MAX_DGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # ICMP errors of earlier datagrams
            if len(self.out) + len(data) <= STREAM_TO_DGRAM_BACKLOG:
                self.out += data
        try:
            self._flush()
        except OSError:
            self.close()

    def _flush(self) -> None:
        while self.out:
            try:
                n = self.a.send(self.out)
            except BlockingIOError:
                break
            del self.out[:n]
        if not self.closed:
            self.loop.set(self.a.fileno(), IN | (OUT if self.out else 0))


# -- listeners ---------------------------------------------------------------------------------
class StreamListener:
    def __init__(self, fwd: Forwarder, sock: socket.socket, target: Address) -> None:
        self.fwd, self.sock, self.target = fwd, sock, target
        self.local_target = target_is_local(target)  # asked in the connecting namespace
        fwd.loop.add(sock.fileno(), IN, self.on_event)

    def on_event(self, ev: int) -> None:
        for _ in range(64):
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    noisy.warning("accept: %s", e.strerror)
                    return
                continue
            conn.setblocking(False)
            self.fwd.open_stream(conn, peer, self)


class UdpSession:
    def __init__(self, listener: UdpListener, peer: Address, sock: socket.socket) -> None:
        self.listener, self.peer, self.sock = listener, peer, sock
        listener.fwd.loop.add(sock.fileno(), IN, self.on_event)

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(data)

    def on_event(self, ev: int) -> None:
        for _ in range(256):
            try:
                data = self.sock.recv(MAX_DGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ICMP errors of earlier datagrams
            self.listener.last_seen.pop(self.peer, None)  # to the end: the order last heard
            self.listener.last_seen[self.peer] = time.monotonic()
            with contextlib.suppress(OSError):
                self.listener.sock.sendto(data, self.peer)

    def close(self) -> None:
        self.listener.fwd.loop.remove(self.sock.fileno())
        self.sock.close()


class UdpListener:
    """A UDP listen socket: one connected socket towards the target per client address."""

    def __init__(self, fwd: Forwarder, sock: socket.socket, target: Address) -> None:
        self.fwd, self.sock, self.target = fwd, sock, target
        self.sessions: dict[Address, UdpSession] = {}
        self.last_seen: dict[Address, float] = {}
        fwd.loop.add(sock.fileno(), IN, self.on_event)

    def on_event(self, ev: int) -> None:
        for _ in range(256):
            try:
                data, peer = self.sock.recvfrom(MAX_DGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            session = self.sessions.get(peer)
            if session is None:
                if len(self.sessions) >= self.fwd.args.udp_sessions:
                    oldest = next(iter(self.last_seen))  # kept in the order last heard
                    self.sessions.pop(oldest).close()
                    del self.last_seen[oldest]
                try:
                    up = connect_socket(self.fwd.connect_family, socket.SOCK_DGRAM, self.target)
                except OSError as e:
                    noisy.warning("udp connect to %s: %s", describe(self.target), e.strerror)
                    continue
                session = self.sessions[peer] = UdpSession(self, peer, up)
            self.last_seen.pop(peer, None)
            self.last_seen[peer] = time.monotonic()
            session.send(data)

    def expire(self, now: float, idle: float) -> None:
        for peer in idle_keys(self.last_seen, now, idle):
            self.sessions.pop(peer).close()
            del self.last_seen[peer]

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()
        self.sessions.clear()


# -- the processes -----------------------------------------------------------------------------
class PidFile:
    """The pid file, written and removed through a handle on its directory (the forwarder may
    be in another mount namespace when it exits).

    A forwarder removes it only when it ends on its own (the instance's init died). Stopped by a
    signal, it leaves the file to the side that stopped it (``kill_forwarder``), which removes
    it once the process is gone: a forwarder that removed it while exiting on the SIGTERM of a
    stop that was itself killed mid-way still held its ports for a moment with no file naming
    it, and the recovery of that stop, finding none, returned while it ran. A file left behind
    is never trusted as it is: ``kill_forwarder`` checks the pid and the process's argv."""

    def __init__(self, path: str) -> None:
        parent, self.name = os.path.split(path)
        self.dirfd = os.open(parent or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        tmp = f".{self.name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644,
                     dir_fd=self.dirfd)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        os.rename(tmp, self.name, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd)

    def remove(self) -> None:
        """Only while it still names this process (and only while allowed to: a forwarder
        that dropped privileges leaves it to the next start or stop)."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            fd = os.open(self.name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.dirfd)
            try:
                pid = int(os.read(fd, 64).split()[0])
            finally:
                os.close(fd)
            if pid == os.getpid():
                os.unlink(self.name, dir_fd=self.dirfd)


class Watcher:
    """Waits for the instance's init to die (or for SIGTERM) — the common part of the
    forwarder and of the NAT-mode watcher."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.args = a
        self.loop = Loop()
        self.pidfd = -1
        self.sig_r = -1
        self.init_died = False

    def watch(self) -> None:
        try:
            self.pidfd = os.pidfd_open(self.args.init_pid)
        except OSError:
            raise SetupError(f"The instance's init (pid {self.args.init_pid}) is gone") from None

    def arm(self) -> None:
        """Start listening for init's death and for signals (last step of a setup)."""
        self.loop.add(self.pidfd, IN, self._init_exited)
        self.sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(sig_w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.loop.add(self.sig_r, IN, self._signalled)

    def _init_exited(self, ev: int) -> None:
        log.info("the instance's init exited: stopping")
        self.init_died = True
        self.loop.running = False

    def _signalled(self, ev: int) -> None:
        try:
            data = os.read(self.sig_r, 64)
        except BlockingIOError:
            return
        if any(b in (signal.SIGTERM, signal.SIGINT) for b in data):
            self.loop.running = False

    def setup(self) -> None:
        self.watch()
        self.arm()

    def describe(self) -> str:
        return "watching"

    def run(self) -> None:
        try:
            self.loop.run(self.tick)
        finally:
            self.shutdown()

    def tick(self) -> float | None:
        return None

    def shutdown(self) -> None:
        pass


class NatWatcher(Watcher):
    """NAT mode has no relay: this only removes the device's nftables table when the instance's
    init dies, for an instance whose liblxc monitor runs no post-stop hook (the device was
    added while it ran)."""

    def describe(self) -> str:
        return f"watching for NAT table lxdlib_{self.args.nat_table}"

    def shutdown(self) -> None:
        if self.init_died:
            try:
                nat.delete(self.args.nat_table)
            except Exception as e:
                log.warning("could not delete the NAT table: %s", e)


class Forwarder(Watcher):
    def __init__(self, a: argparse.Namespace) -> None:
        super().__init__(a)
        self.listen = parse_proxy_address(a.listen)
        self.connect = parse_proxy_address(a.connect)
        if self.listen.proto == "udp" and self.connect.proto != "udp":
            raise SetupError("Proxying from udp to non-udp protocol is not supported")
        self.connect_family = family_of(self.connect)
        self.conns: set[StreamPair | StreamToDgram] = set()
        self.listeners: list[StreamListener | UdpListener] = []
        self.sockets: list[socket.socket] = []
        self.unix_paths: list[UnixPath] = []
        self.ns: Namespaces | None = None
        self.next_sweep = 0.0

    def describe(self) -> str:
        a = self.args
        return f"serving {a.listen} -> {a.connect} (bind={a.bind})"

    # setup ------------------------------------------------------------------------------------
    def setup(self) -> None:
        a = self.args
        self.watch()
        self.ns = Namespaces(a.init_pid)
        listen_side = a.bind
        connect_side = "host" if listen_side == "instance" else "instance"
        addrs = sockaddrs(self.listen)
        dests = targets(self.listen, self.connect)
        unix_path = self.listen.proto == "unix" and not self.listen.abstract
        if listen_side == "host":
            for addr in addrs:
                s, made = make_listener(self.listen, addr, mode=int(a.mode, 8), uid=a.uid,
                                        gid=a.gid, via_dir=True)
                self.sockets.append(s)
                if made is not None:
                    self.unix_paths.append(made)
        else:
            self._listen_as_instance(addrs, unix_path)
        connect_mnt = self.connect.proto == "unix" and not self.connect.abstract
        ids = a.security_gid is not None or a.security_uid is not None
        if connect_side == "instance" and (connect_mnt or ids):
            # As the instance's root where its ids decide: the container's root may point a
            # connect path at any socket its mount namespace shows, and a host root's socket
            # of a shared directory, which that root may not use, answered host root.
            # ``security.uid``/``gid`` are ids of the instance, as its kernel maps them.
            self.ns.become_instance_root(mnt=connect_mnt)
        else:
            # A TCP, UDP or abstract target inside checks no ids, and as host root the relay's
            # splice pipes are not held to the per-user pipe limit (pipe-user-pages-soft: as
            # the instance's root, past some 30 busy connections new pipes got two pages and
            # a stream ran at a third of its speed).
            self.ns.enter(connect_side, mnt=connect_mnt)
        if connect_side == "instance" and connect_mnt:
            seal()
        self.ns.close()
        if ids:
            if connect_side == "host":
                os.setgroups([])  # inside, ``become_instance_root`` dropped them
            for key, value, change in (("security.gid", a.security_gid, os.setgid),
                                       ("security.uid", a.security_uid, os.setuid)):
                if value is None:
                    continue
                try:
                    change(value)
                except OSError as e:  # inside: an id the instance's map does not hold
                    raise SetupError(f"Cannot take {key} {value} on the {connect_side} side: "
                                     f"{e.strerror}") from None
        for s, dest in zip(self.sockets, dests, strict=True):
            if self.listen.proto == "udp":
                self.listeners.append(UdpListener(self, s, dest))
            else:
                self.listeners.append(StreamListener(self, s, dest))
        self.arm()

    def _listen_as_instance(self, addrs: list[Address], unix_path: bool) -> None:
        """Listening sockets made by the instance's root in a forked child (entering a user
        namespace is one way), handed back over a socketpair. Files it creates are then owned
        by the instance's ids, as idmapped root filesystems require.

        The child says ``ok [count, meta]`` and then sends the descriptors in messages of at
        most ``FDS_PER_MESSAGE`` (the kernel takes 253 at most in one); it keeps every socket
        object until they are sent, as a dropped one closes its descriptor."""
        assert self.ns is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                ours.close()
                self.ns.become_instance_root(mnt=unix_path)
                made_sockets: list[socket.socket] = []
                fds: list[int] = []
                meta: list[Any] = []
                for addr in addrs:
                    s, made = make_listener(self.listen, addr, mode=int(self.args.mode, 8),
                                            uid=self.args.uid, gid=self.args.gid)
                    made_sockets.append(s)
                    fds.append(s.fileno())
                    if made is not None:
                        fds.append(made.dirfd)
                        meta = [made.name, made.ino]
                theirs.sendall(b"ok " + json.dumps([len(fds), meta]).encode())
                for i in range(0, len(fds), FDS_PER_MESSAGE):
                    socket.send_fds(theirs, [b"f"], fds[i:i + FDS_PER_MESSAGE])
                code = 0
            except SetupError as e:
                theirs.sendall(f"error {e}".encode())
            except BaseException as e:
                theirs.sendall(f"error {type(e).__name__}: {e}".encode())
            finally:
                os._exit(code)
        theirs.close()
        fds = []
        try:
            text = ours.recv(65536).decode(errors="replace")
            count, meta = json.loads(text[3:]) if text.startswith("ok ") else (0, [])
            while len(fds) < count:
                _msg, got, _flags, _addr = socket.recv_fds(ours, 16, FDS_PER_MESSAGE)
                if not got:
                    break  # the child died midway
                fds += got
        finally:
            ours.close()
            os.waitpid(pid, 0)
        if not text.startswith("ok ") or len(fds) != count:
            for fd in fds:
                os.close(fd)
            reason = "" if text.startswith("ok ") else text.removeprefix("error ")
            raise SetupError(reason or "the listening child died")
        for fd in fds[:len(addrs)]:
            self.sockets.append(socket.socket(fileno=fd))
        if meta:
            self.unix_paths.append(UnixPath.adopt(fds[len(addrs)], meta[0], meta[1]))

    # connections ------------------------------------------------------------------------------
    def open_stream(self, conn: socket.socket, peer: Address, listener: StreamListener) -> None:
        if conn.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        kind = kind_of(self.connect)
        try:
            up = connect_socket(self.connect_family, kind, listener.target,
                                rcvbuf=LOCAL_RCVBUF if listener.local_target else 0)
        except OSError as e:
            noisy.warning("connect to %s: %s", describe(listener.target), e.strerror)
            conn.close()
            return
        if kind == socket.SOCK_DGRAM:
            StreamToDgram(self, conn, up)
            return
        if is_local(peer, conn.getsockname()):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, LOCAL_RCVBUF)
        header = b""
        if self.args.proxy_protocol:
            header = proxy_header(conn.family, peer, conn.getsockname())
        StreamPair(self, conn, up, header)

    # run --------------------------------------------------------------------------------------
    def tick(self) -> float | None:
        """Expire idle UDP sessions now and then; the time until the next sweep."""
        udp = [x for x in self.listeners if isinstance(x, UdpListener)]
        if not udp:
            return None
        now = time.monotonic()
        if now >= self.next_sweep:
            for x in udp:
                x.expire(now, self.args.udp_idle)
            self.next_sweep = now + min(float(self.args.udp_idle) / 4, 30.0)
        return self.next_sweep - now

    def shutdown(self) -> None:
        for c in list(self.conns):
            c.close()
        for x in self.listeners:
            if isinstance(x, UdpListener):
                x.close()
        for s in self.sockets:
            s.close()
        for p in self.unix_paths:
            p.remove()
        if self.ns is not None:
            self.ns.close()


# -- entry point -------------------------------------------------------------------------------
def parse_args(argv: Iterable[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lxdlib.forwarder")
    p.add_argument("--root", required=True)
    p.add_argument("--instance", required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--init-pid", type=int, required=True)
    p.add_argument("--listen", default="")
    p.add_argument("--connect", default="")
    p.add_argument("--nat-table", default="", help="NAT mode: only remove this table at the end")
    p.add_argument("--bind", choices=("host", "instance"), default="host")
    p.add_argument("--uid", type=int)
    p.add_argument("--gid", type=int)
    p.add_argument("--mode", default="0644")
    p.add_argument("--security-uid", type=int)
    p.add_argument("--security-gid", type=int)
    p.add_argument("--proxy-protocol", action="store_true")
    p.add_argument("--udp-idle", type=float, default=UDP_IDLE)
    p.add_argument("--udp-sessions", type=int, default=UDP_SESSIONS)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--status-fd", type=int, required=True)
    return p.parse_args(list(argv))


def _report(fd: int, line: str) -> None:
    data = (line.replace("\n", " ") + "\n").encode()
    os.write(fd, data)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    log_to_stderr()
    if os.fork() > 0:
        os._exit(0)  # the starter reaps this one at once; the forwarder is the grandchild
    try:
        pidfile = PidFile(a.pidfile)
        _raise_nofile()
        proc = NatWatcher(a) if a.nat_table else Forwarder(a)
        proc.setup()
    except Exception as e:
        reason = str(e) if isinstance(e, SetupError | ValueError) else \
            f"{type(e).__name__}: {e}"
        log.error("error: %s", reason,
                  exc_info=not isinstance(e, SetupError | ValueError))
        with contextlib.suppress(OSError):
            _report(a.status_fd, f"error {reason}")
        return 1  # the pid file stays for the starter's ``kill_forwarder`` (see ``PidFile``)
    try:
        _report(a.status_fd, "ready")
        os.close(a.status_fd)
    except OSError:
        return 1  # the starter is gone: it will not know of us, so do not serve
    log.info("%s", proc.describe())
    try:
        proc.run()
    finally:
        if proc.init_died:  # ended on its own: no stopper will come for the file
            pidfile.remove()
        log.info("stopped")

    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
