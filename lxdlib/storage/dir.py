"""The ``dir`` driver: every volume a plain directory, clones and snapshots full copies.

The class also holds the directory layout and the build-under-a-temporary-name flows that the
btrfs driver reuses: btrfs only swaps the primitives (make, clone, set read-only, remove) for
subvolume operations.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import (
    AlreadyExists,
    InvalidArgument,
    InvalidConfig,
    InvalidName,
    NotFound,
    StorageError,
)
from ..fstree import remove_any_depth
from ..journal import crashpoint
from ..logs import get_logger
from .base import CUSTOM_VOLUME_MODE, VOLUME_MODE, PoolDriver, PoolUsage, close_volume_dir
from .loop import (
    ASIDE,
    TMP,
    rename_exchange,
    rename_noreplace,
    run,
    stale_entries,
    storage_errors,
    temp_name,
)

log = get_logger(__name__)

VOLUME_KINDS = ("images", "containers", "custom")
SNAPSHOTS = "containers-snapshots"
#: Where custom volumes' snapshots are: ``custom-snapshots/<volume>/<snap>`` (LXD's layout), a
#: read-only copy each, beside ``containers-snapshots`` that holds the instances'.
CUSTOM_SNAPSHOTS = "custom-snapshots"
#: Modes of the layout directories, as LXD keeps them: ``containers/`` searchable (an instance's
#: root passes it on its way to its rootfs; each volume in it is closed, see ``base``), the rest
#: host root's only.
LAYOUT_MODES = {"images": 0o700, "containers": 0o711, SNAPSHOTS: 0o700, "custom": 0o700,
                CUSTOM_SNAPSHOTS: 0o700}
#: The pool's own directory: searchable on the way to ``containers/``, never listable.
BASE_MODE = 0o711

#: Which driver owns a key prefix, to say "that is a zfs key" instead of just "unknown key".
_DRIVER_PREFIXES = {"btrfs.": "btrfs", "zfs.": "zfs", "lvm.": "lvm", "ceph.": "ceph",
                    "cephfs.": "cephfs", "powerflex.": "powerflex"}
_LABELS = {"images": "image volume", "containers": "instance volume", "custom": "custom volume",
           SNAPSHOTS: "snapshot", CUSTOM_SNAPSHOTS: "custom volume snapshot"}


def check_keys(driver: str, config: dict[str, str], known: frozenset[str]) -> None:
    """Refuse keys the driver does not know (those of other drivers included) and non-strings."""
    for key, value in config.items():
        if not isinstance(key, str):
            raise InvalidConfig(repr(key), "keys must be strings")
        if key not in known:
            owner = next((d for p, d in _DRIVER_PREFIXES.items() if key.startswith(p)), None)
            if owner is not None and owner != driver:
                raise InvalidConfig(key, f"is a key of the {owner} driver, not of {driver}")
            raise InvalidConfig(key, f"unknown key for the {driver} driver")
        if not isinstance(value, str):
            raise InvalidConfig(key, "values must be strings", repr(value))


def check_volume_name(kind: str, name: str) -> None:
    """A volume name becomes one path component: refuse ``/``, leading dots (temporary names
    start with one), NUL and over-long names."""
    label = _LABELS.get(kind, "volume")
    if not isinstance(name, str) or name == "":
        raise InvalidName(label, str(name), "must not be empty")
    if "/" in name or "\0" in name:
        raise InvalidName(label, name, "must not contain '/' or NUL")
    if name.startswith("."):
        raise InvalidName(label, name, "must not start with '.'")
    if len(name.encode("utf-8", "surrogateescape")) > 200:
        raise InvalidName(label, name, "must be at most 200 bytes long")


def tree_usage(path: Path) -> int:
    """Bytes allocated under ``path``, each inode counted once (hard links share blocks)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(path)]
    while stack:
        current = stack.pop()
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        total += st.st_blocks * 512
        if stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                stack.extend(e.path for e in os.scandir(current))
    return total


class DirPool(PoolDriver):
    """Plain directories under ``source`` (default ``<root>/storage-pools/<name>/``)."""

    driver = "dir"
    snapshot_needs_freeze = True
    KEYS = frozenset({"source"})

    # -- config ---------------------------------------------------------------------------------
    @classmethod
    def validate_config(cls, config: dict[str, str]) -> dict[str, str]:
        check_keys(cls.driver, config, cls.KEYS)
        source = config.get("source", "")
        if source and not os.path.isabs(source):
            raise InvalidConfig("source", "must be an absolute path", source)
        return {"source": os.path.normpath(source) if source else ""}

    # -- where things are -----------------------------------------------------------------------
    @property
    def owns_base(self) -> bool:
        """True when lxdlib made the pool's directory (and so removes it whole on delete)."""
        return not self.config.get("source")

    @property
    def base(self) -> Path:
        source = self.config.get("source", "")
        return Path(source) if source else self.home

    @property
    def shown_source(self) -> str:
        return os.fspath(self.base)

    def volume_path(self, kind: str, name: str) -> Path:
        if kind in (SNAPSHOTS, CUSTOM_SNAPSHOTS):  # an instance's snapshot, a custom volume's
            parent, what = ("containers", "instance") if kind == SNAPSHOTS else ("custom",
                                                                                 "volume")
            vol, sep, snap = name.partition("/")
            if not sep:
                raise InvalidName(_LABELS[kind], name, f"must be given as '<{what}>/<snapshot>'")
            check_volume_name(parent, vol)
            check_volume_name(kind, snap)
            return self._kind_dir(kind) / vol / snap
        if kind not in VOLUME_KINDS:
            raise InvalidArgument(f"unknown volume kind {kind!r}")
        check_volume_name(kind, name)
        return self._kind_dir(kind) / name

    def _kind_dir(self, kind: str) -> Path:
        """``base / kind``, joined once per base: every operation asks for its volume's path
        several times, and a ``Path`` join costs microseconds each (a copy made ~24)."""
        base = self.base
        hit = self._kind_dirs.get(kind)
        if hit is None or (hit[0] is not base and hit[0] != base):
            hit = self._kind_dirs[kind] = (base, base / kind)
        return hit[1]

    def volume_exists(self, kind: str, name: str) -> bool:
        return os.path.lexists(self.volume_path(kind, name))

    def list_volumes(self, kind: str) -> list[str]:
        """Names of the volumes of one kind (``images``, ``containers``, ``custom``)."""
        if kind not in VOLUME_KINDS:
            raise InvalidArgument(f"unknown volume kind {kind!r}")
        try:
            return sorted(e for e in os.listdir(self.base / kind) if not e.startswith("."))
        except FileNotFoundError:
            return []

    def _require(self, kind: str, name: str) -> Path:
        path = self.volume_path(kind, name)
        if not os.path.lexists(path):
            raise NotFound(_LABELS[kind], name, f"in storage pool {self.name!r}")
        return path

    # -- primitives (btrfs overrides these) -----------------------------------------------------
    def _make_volume(self, path: Path, mode: int = VOLUME_MODE) -> None:
        path.mkdir(mode=mode)
        os.chmod(path, mode)

    def _clone(self, src: Path, dst: Path, read_only: bool) -> None:
        run(["cp", "-a", "--reflink=auto", "--no-target-directory", str(src), str(dst)])

    def _set_read_only(self, path: Path) -> None:
        """Plain directories have no read-only flag that root respects; nothing to do."""

    def _remove(self, path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            remove_any_depth(path)  # a container's tree: any depth (see lxdlib.fstree)
        else:
            path.unlink()

    def _created(self, path: Path) -> float:
        return path.stat().st_mtime

    def _check_quota(self, size: int | None) -> None:
        if size is not None:
            raise StorageError(
                "the dir driver has no quotas: use a btrfs or zfs pool to limit a volume's size")

    def _apply_quota(self, path: Path, size: int | None) -> None:
        self._check_quota(size)

    def _usage_of(self, path: Path) -> int | None:
        return tree_usage(path)

    # -- building blocks ------------------------------------------------------------------------
    def _discard(self, path: Path) -> None:
        """Best-effort removal of a temporary volume; what stays is left to cleanup_leftovers."""
        if os.path.lexists(path):
            try:
                self._remove(path)
            except OSError as e:
                log.warning("%s pool %s: cannot remove temporary volume %s (left to the next "
                            "clean-up): %s", self.driver, self.name, path, e)

    def _build(self, final: Path, make: Callable[[Path], None], label: str, name: str,
               *, existing_ok: bool = False, detail: str = "") -> Path:
        """Run ``make(tmp)`` on a temporary name beside ``final`` and rename it into place
        (``detail`` only goes to the log: where the volume came from)."""
        if os.path.lexists(final):
            if existing_ok:
                return final
            raise AlreadyExists(label, name)
        tmp = final.parent / temp_name(TMP, final.name)
        try:
            make(tmp)
            with storage_errors(f"cannot move {label} {name!r} into place"):
                try:
                    rename_noreplace(tmp, final)
                except FileExistsError:
                    if not existing_ok:
                        raise AlreadyExists(label, name) from None
                    self._discard(tmp)  # another process won the race: keep its volume
                    return final
        except BaseException:
            self._discard(tmp)
            raise
        log.debug("%s pool %s: created %s %s%s at %s", self.driver, self.name, label, name,
                  f" {detail}" if detail else "", final)
        return final

    def _retire(self, path: Path) -> None:
        """Delete ``path`` so that a crash never leaves it half-removed under its own name."""
        if not os.path.lexists(path):
            return
        aside = path.parent / temp_name(TMP, path.name)
        with storage_errors(f"cannot remove {path}"):
            os.rename(path, aside)
            self._remove(aside)
        log.debug("%s pool %s: removed %s", self.driver, self.name, path)

    def _create_layout(self) -> None:
        os.chmod(self.base, BASE_MODE)
        for kind, mode in LAYOUT_MODES.items():
            d = self.base / kind
            d.mkdir(mode=mode, exist_ok=True)
            os.chmod(d, mode)

    def _secure_layout(self) -> None:
        """Put the layout modes back on a pool made by an older lxdlib (or changed by hand)."""
        for d, mode in [(self.base, BASE_MODE),
                        *((self.base / kind, m) for kind, m in LAYOUT_MODES.items())]:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_IMODE(os.lstat(d).st_mode) != mode:
                    os.chmod(d, mode)
                    log.debug("%s pool %s: mode of %s set to %o", self.driver, self.name, d,
                              mode)

    def _remove_layout(self) -> None:
        for kind in LAYOUT_MODES:
            d = self.base / kind
            if d.exists():
                self._remove(d)

    # -- pool lifecycle -------------------------------------------------------------------------
    def create(self) -> None:
        base = self.base
        with storage_errors(f"cannot create storage pool {self.name!r}"):
            if self.owns_base:
                if os.path.lexists(base):  # debris of a create that died before its record
                    self._remove(base)
                base.mkdir(mode=BASE_MODE, parents=True)
            else:
                if not base.is_dir():
                    raise InvalidConfig("source", "is not an existing directory", str(base))
                if any(base.iterdir()):
                    raise InvalidConfig("source", "directory is not empty", str(base))
            try:
                self._create_layout()
            except BaseException:
                try:
                    if self.owns_base:
                        self._remove(base)
                    else:
                        self._remove_layout()
                except OSError as e:
                    log.warning("dir pool %s: cannot undo its layout in %s: %s", self.name,
                                base, e)
                raise
        log.debug("dir pool %s: layout created in %s", self.name, base)

    def delete(self) -> None:
        with storage_errors(f"cannot delete storage pool {self.name!r}"):
            if self.owns_base:
                if os.path.lexists(self.base):
                    self._remove(self.base)
            else:
                self._remove_layout()
        log.debug("dir pool %s: %s removed", self.name,
                  self.base if self.owns_base else f"layout in {self.base}")

    def mount(self) -> None:
        if not self.base.is_dir():
            raise StorageError(f"storage pool {self.name!r}: directory {self.base} is missing")

    def unmount(self) -> None:
        """Nothing is mounted for a dir pool."""

    def usage(self) -> PoolUsage:
        st = os.statvfs(self.base)
        total = st.f_blocks * st.f_frsize
        return PoolUsage(used=total - st.f_bfree * st.f_frsize, total=total)

    def cleanup_leftovers(self) -> None:
        with storage_errors(f"cannot set the modes of storage pool {self.name!r}"):
            self._secure_layout()
        dirs = [self.base / kind for kind in (*VOLUME_KINDS, SNAPSHOTS, CUSTOM_SNAPSHOTS)]
        for snaps in (SNAPSHOTS, CUSTOM_SNAPSHOTS):
            with contextlib.suppress(FileNotFoundError):
                dirs += [self.base / snaps / e for e in os.listdir(self.base / snaps)
                         if not e.startswith(".")]
        for d in dirs:
            for path, prefix, final in stale_entries(d):
                with storage_errors(f"cannot clean up {path}"):
                    if prefix == ASIDE and not os.path.lexists(d / final):
                        os.rename(path, d / final)  # a restore died before its swap: undo it
                        log.debug("%s pool %s: put back %s set aside by a dead process",
                                  self.driver, self.name, d / final)
                    else:
                        self._remove(path)
                        log.debug("%s pool %s: removed leftover %s of a dead process",
                                  self.driver, self.name, path)

    # -- images ---------------------------------------------------------------------------------
    def create_image_volume(self, fingerprint: str, fill: Callable[[Path], None]) -> Path:
        def make(tmp: Path) -> None:
            with storage_errors(f"cannot create image volume {fingerprint!r}"):
                self._make_volume(tmp)
            fill(tmp)
            close_volume_dir(tmp, 0)  # whatever the unpack did to it
            with storage_errors(f"cannot make image volume {fingerprint!r} read-only"):
                self._set_read_only(tmp)

        final = self.volume_path("images", fingerprint)
        return self._build(final, make, "image volume", fingerprint, existing_ok=True)

    def delete_image_volume(self, fingerprint: str) -> None:
        """Remove ``images/<fingerprint>`` (idempotent): instances are copies or independent
        snapshots of it, so nothing depends on it."""
        self._retire(self.volume_path("images", fingerprint))

    # -- instances ------------------------------------------------------------------------------
    def create_instance_volume(self, name: str, image: str | None = None) -> Path:
        final = self.volume_path("containers", name)
        src = self._require("images", image) if image is not None else None

        def make(tmp: Path) -> None:
            with storage_errors(f"cannot create instance volume {name!r}"):
                if src is None:
                    self._make_volume(tmp)
                else:
                    self._clone(src, tmp, read_only=False)
            close_volume_dir(tmp, 0)  # an image volume of an older lxdlib may be open

        return self._build(final, make, "instance volume", name,
                           detail=f"from image {image}" if image is not None else "")

    def delete_instance_volume(self, name: str) -> None:
        self._retire(self.volume_path("containers", name))
        self._retire(self.base / SNAPSHOTS / name)

    def rename_instance_volume(self, old: str, new: str) -> None:
        src = self._require("containers", old)
        dst = self.volume_path("containers", new)
        snaps_src, snaps_dst = self.base / SNAPSHOTS / old, self.base / SNAPSHOTS / new
        if os.path.lexists(dst):
            raise AlreadyExists("instance volume", new)
        if os.path.lexists(snaps_dst):
            raise AlreadyExists("snapshot directory of instance volume", new)
        with storage_errors(f"cannot rename instance volume {old!r} to {new!r}"):
            try:
                rename_noreplace(src, dst)
            except FileExistsError:
                raise AlreadyExists("instance volume", new) from None
            if os.path.lexists(snaps_src):
                try:
                    rename_noreplace(snaps_src, snaps_dst)
                except BaseException:
                    os.rename(dst, src)
                    raise
        log.debug("%s pool %s: renamed instance volume %s to %s", self.driver, self.name, old,
                  new)

    def copy_instance_volume(self, src: str, dst: str, snapshot: str | None = None) -> Path:
        if snapshot is None:
            source = self._require("containers", src)
        else:
            source = self._require(SNAPSHOTS, f"{src}/{snapshot}")
        final = self.volume_path("containers", dst)

        def make(tmp: Path) -> None:
            with storage_errors(f"cannot copy instance volume {src!r} to {dst!r}"):
                self._clone(source, tmp, read_only=False)
            close_volume_dir(tmp, 0)  # the new instance's own owner is set at its commit

        return self._build(final, make, "instance volume", dst, detail=(
            f"as a copy of {src}" + (f" snapshot {snapshot}" if snapshot is not None else "")))

    def set_quota(self, kind: str, name: str, size: int | None) -> None:
        if kind == SNAPSHOTS:
            raise InvalidArgument("snapshots are read-only: they take no quota")
        if size is not None and size <= 0:
            raise InvalidArgument(f"quota must be a positive number of bytes, not {size}")
        path = self._require(kind, name)
        self._check_quota(size)
        self._apply_quota(path, size)
        log.debug("%s pool %s: quota of %s %s set to %s", self.driver, self.name, kind, name,
                  "none" if size is None else f"{size} bytes")

    def volume_usage(self, kind: str, name: str) -> int | None:
        return self._usage_of(self._require(kind, name))

    # -- snapshots ------------------------------------------------------------------------------
    def create_snapshot(self, name: str, snap: str) -> Path:
        src = self._require("containers", name)
        final = self.volume_path(SNAPSHOTS, f"{name}/{snap}")
        with storage_errors(f"cannot create snapshot {name}/{snap}"):
            final.parent.mkdir(mode=0o700, exist_ok=True)

        def make(tmp: Path) -> None:
            with storage_errors(f"cannot create snapshot {name}/{snap}"):
                self._clone(src, tmp, read_only=True)
                self._stamp(tmp)

        return self._build(final, make, "snapshot", f"{name}/{snap}")

    def _stamp(self, path: Path) -> None:
        """Record the creation time where ``_created`` reads it (a copy keeps the source's)."""
        now = time.time()
        os.utime(path, (now, now), follow_symlinks=False)

    def delete_snapshot(self, name: str, snap: str) -> None:
        self._retire(self._require(SNAPSHOTS, f"{name}/{snap}"))

    def rename_snapshot(self, name: str, old: str, new: str) -> None:
        self._rename_snapshot_of(SNAPSHOTS, "snapshot", name, old, new)

    def _rename_snapshot_of(self, kind: str, what: str, name: str, old: str, new: str) -> None:
        """Snapshot ``old`` of volume ``name`` (an instance's or a custom volume's, ``kind``)
        renamed in one step, never over another (``AlreadyExists``: ``what``); a btrfs
        subvolume moves the same way, and keeps its creation stamp (dir: mtime, btrfs:
        subvolume id), so its place among the volume's snapshots too."""
        src = self._require(kind, f"{name}/{old}")
        dst = self.volume_path(kind, f"{name}/{new}")
        with storage_errors(f"cannot rename {what} {name}/{old}"):
            try:
                rename_noreplace(src, dst)
            except FileExistsError:
                raise AlreadyExists(what, f"{name}/{new}") from None
        log.debug("%s pool %s: renamed %s %s/%s to %s", self.driver, self.name, what, name, old,
                  new)

    def restore_snapshot(self, name: str, snap: str) -> None:
        live = self._require("containers", name)
        source = self._require(SNAPSHOTS, f"{name}/{snap}")
        new = live.parent / temp_name(TMP, name)
        try:
            with storage_errors(f"cannot restore {name} from snapshot {snap!r}"):
                self._clone(source, new, read_only=False)
                # the live volume's owner (the instance root's host uid) stays
                close_volume_dir(new, os.lstat(live).st_uid)
                if not rename_exchange(new, live):
                    self._swap_aside(live, new)
        finally:
            # After the exchange ``new`` holds the old volume; before it, the unused clone.
            self._discard(new)
        log.debug("%s pool %s: restored instance volume %s from snapshot %s", self.driver,
                  self.name, name, snap)


    def _swap_aside(self, live: Path, new: Path) -> None:
        """Fallback without RENAME_EXCHANGE: live aside, new into place, aside removed last;
        a crash in between is undone by cleanup_leftovers (the aside is renamed back)."""
        aside = live.parent / temp_name(ASIDE, live.name)
        os.rename(live, aside)
        try:
            rename_noreplace(new, live)
        except BaseException:
            os.rename(aside, live)
            raise
        self._discard(aside)

    def list_snapshots(self, name: str) -> list[str]:
        """Snapshot names, oldest first."""
        self._require("containers", name)
        d = self.base / SNAPSHOTS / name
        try:
            entries = [d / e for e in os.listdir(d) if not e.startswith(".")]
        except FileNotFoundError:
            return []
        return [p.name for p in sorted(entries, key=lambda p: (self._created(p), p.name))]

    # -- custom volumes -------------------------------------------------------------------------
    def create_custom_volume(self, name: str, size: int | None = None) -> Path:
        if size is not None and size <= 0:
            raise InvalidArgument(f"size must be a positive number of bytes, not {size}")
        self._check_quota(size)
        final = self.volume_path("custom", name)

        def make(tmp: Path) -> None:
            with storage_errors(f"cannot create custom volume {name!r}"):
                self._make_volume(tmp, CUSTOM_VOLUME_MODE)
                if size is not None:
                    self._apply_quota(tmp, size)

        return self._build(final, make, "custom volume", name)

    def delete_custom_volume(self, name: str) -> None:
        """The snapshots first, the volume last: a crash between leaves a volume without a
        record and without snapshots, which the volume layer's clean-up removes."""
        self._retire(self._custom_snapshots_dir(name))
        self._retire(self._require("custom", name))

    def _custom_snapshots_dir(self, name: str) -> Path:
        check_volume_name("custom", name)
        return self._kind_dir(CUSTOM_SNAPSHOTS) / name

    def _make_custom_snapshots_dir(self, name: str) -> Path:
        d = self._custom_snapshots_dir(name)
        with storage_errors(f"cannot create the snapshot directory of custom volume {name!r}"):
            d.parent.mkdir(mode=LAYOUT_MODES[CUSTOM_SNAPSHOTS], exist_ok=True)
            d.mkdir(mode=0o700, exist_ok=True)
        return d

    def rename_custom_volume(self, old: str, new: str) -> None:
        """The volume, then its snapshots' directory: a crash between leaves the volume under
        the new name and the snapshots under the old, which the rename's intent undoes (the
        volume goes back; this method, run back, finds no snapshots to move and leaves those
        under the old name where they are)."""
        src = self._require("custom", old)
        dst = self.volume_path("custom", new)
        snaps_src, snaps_dst = self._custom_snapshots_dir(old), self._custom_snapshots_dir(new)
        with storage_errors(f"cannot rename custom volume {old!r} to {new!r}"):
            if os.path.lexists(snaps_src) and os.path.lexists(snaps_dst):
                if os.listdir(snaps_dst):
                    raise AlreadyExists("snapshot directory of custom volume", new)
                os.rmdir(snaps_dst)  # an empty one, left by a volume deleted long ago
            try:
                rename_noreplace(src, dst)
            except FileExistsError:
                raise AlreadyExists("custom volume", new) from None
            if os.path.lexists(snaps_src):
                crashpoint("volume.rename.storage-half")
                try:
                    rename_noreplace(snaps_src, snaps_dst)
                except BaseException:
                    os.rename(dst, src)
                    raise
        log.debug("%s pool %s: renamed custom volume %s to %s", self.driver, self.name, old, new)

    def copy_custom_volume(self, src: str, dst: str, snapshots: Sequence[str] = ()) -> Path:
        source = self._require("custom", src)
        sources = [self._require(CUSTOM_SNAPSHOTS, f"{src}/{s}") for s in snapshots]
        stale = self._custom_snapshots_dir(dst)
        if os.path.lexists(stale) and not os.path.lexists(self.volume_path("custom", dst)):
            self._retire(stale)  # snapshots of no volume: debris of a killed process

        def make(tmp: Path) -> None:
            with storage_errors(f"cannot copy custom volume {src!r} to {dst!r}"):
                self._clone(source, tmp, read_only=False)
            os.chmod(tmp, CUSTOM_VOLUME_MODE)

        final = self._build(self.volume_path("custom", dst), make, "custom volume", dst,
                            detail=f"as a copy of {src}")
        if not sources:
            return final
        try:
            self._copy_custom_snapshots(dst, list(zip(snapshots, sources, strict=True)))
        except BaseException:
            self._retire(final)
            raise
        return final

    def _copy_custom_snapshots(self, dst: str, snaps: list[tuple[str, Path]]) -> None:
        """``custom-snapshots/<dst>`` filled under a temporary name (each snapshot cloned
        read-only, oldest first, so that their order holds) and renamed into place whole."""
        final = self._custom_snapshots_dir(dst)
        final.parent.mkdir(mode=LAYOUT_MODES[CUSTOM_SNAPSHOTS], exist_ok=True)
        tmp = final.parent / temp_name(TMP, dst)
        try:
            with storage_errors(f"cannot copy the snapshots of custom volume {dst!r}"):
                tmp.mkdir(mode=0o700)
                for snap, source in snaps:
                    self._clone(source, tmp / snap, read_only=True)
                if os.path.lexists(final) and not os.listdir(final):
                    os.rmdir(final)
                rename_noreplace(tmp, final)
        except BaseException:
            self._discard(tmp)
            raise

    # -- custom volume snapshots ----------------------------------------------------------------
    def create_custom_snapshot(self, name: str, snap: str) -> Path:
        """Read-only ``custom-snapshots/<name>/<snap>``, whole or not at all."""
        src = self._require("custom", name)
        final = self.volume_path(CUSTOM_SNAPSHOTS, f"{name}/{snap}")
        self._make_custom_snapshots_dir(name)

        def make(tmp: Path) -> None:
            with storage_errors(f"cannot create snapshot {name}/{snap} of a custom volume"):
                self._clone(src, tmp, read_only=True)
                self._stamp(tmp)

        return self._build(final, make, "custom volume snapshot", f"{name}/{snap}")

    def delete_custom_snapshot(self, name: str, snap: str) -> None:
        """Remove the snapshot (idempotent: a clean-up may find it gone)."""
        self._retire(self.volume_path(CUSTOM_SNAPSHOTS, f"{name}/{snap}"))

    def rename_custom_snapshot(self, name: str, old: str, new: str) -> None:
        """One rename in ``custom-snapshots/<name>`` (see ``_rename_snapshot_of``)."""
        self._rename_snapshot_of(CUSTOM_SNAPSHOTS, "custom volume snapshot", name, old, new)

    def list_custom_snapshots(self, name: str) -> list[str]:
        """The custom volume's snapshot names, oldest first (none for a missing volume)."""
        d = self._custom_snapshots_dir(name)
        try:
            entries = [d / e for e in os.listdir(d) if not e.startswith(".")]
        except FileNotFoundError:
            return []
        return [p.name for p in sorted(entries, key=lambda p: (self._created(p), p.name))]

    def all_custom_snapshots(self) -> dict[str, list[str]]:
        """The volumes that have snapshots, with them (a directory listing each)."""
        try:
            owners = sorted(e for e in os.listdir(self._kind_dir(CUSTOM_SNAPSHOTS))
                            if not e.startswith("."))
        except FileNotFoundError:
            return {}
        found = {vol: self.list_custom_snapshots(vol) for vol in owners}
        return {vol: snaps for vol, snaps in found.items() if snaps}

    def restore_custom_snapshot(self, name: str, snap: str, size: int | None = None) -> None:
        """The volume made equal to the snapshot: a writable clone of it (with the volume's
        limit ``size``) exchanged with the live volume in one step, the old one removed last;
        a crash before the exchange leaves the old volume, after it the new one (a temporary
        name either way, removed by ``cleanup_leftovers``)."""
        live = self._require("custom", name)
        source = self._require(CUSTOM_SNAPSHOTS, f"{name}/{snap}")
        new = live.parent / temp_name(TMP, name)
        try:
            with storage_errors(f"cannot restore custom volume {name} from snapshot {snap!r}"):
                self._clone(source, new, read_only=False)
                os.chmod(new, CUSTOM_VOLUME_MODE)
                if size is not None:
                    self._apply_quota(new, size)
                crashpoint("volume.restore.cloned")
                if not rename_exchange(new, live):
                    self._swap_aside(live, new)
                crashpoint("volume.restore.swapped")
        finally:
            self._discard(new)  # after the exchange: the old volume; before: the unused clone
        log.debug("%s pool %s: restored custom volume %s from snapshot %s", self.driver,
                  self.name, name, snap)
