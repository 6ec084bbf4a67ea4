"""``file pull`` into a destination that is not a regular file: a character device
(``/dev/null``) or a FIFO is written into, as ``lxc file pull``'s open does. The pull wrote a
temporary file beside it and renamed it over: ``lxdlib file pull c1/etc/hosts /dev/null`` (run
as root) left the host's ``/dev/null`` a regular file holding the container's bytes, which
every later writer to /dev/null appended to."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from lxdlib.cli.files import _write_file
from lxdlib.files import FileStat

DATA = b"from the container\n" * 1000


class _Session:
    """What ``_write_file`` asks of a session: the file's bytes, chunk by chunk."""

    def get_into(self, path: str, write: Callable[[memoryview], object]) -> FileStat:
        for i in range(0, len(DATA), 4096):
            write(memoryview(DATA[i:i + 4096]))
        return FileStat("file", 0o4755, 0, 0, len(DATA), 0.0)


def _pull(dest: Path) -> None:
    _write_file(dest, FileStat("file", 0o4755, 0, 0, len(DATA), 0.0),
                _Session(), "/etc/x", quiet=True)  # type: ignore[arg-type]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_character_device_is_written_into_not_replaced(tmp_path: Path) -> None:
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    _pull(null)
    st = os.lstat(null)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert os.listdir(tmp_path) == ["null"]


def test_a_fifo_is_written_into_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def reader() -> None:
        with open(fifo, "rb") as f:
            got.append(f.read())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        _pull(fifo)
    finally:
        if t.is_alive():  # the pull did not open it: let the reader go
            with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "wb"):
                pass
        t.join(10)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got == [DATA]
    assert os.listdir(tmp_path) == ["fifo"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_block_device_is_neither_written_nor_replaced(tmp_path: Path) -> None:
    """A disk (a link to one, planted where root pulls to) is refused, not written into."""
    from lxdlib.errors import InvalidArgument
    disk = tmp_path / "disk"
    os.mknod(disk, 0o600 | stat.S_IFBLK, os.makedev(7, 250))  # never opened
    link = tmp_path / "link"
    link.symlink_to(disk)
    with pytest.raises(InvalidArgument, match="not a regular file"):
        _pull(link)
    assert stat.S_ISBLK(os.lstat(disk).st_mode) and link.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["disk", "link"]


def test_a_regular_file_is_still_replaced_whole(tmp_path: Path) -> None:
    dest = tmp_path / "f"
    dest.write_bytes(b"old")
    _pull(dest)
    assert dest.read_bytes() == DATA
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o755  # never the setuid bit
    assert os.listdir(tmp_path) == ["f"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_pull_from_a_remote_writes_into_a_device(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The same through ssh (``cli.forward``): the far side's bytes go into the device."""
    from lxdlib.cli import forward

    def run(remote: object, args: object, *, stdout: int | None = None,
            into: tuple[int, str] | None = None, **_: object) -> int:
        fd = stdout if stdout is not None else into[0] if into else None
        assert fd is not None
        os.write(fd, DATA)
        return 0
    monkeypatch.setattr(forward, "_run", run)
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    plan = forward.Plan(None, [], "file")  # type: ignore[arg-type]
    assert forward._pull_into(plan, ["file", "pull", "c/x", "-"], null) == 0
    st = os.lstat(null)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert os.listdir(tmp_path) == ["null"]
