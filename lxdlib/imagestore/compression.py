"""Which compressor an image file uses, judged by its magic bytes, and the fixed commands for it.

The file name says nothing trustworthy (images arrive as ``<fp>`` with no extension, or with a
wrong one), so LXD looks at the first bytes and so do we. Every command here is a fixed argv built
from a known name: a user-supplied string never becomes a program or an option (LXD's
compression-argument injections, CVE-2026-28384 / CVE-2026-48755, came from doing otherwise).
"""

from __future__ import annotations

import functools
import os

from ..errors import ImageError, InvalidArgument, ToolMissing

#: Kinds that hold a tar stream (possibly compressed); "none" is a plain tar.
TAR_KINDS = ("gzip", "bzip2", "xz", "lzma", "zstd", "none")
#: Kinds a later issue may accept as a split image's rootfs or a VM disk; never a unified image.
OTHER_KINDS = ("squashfs", "qcow2")

# (offset, magic, kind); the tar magic sits inside the first header block.
_MAGICS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x1f\x8b", "gzip"),
    (0, b"BZh", "bzip2"),
    (0, b"\xfd7zXZ\x00", "xz"),
    (0, b"\x28\xb5\x2f\xfd", "zstd"),
    (0, b"hsqs", "squashfs"),
    (0, b"QFI\xfb", "qcow2"),
    (257, b"ustar", "none"),
    # Last: legacy .lzma has no real magic, only a typical properties byte and dictionary size.
    (0, b"\x5d\x00\x00", "lzma"),
)
#: How many leading bytes ``detect_bytes`` needs to decide.
HEAD_SIZE = 512

_TAR_FLAGS = {
    "gzip": ["--gzip"],
    "bzip2": ["--bzip2"],
    "xz": ["--xz"],
    "lzma": ["--lzma"],
    "zstd": ["--zstd"],
    "none": [],
}
_DECOMPRESSORS = {
    "gzip": ("gzip", ["-dc"]),
    "bzip2": ("bzip2", ["-dc"]),
    "xz": ("xz", ["-dc"]),
    "lzma": ("xz", ["--format=lzma", "-dc"]),
    "zstd": ("zstd", ["-dcq"]),
}
# Algorithms ``images.compression_algorithm`` may name (LXD's list); each maps to a fixed
# compress-to-stdout argv. squashfs is not a stream compressor and is handled by the publisher.
_COMPRESSORS = {
    "gzip": ("gzip", ["-c", "-n"]),
    "pigz": ("pigz", ["-c", "-n"]),
    "bzip2": ("bzip2", ["-c"]),
    "xz": ("xz", ["-c", "-T0"]),
    "lzma": ("xz", ["--format=lzma", "-c"]),
    "zstd": ("zstd", ["-c", "-q", "-T0"]),
    "pzstd": ("pzstd", ["-c", "-q"]),
}
_EXTENSIONS = {
    "gzip": ".tar.gz",
    "bzip2": ".tar.bz2",
    "xz": ".tar.xz",
    "lzma": ".tar.lzma",
    "zstd": ".tar.zst",
    "none": ".tar",
    "squashfs": ".squashfs",
    "qcow2": ".qcow2",
}
_KIND_OF_ALGORITHM = {"pigz": "gzip", "pzstd": "zstd"}

#: Environment variables that change what tar and the compressors do (extra options, levels,
#: threads); removed from their environment so the argv above is the whole story.
TOOL_ENV_BLOCKLIST = ("TAR_OPTIONS", "GZIP", "BZIP", "BZIP2", "XZ_OPT", "XZ_DEFAULTS",
                      "ZSTD_CLEVEL", "ZSTD_NBTHREADS", "POSIXLY_CORRECT")


def detect_bytes(head: bytes) -> str:
    """The kind of a file whose first bytes are ``head`` (give at least ``HEAD_SIZE`` of them)."""
    for offset, magic, kind in _MAGICS:
        if head[offset:offset + len(magic)] == magic:
            return kind
    raise ImageError("Unsupported compression: the file is not a (compressed) tarball")


def detect(path: str | os.PathLike[str]) -> str:
    """The kind of the file at ``path``: one of ``TAR_KINDS`` or ``OTHER_KINDS``."""
    with open(path, "rb") as f:
        head = f.read(HEAD_SIZE)
    return detect_bytes(head)


def extension(kind: str) -> str:
    """The customary file extension for ``kind`` (what an export names the file)."""
    try:
        return _EXTENSIONS[kind]
    except KeyError:
        raise InvalidArgument(f"unknown compression kind {kind!r}") from None


@functools.cache
def _which(program: str) -> str:
    import shutil  # here: an import costs ~1.5 ms, and only a tool's run needs it
    found = shutil.which(program)
    if found is None:
        raise ToolMissing(f"{program!r} is needed for this image but is not installed")
    return found


def tar_flags(kind: str) -> list[str]:
    """GNU tar's option that makes it run the right decompressor itself (as ``tar -xzf`` does)."""
    if kind not in _TAR_FLAGS:
        raise ImageError(f"Unsupported image format: {kind} (expected a tarball)")
    if kind in _DECOMPRESSORS:
        _which("lzma" if kind == "lzma" else _DECOMPRESSORS[kind][0])
    return list(_TAR_FLAGS[kind])


def decompress_argv(kind: str) -> list[str] | None:
    """Argv that decompresses stdin to stdout; ``None`` for a plain tar (read it directly)."""
    if kind == "none":
        return None
    if kind not in _DECOMPRESSORS:
        raise ImageError(f"Unsupported image format: {kind} (expected a tarball)")
    program, args = _DECOMPRESSORS[kind]
    return [_which(program), *args]


def compress_argv(algorithm: str) -> list[str]:
    """Argv compressing stdin to stdout for a configured algorithm name (publish/export).

    Only the bare names LXD allows are accepted: ``"zstd -d -f /etc/x"`` is refused, not split.
    """
    if algorithm not in _COMPRESSORS:
        raise InvalidArgument(
            f"Unsupported compression algorithm {algorithm!r}: use one of "
            + ", ".join(sorted([*_COMPRESSORS, "none"])))
    program, args = _COMPRESSORS[algorithm]
    return [_which(program), *args]


def kind_of_algorithm(algorithm: str) -> str:
    """The kind (as ``detect`` reports it) that a compression algorithm produces."""
    if algorithm == "none":
        return "none"
    if algorithm not in _COMPRESSORS:
        raise InvalidArgument(f"Unsupported compression algorithm {algorithm!r}")
    return _KIND_OF_ALGORITHM.get(algorithm, algorithm)


def tool_env() -> dict[str, str]:
    """The environment for tar and the compressors: C locale (stable messages), no option vars."""
    env = {k: v for k, v in os.environ.items() if k not in TOOL_ENV_BLOCKLIST}
    env["LC_ALL"] = "C"
    return env
