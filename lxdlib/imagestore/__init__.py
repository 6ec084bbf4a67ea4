"""The local image store: import image tarballs, name them with aliases, unpack them safely.

``ImageStore`` keeps tarballs by fingerprint under ``<root>/images``; ``tarball`` reads their
metadata and unpacks them into pool volumes; ``compression`` recognises the compressor from magic
bytes; ``busybox`` builds a small self-contained image from the host's static busybox.
"""

from __future__ import annotations

from .busybox import build_busybox_image
from .store import UNSET, ImageRecord, ImageStore, validate_alias_name
from .tarball import ImageMetadata, is_fingerprint, normalise_architecture, read_metadata, unpack

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
