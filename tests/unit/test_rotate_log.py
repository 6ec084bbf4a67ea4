"""``runtime.rotate_log``: each start gets a fresh liblxc log and keeps the one before it, so
the tail an error quotes is about that start."""

from __future__ import annotations

from pathlib import Path

from lxdlib import runtime


def test_the_log_is_kept_once_and_emptied_in_place(tmp_path: Path) -> None:
    d = tmp_path / "c1"
    d.mkdir()
    log = d / runtime.LOG_NAME
    log.write_bytes(b"first start\n" * 100_000)  # past one sendfile chunk
    held = log.open("ab")  # liblxc may hold it open: the same file must go on
    inode = log.stat().st_ino
    runtime.rotate_log(tmp_path, "c1")
    old = log.with_suffix(".log.old")
    assert old.read_bytes() == b"first start\n" * 100_000
    assert log.read_bytes() == b"" and log.stat().st_ino == inode
    held.write(b"second\n")
    held.close()
    runtime.rotate_log(tmp_path, "c1")
    assert old.read_bytes() == b"second\n" and log.read_bytes() == b""  # replaced, not appended


def test_an_empty_or_missing_log_is_left_alone(tmp_path: Path) -> None:
    runtime.rotate_log(tmp_path, "none")  # no directory at all
    d = tmp_path / "c1"
    d.mkdir()
    (d / runtime.LOG_NAME).write_bytes(b"")
    runtime.rotate_log(tmp_path, "c1")
    assert not (d / runtime.LOG_NAME).with_suffix(".log.old").exists()
