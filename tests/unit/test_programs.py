"""``lxdlib.programs.which`` finds what ``shutil.which`` finds for a bare name: the first
executable regular file on the search path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lxdlib.programs import which


@pytest.mark.parametrize("program", ["sh", "ls", "lxc-start", "newuidmap", "nft", "python3",
                                     "no-such-program-here"])
def test_as_shutil_on_this_path(program: str) -> None:
    assert which(program) == shutil.which(program)
    assert which(program, path=os.defpath) == shutil.which(program, path=os.defpath)


def test_skips_what_cannot_be_run(tmp_path: Path) -> None:
    a, b, c, d = (tmp_path / n for n in "abcd")
    for x in (a, b, c, d):
        x.mkdir()
    (a / "tool").write_text("#!/bin/sh\n")  # not executable
    (b / "tool").mkdir()  # a directory (searchable, so "executable")
    (c / "tool").symlink_to("/bin/sh")  # a link to a program: run, as shutil does
    (d / "tool").write_text("#!/bin/sh\n")
    (d / "tool").chmod(0o755)
    search = os.pathsep.join(map(str, (a, b, tmp_path / "missing", c, d)))
    assert which("tool", path=search) == shutil.which("tool", path=search) == str(c / "tool")
    assert which("tool", path=os.pathsep.join(map(str, (a, b, d)))) == str(d / "tool")
    assert which("tool", path="") is None


def test_a_path_is_refused() -> None:
    with pytest.raises(ValueError):
        which("/bin/sh")
