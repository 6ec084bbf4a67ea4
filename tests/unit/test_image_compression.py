"""Compression detection by magic bytes and the fixed command lines built from known names."""

from __future__ import annotations

import pytest

from lxdlib.errors import ImageError, InvalidArgument
from lxdlib.imagestore import compression


def _tar_head(magic: bytes) -> bytes:
    head = bytearray(512)
    head[0:5] = b"hello"
    head[257:257 + len(magic)] = magic
    return bytes(head)


@pytest.mark.parametrize(("head", "kind"), [
    (b"\x1f\x8b\x08\x00" + bytes(508), "gzip"),
    (b"BZh91AY&SY" + bytes(502), "bzip2"),
    (b"\xfd7zXZ\x00\x00\x04" + bytes(504), "xz"),
    (b"\x28\xb5\x2f\xfd\x04\x00" + bytes(506), "zstd"),
    (b"\x5d\x00\x00\x80\x00" + bytes(507), "lzma"),
    (b"hsqs" + bytes(508), "squashfs"),
    (b"QFI\xfb" + bytes(508), "qcow2"),
    (_tar_head(b"ustar\x0000"), "none"),
    (_tar_head(b"ustar  \x00"), "none"),
])
def test_detect_bytes(head: bytes, kind: str) -> None:
    assert compression.detect_bytes(head) == kind


@pytest.mark.parametrize("head", [b"", b"PK\x03\x04" + bytes(508), bytes(512), b"\x1f",
                                  b"#!/bin/sh\n"])
def test_detect_bytes_refuses_unknown(head: bytes) -> None:
    with pytest.raises(ImageError, match="Unsupported compression"):
        compression.detect_bytes(head)


def test_plain_tar_whose_first_name_starts_like_lzma_is_a_tar() -> None:
    head = bytearray(_tar_head(b"ustar\x0000"))
    head[0:3] = b"\x5d\x00\x00"
    assert compression.detect_bytes(bytes(head)) == "none"


@pytest.mark.parametrize(("kind", "ext"), [
    ("gzip", ".tar.gz"), ("bzip2", ".tar.bz2"), ("xz", ".tar.xz"), ("lzma", ".tar.lzma"),
    ("zstd", ".tar.zst"), ("none", ".tar"), ("squashfs", ".squashfs"),
])
def test_extension(kind: str, ext: str) -> None:
    assert compression.extension(kind) == ext


def test_extension_unknown() -> None:
    with pytest.raises(InvalidArgument):
        compression.extension("rar")


@pytest.mark.parametrize(("kind", "flags"), [
    ("gzip", ["--gzip"]), ("bzip2", ["--bzip2"]), ("xz", ["--xz"]), ("lzma", ["--lzma"]),
    ("zstd", ["--zstd"]), ("none", []),
])
def test_tar_flags(kind: str, flags: list[str]) -> None:
    assert compression.tar_flags(kind) == flags


@pytest.mark.parametrize("kind", ["squashfs", "qcow2", "zip"])
def test_tar_flags_refuse_non_tar(kind: str) -> None:
    with pytest.raises(ImageError, match="Unsupported image format"):
        compression.tar_flags(kind)


@pytest.mark.parametrize(("kind", "tail"), [
    ("gzip", ["-dc"]), ("bzip2", ["-dc"]), ("xz", ["-dc"]), ("lzma", ["--format=lzma", "-dc"]),
    ("zstd", ["-dcq"]),
])
def test_decompress_argv(kind: str, tail: list[str]) -> None:
    argv = compression.decompress_argv(kind)
    assert argv is not None
    assert argv[0].startswith("/") and argv[1:] == tail


def test_decompress_argv_plain_tar_is_none() -> None:
    assert compression.decompress_argv("none") is None


@pytest.mark.parametrize("algorithm", ["gzip", "bzip2", "xz", "lzma", "zstd"])
def test_compress_argv_known(algorithm: str) -> None:
    argv = compression.compress_argv(algorithm)
    assert argv[0].startswith("/") and "-c" in argv


@pytest.mark.parametrize("algorithm", [
    "zstd -d -f /etc/shadow", "gzip;rm -rf /", "", "--gzip", "/bin/sh", "GZIP", "squashfs",
])
def test_compress_argv_refuses_injection(algorithm: str) -> None:
    with pytest.raises(InvalidArgument, match="Unsupported compression algorithm"):
        compression.compress_argv(algorithm)


@pytest.mark.parametrize(("algorithm", "kind"), [
    ("gzip", "gzip"), ("pigz", "gzip"), ("pzstd", "zstd"), ("zstd", "zstd"), ("none", "none"),
    ("xz", "xz"),
])
def test_kind_of_algorithm(algorithm: str, kind: str) -> None:
    assert compression.kind_of_algorithm(algorithm) == kind


def test_tool_env_drops_option_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TAR_OPTIONS", "GZIP", "XZ_OPT", "ZSTD_CLEVEL"):
        monkeypatch.setenv(var, "--to-command=sh")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    env = compression.tool_env()
    assert not {"TAR_OPTIONS", "GZIP", "XZ_OPT", "ZSTD_CLEVEL"} & env.keys()
    assert env["LC_ALL"] == "C"
    assert "PATH" in env
