"""``image import <url>``: LXD's URL protocol, or a plain download.

LXD's client first asks the URL; a server that speaks the protocol answers with the headers
``LXD-Image-URL`` (where the tarball is) and ``LXD-Image-Hash`` (its sha256), and the client
downloads from there and checks the hash. A URL that answers with the tarball itself is a plain
download. Either way the file lands in a temporary file that only becomes an image once it is
complete and verified. TLS uses the system CA store, or ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..errors import TYPE_CHECKING, AlreadyExists, ImageError, InvalidArgument
from ..logs import get_logger
from ..patterns import Pattern

if TYPE_CHECKING:
    from typing import Any

    from ..context import Context
    from ..imagestore.store import ImageRecord

log = get_logger(__name__)

_HEX64 = Pattern(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20


def _context() -> ssl.SSLContext:
    cafile = os.environ.get("SSL_CERT_FILE")
    return ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()


def _open(url: str, method: str = "GET") -> Any:
    if not url.startswith(("https://", "http://")):
        raise InvalidArgument(f"unsupported URL {url!r} (https:// or http:// only)")
    req = urllib.request.Request(url, method=method, headers={"User-Agent": "lxdlib"})
    try:
        from ..imagestore.simplestreams import NoDowngrade
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=_context()), NoDowngrade())
        return opener.open(req, timeout=60)
    except urllib.error.HTTPError as e:
        raise ImageError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ImageError(f"{url}: {getattr(e, 'reason', e)}") from None


def _download(resp: Any, dest: Path, progress: Callable[[int, int], None] | None) -> str:
    total = int(resp.headers.get("Content-Length") or 0)
    h = hashlib.sha256()
    done = 0
    with open(dest, "wb") as f:
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            f.write(chunk)
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    if total and done != total:
        raise ImageError(f"download truncated: {done} of {total} bytes")
    return h.hexdigest()


def _have(ctx: Context, fingerprint: str, aliases: Sequence[str]) -> ImageRecord:
    """A URL import of an image already stored is LXD's "already have it": the image stays as
    it is and gets the new aliases. An alias that names another image is refused before any is
    added; one that already names this image is fine (importing twice is not an error)."""
    store = ctx.images
    table = store.aliases() if aliases else {}  # no alias: an unreadable table is no bar
    for name in aliases:
        if name in table and table[name]["target"] != fingerprint:
            raise AlreadyExists("image alias", name)
    for name in aliases:
        if name not in table:
            store.alias_create(name, fingerprint)
    log.debug("image %s is already stored: aliases %s added", fingerprint[:12], list(aliases))
    return store.get(fingerprint)


def download_image(ctx: Context, url: str, *, aliases: Sequence[str] = (),
                   properties: Mapping[str, str] | None = None, public: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> ImageRecord:
    """Download the image at ``url`` and import it; one already stored (known by the hash the
    server announces, or by the downloaded file's) only gets ``aliases``, as LXD does."""
    with _open(url) as resp:
        image_url = resp.headers.get("LXD-Image-URL")
        expected = (resp.headers.get("LXD-Image-Hash") or "").lower() or None
        if image_url and expected and _HEX64.match(expected) and ctx.images.exists(expected):
            return _have(ctx, expected, aliases)  # nothing to download
        with ctx.images.temp_directory("download") as tmp:
            dest = Path(tmp) / "image"
            if image_url:
                if expected is None:
                    raise ImageError(f"{url}: Missing LXD-Image-Hash header")
                if not _HEX64.match(expected):
                    raise ImageError(f"{url}: LXD-Image-Hash is not a sha256: {expected!r}")
                with _open(image_url) as inner:
                    got = _download(inner, dest, progress)
            else:
                got = _download(resp, dest, progress)
            if expected is not None and got != expected:
                raise ImageError(f"{url}: hash mismatch (expected {expected}, got {got})")
            if ctx.images.exists(got):
                return _have(ctx, got, aliases)
            name = Path(urllib.request.url2pathname(url.split("?", 1)[0])).name
            if name in ("", ".", ".."):
                name = "image"
            final = Path(tmp) / name
            os.replace(dest, final)
            return ctx.import_image(final, aliases=aliases,
                                           properties=dict(properties or {}), public=public)
