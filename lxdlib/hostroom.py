"""Room on the host's disk for bytes an instance chose: stop where an unprivileged writer would.

lxdlib runs as root, and root may write into the blocks a filesystem keeps back for it (ext4's
reserve, 5 % by default, is there so that the host's logins, logs and services still work when
users have filled the disk). How much a pull from a container writes on the host is the
container's choice: a file it keeps growing (sparse, so that it costs the container nothing), a
tree it keeps extending below where the pull has got to. Such a pull wrote on until the kernel
refused root too, and by then it had eaten the reserve. ``Room`` makes these writers stop with
``DiskFull`` while the reserve is whole: before a write it looks at ``fstatvfs``'s ``f_bavail``
(what an unprivileged writer may still use) of the file or directory written into — at most once
per ``CHECK_EVERY`` bytes while there is plenty, and before every write once it is close — so
the cost is one system call per few MiB.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable

from .errors import DiskFull, InvalidArgument

#: the path a ``DiskFull`` names, or what makes it when needed (a deep walk's path costs its
#: depth to build, and is needed only on failure)
Where = object | Callable[[], object]

#: bytes written between two looks at the destination's free space while it has plenty
CHECK_EVERY = 4 << 20

#: kept free beyond what is written: the blocks a write brings along (extent and directory
#: blocks, the inode table's) come out of the same free space
SLACK = 256 << 10

#: what an entry without data (a directory, a symlink) is counted as: a directory's block
ENTRY = 4096

#: said with ``DiskFull`` when the kernel would still let root write
RESERVED = "what is left is reserved for root"


class Room:
    """The free space one writer may still use, looked at again every few MiB.

    One ``Room`` per writer (a pull, a file); not shared between threads.
    """

    __slots__ = ("_left",)

    def __init__(self) -> None:
        self._left = 0  # bytes that may be written before the next look

    def take(self, fd: int, n: int, where: Where) -> None:
        """Count ``n`` bytes about to be written through ``fd`` (a file or a directory on the
        destination's filesystem); ``DiskFull`` naming ``where`` if they would leave less than
        ``SLACK`` of the space an unprivileged writer may use."""
        if n <= self._left:
            self._left -= n
            return
        self.look(fd, n, where)

    def look(self, fd: int, n: int, where: Where) -> None:
        """``take`` with a fresh look (a new file may be on another filesystem, under a mount
        point inside the destination)."""
        st = os.fstatvfs(fd)
        if st.f_blocks == 0:  # a filesystem that keeps no count (some FUSE ones): no limit
            self._left = CHECK_EVERY
            return
        free = st.f_bavail * st.f_frsize - SLACK
        if n > free or (st.f_files and not st.f_favail):
            raise DiskFull(_named(where), RESERVED)
        self._left = min(free, CHECK_EVERY) - n


class Unlimited(Room):
    """The room of a device or a pipe written into (``/dev/null``, a FIFO a reader waits on):
    what goes there takes no room on a filesystem, whatever the one holding the node says."""

    __slots__ = ()

    def take(self, fd: int, n: int, where: Where) -> None:
        return


def into_device(path: str | os.PathLike[str]) -> bool:
    """Whether a destination named by the user is a character device or a FIFO, to be opened
    and written into as lxc does (``/dev/null``, ``/dev/stdout``, a named pipe), not a file
    to make beside it and rename over it: renamed over, ``/dev/null`` became a regular file of
    an instance's bytes that every later writer appended to. False for a regular file or a
    name not there yet; ``InvalidArgument`` for anything else (a disk, through a link or not:
    neither written into nor replaced)."""
    try:
        kind = stat.S_IFMT(os.stat(path).st_mode)
    except FileNotFoundError:
        return False
    if kind in (stat.S_IFCHR, stat.S_IFIFO):
        return True
    if kind == stat.S_IFREG:
        return False
    raise InvalidArgument(f"open {os.fspath(path)}: not a regular file, a character device "
                          "or a FIFO")


def _named(where: Where) -> object:
    return where() if callable(where) else where


def write_all(fd: int, data: memoryview, room: Room, where: Where) -> None:
    """Write all of ``data`` to ``fd``, counted against ``room`` first. The kernel's own
    refusal (a full disk the count did not foresee, a quota's ``EDQUOT``) is ``DiskFull``
    naming ``where`` too, so no writer says it its own way."""
    room.take(fd, len(data), where)
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError as e:
        if DiskFull.is_full(e):
            raise DiskFull(_named(where)) from None
        raise


def pump(src: int, fd: int, room: Room, where: Where, chunk: int = 1 << 20) -> int:
    """Copy what the descriptor ``src`` gives (a pipe from ``tar``) to ``fd`` until its end,
    counted against ``room``; the bytes copied. For writers whose output is sized by a
    container's tree (an instance's export): a program writing straight into the file, as
    root, would have written into the reserve."""
    import fcntl  # here: most commands that import this module pump nothing
    with contextlib.suppress(OSError):  # not a pipe, or over a user's pipe-max-size
        # a pipe holds 64 KiB: the writer (gzip, tar) would stop at every 64 KiB until this
        # process had read; 1 MiB lets it run ahead as it did writing the file itself
        fcntl.fcntl(src, fcntl.F_SETPIPE_SZ, chunk)
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    while n := os.readv(src, [buf]):
        write_all(fd, view[:n], room, where)
        total += n
    return total
