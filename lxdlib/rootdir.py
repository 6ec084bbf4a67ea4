"""Where a root is: ``--root``, else ``$LXDLIB_ROOT``, else ``/var/lib/lxdlib``.

Its own tiny module because the command decides some things (is this command for another
host? is the root empty?) before it may afford importing ``state`` and ``pathlib``.
"""

from __future__ import annotations

import os

from .errors import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_ROOT = "/var/lib/lxdlib"
#: Where the image store keeps the temp files of the imports, downloads and publishes running
#: now or killed (under the root's ``run/``): named here, so that whether any are there is
#: known before the store's code (tarfile, compressors) is imported.
IMAGE_IMPORTS = "image-imports"


def root_path(root: str | os.PathLike[str] | None = None) -> Path:
    """The absolute root directory ``root`` (or the environment, or the default) names."""
    from pathlib import Path  # here: ``root_dir`` answers the empty ``list`` without it
    return Path(_chosen(root)).absolute()


def root_dir(root: str | os.PathLike[str] | None = None) -> str:
    """``root_path`` as a string (what the command checks before importing ``pathlib``)."""
    return os.path.abspath(_chosen(root))


def _chosen(root: str | os.PathLike[str] | None) -> str | os.PathLike[str]:
    return root if root is not None else os.environ.get("LXDLIB_ROOT") or DEFAULT_ROOT


def imports_pending(root: str | os.PathLike[str]) -> bool:
    """Whether ``run/image-imports/`` holds anything: an import running, or one killed whose
    temp files the next ``Host`` clears (the directory is empty otherwise)."""
    try:
        with os.scandir(os.path.join(root, "run", IMAGE_IMPORTS)) as it:
            return next(it, None) is not None
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return False
