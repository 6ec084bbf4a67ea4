"""Where the host's programs are: ``shutil.which``'s search, without ``shutil``.

Every start looks for ``lxc-start`` (and, where the id map is not registered yet, for
``newuidmap``): ``shutil`` imports ``bz2`` and ``lzma`` at its top, ~1.5 ms of a command's
start on this kind of machine for a search of a few directories. The search is the one
``shutil.which`` makes for a bare name on POSIX (and liblxc's own ``on_path``): each directory
of ``PATH`` in turn, the first regular file there that may be executed.
"""

from __future__ import annotations

import os
import stat


def which(program: str, path: str | None = None) -> str | None:
    """The full path of ``program`` (a bare name) on ``path`` (by default ``$PATH``, or
    ``os.defpath`` where it is unset), or None."""
    if "/" in program:
        raise ValueError(f"{program!r}: a bare program name is looked for, not a path")
    search = path if path is not None else os.environ.get("PATH", os.defpath)
    seen: set[str] = set()
    for d in search.split(os.pathsep):
        if not d or d in seen:
            continue
        seen.add(d)
        candidate = os.path.join(d, program)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
    return None
