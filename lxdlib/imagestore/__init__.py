"""The local image store: import image tarballs, name them with aliases, unpack them safely.

``ImageStore`` keeps tarballs by fingerprint under ``<root>/images``; ``tarball`` reads their
metadata and unpacks them into pool volumes; ``compression`` recognises the compressor from magic
bytes; ``busybox`` builds a small self-contained image from the host's static busybox.

The names below load on first use: importing one submodule (``imagestore.remotes``,
``imagestore.compression``) must not load the others, as ``busybox`` and ``tarball`` bring
``tarfile``, ``gzip`` and ``lzma`` that most commands never need.
"""

from __future__ import annotations

from ..errors import TYPE_CHECKING
from ..lazyexports import exports

if TYPE_CHECKING:
    from .busybox import build_busybox_image
    from .store import UNSET, ImageRecord, ImageStore, validate_alias_name
    from .tarball import (
        ImageMetadata,
        is_fingerprint,
        normalise_architecture,
        read_metadata,
        unpack,
    )

__all__ = [
    "UNSET",
    "ImageMetadata",
    "ImageRecord",
    "ImageStore",
    "build_busybox_image",
    "is_fingerprint",
    "normalise_architecture",
    "read_metadata",
    "unpack",
    "validate_alias_name",
]

# each public name, by the submodule that defines it
_WHERE = {
    "build_busybox_image": "busybox", "UNSET": "store", "ImageRecord": "store",
    "ImageStore": "store", "validate_alias_name": "store", "ImageMetadata": "tarball",
    "is_fingerprint": "tarball", "normalise_architecture": "tarball",
    "read_metadata": "tarball", "unpack": "tarball",
}

__getattr__, __dir__ = exports(__name__, _WHERE, globals())
