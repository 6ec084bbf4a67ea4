"""The event log's follower against what a busy or full host leaves in the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lxdlib import events
from lxdlib.state import Paths


def test_a_follower_left_behind_a_rotation_goes_on_at_the_new_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writers rotated the log while a follower was not reading, and the new file grew
    past the follower's place in the old one: it read from the middle of a line, and the JSON
    error ended it. It reads the old file out, then the new one from its start."""
    monkeypatch.setattr(events, "MAX_SIZE", 2000)
    ev = events.Events(Paths(tmp_path))
    ev.emit("first", "x" * 50)
    it = ev.follow(from_start=True, timeout=0.5, poll=0.01)
    assert next(it)["metadata"] == {"action": "first", "source": "x" * 50}
    for i in range(14):  # ~170 bytes each: one rotation, and the new file past the place
        ev.emit(f"e{i}", "y" * (60 + i))
    got = [str(e["metadata"]["action"]) for e in it]  # type: ignore[index]
    assert got == [f"e{i}" for i in range(14)]


def test_a_line_that_is_no_event_is_passed_over(tmp_path: Path) -> None:
    """A line a full disk cut short (the next event glued to it), or a line that is JSON but
    no event: passed over, and the follower goes on."""
    ev = events.Events(Paths(tmp_path))
    ev.emit("one", "a")
    with open(ev.path, "ab") as f:
        f.write(b'{"type": "lifecy\n[1, 2]\n\n')
    ev.emit("two", "b")
    got = [e["metadata"]["action"] for e in ev.follow(from_start=True, timeout=0.2,  # type: ignore[index]
                                                      poll=0.01)]
    assert got == ["one", "two"]


def test_two_writers_finding_the_log_full_rotate_it_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second writer that found the log full while the first rotated it renamed again: the
    first one's new log, one event long, went over the old log, whose events were lost."""
    ev = events.Events(Paths(tmp_path))
    for i in range(8):
        ev.emit(f"old{i}", "x" * 100)
    monkeypatch.setattr(events, "MAX_SIZE", ev.path.stat().st_size - 1)  # full
    real_fstat = os.fstat
    other = events.Events(Paths(tmp_path))
    raced = []

    def fstat(fd: int) -> os.stat_result:  # the other writer rotates between our look and ours
        st = real_fstat(fd)
        if not raced and st.st_size > events.MAX_SIZE:
            raced.append(True)
            other.emit("other", "y")
        return st
    monkeypatch.setattr(events.os, "fstat", fstat)
    ev.emit("mine", "z")
    monkeypatch.setattr(events.os, "fstat", real_fstat)
    older = [json.loads(line)["metadata"]["action"]
             for line in ev.path.with_suffix(".log.1").read_text().splitlines()]
    newer = [json.loads(line)["metadata"]["action"] for line in ev.path.read_text().splitlines()]
    assert older == [f"old{i}" for i in range(8)]
    assert newer == ["other", "mine"]
