"""Where a root is: ``--root``, else ``$LXDLIB_ROOT``, else ``/var/lib/lxdlib``.

Its own tiny module because the command decides some things (is this command for another
host? is the root empty?) before it may afford importing ``state`` and its YAML and attrs.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ROOT = "/var/lib/lxdlib"
#: Where the image store keeps the temp files of the imports, downloads and publishes running
#: now or killed (under the root's ``run/``): named here, so that whether any are there is
#: known before the store's code (tarfile, compressors) is imported.
IMAGE_IMPORTS = "image-imports"


def root_path(root: str | os.PathLike[str] | None = None) -> Path:
    """The absolute root directory ``root`` (or the environment, or the default) names."""
    chosen = root if root is not None else os.environ.get("LXDLIB_ROOT") or DEFAULT_ROOT
    return Path(chosen).absolute()


def imports_pending(root: Path) -> bool:
    """Whether ``run/image-imports/`` holds anything: an import running, or one killed whose
    temp files the next ``Host`` clears (the directory is empty otherwise)."""
    try:
        with os.scandir(root / "run" / IMAGE_IMPORTS) as it:
            return next(it, None) is not None
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return False
