"""Removing a tree whose shape someone else chose (a container's rootfs, an image's, a backup's).

``shutil.rmtree`` of Python 3.11 recurses once per directory level, so a tree deeper than
about 990 directories (``mkdir d; cd d`` in a loop, a few seconds for a container's root, or
an image or backup that carries one) raised ``RecursionError``: the instance could not be
deleted, and a leftover of a failed copy or import made every later command that opened the
pool fail. GNU ``rm`` walks any depth with a bounded number of descriptors and follows no
symlink, as ``rmtree`` does.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator


def remove_any_depth(path: str | os.PathLike[str]) -> None:
    """Remove ``path`` and everything below it, following no symlink (``path`` itself, if a
    symlink, is removed as one). A failure raises ``OSError`` naming what ``rm`` said, so that
    callers' ``OSError`` handling (``storage_errors``, a warning) applies as to ``rmtree``.
    ``subprocess`` is imported here: most commands that import a pool driver remove nothing."""
    import subprocess
    if not os.path.lexists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), os.fspath(path))
    proc = subprocess.run(["rm", "-rf", "--", os.fspath(path)], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise OSError(errno.EIO, f"rm -rf failed: {'; '.join(detail[-4:]) or proc.returncode}",
                      os.fspath(path))


def walk_lstat(top: str | os.PathLike[str]) -> Iterator[tuple[str, os.stat_result]]:
    """``top`` and every path below it with its ``lstat``, parents before children, entering
    no symlink. A loop, not ``os.walk``: that recurses per level in Python 3.11 as ``rmtree``
    does, and a shift or owner map of a container's tree ended in ``RecursionError``. As
    ``os.walk``, what vanishes during the walk is skipped; ``top`` itself must be there."""
    top = os.fspath(top)
    yield top, os.lstat(top)
    pending = [top]
    while pending:
        try:
            with os.scandir(pending.pop()) as it:
                entries = list(it)
        except OSError:  # gone or replaced meanwhile: skipped, as os.walk skips it
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # gone meanwhile (a running container's tree)
                continue
            yield entry.path, st
            if stat.S_ISDIR(st.st_mode):
                pending.append(entry.path)
