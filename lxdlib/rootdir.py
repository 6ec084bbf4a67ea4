"""Where a root is: ``--root``, else ``$LXDLIB_ROOT``, else ``/var/lib/lxdlib``.

Its own tiny module because the command decides some things (is this command for another
host? is the root empty?) before it may afford importing ``state`` and its YAML and attrs.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ROOT = "/var/lib/lxdlib"


def root_path(root: str | os.PathLike[str] | None = None) -> Path:
    """The absolute root directory ``root`` (or the environment, or the default) names."""
    chosen = root if root is not None else os.environ.get("LXDLIB_ROOT") or DEFAULT_ROOT
    return Path(chosen).absolute()
