"""btrfs snapshots made without holding Python's GIL.

Why not ``btrfsutil.create_snapshot``, which the driver uses for everything else: Debian's
python3-btrfsutil keeps the GIL through its ioctl, and a snapshot is a transaction commit —
1.2-2 ms on this project's VM in which no other thread of the caller runs (measured: a busy
thread made no progress during any of 10 calls). lxdlib overlaps that wait with the work of
the commit that follows it (``lxdlib.background``), and a program that embeds lxdlib keeps its
other threads running. The call is the same ``BTRFS_IOC_SNAP_CREATE_V2`` btrfsutil makes,
issued through ctypes, which releases the GIL for foreign calls (``fcntl.ioctl`` keeps it for
a 4 KiB argument), and it is as fast (1.16, 1.14 and 1.11 ms for ctypes, btrfsutil and
``fcntl.ioctl``, medians of 40 interleaved).

ctypes costs a new process ~2.5 ms to load, more than the overlap gains a short-lived command:
``releases_gil`` is False there (``state.SHORT_LIVED``) until something else has loaded it, and
btrfsutil is used instead.
"""

from __future__ import annotations

import os
import struct
import sys

import btrfsutil

from .. import state
from ..errors import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

# struct btrfs_ioctl_vol_args_v2 (linux/btrfs.h): fd, transid, flags, a 32-byte union, then the
# name (BTRFS_SUBVOL_NAME_MAX + 1 = 4040 bytes): 4096 bytes in all
_ARGS_SIZE = 4096
_NAME_OFFSET = 56
_NAME_MAX = 4039
_SUBVOL_RDONLY = 1 << 1
# _IOW(BTRFS_IOCTL_MAGIC 0x94, 23, struct btrfs_ioctl_vol_args_v2)
_SNAP_CREATE_V2 = (1 << 30) | (_ARGS_SIZE << 16) | (0x94 << 8) | 23


def releases_gil() -> bool:
    """Whether ``create_snapshot`` lets other threads run during the commit."""
    return not state.SHORT_LIVED or "ctypes" in sys.modules


def create_snapshot(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                    read_only: bool = False) -> None:
    """A snapshot of subvolume ``src`` made as ``dst`` (which must not exist): ``OSError``
    with the kernel's errno, as btrfsutil's."""
    if not releases_gil():
        btrfsutil.create_snapshot(src, dst, read_only=read_only)
        return
    import ctypes
    parent, name = os.path.split(os.path.abspath(os.fspath(dst)))
    raw = os.fsencode(name)
    if not raw or len(raw) > _NAME_MAX:
        raise OSError(22, "Invalid argument: bad snapshot name", os.fspath(dst))
    src_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            args: Any = ctypes.create_string_buffer(_ARGS_SIZE)
            struct.pack_into("=qQQ", args, 0, src_fd, 0, _SUBVOL_RDONLY if read_only else 0)
            ctypes.memmove(ctypes.addressof(args) + _NAME_OFFSET, raw, len(raw))
            if state.libc().ioctl(dir_fd, ctypes.c_ulong(_SNAP_CREATE_V2), args) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), os.fspath(dst))
        finally:
            os.close(dir_fd)
    finally:
        os.close(src_fd)
