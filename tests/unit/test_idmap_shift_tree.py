"""``idmap.shift_tree`` (pools without idmapped mounts: files shifted on disk) on a real
directory: every inode moves by the offset once, whatever number of hard links reach it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lxdlib.idmap import shift_tree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lchown needs root")


def test_a_hard_linked_file_is_shifted_once(tmp_path: Path) -> None:
    """A container's root can link one file many times in a volume it has attached; shifted
    per link, its owner moved by the offset times the links (here 3x: 3001000, not 1001000),
    out of the instance's map or into someone else's ids."""
    tree = tmp_path / "vol"
    (tree / "d").mkdir(parents=True)
    target = tree / "f"
    target.write_text("x")
    for i in range(3):
        os.link(target, tree / "d" / f"link{i}")
    os.chown(target, 1000, 1001)
    os.chmod(target, 0o4755)
    os.symlink("f", tree / "sym")
    os.lchown(tree / "sym", 7, 7)
    shift_tree(tree, 1_000_000)
    st = os.lstat(target)
    assert (st.st_uid, st.st_gid) == (1_001_000, 1_001_001)
    assert stat.S_IMODE(st.st_mode) == 0o4755  # put back after lchown cleared it
    assert (os.lstat(tree / "sym").st_uid, os.lstat(tree).st_uid) == (1_000_007, 1_000_000)
    shift_tree(tree, -1_000_000)  # and back: again once each
    assert (os.lstat(target).st_uid, os.lstat(tree / "d").st_uid) == (1000, 0)
