"""Builders for image tarballs (good and hostile) used by the image-store integration tests."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from lxdlib.imagestore import ImageStore
from lxdlib.state import Paths

METADATA = (b"architecture: amd64\n"
            b"creation_date: 1700000000\n"
            b"properties:\n  os: testos\n  release: '1.0'\n  description: test image\n"
            b"templates:\n  /etc/hostname:\n    when: [create]\n    template: hostname.tpl\n")


def reg(name: str, data: bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0,
        pax: dict[str, str] | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid = len(data), mode, uid, gid
    info.mtime = 1700000000
    if pax:
        info.pax_headers = dict(pax)
    return info, data


def dir_(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0
         ) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, uid, gid
    return info, None


def sym(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    return info, None


def hard(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, None


def dev(name: str, block: bool = False, major: int = 8, minor: int = 0
        ) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.BLKTYPE if block else tarfile.CHRTYPE
    info.devmajor, info.devminor, info.mode = major, minor, 0o660
    return info, None


Member = tuple[tarfile.TarInfo, bytes | None]


def good_members(extra: list[Member] | None = None, metadata: bytes = METADATA) -> list[Member]:
    """A small valid unified image: metadata, templates and a rootfs with the usual oddities."""
    return [
        reg("metadata.yaml", metadata),
        dir_("templates"),
        reg("templates/hostname.tpl", b"{{ container.name }}\n"),
        dir_("rootfs"),
        dir_("rootfs/bin"),
        reg("rootfs/bin/busybox", b"#!/bin/true\n", mode=0o755),
        sym("rootfs/bin/sh", "/bin/busybox"),
        reg("rootfs/bin/su", b"setuid\n", mode=0o4755),
        dir_("rootfs/tmp", 0o1777),
        dir_("rootfs/home"),
        dir_("rootfs/home/user", 0o750, uid=1000, gid=1234),
        reg("rootfs/home/user/file", b"data\n", uid=1000, gid=1234,
            pax={"SCHILY.xattr.user.test": "value"}),
        hard("rootfs/home/user/link", "rootfs/home/user/file"),
        dir_("rootfs/etc"),
        reg("rootfs/etc/hostname", b"template\n"),
        *(extra or []),
    ]


def tar_bytes(members: list[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def compress(raw: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(raw, mtime=0)
    if compression == "bzip2":
        return bz2.compress(raw)
    if compression == "xz":
        return lzma.compress(raw, format=lzma.FORMAT_XZ)
    if compression == "lzma":
        return lzma.compress(raw, format=lzma.FORMAT_ALONE)
    if compression == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True,
                              check=True).stdout
    if compression == "none":
        return raw
    raise ValueError(compression)


def make_image(path: Path, members: list[Member] | None = None, compression: str = "gzip",
               fmt: int = tarfile.PAX_FORMAT) -> Path:
    path.write_bytes(compress(tar_bytes(members if members is not None else good_members(),
                                        fmt), compression))
    return path


def make_store(tmp_path: Path) -> ImageStore:
    return ImageStore(Paths.at(tmp_path / "root"))


def store_entries(store: ImageStore) -> list[str]:
    """What the images directory holds besides the alias table (a failed import leaves nothing),
    and the temp files of imports (``run/image-imports/<name>``) as ``.import/<name>``."""
    try:
        names = [n for n in os.listdir(store.root) if n != "aliases.yaml"]
    except FileNotFoundError:
        return []
    with contextlib.suppress(FileNotFoundError):
        names += [f".import/{n}" for n in os.listdir(store.paths.run / "image-imports")]
    return sorted(names)


def tree(path: Path) -> dict[str, Any]:
    """Every path under ``path`` with its type and size, for before/after comparisons."""
    out: dict[str, Any] = {}
    for top, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            p = os.path.join(top, name)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_size, st.st_nlink)
    return out
