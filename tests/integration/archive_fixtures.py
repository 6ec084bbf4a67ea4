"""Backup archives rewritten by tests: the same export with a doctored ``backup/index.yaml``."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def rewrite_index(src: Path, dst: Path, change: Callable[[dict[str, Any]], object]) -> Path:
    """Copy the archive ``src`` to ``dst`` (gzip), letting ``change`` edit its index."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin:
            data = tin.extractfile(m) if m.isreg() else None
            if m.name == "backup/index.yaml":
                doc = yaml.safe_load(data.read())  # type: ignore[union-attr]
                change(doc)
                raw = yaml.safe_dump(doc).encode()
                m.size = len(raw)
                data = io.BytesIO(raw)  # type: ignore[assignment]
            tout.addfile(m, data)
    return dst
