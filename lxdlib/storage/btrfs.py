"""The ``btrfs`` driver: subvolumes and snapshots through Debian's ``btrfsutil``, quotas through
qgroups (the ``btrfs`` CLI, since btrfsutil has no qgroup limits).

Every volume is a subvolume: an image is filled then made read-only, an instance is a writable
snapshot of it (copy-on-write, so its cost does not grow with the image), a snapshot is a
read-only snapshot. The pool lives on a loop file (default), a block device, or a directory of an
existing btrfs filesystem.

Known limits (as in LXD): snapshots do not descend into subvolumes nested inside a volume (they
show up as empty directories), and a qgroup limit does not cover nested subvolumes either.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import btrfsutil

from ..config.units import parse_size
from ..errors import AlreadyExists, InvalidArgument, InvalidConfig, NotFound, StorageError
from ..journal import crashpoint
from ..logs import get_logger
from ..patterns import Pattern
from ..state import lock
from . import btrfssnap
from .base import VOLUME_MODE, PoolUsage, changed_keys, close_volume_dir, refuse_changes
from .dir import CUSTOM_SNAPSHOTS, SNAPSHOTS, DirPool, check_keys
from .loop import (
    attach_loop,
    create_sparse_file,
    detach_loops,
    find_loops,
    fs_type,
    is_mounted,
    mount,
    run,
    storage_errors,
    unmount,
)

log = get_logger(__name__)

DEFAULT_SIZE = "5GiB"
DEFAULT_MOUNT_OPTIONS = "user_subvol_rm_allowed"
#: mkfs.btrfs refuses devices much smaller than this.
MIN_SIZE = 128 * 1024 * 1024
#: The inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
SUBVOLUME_ROOT_INO = 256
#: ``BTRFS_IOC_FS_INFO``: fills ``struct btrfs_ioctl_fs_info_args`` (1024 bytes; the
#: filesystem's UUID at offset 16), which names the filesystem's directory in sysfs.
_IOC_FS_INFO = 0x8400941F
_SYSFS = Path("/sys/fs/btrfs")
_MOUNT_OPTION = Pattern(r"[A-Za-z0-9_.=:/+-]+")


def sysfs_dir(path: Path) -> Path | None:
    """``/sys/fs/btrfs/<uuid>`` of the btrfs holding ``path`` (its qgroups are read there), or
    None where the kernel or the filesystem does not say."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        args = bytearray(1024)
        fcntl.ioctl(fd, _IOC_FS_INFO, args)
    except OSError:
        return None
    finally:
        os.close(fd)
    d = _SYSFS / uuid_text(bytes(args[16:32]))
    return d if d.is_dir() else None


def uuid_text(raw: bytes) -> str:
    """``str(uuid.UUID(bytes=raw))``, without importing ``uuid`` (with ``platform``: ~3 ms
    of an ``info``, which reads a btrfs volume's usage through this)."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


class BtrfsPool(DirPool):
    """A btrfs filesystem (loop file, block device or existing directory) holding subvolumes."""

    driver = "btrfs"
    snapshot_needs_freeze = False
    clones_in_place = True
    KEYS = frozenset({"source", "size", "btrfs.mount_options"})

    @property
    def snapshots_overlap(self) -> bool:
        return btrfssnap.releases_gil()

    # -- config ---------------------------------------------------------------------------------
    @classmethod
    def validate_config(cls, config: dict[str, str]) -> dict[str, str]:
        check_keys(cls.driver, config, cls.KEYS)
        source = config.get("source", "")
        if source and not os.path.isabs(source):
            raise InvalidConfig("source", "must be empty, a block device or an absolute path",
                                source)
        size = config.get("size", "")
        if size:
            if source:
                raise InvalidConfig("size", "applies only to a loop-file pool (empty source)",
                                    size)
            try:
                nbytes = parse_size(size)
            except InvalidArgument as e:
                raise InvalidConfig("size", str(e), size) from None
            if nbytes < MIN_SIZE:
                raise InvalidConfig("size", "a btrfs pool needs at least 128MiB", size)
        options = config.get("btrfs.mount_options", DEFAULT_MOUNT_OPTIONS)
        if options and not all(_MOUNT_OPTION.fullmatch(o) for o in options.split(",")):
            raise InvalidConfig("btrfs.mount_options", "must be comma-separated mount options",
                                options)
        out = {"source": os.path.normpath(source) if source else ""}
        if not source:
            out["size"] = size or DEFAULT_SIZE
        out["btrfs.mount_options"] = options
        return out

    def reconfigure(self, new: dict[str, str], unset: frozenset[str]) -> None:
        """``size`` grows a loop-file pool (never shrinks it); ``btrfs.mount_options``
        remounts a pool lxdlib mounts (recorded only for a directory of another btrfs, which
        lxdlib does not mount, as ``create`` takes it). Under the pool's mount lock, both
        checked before either is done; a grow that fails after a remount remounts back.

        A kill half-way leaves the record as it was, with at most the mount's options or a
        larger loop file already changed: each step is idempotent, so the same ``set`` again
        finishes it, and the larger file only has room btrfs does not use until then."""
        changed = set(changed_keys(self.config, new))
        refuse_changes(self.config, new, frozenset({"size", "btrfs.mount_options"}))
        if "size" in changed and "size" in unset:
            raise InvalidConfig("size", "cannot be unset: the pool keeps the size of its loop "
                                "file (give a larger size to grow it)")
        kind = self.source_kind
        grow_to = parse_size(new["size"]) if "size" in changed else None
        remount = "btrfs.mount_options" in changed and kind != "dir"
        with lock(self.paths, "storage-pool-mount", self.name):
            if grow_to is not None:
                # refused before anything changes: smaller than recorded, or than the file
                # (a grow that was interrupted: its size, at least, finishes it)
                have = max(parse_size(self.config["size"]), self._loop_file_size())
                if grow_to < have:
                    raise InvalidConfig("size", f"a btrfs pool cannot shrink (it has {have} "
                                        "bytes)", new["size"])
            if grow_to is not None or remount:
                self.mount()
            old_options = self._mount_options()
            if remount:
                options = type(self)(self.paths, self.name, new)._mount_options()
                self._try_options(options)
                self._remount(options)
            try:
                if grow_to is not None:
                    self._grow(grow_to)
            except BaseException:
                if remount:
                    try:
                        self._remount(old_options)
                    except Exception:
                        log.warning("btrfs pool %s: cannot remount with its old options %s",
                                    self.name, old_options, exc_info=True)
                raise
        self.config = dict(new)

    def _loop_file_size(self) -> int:
        try:
            return os.stat(self.loop_file).st_size
        except FileNotFoundError:
            raise StorageError(f"storage pool {self.name!r}: loop file {self.loop_file} is "
                               "missing") from None

    def _try_options(self, options: str) -> None:
        """Mount the pool's filesystem with ``options`` once more, in a mount namespace of its
        own that goes with the ``mount`` process (a kill leaves no mount): a remount takes
        options it then ignores (``subvol=``…), which would only fail at the next mount, after
        a reboot, with the record already saying them."""
        with storage_errors(f"storage pool {self.name!r} cannot be mounted with {options!r}"):
            run(["unshare", "--mount", "--propagation", "private", "mount", "-t", "btrfs",
                 "-o", options, self._device, os.fspath(self.paths.pools)])

    def _remount(self, options: str) -> None:
        """The pool's mount with ``options``. As LXD's remount, an option left out that
        btrfs keeps on a live mount (``compress``) stays in effect until the next mount."""
        with storage_errors(f"cannot remount storage pool {self.name!r}"):
            run(["mount", "-o", f"remount,{options}", os.fspath(self.mountpoint)])
        log.info("btrfs pool %s remounted with %s", self.name, options)

    def _grow(self, size: int) -> None:
        """The loop file to ``size`` bytes (sparse), its loop devices told, then btrfs to the
        whole device. A failure before btrfs is resized takes the file back to its size."""
        before = self._loop_file_size()
        with storage_errors(f"cannot grow storage pool {self.name!r}"):
            if size > before:
                os.truncate(self.loop_file, size)
            crashpoint("pool.file-grown")
            try:
                for dev in find_loops(self.loop_file):
                    run(["losetup", "-c", dev])
            except BaseException:
                if size > before:
                    os.truncate(self.loop_file, before)
                raise
            run(["btrfs", "filesystem", "resize", "max", os.fspath(self.mountpoint)])
        log.info("btrfs pool %s grown to %d bytes", self.name, size)

    # -- where things are -----------------------------------------------------------------------
    @property
    def source_kind(self) -> str:
        """``loop`` (lxdlib's loop file), ``block`` (a device) or ``dir`` (inside a btrfs)."""
        source = self.config.get("source", "")
        if not source:
            return "loop"
        if source.startswith("/dev/"):
            return "block"
        try:
            return "block" if stat.S_ISBLK(os.stat(source).st_mode) else "dir"
        except FileNotFoundError:
            return "dir"

    @property
    def owns_base(self) -> bool:
        return False  # the mount point (or the user's directory) is never removed whole

    @property
    def mountpoint(self) -> Path:
        return self.home

    @property
    def shown_source(self) -> str:
        return os.fspath(self.loop_file) if self.source_kind == "loop" else self.config["source"]

    @property
    def loop_file(self) -> Path:
        return self.paths.disks / f"{self.name}.img"

    @property
    def base(self) -> Path:
        if self.source_kind == "dir":
            return Path(self.config["source"])
        return self.mountpoint

    @property
    def _device(self) -> str:
        return self.config["source"] if self.source_kind == "block" else attach_loop(
            self.loop_file)

    # -- primitives -----------------------------------------------------------------------------
    def _make_volume(self, path: Path, mode: int = VOLUME_MODE) -> None:
        btrfsutil.create_subvolume(path)
        log.debug("btrfs pool %s: created subvolume %s", self.name, path)
        os.chmod(path, mode)

    def _clone(self, src: Path, dst: Path, read_only: bool) -> None:
        btrfssnap.create_snapshot(src, dst, read_only=read_only)
        log.debug("btrfs pool %s: snapshot of subvolume %s created at %s (%s)", self.name, src,
                  dst, "read-only" if read_only else "writable")

    def _set_read_only(self, path: Path) -> None:
        btrfsutil.set_subvolume_read_only(path, True)
        log.debug("btrfs pool %s: subvolume %s made read-only", self.name, path)

    def _remove(self, path: Path) -> None:
        """Delete subvolumes (nested ones too) and the plain directories that hold them."""
        if not os.path.lexists(path):
            return
        if path.is_dir() and not path.is_symlink():
            if btrfsutil.is_subvolume(path):
                btrfsutil.delete_subvolume(path, recursive=True)
                log.debug("btrfs pool %s: deleted subvolume %s", self.name, path)
                return
            for entry in os.scandir(path):
                self._remove(Path(entry.path))
            os.rmdir(path)
        else:
            path.unlink()

    # -- volumes made as snapshots, under their final names ----------------------------------
    # A btrfs snapshot appears whole, in the transaction that makes it, or not at all: unlike a
    # copied directory it needs no temporary name and rename to never be seen half-made. What a
    # killed process leaves under a final name has no record, and its intent record (or the
    # leftover directory of a create) removes it, as for any volume made before its commit.

    def _snapshot_into_place(self, src: Path, final: Path, read_only: bool, label: str,
                             name: str, detail: str) -> Path:
        if os.path.lexists(final):
            raise AlreadyExists(label, name)
        with storage_errors(f"cannot create {label} {name!r}"):
            btrfssnap.create_snapshot(src, final, read_only=read_only)
        if not read_only:
            try:
                close_volume_dir(final, 0)  # its owner is set when its liblxc config is written
            except BaseException:
                self._discard(final)
                raise
        log.debug("btrfs pool %s: created %s %s %s at %s", self.name, label, name, detail, final)
        return final

    def create_instance_volume(self, name: str, image: str | None = None) -> Path:
        if image is None:
            return super().create_instance_volume(name, None)
        src = self._require("images", image)
        return self._snapshot_into_place(src, self.volume_path("containers", name), False,
                                         "instance volume", name, f"from image {image}")

    def copy_instance_volume(self, src: str, dst: str, snapshot: str | None = None) -> Path:
        source = (self._require("containers", src) if snapshot is None
                  else self._require(SNAPSHOTS, f"{src}/{snapshot}"))
        return self._snapshot_into_place(
            source, self.volume_path("containers", dst), False, "instance volume", dst,
            f"as a copy of {src}" + (f" snapshot {snapshot}" if snapshot is not None else ""))

    def create_snapshot(self, name: str, snap: str) -> Path:
        src = self._require("containers", name)
        final = self.volume_path(SNAPSHOTS, f"{name}/{snap}")
        with storage_errors(f"cannot create snapshot {name}/{snap}"):
            final.parent.mkdir(mode=0o700, exist_ok=True)
        return self._snapshot_into_place(src, final, True, "snapshot", f"{name}/{snap}",
                                         f"of {src}")

    def create_custom_snapshot(self, name: str, snap: str) -> Path:
        """A read-only btrfs snapshot of the custom volume, made whole under its final name."""
        src = self._require("custom", name)
        final = self.volume_path(CUSTOM_SNAPSHOTS, f"{name}/{snap}")
        self._make_custom_snapshots_dir(name)
        return self._snapshot_into_place(src, final, True, "custom volume snapshot",
                                         f"{name}/{snap}", f"of {src}")

    def _stamp(self, path: Path) -> None:
        """btrfs records each subvolume's creation time (otime) itself."""

    def _created(self, path: Path) -> float:
        """Subvolume ids only grow, so they order snapshots by creation (otime has whole
        seconds only)."""
        return float(btrfsutil.subvolume_id(path))

    # -- quotas ---------------------------------------------------------------------------------
    def _check_quota(self, size: int | None) -> None:
        """btrfs can limit any subvolume."""

    def _qgroup_row(self, path: Path, sysfs: Path | None = None) -> list[str] | None:
        """``path``'s own qgroup as ``[qgroupid, referenced, exclusive, ...]``; ``[]`` when it
        has none yet, None when quotas are off. Read from sysfs where the kernel shows qgroups
        there (in-process: no ``btrfs`` run, which cost milliseconds per ``info``), else from
        ``btrfs qgroup show``. ``sysfs``: the pool's directory there, when the caller has it."""
        sysfs = sysfs or sysfs_dir(path)
        if sysfs is not None:
            qgroups = sysfs / "qgroups"
            if not qgroups.is_dir():
                return None
            qgroup = qgroups / f"0_{btrfsutil.subvolume_id(path)}"
            try:
                return [qgroup.name.replace("_", "/"), (qgroup / "referenced").read_text().strip(),
                        (qgroup / "exclusive").read_text().strip()]
            except FileNotFoundError:
                return []
        proc = run(["btrfs", "qgroup", "show", "-re", "--raw", "-f", str(path)], check=False)
        if proc.returncode != 0:
            if "not enabled" in proc.stderr or "ENOENT" in proc.stderr:
                return None
            raise StorageError(f"btrfs qgroup show {path} failed: {proc.stderr.strip()}")
        qgroup_id = f"0/{btrfsutil.subvolume_id(path)}"
        for line in proc.stdout.splitlines():
            fields = line.split()
            if fields and fields[0] == qgroup_id:
                return fields
        return []

    def _enable_quotas(self) -> None:
        run(["btrfs", "quota", "enable", str(self.base)])
        log.info("btrfs pool %s: quotas enabled on %s", self.name, self.base)
        # Enabling starts a rescan; limits are only exact once it has finished.
        run(["btrfs", "quota", "rescan", "-w", str(self.base)], check=False)

    def _apply_quota(self, path: Path, size: int | None) -> None:
        row = self._qgroup_row(path)
        if size is None:
            if row:
                run(["btrfs", "qgroup", "limit", "none", str(path)])
                run(["btrfs", "qgroup", "limit", "-e", "none", str(path)], check=False)
                log.debug("btrfs pool %s: qgroup limit of %s removed", self.name, path)
            return
        if row is None:
            self._enable_quotas()
            row = self._qgroup_row(path)
        if not row:  # quotas on, but this subvolume has no qgroup yet
            qgroup = f"0/{btrfsutil.subvolume_id(path)}"
            run(["btrfs", "qgroup", "create", qgroup, str(self.base)])
            log.debug("btrfs pool %s: created qgroup %s for %s", self.name, qgroup, path)
        # A referenced limit, as LXD sets: data shared with the image counts too.
        run(["btrfs", "qgroup", "limit", str(size), str(path)])
        run(["btrfs", "qgroup", "limit", "-e", "none", str(path)], check=False)
        log.debug("btrfs pool %s: qgroup limit of %s set to %d bytes", self.name, path, size)

    def _usage_of(self, path: Path) -> int | None:
        """Referenced bytes of the volume's qgroup; None while quotas are off on the pool (then
        nothing is synced: a transaction commit per ``info`` buys no number)."""
        if self._qgroup_row(path) is None:
            return None
        with storage_errors(f"cannot sync {path}"):
            btrfsutil.sync(path)  # qgroup numbers move at transaction commit
        row = self._qgroup_row(path)
        if not row:
            return None
        return int(row[1])

    def volumes_usage(self, kind: str, names: Iterable[str]) -> dict[str, int | None]:
        """One sync of the pool for all (``volume_usage`` syncs for each: a listing of hundreds
        would commit hundreds of transactions), then each qgroup from sysfs."""
        paths: dict[str, Path] = {}
        for name in names:
            try:
                paths[name] = self._require(kind, name)
            except NotFound:
                continue  # deleted meanwhile
        sysfs = sysfs_dir(self.base) if paths else None
        if sysfs is None:  # nothing asked, or qgroups only through `btrfs qgroup show`
            return super().volumes_usage(kind, paths)
        if self._qgroup_row(self.base, sysfs) is None:  # quotas off: nothing known
            return dict.fromkeys(paths)
        with storage_errors(f"cannot sync {self.base}"):
            btrfsutil.sync(self.base)  # qgroup numbers move at transaction commit
        out: dict[str, int | None] = {}
        for name, path in paths.items():
            row = self._qgroup_row(path, sysfs)
            out[name] = int(row[1]) if row else None
        return out

    def quotas_enabled(self) -> bool:
        return self._qgroup_row(self.base) is not None

    # -- pool lifecycle -------------------------------------------------------------------------
    def create(self) -> None:
        kind = self.source_kind
        if kind == "dir":
            self._create_in_directory()
            return
        if kind == "block":
            dev = self.config["source"]
            if not os.path.exists(dev) or not stat.S_ISBLK(os.stat(dev).st_mode):
                raise InvalidConfig("source", "is not a block device", dev)
        with lock(self.paths, "storage-pool-mount", self.name):
            try:
                self._create_filesystem(kind)
            except BaseException:
                try:
                    self._undo_create(kind)
                except Exception:
                    log.warning("btrfs pool %s: undoing its creation failed", self.name,
                                exc_info=True)
                raise

    def _create_in_directory(self) -> None:
        base = self.base
        if not base.is_dir():
            raise InvalidConfig("source", "is not an existing directory", str(base))
        if fs_type(base) != "btrfs":
            raise InvalidConfig("source", "is not on a btrfs filesystem", str(base))
        if any(base.iterdir()):
            raise InvalidConfig("source", "directory is not empty", str(base))
        with storage_errors(f"cannot create storage pool {self.name!r}"):
            try:
                self._create_layout()
            except BaseException:
                try:
                    self._remove_layout()
                except OSError as e:
                    log.warning("btrfs pool %s: cannot undo its layout in %s: %s", self.name,
                                base, e)
                raise
        log.debug("btrfs pool %s: layout created in %s", self.name, base)

    def _create_filesystem(self, kind: str) -> None:
        with storage_errors(f"cannot create storage pool {self.name!r}"):
            if kind == "loop":
                # No record exists (create_pool checked under its lock): a loop file or mount
                # of this name is debris of a create that died, so it goes.
                self._undo_create(kind)
                self.paths.disks.mkdir(mode=0o700, parents=True, exist_ok=True)
                create_sparse_file(self.loop_file, parse_size(self.config["size"]))
                run(["mkfs.btrfs", "-q", str(self.loop_file)])
                log.debug("btrfs pool %s: filesystem made on loop file %s", self.name,
                          self.loop_file)
            else:
                run(["mkfs.btrfs", "-q", self.config["source"]])
                log.debug("btrfs pool %s: filesystem made on %s", self.name,
                          self.config["source"])
            self.mountpoint.mkdir(mode=0o711, parents=True, exist_ok=True)
            self._mount_filesystem()
            self._create_layout()

    def _undo_create(self, kind: str) -> None:
        unmount(self.mountpoint)
        if kind == "loop":
            detach_loops(self.loop_file)
            with contextlib.suppress(FileNotFoundError):
                self.loop_file.unlink()
                log.debug("btrfs pool %s: removed loop file %s", self.name, self.loop_file)
        try:
            self.mountpoint.rmdir()
        except OSError as e:
            if e.errno != errno.ENOENT:
                log.warning("btrfs pool %s: cannot remove mount point %s: %s", self.name,
                            self.mountpoint, e)


    def _mount_options(self) -> str:
        """The pool's options plus ``nodev``, always: no device node on the pool opens anything
        (containers get their own /dev from liblxc), whatever a stream or a bug left there."""
        options = [o for o in self.config.get("btrfs.mount_options", "").split(",") if o]
        return ",".join([o for o in options if o != "dev"] + ["nodev"])

    def _mount_filesystem(self) -> None:
        dev = self._device
        try:
            mount(dev, self.mountpoint, "btrfs", self._mount_options())
        except BaseException:
            if self.source_kind == "loop":
                detach_loops(self.loop_file)
            raise

    def delete(self) -> None:
        kind = self.source_kind
        with storage_errors(f"cannot delete storage pool {self.name!r}"):
            if kind == "dir":
                self._remove_layout()
                return
            with lock(self.paths, "storage-pool-mount", self.name):
                if kind == "block" and is_mounted(self.mountpoint):
                    self._remove_layout()  # the filesystem stays on the device: leave it empty
                self._undo_create(kind)

    def mount(self) -> None:
        """Mount the pool if it is not (after a reboot); cheap when it already is."""
        kind = self.source_kind
        if kind == "dir":
            super().mount()
            return
        if self._mounted_here() or is_mounted(self.mountpoint):
            return
        with lock(self.paths, "storage-pool-mount", self.name):
            if is_mounted(self.mountpoint):
                return
            if kind == "loop" and not self.loop_file.exists():
                raise StorageError(
                    f"storage pool {self.name!r}: loop file {self.loop_file} is missing")
            with storage_errors(f"cannot mount storage pool {self.name!r}"):
                self.mountpoint.mkdir(mode=0o711, parents=True, exist_ok=True)
                self._mount_filesystem()

    def _mounted_here(self) -> bool:
        """Whether a btrfs is mounted on the mount point, from two ``stat`` calls: the root of
        a mounted btrfs is a subvolume root (inode 256) on another device than the directory
        above it. Every instance's liblxc config is rendered after this check; reading the
        whole mount table for it cost more than the rest of the render (and grows with the
        host's mounts). False is not trusted: the mount table decides then."""
        try:
            here = os.stat(self.mountpoint)
            above = os.stat(self.mountpoint.parent)
        except OSError:
            return False
        return here.st_ino == SUBVOLUME_ROOT_INO and here.st_dev != above.st_dev

    def unmount(self) -> None:
        kind = self.source_kind
        if kind == "dir":
            return
        with lock(self.paths, "storage-pool-mount", self.name):
            unmount(self.mountpoint)
            if kind == "loop":
                detach_loops(self.loop_file)

    def usage(self) -> PoolUsage:
        with storage_errors(f"cannot read the usage of storage pool {self.name!r}"):
            return super().usage()
