"""``hostroom.Room``: when it looks at the free space and when it stops a writer. The kernel's
own counts on a real filesystem in ``tests/integration/test_security_root_reserve.py``; here the
cadence, with ``fstatvfs`` answered by hand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lxdlib import hostroom
from lxdlib.errors import DiskFull
from lxdlib.hostroom import CHECK_EVERY, RESERVED, SLACK, Room, write_all

MiB = 1 << 20


class FakeVfs:
    """``os.statvfs_result``'s fields that ``Room`` reads, with ``bavail`` set by the test."""

    def __init__(self, bavail: int, blocks: int = 1 << 20, favail: int = 1000) -> None:
        self.f_bavail, self.f_frsize, self.f_blocks = bavail, 4096, blocks
        self.f_files, self.f_favail = 1 << 16, favail
        self.looks = 0

    def __call__(self, fd: int) -> FakeVfs:
        self.looks += 1
        return self


@pytest.fixture
def vfs(monkeypatch: pytest.MonkeyPatch) -> FakeVfs:
    fake = FakeVfs(bavail=(1 << 30) // 4096)
    monkeypatch.setattr(hostroom.os, "fstatvfs", fake)
    return fake


def test_plenty_of_room_is_looked_at_once_per_few_mib(vfs: FakeVfs) -> None:
    room = Room()
    for _ in range(64):
        room.take(0, MiB, "x")
    assert vfs.looks == 64 * MiB // CHECK_EVERY


def test_near_the_end_every_write_looks_and_the_last_is_refused(vfs: FakeVfs) -> None:
    vfs.f_bavail = (3 * MiB + SLACK) // 4096
    room = Room()
    for _ in range(3):
        room.take(0, MiB, "x")
        vfs.f_bavail -= MiB // 4096  # the writes use the space
    with pytest.raises(DiskFull, match=RESERVED) as e:
        room.take(0, MiB, "/dest/x")
    assert e.value.path == "/dest/x"


def test_the_path_is_made_only_on_failure(vfs: FakeVfs) -> None:
    made: list[int] = []

    def where() -> str:
        made.append(1)
        return "/made"
    room = Room()
    room.take(0, MiB, where)
    assert made == []
    vfs.f_bavail = 0
    with pytest.raises(DiskFull, match="/made"):
        room.look(0, 0, where)


def test_no_inodes_left_is_full_and_an_uncounted_filesystem_never_is(vfs: FakeVfs) -> None:
    vfs.f_favail = 0
    with pytest.raises(DiskFull):
        Room().look(0, 0, "x")
    vfs.f_favail, vfs.f_bavail, vfs.f_blocks = 10, 0, 0  # e.g. a FUSE filesystem's zeros
    Room().look(0, 10 * MiB, "x")


def test_write_all_on_a_real_file(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        room = Room()
        write_all(fd, memoryview(b"abc" * 1000), room, tmp_path / "f")
        st = os.statvfs(tmp_path)
        with pytest.raises(DiskFull):  # more than the filesystem has for anyone
            room.look(fd, st.f_bavail * st.f_frsize + 1, tmp_path / "f")
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"abc" * 1000


def test_the_kernels_own_refusal_is_disk_full_naming_the_destination() -> None:
    """A full disk the count did not foresee (or a quota's ``EDQUOT``) is the same typed
    error as the room's own, naming the file written: ``/dev/full`` refuses every write
    with ``ENOSPC``. Each writer had its own handler for it, and ``file pull`` had none."""
    fd = os.open("/dev/full", os.O_WRONLY | os.O_CLOEXEC)
    try:
        with pytest.raises(DiskFull, match="/x/y"):
            write_all(fd, memoryview(b"data"), hostroom.Unlimited(), lambda: "/x/y")
    finally:
        os.close(fd)
