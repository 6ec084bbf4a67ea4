"""``lxdlib.config.ids``: the digests and UUIDs that spare a command ``hashlib`` and ``uuid``
must be the very values those modules give, since names on disk (veths, ifbs, DHCP files) are
derived from them and a changed digest would orphan what an earlier version made."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid

import pytest

from lxdlib.config import ids


@pytest.mark.parametrize("text", ["", "a", "/var/lib/lxdlib\0web\0eth0", "é\u2603" * 50,
                                  "x" * 10_000])
def test_sha256_is_hashlibs(text: str) -> None:
    assert ids.sha256_hex(text) == hashlib.sha256(text.encode()).hexdigest()
    assert ids.sha256_digest(text) == hashlib.sha256(text.encode()).digest()


def test_random_uuids_are_version_4_and_distinct() -> None:
    drawn = [ids.random_uuid() for _ in range(2000)]
    assert len(set(drawn)) == len(drawn)
    for text in drawn:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # the canonical form: lowercase, dashes where uuid puts them
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_neither_imports_hashlib_nor_uuid() -> None:
    """What the module is for: a fresh interpreter that draws a UUID and hashes a name has
    loaded neither module (nor OpenSSL's ``_hashlib``, nor ``platform``)."""
    code = ("import json, sys\nfrom lxdlib.config import ids\n"
            "ids.random_uuid(); ids.sha256_hex('x'); ids.sha256_digest('x')\n"
            "print(json.dumps(sorted(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=True)
    mods = set(json.loads(r.stdout))
    assert not mods & {"hashlib", "_hashlib", "uuid", "platform"}
