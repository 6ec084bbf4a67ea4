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
import re
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ImageError, InvalidArgument

if TYPE_CHECKING:
    from ..context import Context
    from ..imagestore.store import ImageRecord

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
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


def download_image(ctx: Context, url: str, *, aliases: Sequence[str] = (),
                   properties: Mapping[str, str] | None = None, public: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> ImageRecord:
    with _open(url) as resp:
        image_url = resp.headers.get("LXD-Image-URL")
        expected = (resp.headers.get("LXD-Image-Hash") or "").lower() or None
        with tempfile.TemporaryDirectory(dir=ctx.paths.run, prefix="download-") as tmp:
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
            name = Path(urllib.request.url2pathname(url.split("?", 1)[0])).name
            if name in ("", ".", ".."):
                name = "image"
            final = Path(tmp) / name
            os.replace(dest, final)
            return ctx.import_image(final, aliases=aliases,
                                           properties=dict(properties or {}), public=public)
