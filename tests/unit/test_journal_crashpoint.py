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
             "stop-stateful"]
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
