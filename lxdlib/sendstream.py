"""btrfs send streams from a backup are hostile input: check one before ``btrfs receive`` runs it.

``btrfs receive`` runs as host root. ``-C`` keeps its paths inside the destination, but a stream
can still do what an unprivileged tar unpack cannot: make device nodes (a block node of the pool's
own loop device gave raw access to every volume), set ``trusted.*`` xattrs, give the volume's own
directory to a host user, or start from (``snapshot``) or copy extents of (``clone``) any
subvolume of the pool it names by uuid — another instance's files. So every command is parsed here,
from the binary stream itself rather than ``btrfs receive --dump`` text (whose escaping of names
and xattr values is not a stable interface), and checked against one rule: nothing beyond what an
unprivileged unpack may leave. Anything not understood is refused.

What stays allowed, as tar keeps it too: fifos and sockets, whiteouts (char 0:0, which an
unprivileged process may make), setuid/setgid modes, any owner, file capabilities, ``user.*``,
``security.*`` and ACL xattrs. Who can reach those files is the directory modes' business.

The stream's format (``btrfs-stream\\0``, a version, then commands of typed attributes) is the
kernel's ``send.h``; versions 1 and 2 are read (3 adds fs-verity, refused).
"""

from __future__ import annotations

import stat
import struct
import uuid as uuidlib
from collections.abc import Collection, Iterator

from .errors import TYPE_CHECKING, UnsafeStream
from .values import Value, assign

if TYPE_CHECKING:
    from typing import BinaryIO

MAGIC = b"btrfs-stream\0"
VERSIONS = (1, 2)
#: No command the kernel writes is near this (v2 encoded writes are ~128 KiB).
MAX_COMMAND = 16 * 1024 * 1024

# commands (send.h)
SUBVOL, SNAPSHOT, MKFILE, MKDIR, MKNOD, MKFIFO, MKSOCK, SYMLINK = 1, 2, 3, 4, 5, 6, 7, 8
RENAME, LINK, UNLINK, RMDIR, SET_XATTR, REMOVE_XATTR, WRITE, CLONE = 9, 10, 11, 12, 13, 14, 15, 16
TRUNCATE, CHMOD, CHOWN, UTIMES, END, UPDATE_EXTENT = 17, 18, 19, 20, 21, 22
FALLOCATE, FILEATTR, ENCODED_WRITE, ENABLE_VERITY = 23, 24, 25, 26
COMMAND_NAMES = {
    1: "subvol", 2: "snapshot", 3: "mkfile", 4: "mkdir", 5: "mknod", 6: "mkfifo", 7: "mksock",
    8: "symlink", 9: "rename", 10: "link", 11: "unlink", 12: "rmdir", 13: "set_xattr",
    14: "remove_xattr", 15: "write", 16: "clone", 17: "truncate", 18: "chmod", 19: "chown",
    20: "utimes", 21: "end", 22: "update_extent", 23: "fallocate", 24: "fileattr",
    25: "encoded_write", 26: "enable_verity"}
_MAX_COMMAND = {1: 22, 2: 25}

# attributes
A_UUID, A_CTRANSID, A_INO, A_SIZE, A_MODE, A_UID, A_GID, A_RDEV = 1, 2, 3, 4, 5, 6, 7, 8
A_XATTR_NAME, A_XATTR_DATA, A_PATH, A_PATH_TO, A_PATH_LINK = 13, 14, 15, 16, 17
A_FILE_OFFSET, A_DATA, A_CLONE_UUID, A_CLONE_CTRANSID, A_CLONE_PATH = 18, 19, 20, 21, 22
_MAX_ATTR = {1: 24, 2: 31}

#: What each checked command must carry.
_REQUIRED: dict[int, tuple[int, ...]] = {
    SUBVOL: (A_PATH, A_UUID), SNAPSHOT: (A_PATH, A_UUID, A_CLONE_UUID),
    MKNOD: (A_PATH, A_MODE, A_RDEV), SYMLINK: (A_PATH, A_PATH_LINK),
    RENAME: (A_PATH, A_PATH_TO), LINK: (A_PATH, A_PATH_LINK),
    SET_XATTR: (A_PATH, A_XATTR_NAME), CLONE: (A_PATH, A_CLONE_UUID, A_CLONE_PATH),
    CHMOD: (A_PATH, A_MODE), CHOWN: (A_PATH, A_UID, A_GID)}
#: Commands allowed without more checks than their paths.
_PLAIN = frozenset({MKFILE, MKDIR, MKFIFO, MKSOCK, UNLINK, RMDIR, REMOVE_XATTR, WRITE, TRUNCATE,
                    UTIMES, UPDATE_EXTENT, FALLOCATE, ENCODED_WRITE})
#: xattr namespaces tar restores too (it runs without CAP_SYS_ADMIN: never ``trusted.*``).
_XATTR_PREFIXES = ("user.", "security.", "system.posix_acl_access", "system.posix_acl_default",
                   "btrfs.compression")
#: The volume's own directory must stay root's and writable by root only.
_ROOT_FORBIDDEN_MODE = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | 0o022


class Command(Value, frozen=True):
    """One command of a stream: its number and its attributes (type → raw value)."""

    _fields = ("cmd", "attrs")
    __slots__ = _fields

    cmd: int
    attrs: dict[int, bytes]

    def __init__(self, cmd: int, attrs: dict[int, bytes]) -> None:
        assign(self, "cmd", cmd)
        assign(self, "attrs", attrs)

    @property
    def name(self) -> str:
        return COMMAND_NAMES.get(self.cmd, f"command {self.cmd}")


class StreamInfo(Value, frozen=True):
    """What a checked stream makes: one subvolume ``name`` with the sender's ``uuid``, based on
    the earlier stream ``parent`` (a ``snapshot`` stream) or on nothing."""

    _fields = ("name", "uuid", "parent")
    __slots__ = _fields

    name: str
    uuid: str
    parent: str | None

    def __init__(self, name: str, uuid: str, parent: str | None) -> None:
        assign(self, "name", name)
        assign(self, "uuid", uuid)
        assign(self, "parent", parent)


def _read(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise UnsafeStream(f"the btrfs stream is truncated ({what})")
    return data


def commands(f: BinaryIO, forward: BinaryIO | None = None, *,
             alone: bool = True) -> Iterator[Command]:
    """The commands of the stream in ``f`` up to and including ``end``; ``UnsafeStream`` for a
    stream that is truncated, has data after ``end`` or anything this parser does not know.

    With ``forward``, each command's bytes are written there once the consumer asks for the next
    one (it accepted this one): a receiver fed this way only ever sees checked commands.
    ``alone=False``: ``f`` goes on after the stream (a channel), so reading stops at ``end``."""
    head = _read(f, len(MAGIC), "header")
    if head != MAGIC:
        raise UnsafeStream("not a btrfs send stream")
    raw_version = _read(f, 4, "header")
    (version,) = struct.unpack("<I", raw_version)
    if version not in VERSIONS:
        raise UnsafeStream(f"btrfs send stream version {version} is not supported")
    if forward is not None:
        forward.write(head + raw_version)
    while True:
        raw_head = _read(f, 10, "command header")
        length, cmd, _crc = struct.unpack("<IHI", raw_head)
        if length > MAX_COMMAND:
            raise UnsafeStream(f"a btrfs stream command of {length} bytes")
        if cmd == 0 or cmd > _MAX_COMMAND[version]:
            raise UnsafeStream(f"unknown btrfs stream command {cmd}")
        body = _read(f, length, COMMAND_NAMES[cmd])
        yield Command(cmd, _attributes(body, version, cmd))
        if forward is not None:
            forward.write(raw_head)
            forward.write(body)
        if cmd == END:
            if alone and f.read(1):
                raise UnsafeStream("data after the end of the btrfs stream")
            return


def _attributes(body: bytes, version: int, cmd: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(body):
        if pos + 2 > len(body):
            raise UnsafeStream("a btrfs stream attribute is cut short")
        (kind,) = struct.unpack_from("<H", body, pos)
        if kind == 0 or kind > _MAX_ATTR[version]:
            raise UnsafeStream(f"unknown btrfs stream attribute {kind}")
        if kind in out:
            raise UnsafeStream(f"btrfs stream attribute {kind} given twice")
        if version >= 2 and kind == A_DATA:  # v2: data runs to the end of the command
            out[kind] = body[pos + 2:]
            break
        if pos + 4 > len(body):
            raise UnsafeStream("a btrfs stream attribute is cut short")
        (size,) = struct.unpack_from("<H", body, pos + 2)
        if pos + 4 + size > len(body):
            raise UnsafeStream("a btrfs stream attribute is cut short")
        out[kind] = body[pos + 4:pos + 4 + size]
        pos += 4 + size
    if cmd in _REQUIRED and any(a not in out for a in _REQUIRED[cmd]):
        raise UnsafeStream(f"btrfs stream command {COMMAND_NAMES[cmd]} lacks an attribute")
    return out


def _u64(raw: bytes, what: str) -> int:
    if len(raw) != 8:
        raise UnsafeStream(f"btrfs stream: {what} is not a 64-bit number")
    return int(struct.unpack("<Q", raw)[0])


def _uuid(raw: bytes) -> str:
    if len(raw) != 16:
        raise UnsafeStream("btrfs stream: a uuid is not 16 bytes")
    return str(uuidlib.UUID(bytes=raw))


def _path(raw: bytes, what: str) -> str:
    """A path inside the subvolume (``""`` is its root): relative, no ``..``, no NUL."""
    if b"\0" in raw:
        raise UnsafeStream(f"btrfs stream: NUL in a {what}")
    text = raw.decode("utf-8", "surrogateescape")
    if text.startswith("/") or ".." in text.split("/"):
        raise UnsafeStream(f"btrfs stream: {what} {text!r} leaves the volume")
    # as btrfs receive resolves it: "./", "a/./" and "a//" name the volume's root and "a"
    # (the checks of the root compare with "")
    return "/".join(part for part in text.split("/") if part not in ("", "."))


def check(f: BinaryIO, known: Collection[str] = (), root_owners: range = range(0),
          forward: BinaryIO | None = None, *, alone: bool = True) -> StreamInfo:
    """Check the stream in ``f``; ``known`` are the uuids of the streams of the same backup
    received before it, the only subvolumes it may start from or clone from; ``root_owners``
    the host uids besides 0 that may own the volume's own directory (the range lxdlib maps
    containers' ids into). ``forward`` and ``alone`` as for ``commands``."""
    info: StreamInfo | None = None
    for c in commands(f, forward, alone=alone):
        if info is None:
            if c.cmd not in (SUBVOL, SNAPSHOT):
                raise UnsafeStream(f"a btrfs stream must begin with a subvolume, not {c.name}")
            name = _path(c.attrs[A_PATH], "subvolume name")
            if not name or "/" in name:
                raise UnsafeStream(f"btrfs stream: bad subvolume name {name!r}")
            parent = None
            if c.cmd == SNAPSHOT:
                parent = _uuid(c.attrs[A_CLONE_UUID])
                if parent not in known:
                    raise UnsafeStream("the btrfs stream starts from a subvolume that is not in "
                                       "the backup")
            info = StreamInfo(name, _uuid(c.attrs[A_UUID]), parent)
            continue
        _check_command(c, info, known, root_owners)
    assert info is not None  # commands() ends with END, and END cannot come first
    return info


def _check_command(c: Command, info: StreamInfo, known: Collection[str],
                   root_owners: range) -> None:
    a = c.attrs
    if c.cmd in (SUBVOL, SNAPSHOT):
        raise UnsafeStream("a btrfs stream in a backup must make one subvolume")
    for kind, what in ((A_PATH, "path"), (A_PATH_TO, "path"), (A_CLONE_PATH, "clone source")):
        if kind in a:
            _path(a[kind], what)
    if c.cmd == LINK:
        _path(a[A_PATH_LINK], "hard link target")
    elif c.cmd == SYMLINK and b"\0" in a[A_PATH_LINK]:
        raise UnsafeStream("btrfs stream: NUL in a symlink target")
    path = _path(a[A_PATH], "path") if A_PATH in a else None
    if c.cmd in _PLAIN or c.cmd in (SYMLINK, RENAME, LINK, END):
        return
    if c.cmd == MKNOD:
        mode = _u64(a[A_MODE], "mode")
        kind = stat.S_IFMT(mode)
        whiteout = kind == stat.S_IFCHR and _u64(a[A_RDEV], "rdev") == 0
        if kind not in (stat.S_IFIFO, stat.S_IFSOCK) and not whiteout:
            raise UnsafeStream(f"the btrfs stream makes a device node {path!r}")
    elif c.cmd == CHMOD:
        if path == "" and _u64(a[A_MODE], "mode") & _ROOT_FORBIDDEN_MODE:
            raise UnsafeStream("the btrfs stream opens the volume's own directory to others")
    elif c.cmd == CHOWN:
        # A volume's own directory belongs to host root or, so that it can traverse it, to
        # the container's root host uid (group root): any other owner is a host user's.
        uid, gid = _u64(a[A_UID], "uid"), _u64(a[A_GID], "gid")
        if path == "" and (gid != 0 or (uid != 0 and uid not in root_owners)):
            raise UnsafeStream("the btrfs stream gives the volume's own directory away")
    elif c.cmd == SET_XATTR:
        name = a[A_XATTR_NAME].decode("utf-8", "replace")
        if not name.startswith(_XATTR_PREFIXES):
            raise UnsafeStream(f"the btrfs stream sets the xattr {name!r} on {path!r}")
        if path == "" and name != "security.selinux":
            raise UnsafeStream(f"the btrfs stream sets the xattr {name!r} on the volume's own "
                               "directory")
    elif c.cmd == CLONE:
        source = _uuid(a[A_CLONE_UUID])
        if source != info.uuid and source not in known:
            raise UnsafeStream("the btrfs stream copies data from a subvolume that is not in "
                               "the backup")
    else:
        raise UnsafeStream(f"the btrfs stream uses {c.name}, which a backup never needs")
