"""The process that touches an instance's files, from inside the instance.

``Files`` never resolves a container path on the host: it starts this script (``python -I -S``,
stdlib only) with a socket, and the script first moves itself into the instance —

* running instance: ``setns`` into the container's user namespace (so ids are the container's and
  the idmapped rootfs maps them) and mount namespace (so ``/`` is the container's root with its
  own mounts), from namespace fds the caller opened and checked against the init pid;
* stopped instance: ``chroot`` into the rootfs (ids shifted by ``offset`` on FUSE pools);

— and only then opens paths. Symlinks and ``..`` resolve as they would for a process in the
container: the host is not in its world (LXD's ``forkfile``; canonical/lxd#789 was a pull that
followed an absolute symlink to the host's /etc/shadow).

Everything is imported before the move and the import system is then switched off, so nothing
from the container's filesystem can ever be loaded as code. The same module holds the framing
that both ends use: a message is a 4-byte big-endian length and JSON; a data stream is chunks of
that length prefix and bytes, ended by a zero length (or ``ABORT``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import socket
import stat
import struct
import sys
from collections.abc import Iterator

#: ``typing.TYPE_CHECKING`` without ``typing``; not ``lxdlib.errors``': this file runs alone, by
#: its path, inside the instance (it imports nothing of lxdlib)
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

CHUNK = 1 << 20
MAX_MSG = 1 << 20
ABORT = 0xFFFFFFFF
_LEN = struct.Struct(">I")

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
PR_SET_DUMPABLE = 4
OVERFLOW_ID = 65534


class ProtocolError(Exception):
    """The other end sent something that is not this protocol."""


class Aborted(Exception):
    """The sender gave up in the middle of a data stream."""


class Channel:
    """Messages and data streams over one stream socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray(CHUNK)
        self.view = memoryview(self.buf)
        self._len = bytearray(4)

    def _recv_exact(self, view: memoryview) -> bool:
        """Fill ``view``; False on EOF before the first byte, error on EOF inside."""
        got = 0
        while got < len(view):
            n = self.sock.recv_into(view[got:])
            if n == 0:
                if got == 0:
                    return False
                raise ProtocolError("connection closed in the middle of a frame")
            got += n
        return True

    def _recv_len(self) -> int | None:
        if not self._recv_exact(memoryview(self._len)):
            return None
        n: int = _LEN.unpack(self._len)[0]
        return n

    def send(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        self.sock.sendall(_LEN.pack(len(data)) + data)

    def recv(self) -> dict[str, Any]:
        n = self._recv_len()
        if n is None:
            raise EOFError
        if n > MAX_MSG:
            raise ProtocolError(f"message of {n} bytes")
        data = bytearray(n)
        if n and not self._recv_exact(memoryview(data)):
            raise ProtocolError("connection closed in the middle of a message")
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ProtocolError("message is not an object")
        return obj

    def send_chunk(self, data: bytes | bytearray | memoryview) -> None:
        if len(data):
            self.sock.sendall(_LEN.pack(len(data)))
            self.sock.sendall(data)

    def end(self) -> None:
        self.sock.sendall(_LEN.pack(0))

    def abort(self) -> None:
        self.sock.sendall(_LEN.pack(ABORT))

    def recv_chunk(self) -> memoryview | None:
        """The next chunk (valid until the next call), or None at the end of the stream."""
        n = self._recv_len()
        if n is None:
            raise ProtocolError("connection closed in the middle of a stream")
        if n == 0:
            return None
        if n == ABORT:
            raise Aborted
        if n > CHUNK:
            raise ProtocolError(f"chunk of {n} bytes")
        view = self.view[:n]
        if not self._recv_exact(view):
            raise ProtocolError("connection closed in the middle of a chunk")
        return view

    def chunks(self) -> Iterator[memoryview]:
        while (chunk := self.recv_chunk()) is not None:
            yield chunk

    def drain(self) -> None:
        for _ in self.chunks():
            pass

    def send_fd(self, fd: int) -> int:
        """Stream a file's contents from its current offset, then end the stream."""
        total = 0
        buf = bytearray(CHUNK)
        while True:
            n = os.readv(fd, [buf])
            if n == 0:
                break
            self.send_chunk(memoryview(buf)[:n])
            total += n
        self.end()
        return total

    def recv_fd(self, fd: int) -> int:
        """Write a whole incoming stream to ``fd``."""
        total = 0
        for chunk in self.chunks():
            while chunk:
                n = os.write(fd, chunk)
                chunk = chunk[n:]
                total += n
        return total


# -- the helper side ---------------------------------------------------------------------------

def _error(e: OSError | ValueError) -> dict[str, Any]:
    if isinstance(e, OSError):
        code = e.errno or errno.EIO
        return {"ok": False, "errno": code, "msg": os.strerror(code)}
    return {"ok": False, "errno": errno.EINVAL, "msg": str(e)}


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _special(mode: int) -> str:
    """What an ``other`` entry is, in words (for messages: "is a FIFO, not a regular file")."""
    for test, word in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return word
    return "special file"


#: directories a walk keeps open at most (besides its root); deeper levels are reopened
MAX_OPEN_DIRS = 32


class Moved(FileNotFoundError):
    """A directory of a walk is no longer where the walk found it; ``depth`` is its level
    (the walk's root is 0, its entries 1, …)."""

    def __init__(self, depth: int, name: str) -> None:
        super().__init__(errno.ENOENT, os.strerror(errno.ENOENT), name)
        self.depth = depth


class DirChain:
    """The directories from a walk's root down to where the walk is, for trees of any depth.

    A walk that held one descriptor per level (and recursed once per level) failed on a tree a
    container makes in seconds (``mkdir d; cd d`` 1,200 times): ``RecursionError``, or
    ``EMFILE`` under a 1,024-descriptor limit. Here each level is entered with
    ``openat(…, O_NOFOLLOW | O_DIRECTORY)`` as before, and its (device, inode) recorded; past
    ``keep`` open levels the uppermost one's descriptor is closed. Coming back up, a closed
    level is reopened by ``..`` of the level below and accepted only if it is the directory
    recorded; if not (that directory was moved meanwhile), by its names from the nearest open
    level, each step ``O_NOFOLLOW`` and checked the same way. A level that cannot be found again
    is ``Moved``, never another directory: no symlink is followed, nothing is reached by a path
    string. The root (given, owned from then on) stays open. Used by the file helper's walk and
    by the host side of a pull (``files.pull_tree``).
    """

    __slots__ = ("_keep", "_levels", "_low")

    def __init__(self, root_fd: int, keep: int | None = None) -> None:
        st = os.fstat(root_fd)
        # per level: [fd or -1, st_dev, st_ino, name]
        self._levels: list[list[Any]] = [[root_fd, st.st_dev, st.st_ino, ""]]
        self._low = 1  # levels from here down are open (the root always is)
        self._keep = max(1, MAX_OPEN_DIRS if keep is None else keep)

    @property
    def depth(self) -> int:
        return len(self._levels) - 1

    @property
    def fd(self) -> int:
        """The deepest level's descriptor (always open)."""
        fd: int = self._levels[-1][0]
        return fd

    def path(self, depth: int) -> str:
        """The names from the root (exclusive) down to level ``depth``, joined by ``/``: what
        a ``Moved`` names, relative to the root."""
        return "/".join(level[3] for level in self._levels[1:depth + 1])

    def enter(self, name: str) -> int:
        """Open the directory ``name`` of the deepest level, never through a symlink; its fd."""
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=self.fd)
        st = os.fstat(fd)
        self._levels.append([fd, st.st_dev, st.st_ino, name])
        if len(self._levels) - self._low > self._keep:
            level = self._levels[self._low]
            os.close(level[0])
            level[0] = -1
            self._low += 1
        return fd

    def leave(self) -> None:
        """Close the deepest level; the one above is open again (``Moved`` if it is gone)."""
        fd = self._levels.pop()[0]
        try:
            if self.depth >= 1 and self._low > self.depth:
                self._reopen(fd)
        finally:
            os.close(fd)
        self._low = min(self._low, max(1, self.depth))

    def _same(self, fd: int, depth: int) -> bool:
        st = os.fstat(fd)
        level = self._levels[depth]
        return (st.st_dev, st.st_ino) == (level[1], level[2])

    def _reopen(self, below: int) -> None:
        depth = self.depth
        try:
            up = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=below)
        except OSError:  # ``below`` was removed: no ``..`` any more
            up = -1
        if up >= 0:
            if self._same(up, depth):
                self._levels[depth][0] = up
                return
            os.close(up)
        fd = self._levels[0][0]  # every level between the root and this one is closed
        for d in range(1, depth + 1):
            name = self._levels[d][3]
            try:
                nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=fd)
            except OSError:
                raise Moved(d, name) from None
            finally:
                if d > 1:
                    os.close(fd)
            if not self._same(nxt, d):
                os.close(nxt)
                raise Moved(d, name)
            fd = nxt
        self._levels[depth][0] = fd

    def close(self) -> None:
        for level in self._levels:
            if level[0] >= 0:
                os.close(level[0])
                level[0] = -1
        self._levels.clear()


class Server:
    def __init__(self, chan: Channel, offset: int) -> None:
        self.chan = chan
        self.offset = offset  # host id = container id + offset (stopped FUSE pools)

    # ids ---------------------------------------------------------------------------------------
    def _out(self, host_id: int) -> int:
        cid = host_id - self.offset
        return cid if cid >= 0 else OVERFLOW_ID

    def _in(self, cid: int) -> int:
        return cid + self.offset

    def _stat(self, st: os.stat_result, target: str | None = None) -> dict[str, Any]:
        out = {"type": _kind(st.st_mode), "mode": stat.S_IMODE(st.st_mode),
               "uid": self._out(st.st_uid), "gid": self._out(st.st_gid), "size": st.st_size,
               "mtime": st.st_mtime}
        if target is not None:
            out["target"] = target
        if out["type"] == "other":
            out["special"] = _special(st.st_mode)
        return out

    def _ids(self, uid: int | None, gid: int | None, created: bool) -> tuple[int, int]:
        """Host ids to set (-1: leave). A file this process created is owned by container root,
        which on a shifted (FUSE) rootfs is the offset, not host root."""
        dflt = self.offset if created and self.offset else -1
        return (self._in(uid) if uid is not None else dflt,
                self._in(gid) if gid is not None else dflt)

    def _chown(self, fd: int, uid: int | None, gid: int | None, ignore_unmapped: bool,
               created: bool = True) -> None:
        u, g = self._ids(uid, gid, created)
        if u == -1 and g == -1:
            return
        try:
            os.fchown(fd, u, g)
        except OSError as e:
            if not (ignore_unmapped and e.errno in (errno.EINVAL, errno.EPERM)):
                raise

    # path helpers ------------------------------------------------------------------------------
    @staticmethod
    def _check(path: object) -> str:
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise ValueError(f"not an absolute path: {path!r}")
        return path

    def _makedirs(self, path: str, mode: int, uid: int | None, gid: int | None) -> None:
        """Create missing directories of ``path`` with ``mode`` and owner, like ``mkdir -p``."""
        parts = [p for p in path.split("/") if p]
        current = ""
        for part in parts:
            current += "/" + part
            try:
                st = os.stat(current)
            except FileNotFoundError:
                try:
                    os.mkdir(current, 0o700)
                except FileExistsError:
                    continue
                fd = os.open(current, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                try:
                    self._chown(fd, uid, gid, False)
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), current)

    # operations --------------------------------------------------------------------------------
    def op_stat(self, req: dict[str, Any]) -> None:
        path = self._check(req["path"])
        st = os.stat(path) if req.get("follow", True) else os.lstat(path)
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
        self.chan.send({"ok": True, "stat": self._stat(st, target)})

    def op_listdir(self, req: dict[str, Any]) -> None:
        path = self._check(req["path"])
        self.chan.send({"ok": True, "names": sorted(os.listdir(path))})

    def _open_regular(self, path: str) -> tuple[int, os.stat_result]:
        # O_NONBLOCK: a FIFO planted at the path must not hang us; then insist on a regular file
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{path} is a {_special(st.st_mode)}, not a regular file")
            os.set_blocking(fd, True)
            return fd, st
        except BaseException:
            os.close(fd)
            raise

    def op_get(self, req: dict[str, Any]) -> None:
        path = self._check(req["path"])
        fd, st = self._open_regular(path)
        try:
            self.chan.send({"ok": True, "stat": self._stat(st)})
            try:
                self.chan.send_fd(fd)
                trailer: dict[str, Any] = {"ok": True}
            except OSError as e:
                if isinstance(e, (BrokenPipeError, ConnectionError)):
                    raise
                self.chan.end()
                trailer = _error(e)
            self.chan.send(trailer)
        finally:
            os.close(fd)

    def op_put(self, req: dict[str, Any]) -> None:
        """Write a file from a stream, atomically: a temporary file renamed over the target.

        A symlink at the path is followed (inside the container: ``realpath`` runs in this
        process's root) and its target replaced; only a hard-linked file is rewritten in place,
        so its other names see the change. A new file gets ``uid``/``gid``/``mode`` (default
        root, 0644); an existing one keeps its own unless the key is in ``force``.
        """
        path = self._check(req["path"]).rstrip("/") or "/"
        uid, gid, mode = req.get("uid"), req.get("gid"), req.get("mode")
        force = set(req.get("force", ()))
        ignore = bool(req.get("ignore_unmapped"))
        if req.get("parents"):
            self._makedirs(os.path.dirname(path), 0o750, uid, gid)
        into = req.get("into")
        if into:
            try:
                if stat.S_ISDIR(os.stat(path).st_mode):
                    path = os.path.join(path, self._name(into))
            except FileNotFoundError:
                pass
        old = _lstat(path)
        if old is not None and stat.S_ISLNK(old.st_mode):
            path = os.path.realpath(path)
            old = _lstat(path)
        if old is not None and stat.S_ISDIR(old.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if old is not None and not stat.S_ISREG(old.st_mode):
            raise ValueError(f"{path} is not a regular file")
        tmp: str | None = None
        if old is None or old.st_nlink == 1:
            tmp = os.path.join(os.path.dirname(path),
                               f".{os.path.basename(path)}.lxdlib-{os.urandom(6).hex()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
        aborted = False
        try:
            if tmp is None:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ValueError(f"{path} is not a regular file")
                os.set_blocking(fd, True)
            self.chan.send({"ok": True})
            try:
                if tmp is None:
                    os.ftruncate(fd, 0)
                failed = self._recv_to(fd)
            except Aborted:
                aborted = True
                return
            if failed is not None:
                raise failed
            if old is not None:  # replacing: keep what is not forced
                want_uid = uid if uid is not None and "uid" in force else self._out(old.st_uid)
                want_gid = gid if gid is not None and "gid" in force else self._out(old.st_gid)
                want_mode = mode if mode is not None and "mode" in force else \
                    stat.S_IMODE(old.st_mode)
            else:
                want_uid, want_gid = uid, gid
                want_mode = 0o644 if mode is None else mode
            if tmp is not None or {"uid", "gid"} & force:
                self._chown(fd, want_uid, want_gid, ignore)
            os.fchmod(fd, want_mode & 0o7777)  # after chown, which clears setuid bits
            if tmp is not None:
                try:
                    os.rename(tmp, path)
                    tmp = None
                except OSError as e:
                    if e.errno not in (errno.EBUSY, errno.EXDEV):
                        raise
                    self._copy_over(fd, path)  # a bind-mounted file cannot be replaced
        finally:
            os.close(fd)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            if aborted:  # answered only once the temporary file is gone
                self.chan.send({"ok": False, "errno": errno.ECANCELED, "msg": "aborted"})
        self.chan.send({"ok": True, "path": path})

    def _recv_to(self, fd: int) -> OSError | None:
        """Write the incoming stream to ``fd``; after a write error keep reading (and dropping)
        to the end of the stream so the channel stays in step, and return the error."""
        failed: OSError | None = None
        for chunk in self.chan.chunks():
            if failed is not None:
                continue
            try:
                while chunk:
                    chunk = chunk[os.write(fd, chunk):]
            except OSError as e:
                failed = e
        return failed

    @staticmethod
    def _copy_over(src: int, path: str) -> None:
        dst = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOCTTY)
        try:
            os.lseek(src, 0, os.SEEK_SET)
            while True:
                data = os.read(src, CHUNK)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    view = view[os.write(dst, view):]
        finally:
            os.close(dst)

    @staticmethod
    def _name(name: object) -> str:
        if not isinstance(name, str) or not name or "/" in name or name in (".", "..") \
                or "\0" in name:
            raise ValueError(f"invalid file name {name!r}")
        return name

    def op_mkdir(self, req: dict[str, Any]) -> None:
        path = self._check(req["path"]).rstrip("/") or "/"
        mode = int(req.get("mode", 0o755)) & 0o7777
        uid, gid = req.get("uid"), req.get("gid")
        if req.get("parents"):
            self._makedirs(os.path.dirname(path), mode, uid, gid)
        created = True
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not req.get("exist_ok") or not os.path.isdir(path):
                raise
            if not req.get("apply_existing"):
                self.chan.send({"ok": True})
                return
            created = False
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            self._chown(fd, uid, gid, bool(req.get("ignore_unmapped")), created)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        self.chan.send({"ok": True})

    def op_symlink(self, req: dict[str, Any]) -> None:
        path = self._check(req["path"]).rstrip("/")
        target = req["target"]
        if not isinstance(target, str) or not target or "\0" in target:
            raise ValueError(f"invalid symlink target {target!r}")
        if req.get("replace"):
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    os.unlink(path)
            except FileNotFoundError:
                pass
        os.symlink(target, path)
        u, g = self._ids(req.get("uid"), req.get("gid"), True)
        if u != -1 or g != -1:
            try:
                os.lchown(path, u, g)
            except OSError as e:
                if not (req.get("ignore_unmapped") and e.errno in (errno.EINVAL, errno.EPERM)):
                    raise
        self.chan.send({"ok": True})

    def op_delete(self, req: dict[str, Any]) -> None:
        path = self._check(req["path"]).rstrip("/")
        if not path:
            raise PermissionError(errno.EPERM, "refusing to delete /", "/")
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            if req.get("recursive"):
                parent = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
                try:
                    _rmtree_at(parent, os.path.basename(path))
                finally:
                    os.close(parent)
            else:
                os.rmdir(path)
        else:
            os.unlink(path)
        self.chan.send({"ok": True})

    def op_walk(self, req: dict[str, Any]) -> None:
        """Stream a whole tree, depth first, each entry before its children; files carry data.

        An entry is ``{"depth", "name", "stat"}``: its level below the root (1 for the root's
        own entries) and its name; the receiver keeps the names of the directories it is in, so
        no message grows with the depth. A failure ends the walk with the error and the
        ``depth``/``name`` of what failed (a directory or file gone meanwhile), so that the
        error names that path, not the root of the walk.
        """
        path = self._check(req["path"])
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            fd, st = self._open_regular(path)
            try:
                self.chan.send({"ok": True, "stat": self._stat(st)})
                sent = self._send_file(fd)
            finally:
                os.close(fd)
            self.chan.send({"end": True, **sent})
            return
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        chain = DirChain(dfd)
        at: list[Any] = [0, ""]  # what the walk is at: depth and name
        try:
            self.chan.send({"ok": True, "stat": self._stat(st)})
            try:
                self._walk(chain, at)
                end: dict[str, Any] = {"end": True, "ok": True}
            except OSError as e:
                if isinstance(e, (BrokenPipeError, ConnectionError)):
                    raise
                if isinstance(e, Moved):
                    at = [e.depth, str(e.filename)]
                end = {"end": True, **_error(e), "depth": at[0], "name": at[1]}
            self.chan.send(end)
        finally:
            chain.close()

    def _send_file(self, fd: int) -> dict[str, Any]:
        """Stream an open file; a read error mid-way aborts the stream (the receiver drops what
        it got) and is returned, so that the channel stays in step."""
        try:
            self.chan.send_fd(fd)
        except OSError as e:
            if isinstance(e, (BrokenPipeError, ConnectionError)):
                raise
            self.chan.abort()
            return _error(e)
        return {"ok": True}

    @staticmethod
    def _listing(dfd: int) -> list[str]:
        with os.scandir(dfd) as it:
            names = [e.name for e in it]
        names.sort(reverse=True)  # popped from the end: in order
        return names

    def _walk(self, chain: DirChain, at: list[Any]) -> None:
        """The entries below ``chain``'s root, in name order, depth first: a loop with a list of
        names still to visit per level (a recursion stopped at Python's ~1,000 levels), and
        ``chain`` holding a bounded number of directories open."""
        pending = [self._listing(chain.fd)]
        while pending:
            names = pending[-1]
            depth = len(pending)
            if not names:
                pending.pop()
                if pending:
                    at[:] = [depth - 1, ""]
                    chain.leave()
                continue
            name = names.pop()
            at[:] = [depth, name]
            dfd = chain.fd
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            entry: dict[str, Any] = {"depth": depth, "name": name}
            if stat.S_ISLNK(st.st_mode):
                self.chan.send({**entry, "stat": self._stat(st, os.readlink(name, dir_fd=dfd))})
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY,
                             dir_fd=dfd)
                try:
                    st = os.fstat(fd)
                    self.chan.send({**entry, "stat": self._stat(st)})
                    if stat.S_ISREG(st.st_mode):  # else it changed under us: an "other" entry
                        os.set_blocking(fd, True)
                        end = self._send_file(fd)
                        if not end["ok"]:
                            raise OSError(end["errno"], end["msg"])
                finally:
                    os.close(fd)
            elif stat.S_ISDIR(st.st_mode):
                self.chan.send({**entry, "stat": self._stat(st)})
                chain.enter(name)
                pending.append(self._listing(chain.fd))
            else:
                self.chan.send({**entry, "stat": self._stat(st)})

    def serve(self) -> None:
        ops = {"stat": self.op_stat, "listdir": self.op_listdir, "get": self.op_get,
               "put": self.op_put, "mkdir": self.op_mkdir, "symlink": self.op_symlink,
               "delete": self.op_delete, "walk": self.op_walk}
        while True:
            try:
                req = self.chan.recv()
            except EOFError:
                return
            fn = ops.get(str(req.get("op")))
            if fn is None:
                self.chan.send({"ok": False, "errno": errno.ENOSYS, "msg": "unknown operation"})
                continue
            try:
                fn(req)
            except (OSError, ValueError, KeyError, TypeError) as e:
                if isinstance(e, (BrokenPipeError, ConnectionError)):
                    return
                err = e if isinstance(e, (OSError, ValueError)) else ValueError(repr(e))
                self.chan.send(_error(err))


def _rmtree_at(parent: int, name: str) -> None:
    dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    try:
        with os.scandir(dfd) as it:
            entries = list(it)
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                _rmtree_at(dfd, e.name)
            else:
                os.unlink(e.name, dir_fd=dfd)
    finally:
        os.close(dfd)
    os.rmdir(name, dir_fd=parent)


def _enter(cfg: dict[str, Any]) -> int:
    """Move this process into the instance; returns the id offset to apply."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # nothing in the container may ptrace or read us
    os.setgroups([])
    if cfg["mode"] == "ns":
        userns = cfg.get("userns")
        if userns is not None:
            if libc.setns(int(userns), CLONE_NEWUSER) != 0:
                e = ctypes.get_errno()
                raise OSError(e, f"setns(user): {os.strerror(e)}")
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        if libc.setns(int(cfg["mntns"]), CLONE_NEWNS) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns(mnt): {os.strerror(e)}")
        os.chdir("/")
        return 0
    os.chroot(cfg["rootfs"])
    os.chdir("/")
    return int(cfg.get("offset", 0))


def _lock_imports() -> None:
    """From here on no module can be imported: the filesystem is the container's."""
    sys.meta_path[:] = []
    sys.path_hooks[:] = []
    sys.path[:] = []
    sys.path_importer_cache.clear()


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    sock = socket.socket(fileno=int(cfg["sock"]))
    chan = Channel(sock)
    for fd in (cfg.get("userns"), cfg.get("mntns")):
        if fd is not None:
            os.set_inheritable(int(fd), False)
    try:
        os.umask(0o022)
        offset = _enter(cfg)
    except OSError as e:
        chan.send(_error(e))
        return 1
    finally:
        for fd in (cfg.get("userns"), cfg.get("mntns")):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(int(fd))
    _lock_imports()
    chan.send({"ok": True})
    try:
        Server(chan, offset).serve()
    except (ProtocolError, ConnectionError):
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BaseException as exc:  # no traceback: it would read source files in the container
        if isinstance(exc, SystemExit):
            raise
        os.write(2, f"lxdlib file helper: {type(exc).__name__}: {exc}\n".encode(errors="replace"))
        sys.exit(1)
