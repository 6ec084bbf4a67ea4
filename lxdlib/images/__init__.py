"""The images service: ``Images`` (``host.images``), the remote-image cache, URL downloads and
``publish``. Below it, ``lxdlib.imagestore`` keeps the tarballs; above it, ``Host``."""

from __future__ import annotations

from .collection import Images
from .image import Image

__all__ = ["Image", "Images"]
