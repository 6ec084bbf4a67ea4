"""``instance.files``: read and write an instance's files, never reaching the host through them.

Every operation talks to a helper process (``filehelper.py``) that has moved itself into the
instance first: the running container's user and mount namespaces, or a ``chroot`` into a
stopped one's rootfs (under the instance lock, so it cannot start meanwhile). Paths are resolved
there, as the container would; data streams over a socket in 1 MiB chunks, so files of any size
pass without being held in memory. One helper serves all the operations of a ``session()``, so
tree copies cost one process, not one per file.

Ownership is the container's view: ``uid=1000`` means uid 1000 inside (host uid base+1000 on disk
for an unprivileged instance, whatever the pool does).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import socket
import stat as stat_mod
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from . import filehelper
from .errors import (
    TYPE_CHECKING,
    AlreadyExists,
    DiskFull,
    InvalidArgument,
    LXCError,
    LxdlibError,
    NotFound,
    QuotaExceeded,
    WrongState,
)
from .filehelper import CHUNK, Channel, DirChain, Moved
from .hostroom import ENTRY, Room, Where, write_all
from .values import Value, assign

if TYPE_CHECKING:
    from typing import IO, Any, BinaryIO

    from .instance import InstanceCore
    from .runtime import Container

    Source = bytes | bytearray | memoryview | IO[bytes]

HELPER = Path(filehelper.__file__)


class FileStat(Value, frozen=True):
    """A file as the container sees it (ids are container ids)."""

    _fields = ("type", "mode", "uid", "gid", "size", "mtime", "target", "special")
    __slots__ = _fields

    type: str  # file, directory, symlink, other
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    size: int
    mtime: float
    target: str | None  # symlinks only
    special: str | None  # "other" only: FIFO, socket, character device, block device

    def __init__(self, type: str, mode: int, uid: int, gid: int, size: int, mtime: float,
                 target: str | None = None, special: str | None = None) -> None:
        assign(self, "type", type)
        assign(self, "mode", mode)
        assign(self, "uid", uid)
        assign(self, "gid", gid)
        assign(self, "size", size)
        assign(self, "mtime", mtime)
        assign(self, "target", target)
        assign(self, "special", special)

    @property
    def kind(self) -> str:
        """The type in words, for messages ("FIFO" rather than "other")."""
        return self.special or self.type

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> FileStat:
        return cls(type=str(d["type"]), mode=int(d["mode"]), uid=int(d["uid"]),
                   gid=int(d["gid"]), size=int(d["size"]), mtime=float(d["mtime"]),
                   target=d.get("target"), special=d.get("special"))


def _norm(path: str | os.PathLike[str]) -> str:
    p = os.fspath(path)
    if not p or "\0" in p:
        raise InvalidArgument(f"invalid path {p!r}")
    return p if p.startswith("/") else "/" + p


def _check_source(data: object) -> None:
    """``put``'s data is what its docstring promises, bytes or a binary file object; text is
    refused rather than encoded here, since which encoding it meant is the caller's to say."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return
    if isinstance(data, str) or not (hasattr(data, "readinto") or hasattr(data, "read")):
        hint = " (encode text first, e.g. text.encode())" if isinstance(data, str) else ""
        raise InvalidArgument(f"file data must be bytes or a binary file object, not "
                              f"{type(data).__name__}{hint}")


def _chunks_of(data: Source) -> Iterator[bytes | memoryview]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data).cast("B")
        for i in range(0, len(view), CHUNK):
            yield view[i:i + CHUNK]
        return
    readinto = getattr(data, "readinto", None)
    if readinto is not None:
        buf = bytearray(CHUNK)
        mv = memoryview(buf)
        while True:
            n = readinto(buf)
            if not n:
                return
            yield mv[:n]
    else:
        while True:
            chunk = data.read(CHUNK)
            if not chunk:
                return
            if not isinstance(chunk, (bytes, bytearray)):
                raise InvalidArgument("the source must give bytes (open it in binary mode)")
            yield chunk


def _check_ids(uid: int | None, gid: int | None) -> None:
    """An owner to give: an id inside the container, or -1 (LXD's "unchanged"). One past
    uid_t reached the helper inside, which ended with an ``OverflowError`` and left the
    command to say only that it stopped."""
    for what, n in (("uid", uid), ("gid", gid)):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int)
                              or not -1 <= n < 2**32 - 1):
            raise InvalidArgument(f"invalid {what} {n!r}: an id is 0-{2**32 - 2} (or -1)")


class Session:
    """One helper process inside the instance; every method is one request on its socket."""

    def __init__(self, inst: InstanceCore | None, *, rootfs: Path | None = None,
                 offset: int = 0) -> None:
        """For ``inst``; or (tests, tools) for a bare ``rootfs`` whose ids are shifted by
        ``offset`` on disk."""
        self.inst = inst
        self.label = inst.name if inst is not None else str(rootfs)
        self._rootfs, self._offset = rootfs, offset
        self._stack = contextlib.ExitStack()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # -- process -------------------------------------------------------------------------------
    def _start(self) -> None:
        fds: list[int] = []
        try:
            cfg = self._config(fds)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock = ours
            fds.append(theirs.detach())
            cfg["sock"] = fds[-1]
            exe = sys.executable or "/usr/bin/python3"
            self._proc = subprocess.Popen(
                [exe, "-I", "-S", str(HELPER), json.dumps(cfg)], pass_fds=fds,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        finally:
            for fd in fds:
                os.close(fd)
        self.chan = Channel(self._sock)
        try:
            hello = self.chan.recv()
        except (EOFError, filehelper.ProtocolError, OSError):
            hello = {"ok": False, "errno": errno.EIO, "msg": "the file helper exited"}
        if not hello.get("ok"):
            detail = self._stderr()
            raise LXCError(f"cannot enter {self.label!r} for file access: {hello.get('msg')}",
                           detail)

    def _config(self, fds: list[int]) -> dict[str, Any]:
        inst = self.inst
        if inst is None:
            return {"mode": "root", "rootfs": str(self._rootfs), "offset": self._offset}
        c = inst.handle()
        state = c.state
        if state in ("RUNNING", "FROZEN"):
            return self._ns_config(c, fds)
        if state != "STOPPED":
            raise WrongState(f"instance {inst.name!r} is {state.lower()}")
        self._stack.enter_context(inst._lock())  # it cannot start while we are in its rootfs
        if inst.handle().state != "STOPPED":
            raise WrongState(f"instance {inst.name!r} started while its files were being "
                             "opened; try again")
        rec = inst.record()
        pool = inst._pool(rec)
        pool.mount()
        rootfs = pool.volume_path("containers", inst.name) / "rootfs"
        return {"mode": "root", "rootfs": str(rootfs), "offset": inst._root_owner(rec)[0]}

    def _ns_config(self, c: Container, fds: list[int]) -> dict[str, Any]:
        name = self.label
        pid = int(c.init_pid)
        try:
            mnt = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            fds.append(mnt)
            user = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            fds.append(user)
        except FileNotFoundError:
            raise WrongState(f"instance {name!r} stopped") from None
        # the namespaces must be those of this instance's init, not of a recycled pid
        if c.init_pid != pid or c.state not in ("RUNNING", "FROZEN"):
            raise WrongState(f"instance {name!r} stopped")
        ours = os.stat("/proc/self/ns/user")
        theirs = os.fstat(user)
        same_user = (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino)
        return {"mode": "ns", "mntns": mnt, "userns": None if same_user else user}

    def _stderr(self) -> str:
        proc = self._proc
        if proc is None:
            return ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.stderr is None or proc.returncode is None:
            return ""
        return proc.stderr.read().decode(errors="replace").strip()

    def close(self) -> None:
        """End the helper (it exits when its socket closes) and release the instance lock."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()  # our own child, by pid
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
            self._proc = None
        self._stack.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------------
    def _where(self, path: str) -> str:
        return f"{self.label}{path}"

    def _fail(self, reply: dict[str, Any], path: str) -> LxdlibError:
        code = int(reply.get("errno") or errno.EIO)
        msg = str(reply.get("msg") or os.strerror(code))
        where = self._where(path)
        if code == errno.ENOENT:
            return NotFound("file", where)
        if code == errno.EEXIST:
            return AlreadyExists("file", where)
        if code in (errno.ENOSPC, errno.EDQUOT):
            return QuotaExceeded(f"{where}: {msg}")
        if code in (errno.EISDIR, errno.ENOTDIR, errno.EINVAL, errno.ELOOP, errno.ENOTEMPTY,
                    errno.ENAMETOOLONG):
            return InvalidArgument(f"{where}: {msg}")
        return LxdlibError(f"{where}: {msg}")

    def _recv(self, path: str, at: Callable[[dict[str, Any]], str] | None = None
              ) -> dict[str, Any]:
        """The next reply; a failure raises the typed error naming ``path`` (or, with ``at``,
        the path ``at`` finds in the reply)."""
        try:
            reply = self.chan.recv()
        except (EOFError, filehelper.ProtocolError, OSError) as e:
            raise self._stopped(path, e) from None
        if reply.get("ok") is False:
            where = path if at is None else at(reply)
            err = self._fail(reply, where)
            if where != path and isinstance(err, NotFound):  # below the root, gone meanwhile
                err = NotFound("file", self._where(where), "it was removed or renamed while "
                               "the tree was copied", repair=True)
            raise err
        return reply

    def _stopped(self, path: str, e: BaseException) -> LXCError:
        return LXCError(f"file access to {self._where(path)} failed: the helper stopped "
                        f"({e or type(e).__name__})", self._stderr())

    def _file_chunks(self, path: str, at: Callable[[dict[str, Any]], str]
                     ) -> Iterator[memoryview]:
        """A walked file's chunks; a read error inside aborts the stream, and the helper's
        reply after it raises the typed error naming that file."""
        try:
            yield from self.chan.chunks()
        except filehelper.Aborted:
            self._recv(path, at)
            raise LXCError(f"file access to {self._where(path)} failed: the helper aborted a "
                           "file without saying why") from None
        except (filehelper.ProtocolError, OSError) as e:
            raise self._stopped(path, e) from None

    def _call(self, req: dict[str, Any]) -> dict[str, Any]:
        self.chan.send(req)
        return self._recv(str(req["path"]))

    def stat(self, path: str, follow: bool = True) -> FileStat:
        return FileStat.from_wire(self._call({"op": "stat", "path": path, "follow": follow})
                                  ["stat"])

    def listdir(self, path: str) -> list[str]:
        return [str(n) for n in self._call({"op": "listdir", "path": path})["names"]]

    def get_into(self, path: str, write: Callable[[memoryview], object]) -> FileStat:
        """Stream a file's contents to ``write`` chunk by chunk.

        If ``write`` fails, the rest of the file is not read: the helper is ended (this session
        with it) and the error raised. Reading on to keep the channel in step never ended when
        a running container kept the file growing: a full disk (or ``DiskFull`` from a
        ``hostroom.Room``) was then a command that never returned."""
        st = FileStat.from_wire(self._call({"op": "get", "path": path})["stat"])
        for chunk in self.chan.chunks():
            try:
                write(chunk)
            except BaseException:
                self.close()
                raise
        self._recv(path)
        return st

    def put(self, path: str, data: Source, *, mode: int | None = None, uid: int | None = None,
            gid: int | None = None, force: Iterable[str] = ("mode", "uid", "gid"),
            parents: bool = False, into: str | None = None,
            ignore_unmapped: bool = False) -> str:
        """Write ``data`` to ``path``; returns the path written (``into`` a directory: inside)."""
        _check_source(data)  # before the instance is asked for anything
        _check_ids(uid, gid)
        self._call({"op": "put", "path": path, "mode": mode, "uid": uid, "gid": gid,
                    "force": [f for f in force if {"mode": mode, "uid": uid,
                                                   "gid": gid}[f] is not None],
                    "parents": parents, "into": into, "ignore_unmapped": ignore_unmapped})
        try:
            for chunk in _chunks_of(data):
                self.chan.send_chunk(chunk)
        except BaseException:
            self.chan.abort()
            with contextlib.suppress(LxdlibError):
                self._recv(path)
            raise
        self.chan.end()
        return str(self._recv(path)["path"])

    def mkdir(self, path: str, mode: int = 0o755, *, uid: int | None = None,
              gid: int | None = None, parents: bool = False, exist_ok: bool = False,
              apply_existing: bool = False, ignore_unmapped: bool = False) -> None:
        _check_ids(uid, gid)
        self._call({"op": "mkdir", "path": path, "mode": mode, "uid": uid, "gid": gid,
                    "parents": parents, "exist_ok": exist_ok, "apply_existing": apply_existing,
                    "ignore_unmapped": ignore_unmapped})

    def symlink(self, path: str, target: str, *, uid: int | None = None,
                gid: int | None = None, replace: bool = False,
                ignore_unmapped: bool = False) -> None:
        _check_ids(uid, gid)
        self._call({"op": "symlink", "path": path, "target": target, "uid": uid, "gid": gid,
                    "replace": replace, "ignore_unmapped": ignore_unmapped})

    def delete(self, path: str, recursive: bool = False) -> None:
        self._call({"op": "delete", "path": path, "recursive": recursive})

    def walk(self, path: str) -> Iterator[tuple[str, FileStat, Iterator[memoryview] | None]]:
        """The tree at ``path``, depth first: (relative path, stat, chunks for regular files).

        The root comes first with relative path ``""``. A file's chunks must be used before
        the next item is asked for (they are drained otherwise). Any depth: the helper sends
        each entry's level and name, and the directories it is in are kept here. An entry
        that vanishes during the walk (a running container renames or removes it) ends the
        walk with the typed error naming that entry's path, as ``path`` was given.
        """
        names: list[str] = []  # the directories the walk is in, below the root

        def at(reply: dict[str, Any]) -> str:
            depth, name = reply.get("depth"), reply.get("name")
            if not isinstance(depth, int) or not isinstance(name, str) \
                    or not 0 <= depth <= len(names) + 1:
                return path
            parts = [*names[:depth - 1], name] if name else names[:depth]
            return f"{path.rstrip('/')}/{'/'.join(parts)}" if parts else path

        first = self._call({"op": "walk", "path": path})
        root = FileStat.from_wire(first["stat"])
        if root.type == "file":
            chunks = self._file_chunks(path, at)
            yield "", root, chunks
            for _ in chunks:
                pass
        else:
            yield "", root, None
        while True:
            msg = self._recv(path, at)
            if msg.get("end"):
                return
            depth, name = msg.get("depth"), msg.get("name")
            if not isinstance(name, str):
                raise LXCError(f"file access to {self._where(path)} failed: the helper sent an "
                               "entry without a name")
            _safe_name(name)
            if not isinstance(depth, int) or not 1 <= depth <= len(names) + 1:
                raise LXCError(f"file access to {self._where(path)} failed: the helper sent "
                               f"{name!r} at depth {depth!r} outside the directories walked")
            del names[depth - 1:]
            rel = "/".join((*names, name))
            st = FileStat.from_wire(msg["stat"])
            if st.type == "file":
                chunks = self._file_chunks(path, at)
                yield rel, st, chunks
                for _ in chunks:
                    pass
            else:
                if st.type == "directory":
                    names.append(name)
                yield rel, st, None


class _Reader(io.RawIOBase):
    """A remote file opened for reading: chunks arrive as they are read."""

    def __init__(self, session: Session, path: str) -> None:
        self._session = session
        self._path = path
        self.stat = FileStat.from_wire(session._call({"op": "get", "path": path})["stat"])
        self._pending = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        while not self._pending and not self._eof:
            chunk = self._session.chan.recv_chunk()
            if chunk is None:
                self._eof = True
                self._session._recv(self._path)
            else:
                self._pending = chunk
        n = min(len(out), len(self._pending))
        out[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._session.close()  # an unfinished stream ends with the helper
        super().close()


class _Writer(io.RawIOBase):
    """A remote file opened for writing: the file appears, whole, when it is closed.

    Leaving a ``with`` block by an exception discards what was written.
    """

    def __init__(self, session: Session, path: str, req: dict[str, Any]) -> None:
        self._session = session
        self._path = path
        session._call(req)
        self._buf = bytearray()
        self.written_to = path

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        self._buf += view
        while len(self._buf) >= CHUNK:
            self._session.chan.send_chunk(memoryview(self._buf)[:CHUNK])
            del self._buf[:CHUNK]
        return len(view)

    def abort(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError, LxdlibError):
                self._session.chan.abort()
                self._session._recv(self._path)
            self._session.close()
            super().close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._buf:
                self._session.chan.send_chunk(self._buf)
                self._buf.clear()
            self._session.chan.end()
            self.written_to = str(self._session._recv(self._path)["path"])
        finally:
            self._session.close()
            super().close()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


class Files:
    """The files of one instance (``inst.files``); paths are absolute inside the instance."""

    def __init__(self, inst: InstanceCore) -> None:
        self.inst = inst

    def __repr__(self) -> str:
        return f"<Files of {self.inst.name!r}>"

    def session(self) -> Session:
        """One helper for many operations: ``with inst.files.session() as s: s.put(…)…``."""
        return Session(self.inst)

    def _emit(self, action: str, path: str) -> None:
        self.inst.ctx.events.emit(action, self.inst.name, path=path)

    # -- single files --------------------------------------------------------------------------
    def get(self, path: str | os.PathLike[str]) -> bytes:
        """The whole file (use ``get_to`` or ``open`` for big ones)."""
        out = bytearray()
        self.get_to(path, out)
        return bytes(out)

    def get_to(self, path: str | os.PathLike[str], dest: BinaryIO | bytearray | int
               ) -> FileStat:
        """Stream the file into ``dest`` (a binary file object, a bytearray or an fd)."""
        p = _norm(path)
        write: Callable[[memoryview], object]
        if isinstance(dest, bytearray):
            write = dest.extend
        elif isinstance(dest, int):
            fd = dest

            def write(chunk: memoryview) -> None:
                while chunk:
                    chunk = chunk[os.write(fd, chunk):]
        else:
            write = dest.write
        with self.session() as s:
            st = s.get_into(p, write)
        self._emit("instance-file-retrieved", p)
        return st

    def put(self, path: str | os.PathLike[str], data: Source, *, mode: int | None = None,
            uid: int | None = None, gid: int | None = None, parents: bool = False) -> None:
        """Write a file from bytes or a binary file object (streamed), atomically.

        A new file gets ``mode`` (default 0644) and ``uid``/``gid`` (default root); an existing
        one keeps its owner and mode unless they are given. ``parents`` creates missing
        directories (mode 0750, as ``file push -p``).
        """
        p = _norm(path)
        with self.session() as s:
            s.put(p, data, mode=mode, uid=uid, gid=gid, parents=parents)
        self._emit("instance-file-pushed", p)

    put_from = put

    def open(self, path: str | os.PathLike[str], mode: str = "rb", *,
             file_mode: int | None = None, uid: int | None = None, gid: int | None = None,
             parents: bool = False) -> Any:
        """A streaming file object: ``"rb"`` (buffered reader) or ``"wb"`` (the file is
        replaced when it is closed; an exception inside ``with`` leaves the old one)."""
        p = _norm(path)
        if mode not in ("rb", "wb"):
            raise InvalidArgument(f"mode must be 'rb' or 'wb', not {mode!r}")
        s = self.session()
        try:
            if mode == "rb":
                return io.BufferedReader(_Reader(s, p), CHUNK)
            return _Writer(s, p, {"op": "put", "path": p, "mode": file_mode, "uid": uid,
                                  "gid": gid, "force": [k for k, v in (("mode", file_mode),
                                                                       ("uid", uid),
                                                                       ("gid", gid))
                                                        if v is not None],
                                  "parents": parents})
        except BaseException:
            s.close()
            raise

    def exists(self, path: str | os.PathLike[str]) -> bool:
        try:
            self.stat(path, follow=False)
            return True
        except NotFound:
            return False

    def stat(self, path: str | os.PathLike[str], follow: bool = True) -> FileStat:
        with self.session() as s:
            return s.stat(_norm(path), follow)

    def listdir(self, path: str | os.PathLike[str]) -> list[str]:
        with self.session() as s:
            return s.listdir(_norm(path))

    def delete(self, path: str | os.PathLike[str], recursive: bool = False) -> None:
        """Remove a file, a symlink or an empty directory (any directory with ``recursive``)."""
        p = _norm(path)
        with self.session() as s:
            s.delete(p, recursive)
        self._emit("instance-file-deleted", p)

    def mkdir(self, path: str | os.PathLike[str], mode: int = 0o755, *, uid: int | None = None,
              gid: int | None = None, parents: bool = False, exist_ok: bool = False) -> None:
        with self.session() as s:
            s.mkdir(_norm(path), mode, uid=uid, gid=gid, parents=parents,
                    exist_ok=exist_ok or parents)

    def symlink(self, path: str | os.PathLike[str], target: str, *, uid: int | None = None,
                gid: int | None = None) -> None:
        with self.session() as s:
            s.symlink(_norm(path), target, uid=uid, gid=gid)

    # -- trees ---------------------------------------------------------------------------------
    def push_tree(self, host_dir: str | os.PathLike[str], path: str | os.PathLike[str], *,
                  parents: bool = False, owner: bool = True) -> int:
        """Copy a host directory to ``path`` (created or merged into): modes, symlinks and,
        with ``owner``, uid/gid (ids the instance cannot map are left as root). Returns the
        number of entries copied."""
        src = Path(host_dir)
        dest = _norm(path).rstrip("/") or "/"
        if not src.is_dir():
            raise InvalidArgument(f"{src} is not a directory")
        with self.session() as s:
            count = push_tree(s, src, dest, parents=parents, owner=owner)
        self._emit("instance-file-pushed", dest)
        return count

    def pull_tree(self, path: str | os.PathLike[str], host_dir: str | os.PathLike[str], *,
                  parents: bool = False) -> int:
        """Copy ``path`` (a directory or a file) to ``host_dir`` on the host: modes (setuid and
        setgid dropped: the host must not get the container's setuid files; a directory's
        sticky bit kept), symlinks as they are, file mtimes. Returns the number of entries
        copied. Any depth; an entry a running instance removes or renames meanwhile ends the
        copy with ``NotFound`` naming it, and what was copied before stays, each file whole
        (``pull_tree``)."""
        with self.session() as s:
            count = pull_tree(s, _norm(path), Path(host_dir), parents=parents)
        self._emit("instance-file-retrieved", _norm(path))
        return count


# -- tree copies (used by Files and the CLI) ---------------------------------------------------

def push_tree(s: Session, src: Path, dest: str, *, parents: bool = False,
              owner: bool = True) -> int:
    """Copy the host directory ``src`` into the instance at ``dest``.

    The tree may be a host user's (a home pushed into that user's container), who can swap a
    directory for a symlink while it is copied: a walk by path name followed it, and once the
    user swapped ``sub`` for ``/`` after its listing, ``sub/etc`` was the host's ``/etc`` —
    ``/etc/shadow`` landed in the container. So every step below ``src`` is relative to an
    open directory, with ``O_NOFOLLOW``, and what is copied is what was opened (``fstat``);
    an entry that changed between its listing and its opening is a typed error."""
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the caller's own path
    try:
        st = os.fstat(fd)
        ids: dict[str, Any] = {"uid": st.st_uid, "gid": st.st_gid} if owner else {}
        s.mkdir(dest, stat_mod.S_IMODE(st.st_mode), parents=parents, exist_ok=True,
                apply_existing=True, ignore_unmapped=True, **ids)
        return 1 + _push_dir(s, fd, src, dest, owner)
    finally:
        os.close(fd)


def _open_entry(dirfd: int, name: str, where: Path, directory: bool) -> tuple[int, os.stat_result]:
    """Open the entry ``name`` of ``dirfd`` without following a symlink put there since it
    was listed; ``LxdlibError`` if it is no longer the kind it was listed as."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = os.open(name, flags | (os.O_DIRECTORY if directory else 0), dir_fd=dirfd)
    except OSError as e:
        raise LxdlibError(f"{where / name} changed while it was copied: "
                          f"{e.strerror or e}") from None
    st = os.fstat(fd)
    if not (stat_mod.S_ISDIR(st.st_mode) if directory else stat_mod.S_ISREG(st.st_mode)):
        os.close(fd)
        raise LxdlibError(f"{where / name} changed while it was copied")
    os.set_blocking(fd, True)
    return fd, st


def _ids(st: os.stat_result, owner: bool) -> dict[str, Any]:
    return {"uid": st.st_uid, "gid": st.st_gid} if owner else {}


def _push_dir(s: Session, dirfd: int, where: Path, dest: str, owner: bool) -> int:
    count = 0
    with os.scandir(dirfd) as it:
        names = sorted(e.name for e in it)
    for name in names:
        target = f"{dest.rstrip('/')}/{name}"
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except FileNotFoundError:
            raise LxdlibError(f"{where / name} changed while it was copied") from None
        if stat_mod.S_ISLNK(st.st_mode):
            try:
                link = os.readlink(name, dir_fd=dirfd)
            except OSError:  # no longer a symlink
                raise LxdlibError(f"{where / name} changed while it was copied") from None
            s.symlink(target, link, replace=True, ignore_unmapped=True, **_ids(st, owner))
        elif stat_mod.S_ISDIR(st.st_mode):
            fd, st = _open_entry(dirfd, name, where, True)
            try:
                ids = _ids(st, owner)
                s.mkdir(target, stat_mod.S_IMODE(st.st_mode), exist_ok=True,
                        apply_existing=True, ignore_unmapped=True, **ids)
                count += _push_dir(s, fd, where / name, target, owner)
            finally:
                os.close(fd)
        elif stat_mod.S_ISREG(st.st_mode):
            fd, st = _open_entry(dirfd, name, where, False)
            ids = _ids(st, owner)
            with os.fdopen(fd, "rb", buffering=0) as f:
                s.put(target, f, mode=stat_mod.S_IMODE(st.st_mode), ignore_unmapped=True, **ids)
        else:
            continue  # devices, fifos, sockets are not copied
        count += 1
    return count


def _safe_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise LxdlibError(f"refusing file name {name!r} from the instance")
    return name


def _clear(dirfd: int, name: str, keep_dir: bool) -> bool:
    """Make room for ``name`` in ``dirfd``; True if a directory that may stay is there."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat_mod.S_ISDIR(st.st_mode):
        if keep_dir:
            return True
        raise InvalidArgument(f"cannot replace the directory {name!r} with a file")
    os.unlink(name, dir_fd=dirfd)  # a symlink is removed, never followed
    return False


def _host_path(dest: Path, chain: DirChain, name: str) -> Callable[[], Path]:
    """The host path of the entry ``name`` of ``chain``'s deepest level, made when asked."""
    depth = chain.depth
    return lambda: dest.parent / chain.path(depth) / name


def _write_host_file(dirfd: int, name: str, st: FileStat, chunks: Iterator[memoryview],
                     room: Room, where: Where) -> None:
    """Write a pulled file beside ``name`` and rename it into place once whole; ``DiskFull``
    (``room``) before it would reach root's reserve, and then nothing of it stays."""
    tmp = f".{name}.lxdlib-{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dirfd)
    try:
        room.look(fd, 0, where)  # a file may be on another filesystem than the last one
        for chunk in chunks:
            write_all(fd, chunk, room, where)
        os.fchmod(fd, st.mode & 0o777)
        os.utime(fd, (st.mtime, st.mtime))
        _clear(dirfd, name, keep_dir=False)
        os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dirfd)
        raise
    finally:
        os.close(fd)


def _host_step_failed(e: OSError, dest: Path, chain: DirChain | None, name: str) -> LxdlibError:
    """The typed error for a pull's host-side step that failed: a full disk says so
    (``DiskFull``); anything else (no such directory, a file where a directory goes, a
    component a host user swapped for a symlink meanwhile) names the host path where it
    struck, never a traceback."""
    where = dest.parent / chain.path(chain.depth) / name if chain is not None else dest
    if DiskFull.is_full(e):
        return DiskFull(where)
    return LxdlibError(f"cannot write {where} on the host: {e.strerror or e}")


def pull_tree(s: Session, path: str, dest: Path, *, parents: bool = False) -> int:
    """Write the instance's tree at ``path`` to ``dest``. Names from the instance are checked
    and every host-side step is relative to a directory fd with ``O_NOFOLLOW``, so a symlink
    pulled earlier (or planted) is replaced, never followed; the directories are held by a
    ``DirChain``, so any depth takes a bounded number of fds.

    A failure (an entry that vanished in a running instance, a full disk) leaves what was
    copied before it: each file is written beside its name and renamed, so it is there whole
    or not at all, and no temporary file stays.

    How much is written is the container's choice when it is running (a file it keeps
    growing, directories it keeps adding below where the walk is), and this process is root:
    every file chunk and entry is counted against a ``hostroom.Room``, so the pull stops with
    ``DiskFull`` where an unprivileged writer would, leaving the filesystem's root reserve
    whole. Files are read to their end, as LXD does: a file that never ends is stopped
    there."""
    dest = Path(os.path.realpath(dest))  # the caller's own path: its symlinks are meant
    count = 0
    chain: DirChain | None = None
    room = Room()
    try:
        for rel, st, chunks in s.walk(path):
            try:
                if chain is None:  # the root: made in dest's parent, the chain's level 0
                    name = dest.name
                    parent = dest.parent
                    if parents:
                        parent.mkdir(parents=True, exist_ok=True)
                    chain = DirChain(os.open(parent,
                                             os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
                else:
                    *dirs, name = rel.split("/")  # each name checked by ``Session.walk``
                    level = len(dirs) + 1  # the chain's level of its directory (the root is 1)
                    while chain.depth > level:
                        chain.leave()
                    if chain.depth != level:
                        raise LxdlibError(f"entry {rel!r} came before its directory")
                dirfd = chain.fd
                where = _host_path(dest, chain, name)
                if st.type != "file":
                    room.take(dirfd, ENTRY, where)
                if st.type == "directory":
                    if not _clear(dirfd, name, keep_dir=True):
                        os.mkdir(name, 0o700, dir_fd=dirfd)
                    # the sticky bit stays: a container's /tmp (1777) became 0777 here, where
                    # any host user could remove or swap what root wrote; setuid and setgid go
                    os.fchmod(chain.enter(name), st.mode & 0o1777)
                elif st.type == "file":
                    assert chunks is not None
                    _write_host_file(dirfd, name, st, chunks, room, where)
                elif st.type == "symlink":
                    assert st.target is not None
                    _clear(dirfd, name, keep_dir=False)
                    os.symlink(st.target, name, dir_fd=dirfd)
                else:
                    continue
                count += 1
            except Moved as e:  # a host user's rename in the destination: name what was lost
                assert chain is not None
                raise LxdlibError(f"{dest.parent / chain.path(e.depth)} changed while it was "
                                  "copied: it was moved away") from None
            except DiskFull:  # the room's, already naming the host path (an OSError too)
                raise
            except OSError as e:  # a host-side step (in the caller's, or a user's, directory)
                raise _host_step_failed(e, dest, chain, name) from None
    finally:
        if chain is not None:
            chain.close()
    return count
