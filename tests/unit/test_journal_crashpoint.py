"""The test-only crash points: a process dies by SIGKILL exactly at the named step boundary, and
every operation kind that writes an intent has a recoverer once ``lxdlib.host`` is imported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

CODE = """
from lxdlib import journal
journal.crashpoint("first")
print("past first", flush=True)
journal.crashpoint("second")
print("past second", flush=True)
"""


def _run(point: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LXDLIB_CRASHPOINT"}
    if point is not None:
        env["LXDLIB_CRASHPOINT"] = point
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                          timeout=60)


def test_crashpoint_kills_at_its_name_only() -> None:
    r = _run("second")
    assert r.returncode == -signal.SIGKILL
    assert r.stdout == "past first\n"


def test_crashpoint_unset_or_unknown_does_nothing() -> None:
    for point in (None, "", "elsewhere"):
        r = _run(point)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "past first\npast second\n"


def test_every_intent_kind_has_a_recoverer() -> None:
    """Wherever a ``Host`` exists, each kind of intent finds its recoverer: the core's
    registered at import, the others' modules imported when first asked for."""
    kinds = ["update", "profile-apply", "restore", "rename", "snapshot", "move-pool", "copy",
             "stop-stateful", "freeze", "frozen", "delete"]
    code = ("import sys, lxdlib.host, lxdlib.journal as j; "
            "print(' '.join(k for k in sys.argv[1:] if j.recoverer(k) is not None))")
    r = subprocess.run([sys.executable, "-c", code, *kinds], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.split() == kinds, r.stderr


def test_an_intent_record_that_is_a_directory_is_dropped_or_named(tmp_path: Path) -> None:
    """``.pending.yaml`` made a directory (by hand): an empty one is dropped as a planted
    symlink is; one that holds something is a ``CorruptRecord`` naming it, an error of that
    instance alone (it was an ``IsADirectoryError`` that ended ``lxdlib recover`` for all)."""
    from lxdlib import journal
    from lxdlib.errors import CorruptRecord
    from lxdlib.state import Paths
    paths = Paths.at(tmp_path)
    intent = paths.instance_dir("c1") / journal.PENDING
    intent.mkdir(parents=True)
    assert journal.read(paths, "c1") is None and not os.path.lexists(intent)
    (intent / "x").mkdir(parents=True)
    with pytest.raises(CorruptRecord, match=r"\.pending\.yaml"):
        journal.read(paths, "c1")
    assert (intent / "x").is_dir()


def test_a_nested_intent_carries_the_restart_around_it(tmp_path: Path) -> None:
    """A step inside a restart (a move's send between its stop and start) writes its own
    intent: that intent carries the restart, so its recovery starts the instance again, and
    the restart's intent comes back after the step. Once the step gives the restart up
    (``drop_restart``: the far side may run the instance), it is gone for good."""
    from lxdlib import journal
    from lxdlib.state import Paths
    paths = Paths.at(tmp_path)
    paths.instance_dir("c1").mkdir(parents=True)
    journal.begin(paths, "c1", "stop", restart={"ephemeral": False})
    with journal.nested(paths, "c1", "temp-snapshot", files=["x"]):
        inner = journal.read(paths, "c1")
        assert inner is not None
        assert (inner["op"], inner["files"], inner["restart"]) == \
            ("temp-snapshot", ["x"], {"ephemeral": False})
    outer = journal.read(paths, "c1")
    assert outer is not None and (outer["op"], outer["restart"]) == ("stop", {"ephemeral": False})
    with journal.nested(paths, "c1", "temp-snapshot"):
        journal.drop_restart(paths, "c1")
        inner = journal.read(paths, "c1")
        assert inner is not None and inner["op"] == "temp-snapshot" and "restart" not in inner
    outer = journal.read(paths, "c1")
    assert outer is not None and outer["op"] == "stop" and "restart" not in outer
    journal.end(paths, "c1")
    with journal.nested(paths, "c1", "temp-snapshot"):  # none around it: it ends with the step
        assert journal.read(paths, "c1") is not None
    assert journal.read(paths, "c1") is None


def test_a_restart_given_up_comes_back_when_the_far_side_answers(tmp_path: Path) -> None:
    """``drop_restart`` returns what it dropped and ``restarts`` says it is gone (a move's
    failure after its last word then starts nothing); ``keep_restart`` brings it back when
    the far side answered that it has nothing (its error), through the nested step."""
    from lxdlib import journal
    from lxdlib.state import Paths
    paths = Paths.at(tmp_path)
    paths.instance_dir("c1").mkdir(parents=True)
    journal.begin(paths, "c1", "stop", restart={"ephemeral": True})
    assert journal.restarts(paths, "c1")
    with journal.nested(paths, "c1", "temp-snapshot", files=["x"]):
        dropped = journal.drop_restart(paths, "c1")
        assert dropped == {"ephemeral": True} and not journal.restarts(paths, "c1")
        journal.keep_restart(paths, "c1", dropped)
        inner = journal.read(paths, "c1")
        assert inner is not None and (inner["op"], inner["files"]) == ("temp-snapshot", ["x"])
        assert journal.restarts(paths, "c1")
    outer = journal.read(paths, "c1")
    assert outer is not None and (outer["op"], outer["restart"]) == ("stop", {"ephemeral": True})
    journal.end(paths, "c1")
    assert not journal.restarts(paths, "c1") and journal.drop_restart(paths, "c1") is None
