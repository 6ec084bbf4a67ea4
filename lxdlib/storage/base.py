"""The contract every pool driver keeps, so instances never care which filesystem holds them.

A pool holds four kinds of volume, each a directory the driver can give a path for:

- ``images/<fingerprint>``: an image unpacked once per pool, read-only after it is filled;
- ``containers/<name>``: an instance's volume (``rootfs/``, ``metadata.yaml``, ``templates/``),
  made as a copy-on-write clone of an image volume where the driver can;
- ``containers-snapshots/<name>/<snap>``: read-only point-in-time copies of an instance volume;
- ``custom/<name>``: user volumes (attached as disk devices);
- ``custom-snapshots/<name>/<snap>``: read-only point-in-time copies of a custom volume (on zfs:
  ``custom/<name>@snapshot-<snap>``).

Who may reach a volume: nobody but host root and the instance's own root. Unprivileged
instances are stored unshifted on idmapped pools, so a file that is root's inside the container is
real uid 0's on disk: one searchable directory on the way would let any host user run the
container's setuid-root files. So every volume directory is closed (:data:`VOLUME_MODE`), the
instance's one owned by the host uid of the container's root — liblxc opens the rootfs as that
uid where the pool has no idmapped mounts (zfs-fuse) — and the directories holding image, custom
and snapshot volumes are 0700 (``LAYOUT_MODES`` in ``dir``).

Every method that creates something is atomic from the caller's view: it either leaves the new
volume complete at its final path or leaves nothing (a half-made volume is built under a temporary
name and renamed into place last, or removed on failure). ``cleanup_leftovers`` removes temporary
volumes that a killed process left behind.
"""

from __future__ import annotations

import abc
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..errors import TYPE_CHECKING, InvalidConfig, NotFound, StorageError
from ..logs import get_logger
from ..state import Paths
from ..values import Value

if TYPE_CHECKING:
    from typing import Any, ClassVar

log = get_logger(__name__)

#: Instance, snapshot and image volume directories: search only, for their owner only (LXD's
#: per-volume mode). Instance volumes are owned by the container root's host uid, the others
#: by root.
VOLUME_MODE = 0o100
#: A custom volume's directory is the top of what the instance sees when it is attached; its
#: parent ``custom/`` (0700) keeps host users out.
CUSTOM_VOLUME_MODE = 0o711


def close_volume_dir(path: Path, owner: int) -> None:
    """Make ``path`` (a volume's directory) mode :data:`VOLUME_MODE`, owned by ``owner``:root.

    Only root writes the directory above it, so the path cannot be swapped for a symlink
    between the ``lstat`` and the changes."""
    try:
        st = os.lstat(path)
    except OSError as e:
        raise StorageError(f"cannot close volume {path} to other users: {e.strerror or e}"
                           ) from e
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"volume {path} is not a directory")
    if stat.S_IMODE(st.st_mode) == VOLUME_MODE and (st.st_uid, st.st_gid) == (owner, 0):
        return
    log.debug("volume %s: mode %o owner %d:%d -> mode %o owner %d:0", path,
              stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, VOLUME_MODE, owner)
    try:
        if (st.st_uid, st.st_gid) != (owner, 0):
            os.chown(path, owner, 0, follow_symlinks=False)
        os.chmod(path, VOLUME_MODE)  # also after a chown, which may clear bits
    except OSError as e:
        err = StorageError(f"cannot close volume {path} to other users: {e.strerror or e}")
        err.errno = e.errno
        raise err from e


def changed_keys(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The keys whose value differs (set, changed or removed), sorted."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def refuse_changes(old: dict[str, str], new: dict[str, str], allowed: frozenset[str]) -> None:
    """``InvalidConfig`` for the first key that changes and is not in ``allowed``: it says
    where or how the pool's data is kept, which lxdlib cannot change under it."""
    for key in changed_keys(old, new):
        if key not in allowed:
            raise InvalidConfig(key, "cannot be changed once the storage pool is made",
                                new.get(key, ""))


class PoolUsage(Value):
    """Space figures of a pool, in bytes (``None`` where the backend cannot say)."""

    _fields = ("used", "total")
    __slots__ = _fields

    used: int | None
    total: int | None

    def __init__(self, used: int | None, total: int | None) -> None:
        self.used = used
        self.total = total


class PoolDriver(abc.ABC):
    """One storage pool. Construct with the pool's record; ``create()`` makes it on the host."""

    driver: ClassVar[str]
    #: liblxc can mount the instance rootfs with ``idmap=container`` (false on FUSE filesystems:
    #: there the instance's rootfs ownership is shifted on disk instead).
    supports_idmapped_mounts: ClassVar[bool] = True
    #: snapshots of a running instance need no freeze (btrfs, zfs); ``dir`` freezes and copies.
    snapshot_needs_freeze: ClassVar[bool] = False
    #: a copy of an instance volume within the pool appears whole under its final name or not
    #: at all, and makes nothing else (btrfs snapshots): what a killed copy leaves is then the
    #: volume of a directory without a record, which that directory's cleanup finds alone
    clones_in_place: ClassVar[bool] = False
    #: a volume goes back to its latest snapshot only (zfs rollback): an older one needs the
    #: later snapshots gone first (the pool's ``zfs.remove_snapshots``)
    restores_latest_snapshot_only: ClassVar[bool] = False
    #: the pool keys the driver knows (``validate_config`` refuses the others)
    KEYS: ClassVar[frozenset[str]] = frozenset({"source"})
    #: keys that take effect by being recorded (read at each operation): ``reconfigure``
    #: changes them and refuses the others unless the driver applies them itself
    RECORDED_KEYS: ClassVar[frozenset[str]] = frozenset()

    @property
    def snapshots_overlap(self) -> bool:
        """Whether a snapshot or a clone within the pool (``create_snapshot``,
        ``copy_instance_volume``, ``create_instance_volume`` from an image) waits in the kernel
        without Python's GIL, so that a caller gains by running it on a thread beside its own
        work (``lxdlib.background``): btrfs in a long-lived process."""
        return False

    def __init__(self, paths: Paths, name: str, config: dict[str, str]) -> None:
        self.paths = paths
        self.name = name
        self.config = config
        #: ``<root>/storage-pools/<name>``, joined once: every operation asks for paths under
        #: it several times, and each ``Path`` join costs microseconds.
        self.home = paths.pools / name
        #: ``(base, base / kind)`` per volume kind, for drivers that keep volumes in directories
        self._kind_dirs: dict[str, tuple[Path, Path]] = {}

    # -- pool lifecycle -------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def validate_config(cls, config: dict[str, str]) -> dict[str, str]:
        """Check the pool keys (``source``, ``size``, driver keys), fill defaults, return them.

        Raises ``InvalidConfig`` for unknown keys or bad values (keys of other drivers included).
        """

    def reconfigure(self, new: dict[str, str], unset: frozenset[str]) -> None:
        """Make the pool on the host what ``new`` (checked by ``validate_config``) says, from
        what ``self.config`` says; ``unset``: the keys the caller removed. Every refusal comes
        before any change; a failure half-way puts back what was changed where it can. Here:
        the :data:`RECORDED_KEYS` change (nothing to do on the host), any other key is
        refused. ``self.config`` is ``new`` afterwards."""
        refuse_changes(self.config, new, self.RECORDED_KEYS)
        self.config = dict(new)

    @abc.abstractmethod
    def create(self) -> None:
        """Make the pool on the host (loop file + mkfs, a block device, an existing directory or
        dataset) and mount it. On failure, undo everything this call did."""

    @abc.abstractmethod
    def delete(self) -> None:
        """Unmount and remove the pool; loop files made by ``create`` are deleted."""

    @abc.abstractmethod
    def mount(self) -> None:
        """Make sure the pool is mounted (idempotent; used on every first access after a reboot)."""

    @abc.abstractmethod
    def unmount(self) -> None:
        """Unmount the pool and detach its loop device (idempotent)."""

    @abc.abstractmethod
    def usage(self) -> PoolUsage:
        ...

    @abc.abstractmethod
    def cleanup_leftovers(self) -> None:
        """Remove temporary volumes left by interrupted operations."""

    # -- paths ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def volume_path(self, kind: str, name: str) -> Path:
        """Where the volume is mounted or lives: ``kind`` is ``images``, ``containers``,
        ``containers-snapshots`` (name ``inst/snap``) or ``custom``."""

    @abc.abstractmethod
    def volume_exists(self, kind: str, name: str) -> bool:
        ...

    def secure_instance_volume(self, name: str, owner: int) -> None:
        """Close ``containers/<name>`` to everyone but host root and ``owner``, the host uid of
        the instance's root (0 when privileged). Called whenever the instance's liblxc config is
        written (create, copy, import, restore, every start), so a changed id map follows.
        A missing volume is left alone: there is nothing to close, and starting says so."""
        path = self.volume_path("containers", name)
        if os.path.lexists(path):
            close_volume_dir(path, owner)

    # -- images ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_image_volume(self, fingerprint: str, fill: Callable[[Path], None]) -> Path:
        """Make ``images/<fingerprint>``: create a temporary volume, call ``fill(path)`` to unpack
        into it, make it read-only and rename it into place. If ``fill`` raises, nothing remains."""

    @abc.abstractmethod
    def delete_image_volume(self, fingerprint: str) -> None:
        ...

    # -- instances ------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_instance_volume(self, name: str, image: str | None = None) -> Path:
        """Make ``containers/<name>``: a writable copy-on-write clone of ``images/<image>``, or an
        empty volume when ``image`` is None. Atomic."""

    @abc.abstractmethod
    def delete_instance_volume(self, name: str) -> None:
        """Remove the instance volume and all its snapshots (idempotent)."""

    @abc.abstractmethod
    def rename_instance_volume(self, old: str, new: str) -> None:
        """Rename the volume and its snapshots."""

    @abc.abstractmethod
    def copy_instance_volume(self, src: str, dst: str, snapshot: str | None = None) -> Path:
        """Make ``containers/<dst>`` as a writable copy of ``src`` (or of its snapshot)."""

    @abc.abstractmethod
    def set_quota(self, kind: str, name: str, size: int | None) -> None:
        """Limit the volume to ``size`` bytes (``None`` removes the limit). Past the limit a write
        fails with EDQUOT/ENOSPC for the writer; nothing else is hurt."""

    @abc.abstractmethod
    def volume_usage(self, kind: str, name: str) -> int | None:
        """Bytes the volume uses (``None`` where unknown, e.g. btrfs quotas off)."""

    def volumes_usage(self, kind: str, names: Iterable[str]) -> dict[str, int | None]:
        """``volume_usage`` of many volumes at once, those that exist (a listing's, which must
        not cost a command or a sync per instance): drivers that can ask once for all do
        (zfs: one ``zfs get``; btrfs: one sync, then each qgroup); this one asks for each."""
        out: dict[str, int | None] = {}
        for name in names:
            try:
                out[name] = self.volume_usage(kind, name)
            except NotFound:
                continue  # deleted meanwhile
        return out

    # -- snapshots ------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_snapshot(self, name: str, snap: str) -> Path:
        """Read-only snapshot ``containers-snapshots/<name>/<snap>``, also of a running one."""

    @abc.abstractmethod
    def delete_snapshot(self, name: str, snap: str) -> None:
        ...

    @abc.abstractmethod
    def rename_snapshot(self, name: str, old: str, new: str) -> None:
        ...

    @abc.abstractmethod
    def restore_snapshot(self, name: str, snap: str) -> None:
        """Make the instance volume equal to the snapshot, atomically: the live volume is set aside,
        the snapshot cloned into place, the aside removed last (restored on failure)."""

    @abc.abstractmethod
    def list_snapshots(self, name: str) -> list[str]:
        ...

    # -- custom volumes -------------------------------------------------------------------------
    @abc.abstractmethod
    def create_custom_volume(self, name: str, size: int | None = None) -> Path:
        ...

    @abc.abstractmethod
    def delete_custom_volume(self, name: str) -> None:
        ...

    @abc.abstractmethod
    def rename_custom_volume(self, old: str, new: str) -> None:
        """Move ``custom/<old>`` to ``custom/<new>`` in one step (a rename, never a copy):
        after a crash the volume is under one name or the other, whole."""

    @abc.abstractmethod
    def copy_custom_volume(self, src: str, dst: str, snapshots: Sequence[str] = ()) -> Path:
        """Make ``custom/<dst>`` as a writable copy of ``src``, appearing whole or not at all
        (the cheapest the pool can: a btrfs snapshot, a zfs send, a reflinked copy), with
        copies of ``src``'s ``snapshots`` (oldest first) as its own. The copy carries no
        quota: the caller sets the one its record names."""

    # -- custom volume snapshots: ``custom-snapshots/<volume>/<snap>`` ---------------------------
    @abc.abstractmethod
    def create_custom_snapshot(self, name: str, snap: str) -> Path:
        """A read-only snapshot of custom volume ``name``, whole under its final name or not
        at all."""

    @abc.abstractmethod
    def delete_custom_snapshot(self, name: str, snap: str) -> None:
        """Remove the snapshot; nothing to do when it is gone (idempotent)."""

    @abc.abstractmethod
    def rename_custom_snapshot(self, name: str, old: str, new: str) -> None:
        """Give snapshot ``old`` of custom volume ``name`` the name ``new`` in one step (its
        place among the volume's snapshots, oldest first, stays); ``AlreadyExists`` when
        ``new`` is taken on the pool."""

    @abc.abstractmethod
    def list_custom_snapshots(self, name: str) -> list[str]:
        """The volume's snapshots on the pool, oldest first (none for a missing volume)."""

    @abc.abstractmethod
    def all_custom_snapshots(self) -> dict[str, list[str]]:
        """Every custom volume's snapshots on the pool (oldest first), by volume, found in
        one look (a listing must not cost a command per volume)."""

    @abc.abstractmethod
    def restore_custom_snapshot(self, name: str, snap: str, size: int | None = None) -> None:
        """Make custom volume ``name`` equal to its snapshot ``snap`` in one step (with the
        limit ``size``, where the pool makes a new volume for it)."""

    @property
    def shown_source(self) -> str:
        """What LXD's ``storage list`` shows as SOURCE: where the pool's data is. An empty
        ``source`` means lxdlib chose the place (a loop file, a directory under its root); the
        drivers that do so say which."""
        return self.config.get("source", "")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "driver": self.driver, "config": dict(self.config)}
