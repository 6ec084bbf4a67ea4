"""The local image store: tarballs by fingerprint, their records, and the alias table.

Layout under ``paths.images``::

    <fp>/image          the unified tarball (or a split image's metadata tarball), as uploaded
    <fp>/image.rootfs   a split image's rootfs tarball
    <fp>/image.yaml     the record: its presence is the commit point of an import
    aliases.yaml        name -> {target, description}: the one source of truth for aliases

An import copies the source into a temporary file while hashing it (so the fingerprint is the
hash of exactly the bytes kept), validates it, renames it into ``<fp>/`` and writes the record
last. Temp files live in ``<root>/run/image-imports/<pid>-…`` (same filesystem: committing is a
rename). A ``<fp>/`` without a record and a temp file whose process is gone are leftovers of a
``kill -9``; the next import or listing removes them, and every ``Host`` clears the temp
directory once when it opens the root (one small directory: its cost does not grow with the
number of images).

Locks: ``image.<fp>`` around everything that changes one image; ``images.aliases`` around the
alias table. Order is always image then aliases.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path

from ..config.expand import resolve_profile_list
from ..config.text import check_description
from ..config.units import format_api_time, parse_api_time
from ..errors import (
    TYPE_CHECKING,
    AlreadyExists,
    Busy,
    CorruptRecord,
    DiskFull,
    ImageError,
    InvalidArgument,
    InvalidName,
    LxdlibError,
    NotFound,
)
from ..fstree import remove_any_depth
from ..logs import get_logger
from ..rootdir import IMAGE_IMPORTS
from ..state import (
    Paths,
    RecordSyntaxError,
    fsync_dir,
    lock,
    read_record,
    remove_stale_tmp,
    write_record,
)
from ..values import Value, assign
from . import compression, tarball
from .tarball import is_fingerprint

log = get_logger(__name__)

if TYPE_CHECKING:
    import tempfile
    from typing import Any, Final, Literal

__all__ = ["UNSET", "ImageRecord", "ImageStore", "validate_alias_name"]

_CHUNK = 1024 * 1024
_IMPORT_PREFIX = ".import-"  # temp files of older versions, directly under images/
_IMPORT_DIR = IMAGE_IMPORTS  # under paths.run
IMAGE_FILE: Final = "image"
ROOTFS_FILE: Final = "image.rootfs"
RECORD_FILE: Final = "image.yaml"
ALIASES_FILE: Final = "aliases.yaml"

Progress = Callable[[int, int], None]


class _Unset(Enum):
    UNSET = "UNSET"


#: Default of ``update`` arguments where ``None`` is itself a value (``expires_at=None`` clears).
UNSET: Final = _Unset.UNSET


def _now() -> datetime:
    return datetime.now(UTC)


#: How close two uses of an image are recorded as one (``ImageStore.touch``).
TOUCH_RESOLUTION = timedelta(seconds=1)


class ImageRecord(Value, frozen=True):
    """One image in the store, in LXD's terms (``lxc image show`` / ``GET /1.0/images/<fp>``).

    ``update_source``: where an image fetched by alias came from, for auto-update: ``server``,
    ``protocol``, ``alias``, ``image_type`` (LXD's ``update_source``); ``None`` for local
    images. ``profiles``: those an instance made from this image gets when its creator names
    none (LXD's image ``profiles``): ``["default"]`` unless ``image edit`` changed it; ``[]``
    gives none."""

    _fields = ("fingerprint", "filename", "size", "architecture", "created_at", "uploaded_at",
               "last_used_at", "expires_at", "properties", "aliases", "public", "auto_update",
               "cached", "type", "update_source", "profiles")
    __slots__ = _fields

    fingerprint: str
    filename: str
    size: int
    architecture: str
    created_at: datetime
    uploaded_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    properties: dict[str, str]
    aliases: list[dict[str, str]]
    public: bool
    auto_update: bool
    cached: bool
    type: str
    update_source: dict[str, str] | None
    profiles: list[str]

    def __init__(self, fingerprint: str, filename: str, size: int, architecture: str,
                 created_at: datetime, uploaded_at: datetime, last_used_at: datetime | None,
                 expires_at: datetime | None, properties: dict[str, str],
                 aliases: list[dict[str, str]], public: bool, auto_update: bool, cached: bool,
                 type: str = "container", update_source: dict[str, str] | None = None,
                 profiles: list[str] | None = None) -> None:
        assign(self, "fingerprint", fingerprint)
        assign(self, "filename", filename)
        assign(self, "size", size)
        assign(self, "architecture", architecture)
        assign(self, "created_at", created_at)
        assign(self, "uploaded_at", uploaded_at)
        assign(self, "last_used_at", last_used_at)
        assign(self, "expires_at", expires_at)
        assign(self, "properties", properties)
        assign(self, "aliases", aliases)
        assign(self, "public", public)
        assign(self, "auto_update", auto_update)
        assign(self, "cached", cached)
        assign(self, "type", type)
        assign(self, "update_source", update_source)
        assign(self, "profiles", ["default"] if profiles is None else profiles)

    def _repr_html_(self) -> str:
        from ..notebook import images_html
        return images_html([self])

    def to_dict(self) -> dict[str, Any]:
        """LXD's API shape; unset times are LXD's zero time ``0001-01-01T00:00:00Z``."""
        out = {
            "fingerprint": self.fingerprint,
            "filename": self.filename,
            "size": self.size,
            "architecture": self.architecture,
            "type": self.type,
            "public": self.public,
            "auto_update": self.auto_update,
            "cached": self.cached,
            "properties": dict(self.properties),
            "aliases": [dict(a) for a in self.aliases],
            "created_at": format_api_time(self.created_at),
            "uploaded_at": format_api_time(self.uploaded_at),
            "last_used_at": format_api_time(self.last_used_at),
            "expires_at": format_api_time(self.expires_at),
            "profiles": list(self.profiles),
        }
        if self.update_source is not None:
            out["update_source"] = dict(self.update_source)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  aliases: list[dict[str, str]] | None = None) -> ImageRecord:
        """Rebuild a record from ``to_dict`` output (``aliases`` overrides the stored list)."""
        try:
            created = parse_api_time(data["created_at"])
            uploaded = parse_api_time(data["uploaded_at"])
            if created is None or uploaded is None:
                raise ValueError("created_at and uploaded_at are required")
            return cls(
                fingerprint=str(data["fingerprint"]),
                filename=str(data.get("filename", "")),
                size=int(data["size"]),
                architecture=str(data["architecture"]),
                created_at=created,
                uploaded_at=uploaded,
                last_used_at=parse_api_time(data.get("last_used_at")),
                expires_at=parse_api_time(data.get("expires_at")),
                properties={str(k): str(v) for k, v in (data.get("properties") or {}).items()},
                aliases=(aliases if aliases is not None
                         else [dict(a) for a in data.get("aliases") or []]),
                public=bool(data.get("public", False)),
                auto_update=bool(data.get("auto_update", False)),
                cached=bool(data.get("cached", False)),
                type=str(data.get("type", "container")),
                update_source=({str(k): str(v) for k, v in data["update_source"].items()}
                               if data.get("update_source") else None),
                # none stored (a record older than the field, or LXD's nil): ``default`` only
                profiles=(["default"] if data.get("profiles") is None
                          else [str(p) for p in data["profiles"]]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ImageError(f"corrupt image record: {e}") from None


def validate_alias_name(name: str) -> None:
    """LXD alias rules: non-empty, at most 255 characters, no whitespace or control characters,
    no ``:`` (the remote separator). ``/`` is allowed (``debian/12``), as LXD allows it: an
    alias is only a key of ``aliases.yaml``, never a path component. A ``/``-separated part
    that is empty, ``.`` or ``..`` is refused (in a remote's URL it would name another alias).
    """
    if not isinstance(name, str) or not name:
        raise InvalidName("image alias", str(name), "must not be empty")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise InvalidName("image alias", name,
                          'no "/"-separated part may be empty, "." or ".."')
    if len(name) > 255:
        raise InvalidName("image alias", name, "must be at most 255 characters")
    if ":" in name:
        raise InvalidName("image alias", name, 'must not contain ":"')
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidName("image alias", name, "must not contain whitespace or control characters")


def _check_fingerprint(fingerprint: str) -> str:
    if not is_fingerprint(fingerprint):
        raise InvalidArgument(f"invalid image fingerprint {fingerprint!r}: "
                              "expected 64 lowercase hex digits")
    return fingerprint


def _check_aliases(aliases: Iterable[str]) -> list[str]:
    names = [aliases] if isinstance(aliases, str) else list(aliases)
    for name in names:
        validate_alias_name(name)
    if len(set(names)) != len(names):
        raise InvalidArgument("the same alias is given twice")
    return names


def _check_properties(properties: Mapping[str, str] | None) -> dict[str, str]:
    if properties is None:
        return {}
    if not isinstance(properties, Mapping):
        raise InvalidArgument("image properties must be a mapping of strings")
    for k, v in properties.items():
        if not isinstance(k, str) or not k or not isinstance(v, str):
            raise InvalidArgument(f"invalid image property {k!r}: keys and values are strings")
    return dict(properties)


def _check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{what} must be true or false, not {value!r}")
    return value


def _check_time(value: Any, what: str) -> datetime | None:
    """A datetime, an ISO 8601 string (as ``image edit`` YAML holds) or None; naive means UTC."""
    if isinstance(value, str):
        try:
            return parse_api_time(value)
        except ValueError:
            raise InvalidArgument(f"{what} must be an ISO 8601 time, not {value!r}") from None
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{what} must be a datetime or None")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


class ImageStore:
    """Images on this host, by fingerprint and alias. Safe across processes and threads."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._corrupt_said: str | None = None  # the alias table's error last warned of

    # -- paths ------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.paths.images

    def _dir(self, fingerprint: str) -> Path:
        return self.root / _check_fingerprint(fingerprint)

    def tarball_path(self, fingerprint: str) -> Path:
        """The stored unified tarball (or a split image's metadata tarball)."""
        return self._dir(fingerprint) / IMAGE_FILE

    def rootfs_path(self, fingerprint: str) -> Path | None:
        """A split image's rootfs tarball; ``None`` for a unified image."""
        p = self._dir(fingerprint) / ROOTFS_FILE
        return p if p.exists() else None

    def exists(self, fingerprint: str) -> bool:
        return (self._dir(fingerprint) / RECORD_FILE).is_file()

    # -- housekeeping -----------------------------------------------------------------------------
    def _import_dir(self) -> Path:
        path = self.paths.run / _IMPORT_DIR
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def temp_directory(self, what: str) -> tempfile.TemporaryDirectory[str]:
        """A work directory of this process (a build, a download), where ``cleanup_imports``
        removes it once the process is gone: one under ``run/`` or ``/tmp`` outlived a
        ``kill -9`` for good (a download of a whole image)."""
        import tempfile  # here: only builds and downloads need it
        return tempfile.TemporaryDirectory(dir=self._import_dir(),
                                           prefix=f"{os.getpid()}-{what}-")

    def cleanup_imports(self) -> None:
        """Remove the temp files of imports, downloads and publishes whose process is gone.

        Cheap enough for every ``Host`` to run once: it reads only ``run/image-imports/``,
        which holds nothing but the files of imports running now or killed."""
        try:
            entries = list(os.scandir(self.paths.run / _IMPORT_DIR))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        for entry in entries:
            pid = entry.name.split("-", 1)[0]
            if not pid.isdigit() or not _pid_alive(int(pid)):
                self._remove(Path(entry.path))

    def cleanup_leftovers(self) -> None:
        """Remove what killed imports left: temp files of dead processes, ``<fp>/`` dirs with no
        record (skipping any whose import is still running, i.e. whose lock is held)."""
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        remove_stale_tmp(self.root)
        self.cleanup_imports()
        for entry in entries:
            name = entry.name
            if name.startswith(_IMPORT_PREFIX):
                pid = name[len(_IMPORT_PREFIX):].split("-", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    self._remove(Path(entry.path))
            elif is_fingerprint(name) and not os.path.lexists(Path(entry.path, RECORD_FILE)):
                try:
                    with lock(self.paths, "image", name, timeout=0):
                        if not os.path.lexists(Path(entry.path, RECORD_FILE)):
                            self._remove(Path(entry.path))
                except Busy:
                    continue  # an import is committing it right now

    @staticmethod
    def _remove(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                remove_any_depth(path)  # a published tree: any depth (see lxdlib.fstree)
            else:
                path.unlink()

    # -- records ----------------------------------------------------------------------------------
    def _read_aliases(self) -> dict[str, dict[str, str]]:
        """The alias table; ``CorruptRecord`` for a file that is none (hand-edited, cut
        short), or an entry that is no mapping, which every verb that changes an alias reports
        as it is: a write would drop what it cannot read, the user's other aliases."""
        table, corrupt = self._aliases_read()
        if corrupt is not None:
            raise corrupt
        return table

    def _aliases_read(self) -> tuple[dict[str, dict[str, str]], CorruptRecord | None]:
        """The aliases that can be read, and what made the table unreadable if anything did
        (a file that is no mapping: none can be read; an entry that is no mapping: the
        others can). Verbs that only look an image up or show it go on with what is read."""
        path = self.root / ALIASES_FILE
        try:
            data = read_record(path)
        except FileNotFoundError:
            return {}, None
        except RecordSyntaxError as e:
            return {}, CorruptRecord("image alias table", ALIASES_FILE, path, e.reason)
        if data is None:
            return {}, None
        if not isinstance(data, dict):
            return {}, CorruptRecord("image alias table", ALIASES_FILE, path,
                                     "not a mapping of alias names")
        table = {str(k): {"target": str(v.get("target", "")),
                          "description": str(v.get("description", ""))}
                 for k, v in data.items() if isinstance(v, dict)}
        bad = sorted(str(k) for k, v in data.items() if not isinstance(v, dict))
        if bad:
            return table, CorruptRecord("image alias table", ALIASES_FILE, path,
                                        f"alias {bad[0]!r} is not a mapping")
        return table, None

    def _aliases_lenient(self) -> dict[str, dict[str, str]]:
        """``_aliases_read`` for a verb that shows or uses one image: what can be read, the
        rest said once per reason (a listing asks once per image)."""
        table, corrupt = self._aliases_read()
        if corrupt is not None and str(corrupt) != self._corrupt_said:
            self._corrupt_said = str(corrupt)
            log.warning("%s: what it holds is unknown until it is repaired", corrupt)
        return table

    def _write_aliases(self, table: dict[str, dict[str, str]]) -> None:
        write_record(self.root / ALIASES_FILE, dict(sorted(table.items())))

    @staticmethod
    def _aliases_of(table: dict[str, dict[str, str]],
                    fingerprint: str) -> builtins.list[dict[str, str]]:
        return [{"name": name, "description": entry["description"]}
                for name, entry in sorted(table.items()) if entry["target"] == fingerprint]

    def _load(self, fingerprint: str, table: dict[str, dict[str, str]] | None = None
              ) -> ImageRecord:
        """The image's record; ``CorruptRecord`` for a file that is none (hand-edited, cut
        short by a full disk), which ``list`` skips: one bad image hides no other."""
        path = self._dir(fingerprint) / RECORD_FILE
        try:
            data = read_record(path)
        except FileNotFoundError:
            raise NotFound("image", fingerprint) from None
        except RecordSyntaxError as e:
            raise CorruptRecord("image", fingerprint, path, e.reason) from None
        if not isinstance(data, dict):
            raise CorruptRecord("image", fingerprint, path, "not a mapping")
        if table is None:
            table = self._aliases_lenient()
        try:
            return ImageRecord.from_dict(data, self._aliases_of(table, fingerprint))
        except ImageError as e:
            raise CorruptRecord("image", fingerprint, path, str(e)) from None

    def _save(self, record: ImageRecord) -> None:
        data = record.to_dict()
        del data["aliases"]  # aliases.yaml is the one place aliases live
        remove_stale_tmp(self._dir(record.fingerprint))
        write_record(self._dir(record.fingerprint) / RECORD_FILE, data)

    def _fingerprints(self) -> builtins.list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names
                      if is_fingerprint(n) and os.path.lexists(self.root / n / RECORD_FILE))

    def _resolve(self, ref: str, table: dict[str, dict[str, str]] | None = None) -> str:
        """Alias name, then full fingerprint, then unique fingerprint prefix → fingerprint.

        Without ``table``, an alias table that cannot be read (wholly or in part) still lets
        an image be named by its fingerprint or a prefix of it; a name that is neither is the
        table's ``CorruptRecord``, since it may be one of the aliases it holds."""
        if not isinstance(ref, str) or not ref:
            raise InvalidArgument("No fingerprint prefix specified")
        corrupt = None
        if table is None:
            table, corrupt = self._aliases_read()
        if ref in table:
            return table[ref]["target"]
        if is_fingerprint(ref):
            if os.path.lexists(self.root / ref / RECORD_FILE):  # a corrupt one too
                return ref
            raise corrupt or NotFound("image", ref)
        if all(c in "0123456789abcdef" for c in ref):
            matches = [fp for fp in self._fingerprints() if fp.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidArgument(f'More than one image matches "{ref}"')
        raise corrupt or NotFound("image", ref)

    # -- queries ----------------------------------------------------------------------------------
    def get(self, ref: str) -> ImageRecord:
        """The image named by an alias, its full fingerprint or a unique fingerprint prefix.
        An alias table that cannot be read: the image is found by its fingerprint, and shown
        without the aliases the table holds (a warning says so)."""
        fp = self._resolve(ref)
        return self._load(fp, self._aliases_lenient())

    def list(self) -> builtins.list[ImageRecord]:
        """Every image, oldest upload first."""
        self.cleanup_leftovers()
        table = self._aliases_lenient()  # an unreadable one: the images are still shown
        records = []
        for fp in self._fingerprints():
            try:
                records.append(self._load(fp, table))
            except NotFound:  # deleted while we listed
                continue
            except CorruptRecord as e:  # one bad image breaks no listing (nor housekeeping)
                log.warning("%s", e)
        return sorted(records, key=lambda r: (r.uploaded_at, r.fingerprint))

    # -- import -----------------------------------------------------------------------------------
    def _copy_in(self, sources: builtins.list[Path], progress: Progress | None
                 ) -> tuple[str, builtins.list[Path], int]:
        """Copy each source into its own temp file in the store, hashing all of them in order."""
        import hashlib  # here: OpenSSL's start (~2 ms) is for imports into the store only
        import secrets
        hasher = hashlib.sha256()
        token = secrets.token_hex(6)
        temps: builtins.list[Path] = []
        try:
            handles = [open(src, "rb") for src in sources]  # noqa: SIM115 - closed below
        except FileNotFoundError as e:
            raise NotFound("file", str(e.filename)) from None
        except IsADirectoryError as e:
            raise InvalidArgument(f"{e.filename} is a directory, not an image file") from None
        try:
            total = sum(os.fstat(h.fileno()).st_size for h in handles)
            done = 0
            buf = bytearray(_CHUNK)
            view = memoryview(buf)
            for i, h in enumerate(handles):
                tmp = self._import_dir() / f"{os.getpid()}-{token}-{i}"
                temps.append(tmp)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    while n := h.readinto(buf):
                        chunk = view[:n]
                        hasher.update(chunk)
                        while chunk:
                            chunk = chunk[os.write(fd, chunk):]
                        done += n
                        if progress is not None:
                            progress(done, max(total, done))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            if progress is not None and done == 0:
                progress(0, 0)
            return hasher.hexdigest(), temps, done
        except BaseException as e:
            for tmp in temps:
                self._remove(tmp)
            if isinstance(e, OSError) and DiskFull.is_full(e):
                raise DiskFull(self.root, "while copying the image in") from None
            raise
        finally:
            for h in handles:
                h.close()

    def import_file(
        self,
        path: str | os.PathLike[str],
        *,
        rootfs_path: str | os.PathLike[str] | None = None,
        aliases: Iterable[str] = (),
        properties: Mapping[str, str] | None = None,
        public: bool = False,
        cached: bool = False,
        auto_update: bool = False,
        progress: Progress | None = None,
    ) -> ImageRecord:
        """Add an image file to the store and return its record.

        ``path`` is a unified image tarball; with ``rootfs_path`` it is a split image's metadata
        tarball and ``rootfs_path`` its rootfs tarball (fingerprint = sha256(meta || rootfs)).
        Properties come from ``metadata.yaml`` and then ``properties``. ``progress(done, total)``
        is called as bytes are copied. Raises ``AlreadyExists("image", fp)`` if the image is
        already stored, ``AlreadyExists("image alias", name)`` if an alias is taken,
        ``ImageError``/``UnsafeImage`` for a bad tarball; nothing is left behind on failure.
        """
        alias_names = _check_aliases(aliases)
        extra = _check_properties(properties)
        public = _check_bool(public, "public")
        cached = _check_bool(cached, "cached")
        auto_update = _check_bool(auto_update, "auto_update")
        sources = [Path(path)] + ([Path(rootfs_path)] if rootfs_path is not None else [])

        self.paths.images.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.cleanup_leftovers()
        fingerprint, temps, _ = self._copy_in(sources, progress)
        try:
            meta = tarball.read_metadata(temps[0])
            return self._adopt(temps, fingerprint, meta, filename=sources[0].name,
                               alias_names=alias_names,
                               properties={**meta.properties, **extra}, public=public,
                               cached=cached, auto_update=auto_update)
        finally:
            for tmp in temps:
                self._remove(tmp)

    def temp_paths(self, count: int) -> builtins.list[Path]:
        """Names for files that will become an image (a download, a publish): inside the store,
        so committing is a rename, and named so that a killed writer's files are removed."""
        self.paths.images.mkdir(mode=0o700, parents=True, exist_ok=True)
        import secrets  # here: secrets loads OpenSSL (~2 ms at start-up)
        token = secrets.token_hex(6)
        tmpdir = self._import_dir()
        return [tmpdir / f"{os.getpid()}-{token}-{i}" for i in range(count)]

    def adopt(
        self,
        temps: builtins.list[Path],
        fingerprint: str,
        *,
        filename: str,
        aliases: Iterable[str] = (),
        properties: Mapping[str, str] | None = None,
        architecture: str | None = None,
        created_at: datetime | None = None,
        expires_at: datetime | Literal[_Unset.UNSET] | None = UNSET,
        public: bool = False,
        cached: bool = False,
        auto_update: bool = False,
        update_source: Mapping[str, str] | None = None,
    ) -> ImageRecord:
        """Commit files from ``temp_paths`` whose fingerprint the caller computed and verified
        while writing them (a verified download, a publish). The metadata is still checked.

        ``properties`` replaces those of ``metadata.yaml`` when given (a remote's catalogue is
        what LXD records); ``architecture``, ``created_at`` and ``expires_at`` likewise. The
        temp files are consumed (renamed or removed) in every case.
        """
        try:
            _check_fingerprint(fingerprint)
            alias_names = _check_aliases(aliases)
            for tmp in temps:
                if tmp.parent != self.paths.run / _IMPORT_DIR:
                    raise InvalidArgument(f"{tmp} is not a temporary file of this store")
            meta = tarball.read_metadata(temps[0])
            return self._adopt(
                temps, fingerprint, meta, filename=filename, alias_names=alias_names,
                properties=(_check_properties(properties) if properties is not None
                            else meta.properties),
                public=_check_bool(public, "public"), cached=_check_bool(cached, "cached"),
                auto_update=_check_bool(auto_update, "auto_update"),
                architecture=architecture, created_at=created_at, expires_at=expires_at,
                update_source=dict(update_source) if update_source is not None else None)
        finally:
            for tmp in temps:
                self._remove(tmp)

    def _adopt(self, temps: builtins.list[Path], fingerprint: str,
               meta: tarball.ImageMetadata, *, filename: str, alias_names: builtins.list[str],
               properties: dict[str, str], public: bool, cached: bool, auto_update: bool,
               architecture: str | None = None, created_at: datetime | None = None,
               expires_at: datetime | Literal[_Unset.UNSET] | None = UNSET,
               update_source: dict[str, str] | None = None) -> ImageRecord:
        if len(temps) > 1:
            kind = compression.detect(temps[1])
            if kind not in (*compression.TAR_KINDS, "squashfs"):
                raise ImageError(f"Unsupported rootfs format: {kind} "
                                 "(a tarball or a squashfs is needed)")
        now = _now()
        record = ImageRecord(
            fingerprint=fingerprint,
            filename=filename,
            size=sum(os.stat(t).st_size for t in temps),
            architecture=(tarball.normalise_architecture(architecture) if architecture
                          else meta.architecture),
            created_at=created_at or meta.creation_date,
            uploaded_at=now,
            last_used_at=now if cached else None,
            expires_at=meta.expiry_date if expires_at is UNSET else expires_at,
            properties=properties,
            aliases=[],
            public=public,
            auto_update=auto_update,
            cached=cached,
            update_source=update_source,
        )
        with lock(self.paths, "image", fingerprint):
            self._commit(record, temps, alias_names)
        return self._load(fingerprint)

    def _commit(self, record: ImageRecord, temps: builtins.list[Path],
                alias_names: builtins.list[str]) -> None:
        fp = record.fingerprint
        target = self._dir(fp)
        if (target / RECORD_FILE).exists():
            raise AlreadyExists("image", fp)
        with lock(self.paths, "images", "aliases"):
            # an import that names no alias needs no table (one that cannot be read refuses
            # only the imports that would write it)
            table = self._read_aliases() if alias_names else {}
            for name in alias_names:
                if name in table:
                    raise AlreadyExists("image alias", name)
            if os.path.lexists(target):
                self._remove(target)  # a killed import's leftover; we hold its lock
            os.mkdir(target, 0o700)
            try:
                os.rename(temps[0], target / IMAGE_FILE)
                if len(temps) > 1:
                    os.rename(temps[1], target / ROOTFS_FILE)
                fsync_dir(target)
                fsync_dir(self.root)
                self._save(record)  # commit point
            except BaseException:
                self._remove(target)
                raise
            if alias_names:
                for name in alias_names:
                    table[name] = {"target": fp, "description": ""}
                self._write_aliases(table)

    # -- changes ----------------------------------------------------------------------------------
    def delete(self, ref: str) -> str:
        """Remove an image and every alias pointing at it; its fingerprint. Its record is not
        read: an image whose record is corrupt can be deleted too."""
        fp = self._resolve(ref)
        with lock(self.paths, "image", fp):
            target = self._dir(fp)
            if not os.path.lexists(target / RECORD_FILE):
                raise NotFound("image", ref)
            with lock(self.paths, "images", "aliases"):
                table = self._read_aliases()
                kept = {k: v for k, v in table.items() if v["target"] != fp}
                if kept != table:
                    self._write_aliases(kept)
                self._remove(target / RECORD_FILE)  # uncommit: the rest is now a leftover
                fsync_dir(target)
            self._remove(target)
        return fp

    def touch(self, fingerprint: str) -> None:
        """Record a use of the image now (instance creation does this).

        A use already recorded less than ``TOUCH_RESOLUTION`` ago is not written again: the
        time is shown to the second, and a burst of launches from one image (``launch_many``
        on four workers) would otherwise queue on the image's lock to rewrite its record
        durably, two fsyncs each, once per instance. The first look is without the lock (a
        record is replaced whole, so it reads as old or new); the write looks again inside."""
        fingerprint = _check_fingerprint(fingerprint)  # before any path is made of it
        now = _now()

        def recent(record: ImageRecord) -> bool:
            seen = record.last_used_at
            return seen is not None and timedelta(0) <= now - seen < TOUCH_RESOLUTION

        # a missing or unreadable record is said by the locked path
        with contextlib.suppress(LxdlibError, OSError, ValueError):
            if recent(self._load(fingerprint, {})):
                return
        with lock(self.paths, "image", fingerprint):
            record = self._load(fingerprint)
            if not recent(record):
                self._save(record.evolve(last_used_at=now))

    def update(
        self,
        ref: str,
        *,
        properties: Mapping[str, str] | None = None,
        public: bool | None = None,
        auto_update: bool | None = None,
        cached: bool | None = None,
        expires_at: datetime | str | Literal[_Unset.UNSET] | None = UNSET,
        last_used_at: datetime | str | Literal[_Unset.UNSET] | None = UNSET,
        profiles: Sequence[str] | None = None,
    ) -> ImageRecord:
        """Change the editable fields (``properties`` replaces the whole set). ``None`` leaves a
        field alone, except the two times, where ``None`` (or LXD's zero time) clears and
        ``UNSET`` leaves alone; times may be datetimes or ISO 8601 strings. ``profiles`` is
        checked for names here; that they exist is the caller's to check (the store does not
        know the root's profiles)."""
        changes: dict[str, Any] = {}
        if profiles is not None:
            changes["profiles"] = resolve_profile_list(profiles)
        if properties is not None:
            changes["properties"] = _check_properties(properties)
        if public is not None:
            changes["public"] = _check_bool(public, "public")
        if auto_update is not None:
            changes["auto_update"] = _check_bool(auto_update, "auto_update")
        if cached is not None:
            changes["cached"] = _check_bool(cached, "cached")
        if expires_at is not UNSET:
            changes["expires_at"] = _check_time(expires_at, "expires_at")
        if last_used_at is not UNSET:
            changes["last_used_at"] = _check_time(last_used_at, "last_used_at")
        fp = self._resolve(ref)
        with lock(self.paths, "image", fp):
            record = self._load(fp)
            if changes:
                record = record.evolve(**changes)
                self._save(record)
        return record

    def set_properties(self, ref: str, values: Mapping[str, str | None]) -> ImageRecord:
        """Set (``None``: unset) some properties, reading the record under the image's lock so
        that concurrent ``set-property`` calls each keep the others' keys."""
        fp = self._resolve(ref)
        with lock(self.paths, "image", fp):
            props = dict(self._load(fp).properties)
            for key, value in values.items():
                if value is None:
                    props.pop(key, None)
                else:
                    props[key] = value
            return self.update(fp, properties=props)

    def unpack(self, fingerprint: str, dest: str | os.PathLike[str]) -> None:
        """Unpack the image into the existing empty directory ``dest`` (a pool's image volume):
        ``metadata.yaml``, ``templates/``, ``rootfs/``. See ``tarball.unpack`` for the errors."""
        image = self.tarball_path(fingerprint)
        if not (image.parent / RECORD_FILE).is_file():
            raise NotFound("image", fingerprint)
        tarball.unpack(image, dest, rootfs=self.rootfs_path(fingerprint))

    # -- aliases ----------------------------------------------------------------------------------
    def aliases(self) -> dict[str, dict[str, str]]:
        """Every alias: name -> ``{"target": fingerprint, "description": ...}``."""
        return self._read_aliases()

    def alias_create(self, name: str, target: str, description: str = "") -> None:
        """Point a new alias at an image (``target``: fingerprint, prefix or another alias)."""
        validate_alias_name(name)
        check_description(description, f"image alias {name!r}")
        with lock(self.paths, "images", "aliases"):
            table = self._read_aliases()
            if name in table:
                raise AlreadyExists("image alias", name)
            fp = self._resolve(target, table)
            table[name] = {"target": fp, "description": description}
            self._write_aliases(table)

    def alias_update(self, name: str, *, target: str | None = None,
                     description: str | None = None) -> None:
        """Move an alias to another image and/or change its description (auto-update uses it)."""
        if description is not None:
            check_description(description, f"image alias {name!r}")
        with lock(self.paths, "images", "aliases"):
            table = self._read_aliases()
            if name not in table:
                raise NotFound("image alias", name)
            entry = dict(table[name])
            if target is not None:
                entry["target"] = self._resolve(target, {k: v for k, v in table.items()
                                                         if k != name})
            if description is not None:
                entry["description"] = description
            table[name] = entry
            self._write_aliases(table)

    def alias_delete(self, name: str) -> None:
        with lock(self.paths, "images", "aliases"):
            table = self._read_aliases()
            if name not in table:
                raise NotFound("image alias", name)
            del table[name]
            self._write_aliases(table)

    def alias_rename(self, old: str, new: str) -> None:
        validate_alias_name(new)
        with lock(self.paths, "images", "aliases"):
            table = self._read_aliases()
            if old not in table:
                raise NotFound("image alias", old)
            if new in table:
                raise AlreadyExists("image alias", new)
            table[new] = table.pop(old)
            self._write_aliases(table)
