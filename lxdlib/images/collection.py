"""``host.images``: the local image store with LXD's ``image`` verbs, remotes and cache rules.

The store itself (``lxdlib.imagestore``) is a driver that knows tarballs and aliases; this
collection adds what needs the rest of the root: downloads from image servers, the cache's expiry
and auto-update, publishing an instance, removing an image's volumes from the pools.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import TYPE_CHECKING, InvalidArgument, NotFound
from ..imagestore.store import ImageRecord
from ..model import Collection
from .image import Image, export_image

if TYPE_CHECKING:
    from typing import Any

    from ..context import Context
    from ..imagestore.remotes import Remotes
    from ..imagestore.simplestreams import Client


class Images(Collection[Image]):
    """The local image store with LXD's ``image`` verbs, the remotes and the cache rules.

    ``host.images["busybox"]`` (alias, fingerprint or unique prefix) is an ``Image``;
    ``create`` (``import_file``/``import_url``), ``copy("images:alpine/3.19")``,
    ``publish("c1")``, ``refresh``, ``housekeeping``… The names are the fingerprints, oldest
    upload first.
    """

    kind = "image"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.images

    @property
    def remotes(self) -> Remotes:
        """The image servers this root knows (loaded when first asked: a local launch does
        not read them, nor import their code)."""
        return self.ctx.remotes

    def _image(self, record: ImageRecord) -> Image:
        return Image(self.ctx, record.fingerprint)

    def get(self, ref: str) -> Image:
        """The image an alias, a fingerprint or a unique fingerprint prefix names."""
        return self._image(self.store.get(ref))

    def _exists(self, ref: str) -> bool:
        try:
            self.store.get(ref)
        except (NotFound, InvalidArgument):
            return False
        return True

    def _model(self, name: str) -> Image:
        return Image(self.ctx, name)

    def names(self) -> builtins.list[str]:
        return [r.fingerprint for r in self.store.list()]

    def list(self) -> builtins.list[Image]:
        return [self._image(r) for r in self.store.list()]

    def __repr__(self) -> str:
        return f"<Images {len(self)} in {self.store.root}>"

    def create(self, source: str | os.PathLike[str], *, aliases: Sequence[str] = (),
               **kw: Any) -> Image:
        """``image import``: a file (``import_file``) or an ``http(s)://`` URL
        (``import_url``); the keywords are theirs."""
        if isinstance(source, str) and source.startswith(("http://", "https://")):
            return self.import_url(source, aliases=aliases, **kw)
        return self.import_file(source, aliases=aliases, **kw)

    def import_file(self, path: str | os.PathLike[str], *, aliases: Sequence[str] = (),
                    **kw: Any) -> Image:
        """``image import``: a unified tarball, or a split image with ``rootfs_path=``."""
        return self._image(self.ctx.import_image(path, aliases=aliases, **kw))

    def import_url(self, url: str, *, aliases: Sequence[str] = (),
                   properties: Mapping[str, str] | None = None, public: bool = False,
                   progress: Any = None) -> Image:
        """``image import https://…``: LXD's URL protocol (``LXD-Image-URL``/``-Hash``) or a
        plain download of the tarball. An image already stored is not an error, as in LXD:
        it only gets ``aliases`` (``AlreadyExists`` if one names another image)."""
        from .fetch import download_image
        return self._image(download_image(self.ctx, url, aliases=aliases, properties=properties,
                                          public=public, progress=progress))

    def build_busybox(self, alias: str | None = "busybox", *, compression: str = "gzip",
                      busybox: str = "/bin/busybox") -> Image:
        """Build the self-contained busybox image from the host's busybox-static and import it.

        The build is deterministic, so building again finds the same fingerprint: the existing
        image is returned (and the alias pointed at it).
        """

        from ..errors import AlreadyExists as Exists
        from ..imagestore.busybox import build_busybox_image
        with self.store.temp_directory("build") as tmp:
            out = build_busybox_image(Path(tmp) / "busybox.tar.gz", busybox=busybox,
                                      compression=compression)
            try:
                img = self.import_file(out, aliases=[alias] if alias else [])
            except Exists:
                import hashlib
                h = hashlib.sha256()
                with open(out, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                img = self.get(h.hexdigest())
                if alias and alias not in self.store.aliases():
                    self.store.alias_create(alias, img.fingerprint)
        return img

    def build_debian(self, alias: str | None = "debian", *, release: str = "bookworm",
                     variant: str = "minbase", mirror: str = "http://deb.debian.org/debian",
                     compression: str = "xz", progress: Any = None,
                     cache_dir: str | os.PathLike[str] | None = None,
                     packages: Sequence[str] = ()) -> Image:
        """``image build debian``: debootstrap ``release`` into a systemd image and import it
        (``alias`` moves to the new image if it existed). ``progress(step)`` gets coarse steps;
        ``cache_dir`` reuses an earlier identical debootstrap; ``packages`` are installed into
        the image by the host, e.g. ``["docker.io"]`` (see ``build_debian_image``)."""

        from ..imagestore.debootstrap import build_debian_image
        from ..imagestore.store import validate_alias_name
        if alias:
            validate_alias_name(alias)
        with self.store.temp_directory("build") as tmp:
            out = build_debian_image(Path(tmp) / "debian.tar", release=release,
                                     variant=variant, mirror=mirror, compression=compression,
                                     progress=progress, cache_dir=cache_dir,
                                     packages=packages)
            img = self.import_file(out)
        if alias:
            if alias in self.store.aliases():
                self.store.alias_update(alias, target=img.fingerprint)
            else:
                self.store.alias_create(alias, img.fingerprint)
        return img

    def delete(self, ref: str) -> None:
        """Remove the image, its aliases and its unpacked volumes in every pool."""
        self.ctx.delete_image(ref)

    def touch(self, fingerprint: str) -> None:
        self.store.touch(fingerprint)

    def update(self, ref: str, **changes: Any) -> Image:
        """``image edit``: ``properties``, ``public``, ``auto_update``, ``expires_at``,
        ``profiles`` (see ``Image.update``); each profile named must exist."""
        if changes.get("profiles") is not None:
            changes["profiles"] = self.ctx.check_profiles(changes["profiles"])
        return self._image(self.store.update(ref, **changes))

    def set_properties(self, ref: str, values: Mapping[str, str | None]) -> Image:
        """Set (``None``: unset) some properties under the image's lock."""
        return self._image(self.store.set_properties(ref, values))

    def export(self, ref: str, target: str | os.PathLike[str] = ".") -> builtins.list[Path]:
        """``image export``: the file(s) exactly as imported (see ``image.export_image``)."""
        return export_image(self.store, ref, target)

    # -- remotes ------------------------------------------------------------------------------
    def client(self, remote: str, *, fresh: bool = False) -> Client:
        """The simplestreams client of a remote (by name or URL); ``fresh`` ignores the
        one-hour catalogue cache (the stale copy is still used if the server is unreachable)."""
        return self.ctx.client(remote, fresh=fresh)

    def _split(self, ref: str) -> tuple[Any, str]:
        """The image server and the reference on it. An lxdlib host over ssh is no image
        server: named explicitly it is refused; as the default remote (``remote switch``, which
        the CLI honours by running commands there) this host's own store is meant."""
        from ..imagestore.remotes import LOCAL, split_ref
        name, rest = split_ref(ref, self.remotes.default)
        remote = self.remotes.get(name)
        if remote.is_ssh:
            if ":" not in ref:
                return self.remotes.get(LOCAL), rest
            raise InvalidArgument(f"{name}: is an lxdlib host over ssh, not an image server "
                                  f"(its images are used there: `lxdlib launch {rest} "
                                  f"{name}:<instance>`)")
        return remote, rest

    def remote_list(self, remote: str) -> builtins.list[Any]:
        """``image list <remote>:``: the ``RemoteImage`` objects a server offers."""
        name = remote.rstrip(":")
        if "://" not in name and self.remotes.get(name).is_ssh:
            raise InvalidArgument(f"{name}: is an lxdlib host over ssh, not an image server "
                                  f"(`lxdlib image list {name}:` lists its images there)")
        return self.client(name).images()  # type: ignore[no-any-return]

    def remote_get(self, ref: str) -> Any:
        """The ``RemoteImage`` an alias or fingerprint prefix on a remote names."""
        remote, name = self._split(ref)
        image, _ = self.client(remote.name).resolve(name or "default")
        return image

    def copy(self, ref: str, *, aliases: Sequence[str] = (), copy_aliases: bool = False,
             auto_update: bool = False, public: bool = False, progress: Any = None
             ) -> Image:
        """``image copy <remote>:<alias> local:``: download (once, verified) into the store."""
        from . import cache
        remote, name = self._split(ref)
        return self._image(cache.copy(self.ctx, remote, name, aliases=aliases,
                                      copy_aliases=copy_aliases, auto_update=auto_update,
                                      public=public, progress=progress))

    def resolve(self, ref: str, progress: Any = None) -> str:
        """The local reference an instance made from ``ref`` uses: a local alias/fingerprint as
        is; a remote one (``images:alpine/3.19``, ``ubuntu:``) is downloaded and cached first,
        or a cached copy used, by LXD's rules."""
        remote, name = self._split(ref)
        if remote.is_local:
            return name
        from . import cache  # the remote-image code (HTTP, TLS): only for a remote ref
        return cache.for_instance(self.ctx, remote, name, progress).fingerprint

    def refresh(self, ref: str, progress: Any = None) -> tuple[Image, bool]:
        """``image refresh``: ask the image's server now; (current image, whether it moved)."""
        from . import cache
        record, moved = cache.refresh(self.ctx, ref, progress=progress)
        return self._image(record), moved

    def prune(self, now: Any = None) -> builtins.list[str]:
        """Delete cached images unused for ``images.remote_cache_expiry`` days."""
        from . import cache
        return cache.prune_expired(self.ctx, now)

    def housekeeping(self, now: Any = None) -> dict[str, Any]:
        """LXD's timers without a daemon: expiry, then auto-update (safe from cron)."""
        from . import cache
        return cache.housekeeping(self.ctx, now)

    def publish(self, source: Any, *, aliases: Sequence[str] = (), compression: str | None = None,
                properties: Mapping[str, str] | None = None, force: bool = False,
                reuse: bool = False, public: bool = False, expires_at: Any = None,
                progress: Any = None) -> Image:
        """``publish``: an instance (``"c1"``, an ``Instance``) or a snapshot (``"c1/snap0"``)
        as a unified image. See ``lxdlib.images.publish``."""
        from .publish import publish
        return self._image(publish(self.ctx, source, aliases=aliases, compression=compression,
                                   properties=properties, force=force, reuse=reuse,
                                   public=public, expires_at=expires_at, progress=progress))

    def _ipython_key_completions_(self) -> builtins.list[str]:
        """The aliases, then the fingerprints of images that have none."""
        records = self.store.list()
        return sorted(self.store.aliases()) + [r.fingerprint for r in records if not r.aliases]

    def _repr_html_(self) -> str:
        from ..notebook import images_html
        return images_html(self.store.list())
