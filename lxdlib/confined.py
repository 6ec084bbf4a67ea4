"""Open paths inside a container's rootfs without ever leaving it.

A rootfs is hostile ground: ``/etc/hostname`` may be a symlink to ``/etc/shadow`` or ``../..``.
``openat2(RESOLVE_IN_ROOT)`` makes the kernel resolve every component, symlinks and ``..``
included, as if the rootfs were ``/`` — the host is simply not reachable. (LXD's CVE history for
templates and file transfers is exactly this class of bug.)
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
from pathlib import Path

from .errors import InvalidArgument
from .logs import get_logger

log = get_logger(__name__)

_SYS_OPENAT2 = 437  # same number on every architecture that has it
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: str, flags: int, mode: int = 0,
            resolve: int = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) -> int:
    how = struct.pack("QQQ", flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, resolve)
    buf = ctypes.create_string_buffer(how, len(how))
    fd = _libc.syscall(_SYS_OPENAT2, dirfd, os.fsencode(path), buf, len(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def open_in_root(root: Path, path: str, flags: int, mode: int = 0o644) -> int:
    """Open ``path`` (absolute, as seen inside the container) under ``root``."""
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return openat2(rootfd, path.lstrip("/") or ".", flags, mode)
    finally:
        os.close(rootfd)


def makedirs_in_root(root: Path, path: str, mode: int = 0o755) -> None:
    """``mkdir -p`` inside the rootfs, each component resolved in the root."""
    parts = [p for p in path.strip("/").split("/") if p]
    current = ""
    for part in parts:
        if part == "..":
            raise InvalidArgument(f"path {path!r} contains '..'")
        current = f"{current}/{part}"
        try:
            fd = open_in_root(root, current, os.O_PATH | os.O_DIRECTORY)
            os.close(fd)
            continue
        except FileNotFoundError:
            pass
        parent = open_in_root(root, os.path.dirname(current) or "/", os.O_PATH | os.O_DIRECTORY)
        try:
            os.mkdir(part, mode, dir_fd=parent)
            log.debug("made directory %s in %s", current, root)
        except FileExistsError:
            pass
        finally:
            os.close(parent)


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def write_in_root(root: Path, path: str, data: bytes, mode: int = 0o644,
                  uid: int | None = None, gid: int | None = None) -> None:
    """Write a whole file inside the rootfs; anything but a regular file (or nothing) at the
    target is refused with ``InvalidArgument``.

    The rootfs belongs to the container's root, which may plant a FIFO or a device node where
    we write: opening a FIFO for writing blocks until a reader comes (forever, at a start), and
    opening a device runs its driver. So the target is checked without opening it (``O_PATH``),
    then opened ``O_NONBLOCK`` without ``O_TRUNC`` and checked again on the descriptor (it may
    have been swapped in between); only a regular file is truncated and written."""
    makedirs_in_root(root, os.path.dirname(path) or "/")
    try:
        fd = open_in_root(root, path, os.O_PATH | os.O_NOFOLLOW)
    except FileNotFoundError:
        pass
    else:
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"{path!r} is {file_kind(st.st_mode)} in the container, not "
                                  "a regular file")
    try:
        fd = open_in_root(root, path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK |
                          os.O_NOCTTY, mode)
    except OSError as e:
        if e.errno in (errno.EISDIR, errno.ELOOP, errno.ENXIO):  # ENXIO: a FIFO, no reader
            raise InvalidArgument(f"{path!r} is not a regular file in the container") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"{path!r} is {file_kind(st.st_mode)} in the container, not "
                                  "a regular file")
        os.set_blocking(fd, True)
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
    finally:
        os.close(fd)
    log.debug("wrote %s in %s (%d bytes, creation mode %o, owner %s:%s)", path, root,
              len(data), mode, uid, gid)




def exists_in_root(root: Path, path: str) -> bool:
    try:
        os.close(open_in_root(root, path, os.O_PATH))
        return True
    except FileNotFoundError:
        return False
