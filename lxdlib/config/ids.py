"""Identifiers lxdlib derives from names (hashes) or draws at random (UUIDs).

Both are asked for by commands that otherwise need neither ``hashlib`` nor ``uuid``, whose
imports cost a command milliseconds at its start on this kind of machine: ``hashlib`` loads
OpenSSL's ``_hashlib`` (~2.5 ms under ``-X importtime``), and ``uuid`` runs ``platform`` at its
import (~1.5 ms). So the digest comes from CPython's own built-in SHA-256 module (as
``state.lock_offset`` takes BLAKE2b from ``_blake2``), and a random UUID is drawn here: 16
random bytes with the version and variant bits of RFC 4122, the very string
``str(uuid.uuid4())`` gives (tests/unit/test_ids.py checks it against ``uuid``).
"""

from __future__ import annotations

import os

from ..errors import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def _sha256() -> Callable[[bytes], Any]:
    try:  # CPython 3.11 (Debian 12)
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:  # 3.12 and later name it _sha2; elsewhere, hashlib's
        try:
            from _sha2 import sha256  # type: ignore[import-not-found]
        except ImportError:
            from hashlib import sha256
    return sha256  # type: ignore[no-any-return]


def sha256_hex(text: str) -> str:
    """The SHA-256 of ``text`` (UTF-8) in hex, as ``hashlib.sha256(text.encode()).hexdigest()``."""
    return str(_sha256()(text.encode()).hexdigest())


def sha256_digest(text: str) -> bytes:
    """The SHA-256 of ``text`` (UTF-8), as ``hashlib.sha256(text.encode()).digest()``."""
    return bytes(_sha256()(text.encode()).digest())


def random_uuid() -> str:
    """A random (version 4) UUID in its usual form, as ``str(uuid.uuid4())``."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
