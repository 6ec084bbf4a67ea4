"""Composition parses a profile once while its file stays the same, and sees every change."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lxdlib.context import Context
from lxdlib.errors import NotFound
from lxdlib.state import Paths


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    c = Context.open(Paths.at(tmp_path / "root"))
    c.profiles.create("p", {"limits.memory": "1GiB"}, {})
    return c


def _age(ctx: Context, name: str, seconds: float = 5.0) -> None:
    """Make the profile's file look written ``seconds`` ago (mtime; ctime cannot be set)."""
    path = ctx.paths.profiles / f"{name}.yaml"
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_a_changed_profile_is_seen_by_the_next_composition(ctx: Context,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    reads: list[str] = []
    real = ctx.profiles.data
    monkeypatch.setattr(ctx.profiles, "data", lambda n: reads.append(n) or real(n))
    assert ctx.expand(["p"], {}, {})[0]["limits.memory"] == "1GiB"
    # another process's edit, within the same second: a new file, seen at once
    ctx.profiles.save("p", {"limits.memory": "2GiB"}, {}, "")
    assert ctx.expand(["p"], {}, {})[0]["limits.memory"] == "2GiB"
    # an edit in place keeping the size (an editor's write, not lxdlib's rename): seen too
    path = ctx.paths.profiles / "p.yaml"
    path.write_text(path.read_text().replace("2GiB", "3GiB"))
    assert ctx.expand(["p"], {}, {})[0]["limits.memory"] == "3GiB"
    assert reads == ["p", "p", "p"]


def test_an_unchanged_profile_is_parsed_once(ctx: Context, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    reads: list[str] = []
    real = ctx.profiles.data
    monkeypatch.setattr(ctx.profiles, "data", lambda n: reads.append(n) or real(n))
    time.sleep(1.05)  # a file changed within the last second is never trusted to stay the same
    for _ in range(3):
        assert ctx.expand(["p"], {}, {})[0]["limits.memory"] == "1GiB"
    assert reads == ["p"]
    ctx.profiles.save("p", {"limits.memory": "4GiB"}, {}, "")
    _age(ctx, "p")
    assert ctx.expand(["p"], {}, {})[0]["limits.memory"] == "4GiB"


def test_a_deleted_profile_is_not_served_from_memory(ctx: Context) -> None:
    time.sleep(1.05)
    ctx.expand(["p"], {}, {})
    (ctx.paths.profiles / "p.yaml").unlink()
    with pytest.raises(NotFound):
        ctx.expand(["p"], {}, {})
