"""state.swap_write: a file replaced through its spare (RENAME_EXCHANGE), as an instance's record
and liblxc config are under the instance lock; record.save picks it only with the lock held."""

from __future__ import annotations

import datetime as dt
import os
import stat
import sys
from pathlib import Path

import pytest

from lxdlib import record, state


def test_first_write_makes_the_file_and_no_spare(tmp_path: Path) -> None:
    p = tmp_path / "rec"
    state.swap_write(p, b"one\n")
    assert p.read_bytes() == b"one\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["rec"]


def test_later_writes_swap_with_the_spare(tmp_path: Path) -> None:
    p = tmp_path / "rec"
    state.swap_write(p, b"one, a longer first content\n")
    state.swap_write(p, b"two\n")
    spare = Path(state.spare_path(p))
    assert p.read_bytes() == b"two\n"
    assert spare.read_bytes() == b"one, a longer first content\n"
    first_inodes = {p.stat().st_ino, spare.stat().st_ino}
    state.swap_write(p, b"three\n")  # into the old content's file, cut to the new length
    assert p.read_bytes() == b"three\n"
    assert spare.read_bytes() == b"two\n"
    assert {p.stat().st_ino, spare.stat().st_ino} == first_inodes  # no inode made


def test_mode_is_kept_on_both_files(tmp_path: Path) -> None:
    p = tmp_path / "config"
    for text in (b"a\n", b"b\n", b"c\n"):
        state.swap_write(p, text, 0o640, durable=False)
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
    Path(state.spare_path(p)).chmod(0o666)
    state.swap_write(p, b"d\n", 0o640, durable=False)
    assert stat.S_IMODE(p.stat().st_mode) == 0o640


def test_a_half_written_spare_is_rewritten_whole(tmp_path: Path) -> None:
    p = tmp_path / "rec"
    state.swap_write(p, b"one\n")
    Path(state.spare_path(p)).write_bytes(b"debris of a killed write, longer than the rest\n")
    state.swap_write(p, b"two\n")
    assert p.read_bytes() == b"two\n"


def test_a_symlinked_spare_is_not_followed(tmp_path: Path) -> None:
    p = tmp_path / "rec"
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep\n")
    state.swap_write(p, b"one\n")
    os.symlink(target, state.spare_path(p))
    state.swap_write(p, b"two\n")
    assert p.read_bytes() == b"two\n"
    assert target.read_bytes() == b"keep\n"


def _rec(name: str, description: str) -> record.InstanceRecord:
    return record.InstanceRecord(name=name, architecture="x86_64",
                                 created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                                 pool="default", description=description)


def test_record_save_uses_the_spare_only_under_the_lock(tmp_path: Path) -> None:
    paths = state.Paths.at(tmp_path)
    paths.instance_dir("c1").mkdir(parents=True)
    spare = Path(state.spare_path(paths.instance_record("c1")))
    record.save(paths, _rec("c1", "a"))
    record.save(paths, _rec("c1", "b"))
    assert not spare.exists()  # no lock held: a new file each time, as atomic_write
    with state.lock(paths, "instance", "c1"):
        record.save(paths, _rec("c1", "c"))
        record.save(paths, _rec("c1", "d"))
    assert spare.exists()
    assert record.load(paths, "c1").description == "d"
    assert record.names(paths) == ["c1"]


def test_a_short_lived_command_without_ctypes_renames_the_spare_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``lxdlib`` command (``state.SHORT_LIVED``) that has not loaded ctypes renames the
    written spare over the file instead of exchanging them: the same content, atomically, and
    no ctypes; the next write makes a spare again. With ctypes loaded, the exchange as ever."""
    import ctypes
    p = tmp_path / "rec"
    state.swap_write(p, b"one\n")
    state.swap_write(p, b"two\n")
    spare = Path(state.spare_path(p))
    monkeypatch.setattr(state, "SHORT_LIVED", True)
    monkeypatch.delitem(sys.modules, "ctypes")
    written = spare.stat().st_ino
    state.swap_write(p, b"three\n")
    assert p.read_bytes() == b"three\n" and p.stat().st_ino == written
    assert not spare.exists() and "ctypes" not in sys.modules
    state.swap_write(p, b"four\n")  # the first write again: a new spare, renamed in
    assert p.read_bytes() == b"four\n" and not spare.exists()
    monkeypatch.setitem(sys.modules, "ctypes", ctypes)  # loaded: the exchange costs no more
    state.swap_write(p, b"five\n")
    assert p.read_bytes() == b"five\n" and spare.read_bytes() == b"four\n"


@pytest.mark.parametrize("durable", [True, False])
@pytest.mark.parametrize("mode", [0o600, 0o640])
def test_write_new_makes_the_whole_file_under_its_name_only(
        tmp_path: Path, mode: int, durable: bool) -> None:
    p = tmp_path / "instance.yaml"
    old = os.umask(0o077)
    try:
        assert state.write_new(p, b"one\n" * 300, mode, durable)
    finally:
        os.umask(old)
    assert p.read_bytes() == b"one\n" * 300
    assert stat.S_IMODE(p.stat().st_mode) == mode
    assert [x.name for x in tmp_path.iterdir()] == ["instance.yaml"]


def test_write_new_leaves_an_existing_file_alone(tmp_path: Path) -> None:
    p = tmp_path / "rec"
    p.write_bytes(b"keep\n")
    assert not state.write_new(p, b"other\n")
    assert p.read_bytes() == b"keep\n"
    assert [x.name for x in tmp_path.iterdir()] == ["rec"]


def test_a_first_write_cut_short_leaves_no_name_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Death between the write and the link (here: an exception in ``os.link``) leaves no file
    at all: the unnamed file goes with its descriptor, where a spare would stay."""
    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "link", killed)
    with pytest.raises(KeyboardInterrupt):
        state.swap_write(tmp_path / "rec", b"one\n")
    assert list(tmp_path.iterdir()) == []


def test_without_unnamed_files_the_first_write_goes_through_the_spare(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem without ``O_TMPFILE`` (EOPNOTSUPP): the spare, renamed in, as before."""
    real_open = os.open

    def no_tmpfile(path: str, flags: int, *args: int, **kwargs: int) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(95, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", no_tmpfile)
    p = tmp_path / "rec"
    assert not state.write_new(p, b"one\n")
    state.swap_write(p, b"one\n", 0o640)
    assert p.read_bytes() == b"one\n" and stat.S_IMODE(p.stat().st_mode) == 0o640
    assert [x.name for x in tmp_path.iterdir()] == ["rec"]


def test_a_durable_new_file_is_on_disk_before_its_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unnamed file is fsync'd before it is linked: a journal commit between a link and a
    later fsync, then a power loss, would leave the name on an empty file (ext4 writes a new
    file's blocks, and the size they carry, only at writeback). The directory's fsync after."""
    calls: list[str] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        calls.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def link(*args: object, **kwargs: object) -> None:
        calls.append("link")
        real_link(*args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    assert state.write_new(tmp_path / "rec", b"one\n")
    assert calls == ["fsync file", "link", "fsync dir"]
    calls.clear()
    assert state.write_new(tmp_path / "config", b"two\n", durable=False)
    assert calls == ["link"]
