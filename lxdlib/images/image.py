"""``Image``: one image of the local store as users hold it (``host.images["busybox"]``).

An image is known by its fingerprint, which never changes; everything else (aliases, properties,
``public``, the cache times) is read from the store when asked, so an ``Image`` kept across an
``image edit`` or an alias move by another process shows what is true now.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from ..context import Context
from ..errors import TYPE_CHECKING, NotFound
from ..imagestore.store import UNSET, ImageRecord, ImageStore
from ..model import RootModel

if TYPE_CHECKING:
    from typing import Any
    pass


class Image(RootModel[Context]):
    """One image; ``record()`` reads all of it at once (an ``ImageRecord``)."""

    kind = "image"

    # the name is the fingerprint: the one name an image always has (``host.images[img.name]``)

    @property
    def fingerprint(self) -> str:
        return self._name

    def __repr__(self) -> str:
        try:
            aliases = [a["name"] for a in self.record().aliases]
        except NotFound:
            return f"<Image {self._name[:12]} (deleted)>"
        return f"<Image {self._name[:12]}{' ' + ', '.join(aliases) if aliases else ''}>"

    def _repr_html_(self) -> str:
        from ..notebook import images_html
        return images_html([self.record()])

    def record(self) -> ImageRecord:
        """The image as stored now; ``NotFound`` once it is deleted."""
        return self._ctx.images.get(self._name)

    def to_dict(self) -> dict[str, Any]:
        """LXD's API shape (``lxc image show``)."""
        return self.record().to_dict()

    @property
    def exists(self) -> bool:
        return self._ctx.images.exists(self._name)

    # -- live attributes ----------------------------------------------------------------------
    @property
    def aliases(self) -> builtins.list[dict[str, str]]:
        """``[{"name": …, "description": …}]``, as LXD lists them."""
        return self.record().aliases

    @property
    def properties(self) -> dict[str, str]:
        return dict(self.record().properties)

    @property
    def description(self) -> str:
        return self.record().properties.get("description", "")

    @property
    def architecture(self) -> str:
        return self.record().architecture

    @property
    def type(self) -> str:
        return self.record().type

    @property
    def filename(self) -> str:
        return self.record().filename

    @property
    def size(self) -> int:
        return self.record().size

    @property
    def public(self) -> bool:
        return self.record().public

    @property
    def auto_update(self) -> bool:
        return self.record().auto_update

    @property
    def cached(self) -> bool:
        """Downloaded to make an instance (expires when unused), not copied on purpose."""
        return self.record().cached

    @property
    def created_at(self) -> datetime:
        return self.record().created_at

    @property
    def uploaded_at(self) -> datetime:
        return self.record().uploaded_at

    @property
    def last_used_at(self) -> datetime | None:
        return self.record().last_used_at

    @property
    def expires_at(self) -> datetime | None:
        return self.record().expires_at

    @property
    def update_source(self) -> dict[str, str] | None:
        src = self.record().update_source
        return dict(src) if src is not None else None

    # -- verbs --------------------------------------------------------------------------------
    def update(self, *, properties: Mapping[str, str] | None = None, public: bool | None = None,
               auto_update: bool | None = None, expires_at: Any = UNSET,
               profiles: Sequence[str] | None = None) -> None:
        """``image edit``: ``properties`` replaces the whole set, ``profiles`` the profiles an
        instance made from the image gets when its creator names none (``[]``: none); ``None``
        leaves a field alone, except ``expires_at``, where ``None`` clears it (left alone when
        not given)."""
        if profiles is not None:
            profiles = self._ctx.check_profiles(profiles)
        self._ctx.images.update(self._name, properties=properties, public=public,
                                auto_update=auto_update, expires_at=expires_at,
                                profiles=profiles)

    @property
    def profiles(self) -> list[str]:
        """The profiles an instance made from this image gets when none are named."""
        return list(self.record().profiles)

    def set_properties(self, values: Mapping[str, str | None]) -> None:
        """Set (``None``: unset) some properties, read and written under the image's lock."""
        self._ctx.images.set_properties(self._name, values)

    def delete(self) -> None:
        """Remove the image, its aliases and its unpacked volumes in every pool."""
        self._ctx.delete_image(self._name)

    def export(self, target: str | os.PathLike[str] = ".") -> builtins.list[Path]:
        """``image export``: the file(s) exactly as imported (see ``Images.export``)."""
        return export_image(self._ctx.images, self._name, target)


def export_image(store: ImageStore, ref: str, target: str | os.PathLike[str] = "."
                 ) -> builtins.list[Path]:
    """``image export``: the file(s) exactly as imported. Into a directory they are named
    ``<fp><ext>`` (unified) or ``meta-<fp><ext>`` + ``<fp><ext>`` (split), the extension
    judged from the content; to a file path, the metadata goes there and a split image's
    rootfs beside it as ``<path>.root``."""
    from ..imagestore import compression
    img = store.get(ref)
    fp = img.fingerprint
    sources = [store.tarball_path(fp)]
    rootfs = store.rootfs_path(fp)
    if rootfs is not None:
        sources.append(rootfs)
    dest = Path(target)
    if dest.is_dir():
        exts = [compression.extension(compression.detect(s)) for s in sources]
        names = ([f"{fp}{exts[0]}"] if rootfs is None
                 else [f"meta-{fp}{exts[0]}", f"{fp}{exts[1]}"])
        outs = [dest / n for n in names]
    else:
        outs = [dest] + ([dest.with_name(dest.name + ".root")] if rootfs is not None else [])
        if not dest.absolute().parent.is_dir():  # said as `export` says it, not a traceback
            raise NotFound("directory", str(dest.absolute().parent))
    from ..errors import InvalidArgument
    from ..hostroom import Room, Unlimited, into_device, pump
    from ..state import create_private, temp_beside
    if not dest.is_dir() and into_device(dest):
        # ``/dev/stdout``, a FIFO: written into, as lxc does, never renamed over
        if rootfs is not None:
            raise InvalidArgument(f"a split image is two files: {dest} is a device or a FIFO")
        with open(sources[0], "rb") as fin:
            fd = os.open(dest, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
            try:
                pump(fin.fileno(), fd, Unlimited(), dest)
            finally:
                os.close(fd)
        return [dest]
    for src, out in zip(sources, outs, strict=True):
        # a fresh name, made here and 0600 as an instance's export: ``target`` may be a
        # directory a host user can write, and an image published from an instance holds
        # all of its files (so its size was a container's choice: counted against a
        # ``hostroom.Room``, it stops before the root reserve of ``target``'s filesystem)
        tmp = temp_beside(out)
        try:
            with open(src, "rb") as fin, os.fdopen(create_private(tmp), "wb") as fout:
                pump(fin.fileno(), fout.fileno(), Room(), out.parent)  # a quota's: DiskFull
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return outs
