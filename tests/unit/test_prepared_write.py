"""state.PreparedWrite and background.beside: a file's next content written (and fsync'd)
before it takes its name, on a thread beside the storage call that makes what it names; nothing
of it is seen before the commit, and a failed call leaves the file as it was."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from lxdlib import background, record, state


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_a_new_file_has_no_name_until_the_commit(tmp_path: Path) -> None:
    p = tmp_path / "rec"
    w = state.PreparedWrite(p, b"one\n")
    assert _names(tmp_path) == []  # an unnamed file: nothing to see, nothing left by a kill
    w.commit()
    assert p.read_bytes() == b"one\n" and _names(tmp_path) == ["rec"]


def test_an_existing_file_keeps_its_content_until_the_commit(tmp_path: Path) -> None:
    p = tmp_path / "rec"
    state.swap_write(p, b"old\n")
    w = state.PreparedWrite(p, b"new, longer\n")
    assert p.read_bytes() == b"old\n"
    w.commit()
    assert p.read_bytes() == b"new, longer\n"
    state.PreparedWrite(p, b"third\n").commit()  # into the spare, cut to the new length
    assert p.read_bytes() == b"third\n"


@pytest.mark.parametrize("existing", [False, True])
def test_discard_leaves_the_file_as_it_was(tmp_path: Path, existing: bool) -> None:
    p = tmp_path / "rec"
    if existing:
        state.swap_write(p, b"old\n")
    state.PreparedWrite(p, b"new\n").discard()
    assert (p.read_bytes() == b"old\n") if existing else not p.exists()
    assert [n for n in _names(tmp_path) if not n.endswith(state.SPARE_SUFFIX)] == \
        (["rec"] if existing else [])


def test_a_file_made_between_prepare_and_commit_is_replaced_whole(tmp_path: Path) -> None:
    p = tmp_path / "rec"
    w = state.PreparedWrite(p, b"mine\n")
    p.write_bytes(b"theirs\n")  # the link finds the name taken: the whole write then
    w.commit()
    assert p.read_bytes() == b"mine\n"


def test_a_process_killed_after_preparing_leaves_the_old_content(tmp_path: Path) -> None:
    p = tmp_path / "rec"
    state.swap_write(p, b"old\n")
    q = tmp_path / "new"
    pid = os.fork()
    if pid == 0:  # the child prepares both and dies before any commit
        state.PreparedWrite(p, b"new\n")
        state.PreparedWrite(q, b"new\n")
        os._exit(0)
    os.waitpid(pid, 0)
    assert p.read_bytes() == b"old\n" and not q.exists()


def test_record_prepare_save_commits_what_save_would(tmp_path: Path) -> None:
    paths = state.Paths(tmp_path)
    (tmp_path / "containers" / "c1").mkdir(parents=True)
    rec = record.InstanceRecord(name="c1", architecture="x86_64", created_at=record.now(),
                                pool="default", profiles=["default"], config={"a": "1"},
                                devices={}, description="")
    with state.lock(paths, "instance", "c1"):
        record.save(paths, rec)
        rec.config["a"] = "2"
        prepared = record.prepare_save(paths, rec)
        assert record.load(paths, "c1").config["a"] == "1"
        prepared.commit()
    assert record.load(paths, "c1").config["a"] == "2"


def test_beside_runs_the_preparation_on_another_thread_meanwhile() -> None:
    """The block (the storage call) waits for the preparation to have started, which can
    only happen if the two run at once."""
    started, seen = threading.Event(), {}

    def prepare() -> str:
        seen["thread"] = threading.get_ident()
        started.set()
        return "prepared"
    with background.beside(prepare, True) as side:
        assert started.wait(10)
    assert side.result() == "prepared" and seen["thread"] != threading.get_ident()


def test_beside_unthreaded_prepares_after_the_block() -> None:
    order: list[str] = []
    with background.beside(lambda: order.append("prepare"), False) as side:
        order.append("call")
    side.result()
    assert order == ["call", "prepare"]


@pytest.mark.parametrize("threaded", [False, True])
def test_a_failed_call_undoes_what_was_prepared(threaded: bool) -> None:
    undone: list[str] = []
    with pytest.raises(OSError, match="no space"), \
            background.beside(lambda: "prepared", threaded, undone.append) as side:
        side.wait()  # threaded: prepared before the call fails
        raise OSError(28, "no space")
    assert undone == (["prepared"] if threaded else [])


def test_a_failed_preparation_is_raised_by_result() -> None:
    def prepare() -> str:
        raise ValueError("bad config")
    with background.beside(prepare, True) as side:
        pass
    with pytest.raises(ValueError, match="bad config"):
        side.result()


def test_on_behalf_holds_the_callers_locks_there(tmp_path: Path) -> None:
    """A lock the caller holds is re-entered on the other thread, not waited for: without
    ``on_behalf`` the other thread would wait on the caller's own lock (here: Busy at once)."""
    paths = state.Paths(tmp_path)

    def again() -> bool:
        with state.lock(paths, "instance", "c1", timeout=0.2):
            return state.held(paths, "instance", "c1")
    with state.lock(paths, "instance", "c1"):
        with background.beside(state.on_behalf(again), True) as side:
            pass
        assert side.result() is True
        with background.beside(again, True) as side:
            pass
        with pytest.raises(state.Busy):
            side.result()
    assert not state.held(paths, "instance", "c1")
