"""A simplestreams client: what an image server offers, resolved as LXD resolves it, and
downloads that are verified before anything becomes visible.

The format (``streams/v1/index.json`` → a products file) is read the way LXD reads it:

* every ``lxd.tar.xz`` metadata item paired with each root item of its version (``squashfs``,
  ``root.tar.xz``) is one split image, fingerprinted by the metadata item's matching
  ``combined_*_sha256``; an ``lxd_combined.tar.gz`` item is a unified image fingerprinted by its
  own ``sha256``. Virtual-machine disks are skipped: lxdlib runs containers only;
* the version key is the serial; its first eight characters are the creation date;
* aliases: for each name a product lists, a short alias (``alpine/3.19``) and a medium one with
  the product's architecture (``alpine/3.19/amd64``); images are ordered newest serial first, so
  the first image to claim a name for an architecture keeps it. Short names resolve to the
  native architecture first, then its personalities (i686 on x86_64), then any other.

Everything from the server is untrusted: fingerprints and hashes must be 64 lowercase hex digits
before they are used at all, paths are only ever URL paths (never local file names), sizes are
enforced while downloading, each file is checked against its own sha256 and the metadata and
rootfs *together* against the fingerprint (LXD's CVE-2026-33542 skipped that last check).
Redirects from https to http are refused.

The index and products files are cached on disk for an hour (LXD's cache expiry); when the
server cannot be reached or answers with an error, the stale copy is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ..config.units import ZERO_TIME, format_api_time
from ..errors import TYPE_CHECKING, ImageError, InvalidArgument, NotFound
from ..state import atomic_write
from ..values import Value, assign
from .tarball import is_fingerprint, normalise_architecture

if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["AliasEntry", "Client", "RemoteImage", "StreamFile", "apply_aliases", "find_image",
           "parse_index", "parse_products", "resolve_alias"]

Progress = Callable[[int, int], None]

INDEX_PATH: Final = "streams/v1/index.json"
CACHE_EXPIRY: Final = 3600.0
#: Metadata/catalogue files larger than this are refused (the biggest public ones are ~30 MB).
MAX_CATALOGUE: Final = 256 * 1024 * 1024
_CHUNK: Final = 1 << 20

#: Root item ftype → the metadata item's key holding the combined fingerprint (first found wins).
_COMBINED_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "squashfs": ("combined_squashfs_sha256",),
    "root.tar.xz": ("combined_rootxz_sha256", "combined_sha256"),
}
_META_FTYPE: Final = "lxd.tar.xz"
_UNIFIED_FTYPE: Final = "lxd_combined.tar.gz"
#: LXD's preference between root types of one version (lower first); unknown types score 0.
TYPE_PREFERENCE: Final = ("squashfs", "root.tar.xz")
#: Architectures a kernel also runs (LXD's personalities), in order of preference.
PERSONALITIES: Final[dict[str, tuple[str, ...]]] = {
    "x86_64": ("i686",),
    "aarch64": ("armv7l", "armv6l"),
    "ppc64": ("ppc",),
    "mips64": ("mips",),
}
#: Servers whose aliases carry a default OS prefix that LXD strips (``ubuntu/noble`` → ``noble``).
_DEFAULT_OS: Final = {"https://cloud-images.ubuntu.com": "ubuntu"}


def native_architecture() -> str:
    return normalise_architecture(os.uname().machine)


class StreamFile(Value, frozen=True):
    """One file a server offers: its URL path below the server, sha256 and announced size."""

    _fields = ("path", "sha256", "size")
    __slots__ = _fields

    path: str
    sha256: str
    size: int

    def __init__(self, path: str, sha256: str, size: int) -> None:
        assign(self, "path", path)
        assign(self, "sha256", sha256)
        assign(self, "size", size)


class RemoteImage(Value, frozen=True):
    """An image on a simplestreams server, in LXD's terms."""

    _fields = ("fingerprint", "architecture", "created_at", "expires_at", "properties", "filename",
               "size", "meta", "rootfs", "product_aliases", "aliases", "type")
    __slots__ = _fields

    fingerprint: str
    architecture: str
    created_at: datetime
    expires_at: datetime | None
    properties: dict[str, str]
    filename: str
    size: int
    meta: StreamFile
    rootfs: StreamFile | None
    product_aliases: tuple[str, ...]
    aliases: tuple[str, ...]
    type: str

    def __init__(self, fingerprint: str, architecture: str, created_at: datetime,
                 expires_at: datetime | None, properties: dict[str, str], filename: str, size: int,
                 meta: StreamFile, rootfs: StreamFile | None,
                 product_aliases: tuple[str, ...] = (), aliases: tuple[str, ...] = (),
                 type: str = "container") -> None:
        assign(self, "fingerprint", fingerprint)
        assign(self, "architecture", architecture)
        assign(self, "created_at", created_at)
        assign(self, "expires_at", expires_at)
        assign(self, "properties", properties)
        assign(self, "filename", filename)
        assign(self, "size", size)
        assign(self, "meta", meta)
        assign(self, "rootfs", rootfs)
        assign(self, "product_aliases", product_aliases)
        assign(self, "aliases", aliases)
        assign(self, "type", type)

    @property
    def root_type(self) -> str:
        return self.properties.get("type", "")

    def to_dict(self) -> dict[str, Any]:
        """LXD's API shape (``lxc image show images:…``)."""
        created = format_api_time(self.created_at)
        return {
            "fingerprint": self.fingerprint, "filename": self.filename, "size": self.size,
            "architecture": self.architecture, "type": self.type, "public": True,
            "auto_update": False, "cached": False, "properties": dict(self.properties),
            "aliases": [{"name": a, "description": ""} for a in self.aliases],
            "created_at": created, "uploaded_at": created,
            "last_used_at": ZERO_TIME, "expires_at": format_api_time(self.expires_at),
        }


class AliasEntry(Value, frozen=True):
    _fields = ("name", "target", "architecture", "type")
    __slots__ = _fields

    name: str
    target: str
    architecture: str
    type: str

    def __init__(self, name: str, target: str, architecture: str, type: str = "container") -> None:
        assign(self, "name", name)
        assign(self, "target", target)
        assign(self, "architecture", architecture)
        assign(self, "type", type)


# -- parsing (pure) -------------------------------------------------------------------------------

def parse_index(doc: Any) -> list[str]:
    """The products files an index points at (``image-downloads`` entries with products)."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("index"), Mapping):
        raise ImageError("Invalid simplestreams index: no index")
    paths = []
    for entry in doc["index"].values():
        if not isinstance(entry, Mapping) or entry.get("datatype") != "image-downloads":
            continue
        products, path = entry.get("products"), entry.get("path")
        if not isinstance(products, list) or not products or not isinstance(path, str) or \
                not path:
            continue
        paths.append(path)
    return paths


def _file(item: Any) -> StreamFile | None:
    if not isinstance(item, Mapping):
        return None
    path, sha, size = item.get("path"), item.get("sha256"), item.get("size", 0)
    if not isinstance(path, str) or not path or not isinstance(sha, str) or \
            not is_fingerprint(sha) or isinstance(size, bool) or not isinstance(size, int) or \
            size < 0:
        return None
    return StreamFile(path, sha, size)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _serial_date(serial: str) -> datetime | None:
    if len(serial) < 8:
        return None
    try:
        return datetime.strptime(serial[:8], "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return None


def _eol(value: Any) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def parse_products(doc: Any) -> list[RemoteImage]:
    """Every container image a products file describes (LXD's ``ToLXD``), without aliases.

    Entries that are malformed, of an unknown architecture or without a usable fingerprint are
    skipped, as LXD skips them.
    """
    if not isinstance(doc, Mapping) or not isinstance(doc.get("products"), Mapping):
        raise ImageError("Invalid simplestreams products file: no products")
    images: list[RemoteImage] = []
    for product in doc["products"].values():
        if not isinstance(product, Mapping) or not isinstance(product.get("versions"), Mapping):
            continue
        raw_arch = _str(product.get("arch"))
        try:
            arch = normalise_architecture(raw_arch)
        except ImageError:
            continue
        aliases = tuple(a.strip() for a in _str(product.get("aliases")).split(",") if a.strip())
        requirements = product.get("lxd_requirements") or product.get("requirements") or {}
        for serial, version in product["versions"].items():
            created = _serial_date(serial) if isinstance(serial, str) else None
            if created is None or not isinstance(version, Mapping) or \
                    not isinstance(version.get("items"), Mapping):
                continue
            items = {k: v for k, v in version["items"].items() if isinstance(v, Mapping)}
            label = _str(version.get("label"))
            description = f"{_str(product.get('os'))} {_str(product.get('release_title'))} " \
                          f"{raw_arch}"
            if label:
                description += f" ({label})"
            description += f" ({serial})"
            props = {"os": _str(product.get("os")), "release": _str(product.get("release")),
                     "version": _str(product.get("version")), "architecture": raw_arch,
                     "label": label, "serial": serial, "description": description,
                     "variant": _str(product.get("variant"))}
            if isinstance(requirements, Mapping):
                props.update({f"requirements.{k}": str(v) for k, v in requirements.items()
                              if isinstance(k, str) and isinstance(v, (str, bool, int))})
            pairs: list[tuple[Mapping[str, Any], Mapping[str, Any] | None, str]] = []
            for item in items.values():
                ftype = item.get("ftype")
                if ftype == _UNIFIED_FTYPE:
                    pairs.append((item, None, "tar.gz"))
                elif ftype == _META_FTYPE:
                    pairs += [(item, root, root["ftype"]) for root in items.values()
                              if root.get("ftype") in _COMBINED_KEYS]
            for meta_item, root_item, root_type in pairs:
                meta = _file(meta_item)
                root = _file(root_item) if root_item is not None else None
                if meta is None or (root_item is not None and root is None):
                    continue
                if root is None:
                    fingerprint = meta.sha256
                else:
                    fingerprint = next((meta_item[k] for k in _COMBINED_KEYS[root_type]
                                        if meta_item.get(k)), "")
                if not isinstance(fingerprint, str) or not is_fingerprint(fingerprint):
                    continue
                images.append(RemoteImage(
                    fingerprint=fingerprint, architecture=arch, created_at=created,
                    expires_at=_eol(product.get("support_eol")),
                    properties={k: v for k, v in {**props, "type": root_type}.items() if v},
                    filename=meta.path.rsplit("/", 1)[-1],
                    size=meta.size + (root.size if root else 0),
                    meta=meta, rootfs=root, product_aliases=aliases))
    return images


def _sort_key(img: RemoteImage, prefer: Sequence[str]) -> tuple[Any, ...]:
    p = img.properties

    def asc(key: str) -> tuple[bool, str]:
        return (not p.get(key), p.get(key, ""))  # empty values last

    serial = p.get("serial", "")
    inverted = (*(-ord(c) for c in serial), 0)  # newest serial first, longer before prefix
    pref = prefer.index(img.root_type) if img.root_type in prefer else 0
    return (asc("os"), asc("release"), asc("variant"), not serial, inverted,
            asc("architecture"), pref)


def apply_aliases(images: Iterable[RemoteImage], *, native: str, url: str = "",
                  prefer: Sequence[str] = TYPE_PREFERENCE
                  ) -> tuple[list[RemoteImage], list[AliasEntry]]:
    """LXD's alias generation: returns the images (newest first, each with the aliases it holds)
    and every alias entry with its architecture."""
    default_os = next((v for k, v in _DEFAULT_OS.items() if url.startswith(k)), "")
    entries: list[AliasEntry] = []
    taken: set[tuple[str, str, str]] = set()
    out: list[RemoteImage] = []

    def add(name: str, img: RemoteImage) -> str | None:
        if default_os and name.startswith(default_os + "/"):
            name = name[len(default_os) + 1:]
        key = (name, img.type, img.architecture)
        if not name or key in taken:
            return None
        taken.add(key)
        entries.append(AliasEntry(name, img.fingerprint, img.architecture, img.type))
        return name

    for img in sorted(images, key=lambda i: _sort_key(i, prefer)):
        held: list[str] = []
        for name in img.product_aliases:
            short = add(name, img)
            if short is not None and img.architecture == native:
                held.append(short)
            medium = add(f"{name}/{img.properties.get('architecture', '')}", img)
            if medium is not None:
                held.append(medium)
        out.append(img.evolve(aliases=tuple(held)))
    return out, entries


def resolve_alias(entries: Sequence[AliasEntry], name: str, *, native: str,
                  image_type: str = "container") -> AliasEntry | None:
    """The entry a name resolves to: native architecture first, then its personalities."""
    order = {native: 0, **{p: i + 1 for i, p in enumerate(PERSONALITIES.get(native, ()))}}
    matches = [e for e in entries if e.name == name and (not image_type or e.type == image_type)]
    if not matches:
        return None
    return min(matches, key=lambda e: order.get(e.architecture, len(order)))


def find_image(images: Sequence[RemoteImage], prefix: str) -> RemoteImage:
    """The one image whose fingerprint starts with ``prefix``."""
    if not prefix:
        raise InvalidArgument("No fingerprint prefix specified")
    matches = {i.fingerprint: i for i in images if i.fingerprint.startswith(prefix)}
    if not matches:
        raise NotFound("image", prefix, "The requested image couldn't be found")
    if len(matches) > 1:
        raise InvalidArgument("More than one match for the provided partial fingerprint "
                              f"{prefix!r}")
    return next(iter(matches.values()))


# -- transport ------------------------------------------------------------------------------------

class NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects, except from https to anything else."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        if req.full_url.startswith("https://") and not newurl.startswith("https://"):
            raise ImageError(f"{req.full_url}: refusing a redirect from https to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def ssl_context() -> ssl.SSLContext:
    """The system CA store, or the CA bundle ``SSL_CERT_FILE`` names."""
    cafile = os.environ.get("SSL_CERT_FILE")
    return ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()


def open_url(url: str, timeout: float) -> Any:
    """GET ``url`` (http or https); ``ImageError`` with the reason on any failure."""
    if not url.startswith(("https://", "http://")):
        raise InvalidArgument(f"unsupported URL {url!r} (https:// or http:// only)")
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=ssl_context()), NoDowngrade())
    req = urllib.request.Request(url, headers={"User-Agent": "lxdlib"})
    try:
        return opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise ImageError(f"Unable to fetch {url}: {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ImageError(f"Unable to fetch {url}: {getattr(e, 'reason', e)}") from None


# -- client ---------------------------------------------------------------------------------------

class Client:
    """One simplestreams server. Parsed catalogues are kept for the life of the object."""

    def __init__(self, url: str, cache_dir: str | os.PathLike[str] | None, *,
                 expiry: float = CACHE_EXPIRY, timeout: float = 30.0,
                 native: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.expiry = expiry
        self.timeout = timeout
        self.native = native or native_architecture()
        self._images: list[RemoteImage] | None = None
        self._aliases: list[AliasEntry] = []

    def __repr__(self) -> str:
        return f"<simplestreams {self.url}>"

    def _cache_file(self, path: str) -> Path | None:
        """The cache file of catalogue ``path`` (the server's word: any text): one name in
        ``cache_dir``, never ``.`` or ``..`` (its first dot is escaped too, which no other
        path's name can start with: ``quote`` escapes ``%`` itself)."""
        if self.cache_dir is None:
            return None
        name = urllib.parse.quote(path, safe="")
        if name.startswith("."):
            name = "%2E" + name[1:]
        return self.cache_dir / name

    def _fetch_catalogue(self, path: str) -> bytes:
        url = f"{self.url}/{path.lstrip('/')}"
        with open_url(url, self.timeout) as resp:
            data: bytes = resp.read(MAX_CATALOGUE + 1)
        if len(data) > MAX_CATALOGUE:
            raise ImageError(f"{url}: catalogue larger than {MAX_CATALOGUE} bytes")
        return data

    def get_json(self, path: str) -> Any:
        """A catalogue file: the cached copy while younger than ``expiry``, else a fresh one,
        else (server unreachable or failing) the stale copy."""
        cache = self._cache_file(path)
        stale: Any = None
        if cache is not None:
            try:
                age = time.time() - cache.stat().st_mtime
                stale = self._decode(cache.read_bytes(), path)
            except (FileNotFoundError, ImageError):  # none yet, or damaged: fetch it again
                stale = None
            if stale is not None and age <= self.expiry:
                return stale
        try:
            data = self._fetch_catalogue(path)
            doc = self._decode(data, path)
        except ImageError:
            if stale is not None:
                return stale
            raise
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache, data, 0o644, durable=False)
        return doc

    def _decode(self, data: bytes, path: str) -> Any:
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ImageError(f"{self.url}/{path}: invalid JSON: {e}") from None

    def _load(self) -> list[RemoteImage]:
        if self._images is None:
            found: list[RemoteImage] = []
            for path in parse_index(self.get_json(INDEX_PATH)):
                found += parse_products(self.get_json(path))
            prefer = TYPE_PREFERENCE if shutil.which("unsquashfs") else \
                tuple(reversed(TYPE_PREFERENCE))
            self._images, self._aliases = apply_aliases(found, native=self.native,
                                                        url=self.url, prefer=prefer)
        return self._images

    def images(self) -> list[RemoteImage]:
        """Every container image, newest serial first within each product."""
        return list(self._load())

    def aliases(self) -> list[AliasEntry]:
        """One entry per alias name (the one a short name resolves to here)."""
        self._load()
        names = dict.fromkeys(e.name for e in self._aliases)
        out = []
        for name in names:
            entry = resolve_alias(self._aliases, name, native=self.native)
            if entry is not None:
                out.append(entry)
        return out

    def get_alias(self, name: str) -> AliasEntry | None:
        self._load()
        return resolve_alias(self._aliases, name, native=self.native)

    def get_image(self, fingerprint: str) -> RemoteImage:
        return find_image(self._load(), fingerprint)

    def resolve(self, ref: str) -> tuple[RemoteImage, str | None]:
        """An alias or a fingerprint (prefix) → the image, and the alias if it was one."""
        entry = self.get_alias(ref)
        if entry is not None:
            return self.get_image(entry.target), ref
        if ref and all(c in "0123456789abcdef" for c in ref):
            return self.get_image(ref), None
        raise NotFound("image", ref, f"not found on {self.url}")

    # -- download ---------------------------------------------------------------------------
    def download(self, image: RemoteImage, temps: Sequence[Path],
                 progress: Progress | None = None) -> None:
        """Write the image's file(s) to ``temps`` (metadata first, then rootfs) and verify every
        file's sha256 and the fingerprint over both. Raises ``ImageError`` and removes what it
        wrote on any mismatch: nothing unverified survives this call."""
        files = [image.meta] + ([image.rootfs] if image.rootfs is not None else [])
        if len(temps) != len(files):
            raise InvalidArgument(f"{len(files)} temporary paths are needed")
        total = sum(f.size for f in files)
        combined = hashlib.sha256()
        done = 0
        try:
            for f, dest in zip(files, temps, strict=True):
                done = self._download_file(f, dest, combined, done, total, progress)
            if combined.hexdigest() != image.fingerprint:
                raise ImageError(f"Image fingerprint mismatch for {image.fingerprint}: the "
                                 f"files downloaded from {self.url} hash to "
                                 f"{combined.hexdigest()}")
        except BaseException:
            for dest in temps:
                dest.unlink(missing_ok=True)
            raise

    def _download_file(self, f: StreamFile, dest: Path, combined: Any, done: int, total: int,
                       progress: Progress | None) -> int:
        url = f"{self.url}/{f.path.lstrip('/')}"
        own = hashlib.sha256()
        got = 0
        with open_url(url, self.timeout) as resp:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                while True:
                    try:
                        chunk = resp.read(_CHUNK)
                    except OSError as e:
                        raise ImageError(f"Unable to fetch {url}: {e}") from None
                    if not chunk:
                        break
                    got += len(chunk)
                    if f.size and got > f.size:
                        raise ImageError(f"{url}: more data than the announced {f.size} bytes")
                    own.update(chunk)
                    combined.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    if progress is not None:
                        progress(done + got, max(total, done + got))
                os.fsync(fd)
            finally:
                os.close(fd)
        if f.size and got != f.size:
            raise ImageError(f"{url}: download truncated ({got} of {f.size} bytes)")
        if own.hexdigest() != f.sha256:
            raise ImageError(f"Hash mismatch for {url}: expected {f.sha256}, "
                             f"got {own.hexdigest()}")
        return done + got
