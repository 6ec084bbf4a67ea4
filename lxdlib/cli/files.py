"""``file push|pull|edit|delete|mkdir``: files in and out of instances, as ``lxc file`` does.

Arguments name instance files as ``<instance>/<path>``. Host paths are the user's own; instance
paths are resolved inside the instance by ``lxdlib.files`` (never on the host).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import TYPE_CHECKING, InvalidArgument, NotFound
from ..files import FileStat, Session, pull_tree, push_tree
from ..hostroom import Room, Unlimited, into_device, write_all
from ..progress import LineProgress

if TYPE_CHECKING:
    from typing import IO, Any

    from ..host import Host
    from ..instances import Instance


def split_target(ref: str, lxc_word: str = "") -> tuple[str, str]:
    """``c1/etc/hosts`` → ("c1", "/etc/hosts"); the ``local:`` remote prefix is accepted.
    ``lxc_word``: lxc's refusal of a ref without a path (``push``: ``Invalid target c1``,
    ``pull``: ``Invalid source c1``); without it, lxdlib's own words."""
    given = ref
    if ref.startswith("local:"):
        ref = ref[len("local:"):]
    name, sep, path = ref.partition("/")
    if not name or not sep:
        raise InvalidArgument(f"{lxc_word} {given}" if lxc_word else
                              f"{ref!r} is not <instance>/<path>")
    return name, "/" + path


def parse_mode(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        mode = int(text, 8)
    except ValueError:
        raise InvalidArgument(f"invalid mode {text!r} (octal, e.g. 0644)") from None
    if not 0 <= mode <= 0o7777:
        raise InvalidArgument(f"invalid mode {text!r}")
    return mode


def _instance(host: Host, name: str) -> Instance:
    return host.instances.get(name)


def _basename(path: str) -> str:
    name = os.path.basename(path.rstrip("/"))
    if not name:
        raise InvalidArgument(f"{path!r} names no file")
    return name


# -- push ---------------------------------------------------------------------------------------
class _Counted:
    """A host file read for ``put`` that reports each chunk to LXD's progress line."""

    def __init__(self, f: Any, total: int, bar: LineProgress) -> None:
        self.f, self.total, self.bar, self.done = f, total, bar, 0

    def readinto(self, buf: Any) -> int:
        n = int(self.f.readinto(buf) or 0)
        self.done += n
        self.bar(self.done, self.total)
        return n


def cmd_push(host: Host, a: argparse.Namespace) -> int:
    from typing import cast  # here: typing is no import of lxdlib's modules (errors.py)
    name, dest = split_target(a.target, "Invalid target")
    inst = _instance(host, name)
    mode, uid, gid = parse_mode(a.mode), a.uid, a.gid
    explicit = [k for k, v in (("mode", mode), ("uid", uid), ("gid", gid)) if v is not None]
    into_dir = dest.endswith("/") or len(a.sources) > 1
    # every source looked at before anything is pushed, as lxc opens them all first: a missing
    # one is the user's typo (one `Error:` line), and must not leave the others half-pushed
    stats = {src: _host_stat(src) for src in a.sources if src != "-"}
    with inst.files.session() as s:
        for src in a.sources:
            if src == "-":
                if a.recursive:
                    raise InvalidArgument("cannot push standard input recursively")
                s.put(dest, sys.stdin.buffer, mode=mode, uid=uid, gid=gid, force=explicit,
                      parents=a.create_dirs)
                continue
            sp = Path(src)
            st = stats[src]
            if stat.S_ISDIR(st.st_mode):
                if not a.recursive:
                    raise InvalidArgument(f"{src} is a directory (use -r)")
                target = dest.rstrip("/") or "/"
                if into_dir or _is_dir(s, target):
                    target = f"{target.rstrip('/')}/{_basename(str(sp.resolve()))}"
                push_tree(s, sp, target, parents=a.create_dirs)
                continue
            target = f"{dest.rstrip('/')}/{sp.name}" if into_dir else dest
            with open(sp, "rb", buffering=0) as f, \
                    LineProgress(f"Pushing {src} to {target}", quiet=a.quiet) as bar:
                # like LXD: a new file takes the source's mode and owner, flags override
                s.put(target, cast("IO[bytes]", _Counted(f, st.st_size, bar)),
                      mode=mode if mode is not None else stat.S_IMODE(st.st_mode),
                      uid=uid if uid is not None else st.st_uid,
                      gid=gid if gid is not None else st.st_gid, force=explicit,
                      parents=a.create_dirs, into=None if into_dir else sp.name,
                      ignore_unmapped=uid is None or gid is None)
    host.events.emit("instance-file-pushed", name, path=dest)
    return 0


def _host_stat(src: str) -> os.stat_result:
    try:
        return os.stat(src)
    except OSError as e:  # lxc's words: `open <path>: no such file or directory`
        raise InvalidArgument(f"open {src}: {_reason(e)}") from None


def _reason(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


def _is_dir(s: Session, path: str) -> bool:
    try:
        return s.stat(path).type == "directory"
    except NotFound:
        return False


# -- pull ---------------------------------------------------------------------------------------
def _write_file(dest: Path, st: FileStat, s: Session, path: str, quiet: bool = False) -> None:
    """Pull one file to ``dest``, written beside it and renamed into place once whole. What a
    running container keeps feeding is not bounded by its size at the start (LXD reads to the
    end too): every chunk is counted against a ``hostroom.Room``, so the pull stops with
    ``DiskFull`` before it reaches root's reserve, and nothing of the file stays."""
    dest = Path(os.path.realpath(dest))
    if into_device(dest):  # a disk, a socket: refused (neither written into nor replaced)
        _write_into(dest, s, path)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with LineProgress(f"Pulling {dest} from {path}", quiet=quiet) as bar:
            done = 0
            room = Room()
            room.look(fd, 0, dest)

            def write(chunk: memoryview) -> None:
                nonlocal done
                write_all(fd, chunk, room, dest)
                done += len(chunk)
                bar(done, 0)  # LXD's pull line counts bytes, with no total
            got = s.get_into(path, write)
            os.fchmod(fd, got.mode & 0o777)  # never the container's setuid bits
        os.close(fd)
        fd = -1
        os.replace(tmp, dest)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_into(dest: Path, s: Session, path: str) -> None:
    """Pull one file into ``dest``, a character device or a FIFO (``/dev/null``, a named pipe
    a reader waits on), opened and written as lxc's pull does. Renamed over, ``/dev/null``
    became a regular file of the container's bytes, which every later writer appended to. What
    goes into a device or a pipe takes no room on a filesystem: no ``Room``."""
    fd = os.open(dest, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        room = Unlimited()
        s.get_into(path, lambda chunk: write_all(fd, chunk, room, dest))
    finally:
        os.close(fd)


def cmd_pull(host: Host, a: argparse.Namespace) -> int:
    sources = [split_target(src, "Invalid source") for src in a.sources]
    to_stdout = a.dest == "-"
    dest = Path(a.dest)
    # as lxc: with -r the destination is always a directory that receives each source by its
    # name (`pull -r c1/root/d new` makes new/d), made with its parents when missing
    into_dir = not to_stdout and (a.dest.endswith("/") or len(sources) > 1 or dest.is_dir()
                                  or a.recursive)
    if a.create_dirs and not to_stdout:
        (dest if into_dir else dest.parent).mkdir(parents=True, exist_ok=True)
    elif a.recursive and not to_stdout and not dest.exists():
        dest.mkdir(mode=0o755, parents=True)
    if not to_stdout:
        # the host directory that receives is checked before the instance is read: a typo'd
        # destination is the user's mistake (one `Error:` line, as lxc's failed open)
        there = dest if into_dir else dest.parent
        if not there.is_dir():
            why = "not a directory" if there.exists() else "no such file or directory"
            raise InvalidArgument(f"open {a.dest}: {why}")
    for name, path in sources:
        inst = _instance(host, name)
        with inst.files.session() as s:
            st = s.stat(path)
            if st.type == "directory" and not a.recursive:  # lxc's words
                raise InvalidArgument("Can't pull a directory without --recursive")
            if to_stdout:
                if st.type != "file":
                    raise InvalidArgument(f"{name}{path} is a {st.kind}, not a regular file")
                out = sys.stdout.buffer
                s.get_into(path, out.write)
                out.flush()
                continue
            target = dest / _basename(path) if into_dir else dest
            if st.type == "directory":
                pull_tree(s, path, target)
            elif st.type == "file":
                _write_file(target, st, s, path, a.quiet)
            else:
                raise InvalidArgument(f"{name}{path} is a {st.kind}, not a regular file")
        host.events.emit("instance-file-retrieved", name, path=path)
    return 0


# -- edit, delete, mkdir ------------------------------------------------------------------------
def _editor() -> str:
    for cand in (os.environ.get("VISUAL"), os.environ.get("EDITOR"), "editor", "vi", "nano"):
        if cand and shutil.which(cand.split()[0]):
            return cand
    raise InvalidArgument("no editor found: set $EDITOR")


def edit_text(data: bytes, suffix: str = "") -> bytes:
    """New content from stdin when it is not a terminal, else from $EDITOR on a temp file."""
    if not sys.stdin.isatty():
        return sys.stdin.buffer.read()
    fd, tmp = tempfile.mkstemp(prefix="lxdlib-edit-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        rc = subprocess.call([*_editor().split(), tmp])
        if rc != 0:
            raise InvalidArgument(f"the editor exited with status {rc}; nothing changed")
        return Path(tmp).read_bytes()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def cmd_edit(host: Host, a: argparse.Namespace) -> int:
    name, path = split_target(a.target)
    inst = _instance(host, name)
    try:
        old = inst.files.get(path)
    except NotFound:
        old = b""
    new = edit_text(old, os.path.splitext(path)[1])
    if new != old:
        inst.files.put(path, new)  # an existing file keeps its owner and mode
    return 0


def cmd_delete(host: Host, a: argparse.Namespace) -> int:
    for ref in a.targets:
        name, path = split_target(ref)
        _instance(host, name).files.delete(path, recursive=a.recursive)
    return 0


def cmd_mkdir(host: Host, a: argparse.Namespace) -> int:
    mode = parse_mode(a.mode)
    for ref in a.targets:
        name, path = split_target(ref)
        _instance(host, name).files.mkdir(path, 0o755 if mode is None else mode, uid=a.uid,
                                          gid=a.gid, parents=a.parents)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("file", help="manage files in instances (push, pull, edit, delete, mkdir)")
    fs = p.add_subparsers(dest="file_command", metavar="<command>", required=True,
                          parser_class=type(p))

    q = fs.add_parser("push", help="copy host files into an instance")
    q.add_argument("sources", nargs="+", metavar="<source>")
    q.add_argument("target", metavar="<instance>/<path>")
    q.add_argument("-r", "--recursive", action="store_true")
    q.add_argument("-p", "--create-dirs", action="store_true", help="create parent directories")
    q.add_argument("--uid", type=int)
    q.add_argument("--gid", type=int)
    q.add_argument("--mode", help="octal permissions, e.g. 0644")
    q.set_defaults(func=cmd_push)

    q = fs.add_parser("pull", help="copy files out of an instance ('-' for standard output)")
    q.add_argument("sources", nargs="+", metavar="<instance>/<path>")
    q.add_argument("dest", metavar="<target path>|-")
    q.add_argument("-r", "--recursive", action="store_true")
    q.add_argument("-p", "--create-dirs", action="store_true", help="create parent directories")
    q.set_defaults(func=cmd_pull)

    q = fs.add_parser("edit", help="edit a file in an instance (stdin when not a terminal)")
    q.add_argument("target", metavar="<instance>/<path>")
    q.set_defaults(func=cmd_edit)

    q = fs.add_parser("delete", aliases=["rm"], help="delete files in an instance")
    q.add_argument("targets", nargs="+", metavar="<instance>/<path>")
    q.add_argument("-r", "--recursive", action="store_true", help="delete directories too")
    q.set_defaults(func=cmd_delete)

    q = fs.add_parser("mkdir", help="create directories in an instance")
    q.add_argument("targets", nargs="+", metavar="<instance>/<path>")
    q.add_argument("-p", "--parents", action="store_true")
    q.add_argument("--mode", help="octal permissions (default 0755)")
    q.add_argument("--uid", type=int)
    q.add_argument("--gid", type=int)
    q.set_defaults(func=cmd_mkdir)
