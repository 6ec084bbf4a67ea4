"""``lxdlib.fstree``: a tree of any depth is walked and removed, no symlink is entered, and
what vanishes during a walk is skipped as ``os.walk`` skips it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lxdlib.fstree import remove_any_depth, walk_lstat

DEPTH = 1200  # past Python 3.11's recursion limit, which os.walk and shutil.rmtree hit


def deep(root: Path) -> Path:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(DEPTH):  # relative to a descriptor: the path grows past PATH_MAX
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    finally:
        os.close(fd)
    return root


def test_walks_and_removes_any_depth(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    deep(tree)
    walked = list(walk_lstat(tree))
    assert walked[0][0] == str(tree) and len(walked) == 1 + DEPTH + 1
    remove_any_depth(tree)
    assert not tree.exists()


def test_enters_no_symlink_and_skips_what_vanished(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("x")
    tree = tmp_path / "t"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "link").symlink_to(outside)
    seen = []
    for path, _st in walk_lstat(tree):
        seen.append(os.path.relpath(path, tree))
        if path.endswith("/a"):
            os.rmdir(tree / "a" / "b")  # gone before the walk reaches it
    assert "a/link" in seen and not any("secret" in p for p in seen)
    remove_any_depth(tree)
    assert not tree.exists() and (outside / "secret").read_text() == "x"


def test_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        remove_any_depth(tmp_path / "none")
    with pytest.raises(FileNotFoundError):
        next(walk_lstat(tmp_path / "none"))
