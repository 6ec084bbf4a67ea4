"""A simplestreams server on 127.0.0.1 for the remote-image tests: images built from the busybox
image (unified, split with root.tar.xz and/or squashfs, any serial), served over http or https
(a throwaway CA made with openssl), counting every request, optionally slow or tampered.

Also LXD's URL import protocol: ``/lxd`` answers with ``LXD-Image-URL``/``LXD-Image-Hash``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import lzma
import os
import shutil
import ssl
import subprocess
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import yaml

NATIVE_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "i386"}.get(os.uname().machine,
                                                                         os.uname().machine)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@attrs.define
class Built:
    """What one image version is made of (bytes as served)."""

    meta: bytes
    rootxz: bytes | None = None
    squashfs: bytes | None = None
    unified: bytes | None = None


class ImageFactory:
    """Builds image files from the busybox image's rootfs, with a marker file per serial."""

    def __init__(self, busybox_tarball: Path, workdir: Path) -> None:
        self.workdir = workdir
        self._memo: dict[tuple[Any, ...], Built] = {}
        self.members: list[tuple[tarfile.TarInfo, bytes | None]] = []
        with tarfile.open(busybox_tarball) as tf:
            for m in tf.getmembers():
                data = tf.extractfile(m).read() if m.isreg() else None  # type: ignore[union-attr]
                self.members.append((m, data))
        self.metadata = yaml.safe_load(next(d for m, d in self.members
                                            if m.name == "metadata.yaml") or b"")

    def _tar(self, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for info, data in entries:
                tf.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()

    def _rootfs_entries(self, serial: str, marker: str) -> list[tuple[tarfile.TarInfo,
                                                                      bytes | None]]:
        out = []
        for m, data in self.members:
            if not m.name.startswith("rootfs/"):
                continue
            info = tarfile.TarInfo(m.name[len("rootfs/"):])
            for attr in ("type", "mode", "uid", "gid", "mtime", "linkname", "size"):
                setattr(info, attr, getattr(m, attr))
            out.append((info, data))
        text = f"{serial} {marker}\n".encode()
        info = tarfile.TarInfo("etc/serial")
        info.size, info.mode, info.mtime = len(text), 0o644, 1700000000
        out.append((info, text))
        return out

    def _metadata(self, serial: str, creation: int) -> bytes:
        meta = dict(self.metadata)
        meta["creation_date"] = creation
        meta["properties"] = {**meta.get("properties", {}), "serial": serial}
        return yaml.safe_dump(meta).encode()

    def build(self, serial: str, *, kinds: tuple[str, ...] = ("root.tar.xz",),
              marker: str = "", creation: int = 1700000000) -> Built:
        key = (serial, kinds, marker, creation)
        if key not in self._memo:
            self._memo[key] = self._build(serial, kinds=kinds, marker=marker, creation=creation)
        return self._memo[key]

    def _build(self, serial: str, *, kinds: tuple[str, ...], marker: str,
               creation: int) -> Built:
        meta_entries = [(m, d) for m, d in self.members if not m.name.startswith("rootfs")
                        and m.name != "metadata.yaml"]
        meta_yaml = self._metadata(serial, creation)
        info = tarfile.TarInfo("metadata.yaml")
        info.size, info.mode, info.mtime = len(meta_yaml), 0o644, creation
        meta_tar = self._tar([(info, meta_yaml), *meta_entries])
        built = Built(meta=lzma.compress(meta_tar, format=lzma.FORMAT_XZ, preset=1))
        root_entries = self._rootfs_entries(serial, marker)
        if "root.tar.xz" in kinds:
            built.rootxz = lzma.compress(self._tar(root_entries), format=lzma.FORMAT_XZ,
                                          preset=1)
        if "squashfs" in kinds:
            src = self.workdir / f"sq-{serial}-{os.getpid()}"
            shutil.rmtree(src, ignore_errors=True)
            src.mkdir(parents=True)
            try:
                subprocess.run(["tar", "-x", "-C", str(src)], input=self._tar(root_entries),
                               check=True)
                out = self.workdir / f"{src.name}.squashfs"
                subprocess.run(["mksquashfs", str(src), str(out), "-noappend", "-quiet",
                                "-no-progress", "-all-root"], check=True,
                               stdout=subprocess.DEVNULL)
                built.squashfs = out.read_bytes()
                out.unlink()
            finally:
                shutil.rmtree(src, ignore_errors=True)
        if "unified" in kinds:
            rootfs_prefixed = []
            for i, d in root_entries:
                j = tarfile.TarInfo("rootfs/" + i.name)
                for attr in ("type", "mode", "uid", "gid", "mtime", "linkname", "size"):
                    setattr(j, attr, getattr(i, attr))
                rootfs_prefixed.append((j, d))
            d_info = tarfile.TarInfo("rootfs")
            d_info.type, d_info.mode = tarfile.DIRTYPE, 0o755
            import gzip
            built.unified = gzip.compress(self._tar([(info, meta_yaml), *meta_entries,
                                                     (d_info, None), *rootfs_prefixed]), mtime=0)
        return built


@attrs.define
class Version:
    serial: str
    built: Built
    #: override the combined fingerprint written in the catalogue (a lying server)
    combined_override: str | None = None
    #: serve different bytes than the catalogue hashes (a tampered mirror)
    tamper: bool = False


@attrs.define
class Product:
    os: str
    release: str
    arch: str
    aliases: list[str]
    variant: str = "default"
    versions: list[Version] = attrs.field(factory=list)

    @property
    def key(self) -> str:
        return f"{self.os}:{self.release}:{self.arch}:{self.variant}"


class Tree:
    """A simplestreams directory: products and their versions, written as LXD's tools do."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.products: dict[str, Product] = {}

    def add(self, product: Product) -> Product:
        self.products[product.key] = product
        return product

    def _put(self, data: bytes, ext: str) -> tuple[str, int, str]:
        digest = sha256(data)
        rel = f"images/{digest}{ext}"
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        (self.root / rel).write_bytes(data)
        return rel, len(data), digest

    def write(self) -> None:
        products: dict[str, Any] = {}
        for p in self.products.values():
            versions: dict[str, Any] = {}
            for v in p.versions:
                b = v.built
                items: dict[str, Any] = {}
                roots = {"root.tar.xz": b.rootxz, "squashfs": b.squashfs}
                meta_path, meta_size, meta_sha = self._put(b.meta, ".lxd.tar.xz")
                meta_item: dict[str, Any] = {"ftype": "lxd.tar.xz", "path": meta_path,
                                             "size": meta_size, "sha256": meta_sha}
                for ftype, data in roots.items():
                    if data is None:
                        continue
                    path, size, digest = self._put(data, ".squashfs" if ftype == "squashfs"
                                                   else ".tar.xz")
                    items[ftype] = {"ftype": ftype, "path": path, "size": size,
                                    "sha256": digest}
                    key = ("combined_squashfs_sha256" if ftype == "squashfs"
                           else "combined_rootxz_sha256")
                    meta_item[key] = v.combined_override or sha256(b.meta + data)
                    if v.tamper:
                        (self.root / path).write_bytes(data[:-16] + b"\0" * 16)
                items["lxd.tar.xz"] = meta_item
                if b.unified is not None:
                    path, size, digest = self._put(b.unified, ".tar.gz")
                    items["lxd_combined.tar.gz"] = {"ftype": "lxd_combined.tar.gz",
                                                    "path": path, "size": size,
                                                    "sha256": digest}
                versions[v.serial] = {"items": items}
            products[p.key] = {"aliases": ",".join(p.aliases), "arch": p.arch, "os": p.os,
                               "release": p.release, "release_title": p.release,
                               "variant": p.variant, "versions": versions}
        streams = self.root / "streams" / "v1"
        streams.mkdir(parents=True, exist_ok=True)
        catalogue = {"content_id": "images", "datatype": "image-downloads",
                     "format": "products:1.0", "products": products}
        (streams / "images.json").write_text(json.dumps(catalogue))
        (streams / "index.json").write_text(json.dumps({"format": "index:1.0", "index": {
            "images": {"datatype": "image-downloads", "path": "streams/v1/images.json",
                       "format": "products:1.0", "products": sorted(products)}}}))


class Server:
    """http.server in a thread on 127.0.0.1; ``https=True`` with a cert from ``ca``."""

    def __init__(self, root: Path, *, tls: tuple[Path, Path] | None = None,
                 delay: float = 0.0) -> None:
        self.root = root
        self.hits: Counter[str] = Counter()
        self.delay = delay
        self.lxd_image: tuple[str, str] | None = None  # (path served, hash header) for /lxd
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=str(server.root), **kw)

            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.hits[self.path] += 1
                if self.path == "/lxd" and server.lxd_image is not None:
                    self.send_response(200)
                    self.send_header("LXD-Image-URL", f"{server.url}/{server.lxd_image[0]}")
                    self.send_header("LXD-Image-Hash", server.lxd_image[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if server.delay and self.path.startswith("/images/"):
                    time.sleep(server.delay)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def image_hits(self) -> int:
        return sum(n for p, n in self.hits.items() if p.startswith("/images/"))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def make_ca(workdir: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    ca_key, ca = workdir / "ca.key", workdir / "ca.pem"
    key, csr, cert = workdir / "srv.key", workdir / "srv.csr", workdir / "srv.pem"
    ext = workdir / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
        "-out", str(ca), "-days", "2", "-subj", "/CN=lxdlib test CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
        str(csr), "-subj", "/CN=127.0.0.1")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


@contextlib.contextmanager
def serving(root: Path, *, tls: tuple[Path, Path] | None = None,
            delay: float = 0.0) -> Iterator[Server]:
    server = Server(root, tls=tls, delay=delay)
    try:
        yield server
    finally:
        server.stop()
