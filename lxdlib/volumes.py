"""Custom storage volumes: ``storage volume create|list|show|info|set|delete|rename|copy|attach|
detach|snapshot|restore``.

A pool driver makes the volume (a btrfs subvolume, a ZFS dataset, a directory); this module keeps
LXD's view of it — config (``size``, ``user.*``), description, who uses it — in a record at
``<root>/storage-volumes/<pool>/<name>.yaml``. The record is the commit point: ``create`` makes
the volume first and writes the record last, ``delete`` removes the record first; a volume with no
record is debris from a killed process, removed by the next ``create`` or ``list`` of that pool.

Instances use a volume through a disk device ``pool=<pool> source=<name> path=<path>``; a volume
that any instance or profile names cannot be deleted or renamed. Its users share one id map (as
in LXD): each mounts it with its own, so one user's root would be root in every other. A
rename moves the storage and the record under an intent (settled by the next look-up after a
kill); a copy, like ``create``, writes its record last.

Users hold ``Volume`` models: ``host.volumes["default/data"]`` (keys ``<pool>/<name>``, every
pool) or ``host.pools["default"].volumes["data"]`` (one pool, keys are the names) — one
``Volumes`` collection class, scoped to a pool or not.

Snapshots (``storage volume snapshot|restore``, ``delete <pool> <volume>/<snap>``): the pool
keeps each as a read-only copy (``custom-snapshots/<volume>/<snap>``, a zfs snapshot), the
volume's record lists them (name, description, created_at, expires_at, a copy of the config)
in the order they were taken. The record is the commit point again: a snapshot is made on the
pool before it is recorded, and leaves the record before it leaves the pool; one on the pool
that the record does not list is debris of a killed process, removed by the next snapshot verb
on its volume or the next listing of the pool. A snapshot's rename (``rename <pool>
<volume>/<old> <volume>/<new>``) writes the entry's new name first, marked ``renamed_from``
(the commit point), then renames it on the pool and drops the mark: the next snapshot verb or
listing finishes one a kill interrupted. A volume's delete takes its snapshots along, a rename
and a copy keep them (``copy --volume-only``: not).

The volume keys ``snapshots.pattern`` (the name of a snapshot taken without one),
``snapshots.expiry`` (each new snapshot's ``expires_at``) and ``snapshots.schedule`` work as
an instance's: with no daemon, ``lxdlib housekeeping`` removes the expired snapshots and takes
the scheduled ones (``expire_snapshots``, ``scheduled_snapshot``).

Pools whose filesystem has no idmapped mounts (zfs-fuse) cannot map ownership at mount time: there
the volume's files are shifted on disk to the instance's map before it is mounted, and the map
they carry is remembered in ``volatile.idmap.last`` (as LXD does).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import os
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from pathlib import Path

from . import idmap, record, runtime
from .config.text import check_description, is_utf8
from .config.units import is_true, parse_api_time, parse_bool, parse_size
from .errors import (
    TYPE_CHECKING,
    AlreadyExists,
    Busy,
    CorruptRecord,
    InUse,
    InvalidArgument,
    InvalidConfig,
    InvalidName,
    NotFound,
    WrongState,
)
from .journal import crashpoint
from .logs import get_logger
from .model import Collection, Model
from .patterns import Pattern
from .state import (
    RecordNotAFile,
    RecordSyntaxError,
    lock,
    put_back,
    read_record,
    remove_stale_tmp,
    unlink_record,
    write_record,
)

if TYPE_CHECKING:
    from typing import Any

    from .context import Context
    from .record import InstanceRecord
    from .state import Paths
    from .storage.base import PoolDriver

log = get_logger(__name__)

_NAME = Pattern(r"[a-zA-Z0-9_][-a-zA-Z0-9_.:]{0,62}")
#: LXD's default snapshot names: ``snap<n>``, n one past the highest taken (0 for the first)
_SNAP_INDEX = Pattern(r"snap([0-9]+)")
SNAPSHOT_KIND = "storage volume snapshot"
_KEYS = ("size",)
#: The snapshot keys a custom volume takes, as LXD 5.0's (and an instance's)
EXPIRY_KEY, PATTERN_KEY, SCHEDULE_KEY = "snapshots.expiry", "snapshots.pattern", \
    "snapshots.schedule"
#: A snapshot entry's mark while its rename is under way: the name it had (see ``rename_snapshot``)
RENAMED_FROM = "renamed_from"
#: The pools' kind of a custom volume's snapshots (``storage.dir.CUSTOM_SNAPSHOTS``: not
#: imported, the drivers load only when a pool is opened)
_SNAPSHOTS_KIND = "custom-snapshots"
IDMAP_LAST = "volatile.idmap.last"
#: The kind of a custom volume's own lock (object ``<pool>.<name>``). Lock order: profile,
#: instance, the instance's custom volumes (sorted by pool, then name), network. A start holds
#: the locks of the volumes its instance uses from before its config is rendered until liblxc
#: has answered (``start_locks``), so a verb that refuses running users under the volume's
#: lock (restore, the id-map shift) sees the instance either stopped (the start waits and then
#: runs on what the verb left) or running; such a verb reads instance state without taking an
#: instance's lock.
VOLUME_LOCK = "storage-volume"
#: Held (object: the instance's name) by a start of lxdlib's own for as long as it holds its
#: instance's volume locks (``start_locks``): the start-host hook liblxc runs for that start
#: finds it held and knows the locks are held for it (the starter's, in another process, which
#: the hook cannot share). Free when liblxc restarts an instance rebooted from inside, with no
#: lxdlib process around: that hook takes the volumes' locks itself (``hook_locks``).
STARTER_LOCK = "storage-volume-starter"
#: The lock a volume's delete holds from the record's withdrawal to its end (the volume's own
#: lock it cannot hold meanwhile: a start holds an instance's lock and then takes it).
WITHDRAW_LOCK = "storage-volume-withdraw"
#: The lock of a pool's volume renames, one at a time, held from the check to the end: a rename
#: moves two names at once, and its intent (``RENAME_INTENT`` in the pool's record directory)
#: is settled by whoever finds it while this lock is free (the rename was killed).
RENAME_LOCK = "storage-volume-rename"
RENAME_INTENT = ".rename.yaml"
#: A volume record's key while its files are shifted to another id map (pools without
#: idmapped mounts): the maps and the step (see ``VolumeStore._finish_shift``)
SHIFT_INTENT = "idmap_shift"
#: A volume record's key naming the id map its users share (``_claim_map``): the base of
#: their containers' root, or ``privileged``
USERS_MAP = "users_idmap"


def validate_name(name: str) -> None:
    """1-63 characters of letters, digits, ``-_.:``; not starting with ``-`` or ``.``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidName("storage volume", str(name),
                          "use 1-63 letters, digits, '-', '_', '.' or ':', not starting with "
                          "'-' or '.'")


def validate_snapshot_name(name: str) -> None:
    """LXD's refusals first (``/``, white space: newlines among it), then the volume rules
    (the name becomes a path component and a zfs snapshot name)."""
    if not isinstance(name, str):
        raise InvalidName(SNAPSHOT_KIND, str(name), "must be a string")
    if "/" in name:
        raise InvalidName(SNAPSHOT_KIND, name, 'Storage name cannot contain "/"')
    if any(ch.isspace() for ch in name):
        raise InvalidName(SNAPSHOT_KIND, name, "Storage name cannot contain white space")
    if not _NAME.fullmatch(name):
        raise InvalidName(SNAPSHOT_KIND, name,
                          "use 1-63 letters, digits, '-', '_', '.' or ':', not starting with "
                          "'-' or '.'")


def next_snapshot_name(taken: Iterable[str]) -> str:
    """LXD's default: ``snap<n>`` with ``n`` one past the highest ``snap<n>`` taken."""
    highest = -1
    for name in taken:
        m = _SNAP_INDEX.match(name)
        if m:
            highest = max(highest, int(m.group(1)))
    return f"snap{highest + 1}"


def snapshot_view(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A record's snapshot entry in LXD's ``StorageVolumeSnapshot`` shape (``show``'s)."""
    return {"description": str(entry.get("description") or ""),
            "expires_at": entry.get("expires_at") or None,
            "name": str(entry["name"]),
            "config": {str(k): str(v) for k, v in (entry.get("config") or {}).items()},
            "content_type": "filesystem", "created_at": entry.get("created_at")}


def disk_device(pool: str, name: str, path: str) -> dict[str, str]:
    """The disk device that mounts custom volume ``name`` of ``pool`` at ``path``: what
    ``attach`` gives an instance and ``storage volume attach-profile`` a profile."""
    return {"type": "disk", "pool": pool, "source": name, "path": path}


def uses_volume(device: Mapping[str, str], pool: str, name: str) -> bool:
    """Whether ``device`` is a disk of custom volume ``name`` of ``pool`` (``custom/<name>``
    too; a root disk never is)."""
    return (device.get("type") == "disk" and device.get("pool") == pool
            and strip_type(device.get("source", "")) == name and device.get("path") != "/")


def used_volumes(devices: Mapping[str, Mapping[str, str]]) -> builtins.list[tuple[str, str]]:
    """The custom volumes (pool, name) that ``devices`` (an expanded set) mount, in lock order
    (sorted; each once). A source naming another volume type is left to the render to refuse."""
    out: set[tuple[str, str]] = set()
    for dev in devices.values():
        if dev.get("type") == "disk" and dev.get("pool") and dev.get("source") \
                and dev.get("path") != "/":
            with contextlib.suppress(InvalidName):
                out.add((dev["pool"], strip_type(dev["source"])))
    return sorted(out)


@contextlib.contextmanager
def volume_locks(paths: Paths, volumes: Iterable[tuple[str, str]]) -> Iterator[None]:
    """Hold the locks of several custom volumes (pool, name), in the one order every holder
    of more than one takes them: sorted by pool, then name. Two verbs that each hold two (a
    copy a→b and one b→a, a rename, a start) then never wait for each other in a cycle."""
    with contextlib.ExitStack() as stack:
        for pool, name in sorted(set(volumes)):
            stack.enter_context(lock(paths, VOLUME_LOCK, f"{pool}.{name}"))
        yield


@contextlib.contextmanager
def start_locks(paths: Paths, devices: Mapping[str, Mapping[str, str]],
                starter: str | None = None) -> Iterator[None]:
    """Hold the locks of the custom volumes an instance's ``devices`` use, for its start: the
    caller holds the instance's lock (the order: instance, its ``STARTER_LOCK``, then its
    volumes, sorted). Without this a restore of a volume (or a shift of its files to another
    id map) could find the instance stopped, and the instance start and mount the volume
    before the files are swapped underneath it. ``starter``: the instance liblxc starts under
    these locks (not given for a hot-plug, which runs no hook)."""
    with contextlib.ExitStack() as stack:
        if starter is not None:
            stack.enter_context(lock(paths, STARTER_LOCK, starter))
        stack.enter_context(volume_locks(paths, used_volumes(devices)))
        yield


@contextlib.contextmanager
def hook_locks(paths: Paths, instance: str,
               devices: Mapping[str, Mapping[str, str]]) -> Iterator[None]:
    """For the start-host hook, around the devices' start: the volumes' locks, as a start of
    lxdlib's holds them, unless that start holds them for this very hook (its
    ``STARTER_LOCK``, probed: a wait could never end, the starter waits for the hook). A
    reboot from inside took none: a restore that saw the instance stopped between its two
    runs swapped the files while the hook mounted them."""
    used = used_volumes(devices)
    with contextlib.ExitStack() as stack:
        if used:
            try:
                stack.enter_context(lock(paths, STARTER_LOCK, instance, timeout=0))
            except Busy:
                pass  # lxdlib's start that runs this hook holds them
            else:
                stack.enter_context(volume_locks(paths, used))
        yield


def strip_type(name: str) -> str:
    """LXD accepts ``custom/<name>``; other volume types are not managed here."""
    kind, sep, rest = name.partition("/")
    if not sep:
        return name
    if kind != "custom":
        raise InvalidName("storage volume", name, "only custom volumes can be managed")
    return rest


def validate_config(config: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidConfig(str(key), "volume keys and values must be strings")
        if any(ch in key + value for ch in "\n\r\0"):
            raise InvalidConfig(key, "must not contain a newline, carriage return or NUL", value)
        if not is_utf8(key + value):
            raise InvalidConfig(key, "must not hold bytes that are not UTF-8", value)
        if key == "size" and value != "":
            try:
                positive = parse_size(value) > 0
            except InvalidArgument as e:
                raise InvalidConfig(key, str(e), value) from None
            if not positive:
                raise InvalidConfig(key, "a size must be positive", value)
        elif key in (EXPIRY_KEY, PATTERN_KEY, SCHEDULE_KEY):
            _check_snapshot_key(key, value)
        elif key != "size" and not key.startswith("user.") and key != IDMAP_LAST:
            raise InvalidConfig(key, "unknown custom volume key (known: size, snapshots.expiry, "
                                "snapshots.pattern, snapshots.schedule, user.*)", value)
        out[key] = value
    return out


def _check_snapshot_key(key: str, value: str) -> None:
    """The instance keys' own checks (``config.snapshots``, ``config.units``), loaded only
    when one is set."""
    if value == "":
        return
    try:
        if key == EXPIRY_KEY:
            from .config.units import parse_expiry
            parse_expiry(value)
        elif key == PATTERN_KEY:
            from .config.snapshots import validate_pattern
            validate_pattern(value)
        else:
            from .config.snapshots import validate_schedule
            validate_schedule(value)
    except InvalidConfig as e:
        raise InvalidConfig(key, e.reason, value) from None
    except (InvalidArgument, InvalidName, ValueError) as e:
        raise InvalidConfig(key, str(e), value) from None


def _when(value: Any) -> dt.datetime | None:
    """A recorded ``expires_at`` or ``created_at`` as a time; ``None`` for none or garbage."""
    try:
        return parse_api_time(value)
    except ValueError:
        return None


def load_record(path: Path, name: str) -> dict[str, Any]:
    """A volume's record as the verbs use it, or ``CorruptRecord`` (typed, and caught by
    listings and housekeeping, which go on with the other volumes) for a file that is no
    volume record: unparseable (truncated, hand-edited), not a mapping, or a ``config``, a
    ``snapshots`` list or a snapshot entry of another shape. ``FileNotFoundError`` as
    ``read_record``."""
    try:
        data = read_record(path)
    except RecordSyntaxError as e:
        raise CorruptRecord("storage volume", name, path, e.reason) from None
    problem = None
    if data is None:  # never written so (records are replaced whole): no volume of nothing
        problem = "empty"
    elif not isinstance(data, dict):
        problem = "not a mapping"
    elif not isinstance(data.get("config") or {}, dict):
        problem = "'config' is not a mapping"
    elif not isinstance(data.get("snapshots") or [], list):
        problem = "'snapshots' is not a list"
    else:
        for entry in data.get("snapshots") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or \
                    not isinstance(entry.get("config") or {}, dict):
                problem = f"snapshot entry {entry!r} is not a name with a config mapping"
                break
    if problem is not None:
        raise CorruptRecord("storage volume", name, path, problem)
    out: dict[str, Any] = data
    return out


class VolumeStore:
    """The custom volumes of one root's pools, by pool and name, in the records' dict shape.

    The store the device layer and the CLI's verbs use; users hold ``Volume`` models through
    ``host.volumes`` / ``pool.volumes`` (``Volumes``, below)."""

    def __init__(self, ctx: Context,
                 modify_instance: Callable[[str, Callable[[InstanceRecord], None]], None]
                 | None = None) -> None:
        """``modify_instance(name, change)`` edits an instance's record under its lock (the
        instance layer's ``Instance.modify``, given by ``Host``: volumes sit below instances,
        as devices need them); without it ``attach``/``detach`` are refused."""
        self.ctx = ctx
        self.paths = ctx.paths
        self._modify_instance = modify_instance

    def _modify(self, instance: str, change: Callable[[InstanceRecord], None]) -> None:
        if self._modify_instance is None:
            raise WrongState("attaching volumes needs a Host (lxdlib.Host(...).volumes)")
        self._modify_instance(instance, change)

    # -- records --------------------------------------------------------------------------------
    def _dir(self, pool: str) -> Path:
        """The pool's record directory; a pool name that is no path component (``..``, a
        ``/``: ``storage volume show ../containers/c1 instance`` read, and ``set`` or ``edit``
        wrote, another object's record) is refused before any path is made of it."""
        if not isinstance(pool, str) or not pool or "/" in pool or "\0" in pool or \
                pool.startswith("."):
            raise InvalidName("storage pool", str(pool), "not a storage pool name")
        return self.paths.volume_records / pool

    def _record(self, pool: str, name: str) -> Path:
        """The volume's record; a name that is no path component is refused (``NotFound``
        for it would do too, but a traversal must never reach a path)."""
        if not isinstance(name, str) or not name or "/" in name or "\0" in name or \
                name.startswith("."):
            raise InvalidName("storage volume", str(name), "not a storage volume name")
        return self._dir(pool) / f"{name}.yaml"

    def _lock(self, pool: str, name: str) -> contextlib.AbstractContextManager[None]:
        return lock(self.paths, VOLUME_LOCK, f"{pool}.{name}")

    def _away(self, pool: str, name: str) -> Path:
        """Where a delete in progress keeps the record out of sight (see ``delete``)."""
        return self._dir(pool) / f".{name}.away"

    def _put_back(self, pool: str, name: str) -> bool:
        self._settle(pool)
        return put_back(self.paths, WITHDRAW_LOCK, f"{pool}.{name}", self._record(pool, name),
                        self._away(pool, name))

    def _read(self, pool: str, name: str) -> dict[str, Any]:
        """The volume's record; ``CorruptRecord`` for one that is not a volume's (see
        ``load_record``)."""
        try:
            return load_record(self._record(pool, name), name)
        except FileNotFoundError:
            self._put_back(pool, name)
            try:
                return load_record(self._record(pool, name), name)
            except FileNotFoundError:  # none, or withdrawn by a delete under way
                pass
        self._pool(pool)  # as LXD: a pool that does not exist is what is not found
        raise NotFound("storage volume", name, f"in storage pool {pool!r}")

    def _reclaim(self, pool: str, name: str) -> None:
        """Put back the record a killed delete or rename withdrew, by whoever now holds the
        volume's ``WITHDRAW_LOCK`` (``put_back`` cannot: it probes that lock, and a delete
        holding it would find the withdrawal under way and the volume gone)."""
        if os.path.lexists(self._away(pool, name)) and \
                not os.path.lexists(self._record(pool, name)):
            os.rename(self._away(pool, name), self._record(pool, name))

    def _pool(self, pool: str) -> PoolDriver:
        return self.ctx.pool(pool)  # NotFound for an unknown pool

    def exists(self, pool: str, name: str) -> bool:
        return self._record(pool, strip_type(name)).exists()

    def path(self, pool: str, name: str) -> Path:
        """Where the volume's files are on the host (it must exist)."""
        name = strip_type(name)
        self._read(pool, name)
        path: Path = self._pool(pool).volume_path("custom", name)
        return path

    # -- verbs ----------------------------------------------------------------------------------
    def create(self, pool: str, name: str, config: Mapping[str, str] | None = None,
               description: str = "") -> dict[str, Any]:
        """Make an empty volume (``size`` sets its quota). All or nothing."""
        name = strip_type(name)
        validate_name(name)
        cfg = validate_config(dict(config or {}))
        cfg.pop(IDMAP_LAST, None)
        check_description(description)
        drv = self._pool(pool)
        drv.volume_path("custom", name)  # the driver's own name rules
        size = parse_size(cfg["size"]) if cfg.get("size") else None
        self._dir(pool).mkdir(parents=True, exist_ok=True)
        with self._lock(pool, name):
            self._put_back(pool, name)
            if self._record(pool, name).exists() or os.path.lexists(self._away(pool, name)):
                raise AlreadyExists("storage volume", name)
            if drv.volume_exists("custom", name):
                drv.delete_custom_volume(name)  # debris of a create or delete that was killed
            drv.create_custom_volume(name, size)
            try:
                write_record(self._record(pool, name), {
                    "name": name, "type": "custom", "content_type": "filesystem",
                    "description": description, "config": cfg,
                    "created_at": dt.datetime.now(dt.UTC).isoformat()})
            except BaseException:
                with contextlib.suppress(Exception):
                    drv.delete_custom_volume(name)
                raise
        return self.get(pool, name)

    def get(self, pool: str, name: str) -> dict[str, Any]:
        """``storage volume show``: name, type, config, description, used_by, location."""
        name = strip_type(name)
        return self._view(pool, name, self._read(pool, name), self.used_by(pool, name))

    @staticmethod
    def _view(pool: str, name: str, data: Mapping[str, Any],
              used_by: builtins.list[str]) -> dict[str, Any]:
        cfg = {str(k): str(v) for k, v in (data.get("config") or {}).items()}
        return {"name": name, "type": "custom", "content_type": "filesystem",
                "description": str(data.get("description") or ""), "config": cfg,
                "created_at": data.get("created_at"), "pool": pool, "location": "none",
                "used_by": used_by}

    def info(self, pool: str, name: str) -> dict[str, Any]:
        """``storage volume info``: ``get`` with the space used (``usage``, bytes; ``None``
        where the pool cannot tell, e.g. btrfs without quotas) and the ``size`` limit
        (``total``, bytes, ``None`` without one) and ``snapshots`` (``snapshot_view``'s,
        oldest first)."""
        out = self.get(pool, name)
        name = out["name"]
        try:
            out["usage"] = self._pool(pool).volume_usage("custom", name)
        except NotFound:
            out["usage"] = None
        size = out["config"].get("size")
        out["total"] = parse_size(size) if size else None
        out["snapshots"] = self.snapshots(pool, name)
        return out

    def _config(self, pool: str, name: str) -> dict[str, str]:
        """The volume's config alone: ``get`` also finds ``used_by``, which reads every
        instance record and profile, and a ``set`` has no use for it."""
        data = self._read(pool, strip_type(name))
        return {str(k): str(v) for k, v in (data.get("config") or {}).items()}

    def names(self, pool: str) -> builtins.list[str]:
        self._pool(pool)
        self._cleanup(pool)
        try:
            entries = os.listdir(self._dir(pool))
        except FileNotFoundError:
            return []
        return sorted(e[:-5] for e in entries if e.endswith(".yaml") and not e.startswith("."))

    def list(self, pool: str) -> builtins.list[dict[str, Any]]:
        """``get`` of every volume of the pool, their ``used_by`` from one walk over the
        instances and profiles (not one walk per volume)."""
        found = []
        for n in self.names(pool):
            try:
                found.append((n, self._read(pool, n)))
            except NotFound:  # deleted since the directory was read
                continue
            except CorruptRecord as e:  # one bad record hides no other volume
                log.warning("%s", e)
                continue
        users = self.users(pool, [n for n, _ in found])
        return [self._view(pool, n, data, users[n]) for n, data in found]

    def update(self, pool: str, name: str, config: Mapping[str, str] | None = None,
               description: str | None = None) -> None:
        """Replace config and/or description; a changed ``size`` re-sets the quota at once.
        The description is checked first: a refused one changes nothing, the quota neither."""
        name = strip_type(name)
        if description is not None:
            check_description(description)
        with self._lock(pool, name):
            data = self._read(pool, name)
            old = {str(k): str(v) for k, v in (data.get("config") or {}).items()}
            if config is not None:
                new = validate_config(dict(config))
                new.pop(IDMAP_LAST, None)
                if IDMAP_LAST in old:
                    new[IDMAP_LAST] = old[IDMAP_LAST]
                if new.get("size", "") != old.get("size", ""):
                    size = parse_size(new["size"]) if new.get("size") else None
                    self._pool(pool).set_quota("custom", name, size)
                data["config"] = new
            if description is not None:
                data["description"] = description
            write_record(self._record(pool, name), data)

    def set(self, pool: str, name: str, key: str, value: str) -> None:
        self.set_many(pool, name, {key: value})

    def set_many(self, pool: str, name: str, values: Mapping[str, str | None]) -> None:
        """Set (``None``: unset) some keys, reading the config under the volume's lock so that
        concurrent ``set``s each keep the others' keys."""
        with self._lock(pool, strip_type(name)):
            cfg = self._config(pool, name)
            for key, value in values.items():
                if value is None:
                    cfg.pop(key, None)
                else:
                    cfg[key] = value
            self.update(pool, name, cfg)

    def unset(self, pool: str, name: str, key: str) -> None:
        with self._lock(pool, strip_type(name)):
            cfg = self._config(pool, name)
            if key not in cfg:
                raise NotFound("volume key", key, f"not set on storage volume {name!r}")
            del cfg[key]
            self.update(pool, name, cfg)

    def delete(self, pool: str, name: str) -> None:
        """Remove the volume and its data; refused while an instance or profile uses it.

        An attach checks the volume under the instance's lock alone, and a start takes the
        volume's lock while it holds its instance's; so the record is first withdrawn (renamed
        to ``.<name>.away``, where no look-up finds it), then, with no volume lock held, the
        instance changes under way are waited for (``Context.quiesce_instances``) and the
        users read again: one that found the volume is counted, one that looks later finds it
        gone. Users found put the record back; so does the next look-up after a kill (this
        delete holds ``WITHDRAW_LOCK`` of the volume throughout)."""
        name = strip_type(name)
        with lock(self.paths, WITHDRAW_LOCK, f"{pool}.{name}"):
            with self._lock(pool, name):
                self._reclaim(pool, name)
                with contextlib.suppress(CorruptRecord):  # a corrupt one can still go
                    self._read(pool, name)
                self._refuse_users(pool, name)
                os.rename(self._record(pool, name), self._away(pool, name))
            try:
                crashpoint("volume.withdrawn")
                self.ctx.quiesce_instances()
                self._refuse_users(pool, name)
            except BaseException:
                with self._lock(pool, name):
                    os.rename(self._away(pool, name), self._record(pool, name))
                raise
            with self._lock(pool, name):
                try:
                    unlink_record(self._away(pool, name))  # commit point
                except RecordNotAFile:  # a directory made by hand that holds something
                    os.rename(self._away(pool, name), self._record(pool, name))
                    raise
                try:
                    self._pool(pool).delete_custom_volume(name)
                except NotFound:  # its data was gone already (as an instance's may be)
                    log.warning("storage volume %s/%s: its data was already gone", pool, name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._last_run(pool, name))

    def rename(self, pool: str, name: str, new: str) -> None:
        """``storage volume rename``: the volume's data and record under a new name.

        Refused while any instance or profile uses the volume (LXD 5.0 instead rewrites the
        devices of stopped users). The users are checked as ``delete`` checks them: the record
        withdrawn, the instance changes under way waited for, the users read again. Then, under
        an intent (``RENAME_INTENT``: old and new name), the storage is renamed and the new
        record written (the commit point). A process killed before the commit leaves the
        volume under its old name, after it under the new: the next look-up settles it."""
        name, new = strip_type(name), strip_type(new)
        validate_name(new)
        drv = self._pool(pool)
        drv.volume_path("custom", new)  # the driver's own name rules
        with lock(self.paths, RENAME_LOCK, pool):
            self._settle(pool, held=True)
            with lock(self.paths, WITHDRAW_LOCK, f"{pool}.{name}"):
                with self._lock(pool, name):
                    self._reclaim(pool, name)
                    data = self._read(pool, name)
                    self._refuse_taken(pool, new)
                    self._refuse_users(pool, name)
                    os.rename(self._record(pool, name), self._away(pool, name))
                try:
                    crashpoint("volume.rename.withdrawn")
                    self.ctx.quiesce_instances()
                    self._refuse_users(pool, name)
                    with volume_locks(self.paths, [(pool, name), (pool, new)]):
                        self._move(drv, pool, name, new, data)
                except BaseException:
                    with self._lock(pool, name):
                        os.rename(self._away(pool, name), self._record(pool, name))
                    raise
                crashpoint("volume.rename.recorded")
                self._finish_rename(pool, name)

    def _refuse_taken(self, pool: str, name: str) -> None:
        """LXD's refusal of a target name in use (a record, or one a delete withdrew)."""
        self._put_back(pool, name)
        if self._record(pool, name).exists() or os.path.lexists(self._away(pool, name)):
            raise AlreadyExists("storage volume", name)

    def _move(self, drv: PoolDriver, pool: str, name: str, new: str,
              data: dict[str, Any]) -> None:
        """The storage and the record of a rename, under its intent; undone on failure."""
        self._refuse_taken(pool, new)
        if drv.volume_exists("custom", new):
            drv.delete_custom_volume(new)  # no record: debris of a killed create or copy
        intent = self._dir(pool) / RENAME_INTENT
        write_record(intent, {"old": name, "new": new})
        crashpoint("volume.rename.intent")
        try:
            drv.rename_custom_volume(name, new)
        except BaseException:
            intent.unlink()
            raise
        try:
            crashpoint("volume.rename.moved")
            write_record(self._record(pool, new), {**data, "name": new})  # commit point
        except BaseException:
            drv.rename_custom_volume(new, name)  # if this fails, the intent stays: settled later
            intent.unlink()
            raise

    def _finish_rename(self, pool: str, old: str) -> None:
        """After the commit: the old record and the intent go."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._away(pool, old))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._dir(pool) / RENAME_INTENT)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._last_run(pool, old))

    def _settle(self, pool: str, held: bool = False) -> None:
        """Finish or undo the rename a killed process left in ``pool``: finished when the new
        record was written, else the storage goes back to the old name (whose withdrawn record
        the caller's ``put_back`` restores). A probe: a live rename holds ``RENAME_LOCK``."""
        intent = self._dir(pool) / RENAME_INTENT
        if not os.path.lexists(intent):
            return
        if not held:
            with contextlib.suppress(Busy), lock(self.paths, RENAME_LOCK, pool, timeout=0):
                self._settle(pool, held=True)
            return
        try:
            op = read_record(intent)
            old, new = str(op["old"]), str(op["new"])
        except (FileNotFoundError, RecordSyntaxError, KeyError, TypeError):
            with contextlib.suppress(FileNotFoundError):
                intent.unlink()
            return
        if self._record(pool, new).exists():
            log.info("storage volume rename %s -> %s in pool %s: finished after a crash",
                     old, new, pool)
            self._finish_rename(pool, old)
            return
        drv = self._pool(pool)
        if drv.volume_exists("custom", new) and not drv.volume_exists("custom", old):
            drv.rename_custom_volume(new, old)
        log.info("storage volume rename %s -> %s in pool %s: undone after a crash", old, new,
                 pool)
        intent.unlink()

    def copy(self, pool: str, name: str, target_pool: str, new: str,
             volume_only: bool = False) -> dict[str, Any]:
        """``storage volume copy``: a new volume ``new`` in ``target_pool`` holding what
        ``name`` holds, with its config and description (LXD's). Within a pool the pool's own
        copy (btrfs snapshot, zfs send, reflinked ``cp``); across pools a file copy into a new
        volume. The record is written last: a failure or a kill before it leaves no volume
        (the storage made is removed at once, or by the next ``create`` or ``list``).
        The snapshots come along (their storage and their entries) unless ``volume_only``:
        across pools each is replayed (the new volume filled as the snapshot holds it, then
        snapshotted), oldest first.

        The source's lock is held with the target's (``volume_locks``' order: a copy b→a
        beside this one cannot deadlock it), from the read of its record to the end of the
        clone: a snapshot deleted, or the source deleted and made again, meanwhile made a
        copy of one volume's record over another's files, or failed half-way. An instance
        using the source waits to start until the copy is done."""
        name, new = strip_type(name), strip_type(new)
        validate_name(new)
        src_drv, drv = self._pool(pool), self._pool(target_pool)
        drv.volume_path("custom", new)  # the driver's own name rules
        self._dir(target_pool).mkdir(parents=True, exist_ok=True)
        with volume_locks(self.paths, [(pool, name), (target_pool, new)]):
            self._refuse_taken(target_pool, new)
            data = self._finish_shift(src_drv, pool, name, self._read(pool, name))
            if any(RENAMED_FROM in e for e in self._entries(data)):
                data = self._settle_snapshots(src_drv, pool, name, data)  # a killed rename's
            cfg = {str(k): str(v) for k, v in (data.get("config") or {}).items()}
            snaps = [] if volume_only else self._entries(data)
            for e in snaps:
                e.pop(RENAMED_FROM, None)
            if drv.volume_exists("custom", new):
                drv.delete_custom_volume(new)  # debris of a create or copy that was killed
            size = parse_size(cfg["size"]) if cfg.get("size") else None
            if target_pool == pool:
                drv.copy_custom_volume(name, new, [str(e["name"]) for e in snaps])
            else:
                self._copy_files(src_drv, name, drv, new, size, cfg, snaps)
            try:
                if target_pool == pool and size is not None:
                    drv.set_quota("custom", new, size)  # a clone carries no limit
                crashpoint("volume.copy.made")
                write_record(self._record(target_pool, new), {
                    "name": new, "type": "custom", "content_type": "filesystem",
                    "description": str(data.get("description") or ""), "config": cfg,
                    "created_at": dt.datetime.now(dt.UTC).isoformat(),
                    **({"snapshots": snaps} if snaps else {})})
            except BaseException:
                with contextlib.suppress(Exception):
                    drv.delete_custom_volume(new)
                raise
        return self.get(target_pool, new)

    @staticmethod
    def _copy_files(src_drv: PoolDriver, name: str, drv: PoolDriver, new: str,
                    size: int | None, cfg: dict[str, str],
                    snaps: builtins.list[dict[str, Any]]) -> None:
        """Across pools: an empty volume (with the source's limit: a pool that cannot hold it
        refuses before anything is copied) filled by a file copy; with ``snaps`` (record
        entries, oldest first), filled first as each snapshot holds it and snapshotted. Files
        a pool without idmapped mounts keeps shifted (``volatile.idmap.last``, the volume's
        and each snapshot's own) are shifted back where the new pool maps at mount time
        instead (and the key dropped from ``cfg`` and the entries)."""
        from . import transfer  # here: only a copy across pools needs it
        from .storage.dir import CUSTOM_SNAPSHOTS

        def unshift(path: Path, config: dict[str, Any]) -> None:
            last = int(str(config.get(IDMAP_LAST, "0")) or "0")
            if drv.supports_idmapped_mounts and last:
                idmap.shift_tree(path, -last)
                config.pop(IDMAP_LAST, None)

        path = drv.create_custom_volume(new, size)
        try:
            for entry in snaps:
                snap = str(entry["name"])
                with transfer.readable_snapshot(src_drv, name, snap,
                                               CUSTOM_SNAPSHOTS) as held:
                    transfer.fill(held, path)
                entry["config"] = dict(entry.get("config") or {})
                unshift(path, entry["config"])
                drv.create_custom_snapshot(new, snap)
            transfer.fill(src_drv.volume_path("custom", name), path)
            unshift(path, cfg)
        except BaseException:
            with contextlib.suppress(Exception):
                drv.delete_custom_volume(new)
            raise

    # -- snapshots ------------------------------------------------------------------------------
    @staticmethod
    def _entries(data: Mapping[str, Any]) -> builtins.list[dict[str, Any]]:
        """The record's snapshot entries, oldest first."""
        return [dict(e) for e in (data.get("snapshots") or []) if isinstance(e, dict)
                and "name" in e]

    def _settle_snapshots(self, drv: PoolDriver, pool: str, name: str,
                          data: Mapping[str, Any],
                          on_pool: Iterable[str] | None = None) -> dict[str, Any]:
        """Finish the snapshot renames a kill interrupted (``_finish_renames``), then remove
        the snapshots the pool holds for the volume (``on_pool``, or asked) that its record
        does not list: debris of a snapshot create killed before its record, or of a delete
        killed after it. Under the volume's lock, with ``data`` read inside it; returns the
        record as it is now."""
        on_pool = drv.list_custom_snapshots(name) if on_pool is None else list(on_pool)
        out = self._finish_renames(drv, pool, name, data, on_pool)
        recorded = {str(e["name"]) for e in self._entries(out)}
        for snap in on_pool:
            if snap not in recorded:
                log.info("storage volume %s/%s: removing snapshot %s, which no record lists "
                         "(a killed process left it)", pool, name, snap)
                drv.delete_custom_snapshot(name, snap)
        return out

    def _finish_renames(self, drv: PoolDriver, pool: str, name: str, data: Mapping[str, Any],
                        on_pool: builtins.list[str]) -> dict[str, Any]:
        """Entries marked ``RENAMED_FROM`` were renamed in the record (committed) and maybe
        not yet on the pool: rename them there (``on_pool`` follows), then drop the marks."""
        entries = self._entries(data)
        if not any(RENAMED_FROM in e for e in entries):
            return dict(data)
        for entry in entries:
            old = entry.pop(RENAMED_FROM, None)
            if old is None:
                continue
            new = str(entry["name"])
            if str(old) in on_pool and new not in on_pool:
                log.info("storage volume %s/%s: renaming snapshot %s to %s on the pool (a "
                         "killed rename left it)", pool, name, old, new)
                drv.rename_custom_snapshot(name, str(old), new)
                on_pool[on_pool.index(str(old))] = new
        out = {**data, "snapshots": entries}
        write_record(self._record(pool, name), out)
        return out

    def _settle_pool_snapshots(self, pool: str) -> None:
        """``_settle_snapshots`` for each volume of the pool that has snapshots on it (one
        look at the pool for all), skipping those whose lock is held (a verb under way)."""
        drv = self._pool(pool)
        for vol, on_pool in drv.all_custom_snapshots().items():
            with contextlib.suppress(Busy), \
                    lock(self.paths, VOLUME_LOCK, f"{pool}.{vol}", timeout=0):
                try:
                    data = load_record(self._record(pool, vol), vol)
                except FileNotFoundError:
                    if os.path.lexists(self._away(pool, vol)):
                        continue  # withdrawn: its delete or rename decides
                    data = {}  # no volume: its snapshots are debris too
                except CorruptRecord:
                    continue
                self._settle_snapshots(drv, pool, vol, data, on_pool)

    def snapshots(self, pool: str, name: str) -> builtins.list[dict[str, Any]]:
        """The volume's snapshots, oldest first, in LXD's ``StorageVolumeSnapshot`` shape."""
        return [snapshot_view(e) for e in self._entries(self._read(pool, strip_type(name)))]

    def get_snapshot(self, pool: str, name: str, snap: str) -> dict[str, Any]:
        """``storage volume show <pool> <volume>/<snap>``."""
        name = strip_type(name)
        for entry in self._entries(self._read(pool, name)):
            if entry["name"] == snap:
                return snapshot_view(entry)
        raise NotFound(SNAPSHOT_KIND, f"{name}/{snap}", f"in storage pool {pool!r}")

    def create_snapshot(self, pool: str, name: str, snap: str | None = None,
                        description: str = "", *, expires_at: dt.datetime | None = None,
                        no_expiry: bool = False) -> dict[str, Any]:
        """``storage volume snapshot``: a read-only copy of the volume now, named ``snap``
        (by default the volume's ``snapshots.pattern``, LXD's ``snap%d`` without one). It
        expires at ``expires_at``, else as the volume's ``snapshots.expiry`` says (LXD's
        ``--no-expiry``: ``no_expiry``, never). The pool's snapshot is made first, the
        record's entry written last (the commit point), both under the volume's lock."""
        name = strip_type(name)
        if snap is not None:
            validate_snapshot_name(snap)
        check_description(description)
        if expires_at is not None and (not isinstance(expires_at, dt.datetime)
                                       or expires_at.tzinfo is None):
            raise InvalidArgument("expires_at must be a datetime with a time zone")
        drv = self._pool(pool)
        with self._lock(pool, name):
            data = self._finish_shift(drv, pool, name, self._read(pool, name))
            data = self._settle_snapshots(drv, pool, name, data)
            entries = self._entries(data)
            cfg = {str(k): str(v) for k, v in (data.get("config") or {}).items()}
            now = dt.datetime.now(dt.UTC)
            if snap is None:
                snap = self._next_name(cfg, [str(e["name"]) for e in entries], now)
            if any(e["name"] == snap for e in entries):
                raise AlreadyExists(SNAPSHOT_KIND, snap)
            if expires_at is None and not no_expiry and cfg.get(EXPIRY_KEY):
                from .config.units import expiry_date
                expires_at = expiry_date(now, cfg[EXPIRY_KEY])
            drv.volume_path(_SNAPSHOTS_KIND, f"{name}/{snap}")  # the pool's name rules
            drv.create_custom_snapshot(name, snap)
            entry = {"name": snap, "description": description, "created_at": now.isoformat(),
                     "expires_at": expires_at.isoformat() if expires_at else None,
                     "config": cfg}
            try:
                crashpoint("volume.snapshot.made")
                write_record(self._record(pool, name), {**data, "snapshots": [*entries, entry]})
            except BaseException:
                with contextlib.suppress(Exception):
                    drv.delete_custom_snapshot(name, snap)
                raise
        return snapshot_view(entry)

    def update_snapshot(self, pool: str, name: str, snap: str, *,
                        description: str | None = None, expires_at: dt.datetime | None = None,
                        no_expiry: bool = False) -> dict[str, Any]:
        """``storage volume edit <pool> <volume>/<snap>``: what of a snapshot can change, as
        in LXD (its data and config are read-only): the description (``None``: kept) and the
        expiry (``expires_at``, a time with its zone; ``no_expiry``: never; neither: kept).
        Read and written under the volume's lock; the snapshot as ``snapshots`` shows it."""
        name = strip_type(name)
        if description is not None:
            check_description(description)
        if expires_at is not None and (not isinstance(expires_at, dt.datetime)
                                       or expires_at.tzinfo is None):
            raise InvalidArgument("expires_at must be a datetime with a time zone")
        if expires_at is not None and no_expiry:
            raise InvalidArgument("expires_at and no_expiry exclude each other")
        drv = self._pool(pool)
        with self._lock(pool, name):
            data = self._settle_snapshots(drv, pool, name, self._read(pool, name))
            entries = self._entries(data)
            entry = next((e for e in entries if e["name"] == snap), None)
            if entry is None:
                raise NotFound(SNAPSHOT_KIND, f"{name}/{snap}", f"in storage pool {pool!r}")
            if description is not None:
                entry["description"] = description
            if expires_at is not None:
                entry["expires_at"] = expires_at.astimezone(dt.UTC).isoformat()
            elif no_expiry:
                entry["expires_at"] = None
            write_record(self._record(pool, name),
                         {**data, "snapshots": [entry if e["name"] == snap else e
                                                for e in entries]})
        return snapshot_view(entry)

    @staticmethod
    def _next_name(cfg: Mapping[str, str], taken: builtins.list[str], now: dt.datetime) -> str:
        """The name of a snapshot taken without one: ``snapshots.pattern`` rendered as an
        instance's is (LXD's ``snap%d`` by default)."""
        pattern = cfg.get(PATTERN_KEY)
        if not pattern:
            return next_snapshot_name(taken)
        from .config.snapshots import next_snapshot_name as from_pattern
        return from_pattern(pattern, taken, now)

    def rename_snapshot(self, pool: str, name: str, snap: str, new: str) -> dict[str, Any]:
        """``storage volume rename <pool> <volume>/<snap> <volume>/<new>``: the snapshot
        under a new name (its data, description, expiry and place among the others stay).

        Under the volume's lock: the record's entry takes the new name first, marked
        ``RENAMED_FROM`` (the commit point), then the pool's snapshot is renamed and the
        mark dropped. A kill before the record leaves the old name; after it, the next
        snapshot verb or listing renames the pool's snapshot (``_settle_snapshots``)."""
        name = strip_type(name)
        validate_snapshot_name(new)
        drv = self._pool(pool)
        drv.volume_path(_SNAPSHOTS_KIND, f"{name}/{new}")  # the pool's own name rules
        with self._lock(pool, name):
            data = self._settle_snapshots(drv, pool, name, self._read(pool, name))
            entries = self._entries(data)
            if not any(e["name"] == snap for e in entries):
                raise NotFound(SNAPSHOT_KIND, f"{name}/{snap}", f"in storage pool {pool!r}")
            if snap == new or any(e["name"] == new for e in entries):
                raise AlreadyExists(SNAPSHOT_KIND, new)
            moved = [{**e, "name": new, RENAMED_FROM: snap} if e["name"] == snap else e
                     for e in entries]
            write_record(self._record(pool, name), {**data, "snapshots": moved})  # commit
            crashpoint("volume.snapshot.rename.recorded")
            drv.rename_custom_snapshot(name, snap, new)
            crashpoint("volume.snapshot.rename.moved")
            for e in moved:
                e.pop(RENAMED_FROM, None)
            write_record(self._record(pool, name), {**data, "snapshots": moved})
        return snapshot_view(next(e for e in moved if e["name"] == new))

    def expire_snapshots(self, pool: str, name: str,
                         now: dt.datetime | None = None) -> builtins.list[str]:
        """Delete the volume's snapshots whose ``expires_at`` has passed (what LXD's daemon
        does every minute; here ``lxdlib housekeeping``); their names, oldest first. Each
        leaves the record first, then the pool, as ``delete_snapshot``."""
        name = strip_type(name)
        now = now or dt.datetime.now(dt.UTC)
        drv = self._pool(pool)
        with self._lock(pool, name):
            data = self._read(pool, name)
            entries = self._entries(data)
            gone = [str(e["name"]) for e in entries
                    if (t := _when(e.get("expires_at"))) is not None and t <= now]
            if not gone:
                return []
            data = self._settle_snapshots(drv, pool, name, data)
            write_record(self._record(pool, name), {
                **data, "snapshots": [e for e in self._entries(data) if e["name"] not in gone]})
            for snap in gone:
                drv.delete_custom_snapshot(name, snap)
        return gone

    def _last_run(self, pool: str, name: str) -> Path:
        """When housekeeping last looked at the volume's schedule (not durable: a lost one
        only makes the next run look back to the volume's creation, taking one snapshot)."""
        return self._dir(pool) / f".{name}.last-run.yaml"

    def scheduled_snapshot(self, pool: str, name: str, now: dt.datetime | None = None, *,
                           startup: bool = False) -> str | None:
        """Take the snapshot ``snapshots.schedule`` says is due at ``now`` (a scheduled
        minute since the last look, or since the volume's creation), as an instance's
        (``lxdlib housekeeping``; LXD's daemon does it on its minute ticker); its name, or
        ``None``."""
        name = strip_type(name)
        now = now or dt.datetime.now(dt.UTC)
        with self._lock(pool, name):
            data = self._read(pool, name)
            spec = str((data.get("config") or {}).get(SCHEDULE_KEY) or "")
            if not spec:
                return None
            from .config.snapshots import schedule_due, stamp_looked, stamp_time, taking_stamp
            try:
                stamp = read_record(self._last_run(pool, name))
            except (FileNotFoundError, RecordSyntaxError):  # not durable
                stamp = None
            names = [str(e["name"]) for e in self._entries(data)]
            last = stamp_looked(stamp if isinstance(stamp, dict) else {}, names)
            since = last or _when(data.get("created_at"))
            taken = None
            if schedule_due(spec, since, now, subject=f"{pool}/{name}", at_startup=startup):
                cfg = {str(k): str(v) for k, v in (data.get("config") or {}).items()}
                snap = self._next_name(cfg, names, dt.datetime.now(dt.UTC))
                write_record(self._last_run(pool, name), taking_stamp(last, now, snap),
                             durable=False)
                taken = str(self.create_snapshot(pool, name, snap)["name"])
                crashpoint("volume.snapshot.scheduled")
            write_record(self._last_run(pool, name),
                         {"last_run": stamp_time(now, last).isoformat()}, durable=False)
        return taken

    def delete_snapshot(self, pool: str, name: str, snap: str) -> None:
        """Remove the snapshot: its entry first (the commit point), then the pool's copy."""
        name = strip_type(name)
        drv = self._pool(pool)
        with self._lock(pool, name):
            data = self._read(pool, name)
            entries = self._entries(data)
            if not any(e["name"] == snap for e in entries):
                raise NotFound(SNAPSHOT_KIND, f"{name}/{snap}", f"in storage pool {pool!r}")
            write_record(self._record(pool, name),
                         {**data, "snapshots": [e for e in entries if e["name"] != snap]})
            crashpoint("volume.snapshot.unrecorded")
            drv.delete_custom_snapshot(name, snap)

    def restore_snapshot(self, pool: str, name: str, snap: str) -> None:
        """``storage volume restore``: the volume's files become the snapshot's (its config
        and description stay, as in LXD). Refused while a running instance uses the volume
        (LXD's words). On zfs, which rolls back to the latest snapshot only, the later ones
        are deleted first where the pool says so (``zfs.remove_snapshots``), else refused."""
        name = strip_type(name)
        drv = self._pool(pool)
        with self._lock(pool, name):
            # a rename a kill interrupted is finished first: the names below are the pool's
            data = self._finish_shift(drv, pool, name, self._read(pool, name))
            data = self._settle_snapshots(drv, pool, name, data)
            entries = self._entries(data)
            names = [str(e["name"]) for e in entries]
            if snap not in names:
                raise NotFound(SNAPSHOT_KIND, f"{name}/{snap}", f"in storage pool {pool!r}")
            # no start of a user can slip in before the swap: a start holds this lock
            # (``start_locks``)
            if next(self._running_users(pool, name), None) is not None:
                raise WrongState("Cannot restore custom volume used by running instances")
            crashpoint("volume.restore.checked")
            cfg = {str(k): str(v) for k, v in (data.get("config") or {}).items()}
            later = names[names.index(snap) + 1:]
            if later and drv.restores_latest_snapshot_only:
                if not parse_bool(drv.config.get("zfs.remove_snapshots") or "false"):
                    raise WrongState(
                        f"snapshot {name}/{snap} cannot be restored: later snapshots exist "
                        f"({', '.join(later)}); ZFS can only roll back to the latest one (set "
                        "zfs.remove_snapshots=true on the pool to delete the later snapshots)")
                data = {**data, "snapshots": [e for e in entries if e["name"] not in later]}
                write_record(self._record(pool, name), data)  # as deletes would, entries first
                for gone in later:
                    drv.delete_custom_snapshot(name, gone)
            size = parse_size(cfg["size"]) if cfg.get("size") else None
            drv.restore_custom_snapshot(name, snap, size)
            snap_cfg = next(e for e in entries if e["name"] == snap).get("config") or {}
            if not drv.supports_idmapped_mounts and \
                    str(snap_cfg.get(IDMAP_LAST, "0")) != cfg.get(IDMAP_LAST, "0"):
                # the files now carry the map they had when the snapshot was taken
                cfg[IDMAP_LAST] = str(snap_cfg.get(IDMAP_LAST, "0"))
                write_record(self._record(pool, name), {**data, "config": cfg})

    def _running_users(self, pool: str, name: str, but: str | None = None) -> Iterator[str]:
        """The instances but ``but`` that are not stopped (running, frozen, or on their way up
        or down: a reboot from inside passes through liblxc alone) whose devices, profiles
        expanded, use the volume (a restore refuses them; a shift of its files refuses those
        with another map). Told by their monitors' listening sockets, not by asking each
        monitor: one whose start-host hook runs answers only once the hook has returned, and
        the hook of a reboot waits for this volume's lock (``hook_locks``), which the caller
        holds (a hang until the hook gave up, its reboot failed)."""
        running = runtime.list_running(self.paths.lxcpath)
        for inst, _, _ in self._users(pool, name, but=but, among=running):
            yield inst

    def _users(self, pool: str, name: str, *, but: str | None,
               among: Container[str] | None = None
               ) -> Iterator[tuple[str, InstanceRecord, dict[str, str]]]:
        """The instances but ``but`` (of ``among`` where given) whose devices, profiles
        expanded, use the volume, each with its record and expanded config: one walk over the
        records. An instance whose record cannot be read is no user here (its own start says
        what is wrong with it)."""
        for inst in record.names(self.paths):
            if inst == but or (among is not None and inst not in among):
                continue
            try:
                rec = record.load(self.paths, inst)
                cfg, devices = self.ctx.expand(rec.profiles, rec.config, rec.devices)
            except (FileNotFoundError, NotFound, CorruptRecord):
                continue
            if self._uses(devices, pool, name):
                yield inst, rec, cfg

    def _refuse_users(self, pool: str, name: str) -> None:
        users = self.used_by(pool, name)
        if users:
            raise InUse(f"storage volume {name!r} is still in use by: {', '.join(users)}")

    # -- users ----------------------------------------------------------------------------------
    @staticmethod
    def _uses(devices: Mapping[str, Mapping[str, str]], pool: str, name: str) -> bool:
        return any(uses_volume(d, pool, name) for d in devices.values())

    def used_by(self, pool: str, name: str) -> builtins.list[str]:
        """LXD's ``used_by``: the instances and profiles whose devices name the volume."""
        name = strip_type(name)
        return self.users(pool, [name])[name]

    def users(self, pool: str, names: Iterable[str]) -> dict[str, builtins.list[str]]:
        """``used_by`` of each of ``names`` (volumes of ``pool``) in one walk over the
        instance records and one over the profiles: a listing of V volumes reads each record
        once, not V times."""
        wanted: dict[str, builtins.list[str]] = {n: [] for n in names}

        def named(devices: Mapping[str, Mapping[str, str]]) -> builtins.list[str]:
            out = set()
            for d in devices.values():
                try:
                    vol = strip_type(d.get("source", ""))
                except InvalidName:  # not a custom volume: no volume's user
                    continue
                if vol in wanted and uses_volume(d, pool, vol):
                    out.add(vol)
            return sorted(out)

        for inst in record.names(self.paths):
            try:
                rec = record.load(self.paths, inst)
            except (FileNotFoundError, CorruptRecord):
                continue
            for vol in named(rec.devices):
                wanted[vol].append(f"/1.0/instances/{inst}")
        for prof in self.ctx.profiles.contents():  # no walk over the instances per profile
            for vol in named(prof.devices):
                wanted[vol].append(f"/1.0/profiles/{prof.name}")
        return wanted

    def attach(self, pool: str, name: str, instance: str, path: str,
               device: str | None = None) -> None:
        """Add a disk device for the volume to the instance (hot-plugged when running)."""
        name = strip_type(name)
        self._read(pool, name)
        dname = device or name

        def change(rec: InstanceRecord) -> None:
            if dname in rec.devices:
                raise AlreadyExists("device", dname)
            rec.devices[dname] = disk_device(pool, name, path)
        self._modify(instance, change)  # read under the instance's lock

    def detach(self, pool: str, name: str, instance: str, device: str | None = None) -> None:
        """Remove the instance's disk device(s) for the volume (unmounted when running)."""
        name = strip_type(name)

        def change(rec: InstanceRecord) -> None:
            found = [d for d, dev in rec.devices.items() if self._uses({d: dev}, pool, name)
                     and (device is None or d == device)]
            if not found:
                raise NotFound("device", device or name,
                               f"no disk device of instance {instance!r} uses volume {name!r}")
            for d in found:
                del rec.devices[d]
        self._modify(instance, change)

    # -- ownership on pools without idmapped mounts ---------------------------------------------
    def prepare_for(self, pool: str, name: str, instance: str, base: int | None) -> None:
        """Before ``instance`` (container root at host id ``base``, ``None``: privileged)
        mounts the volume: refused while another instance that uses it has another id map
        (``_claim_map``); then, where the pool cannot idmap mounts, the files shifted
        to the instance's map."""
        name = strip_type(name)
        drv = self._pool(pool)
        known = self._claim_map(pool, name, instance, base)
        if drv.supports_idmapped_mounts:
            return
        want = base or 0
        if self._idmap_last(known) == want and SHIFT_INTENT not in known:
            # already shifted: no lock, which the start-host hook could not take (the start
            # that runs it holds it, see ``start_locks``, and rendered after this same check)
            return
        with self._lock(pool, name):
            data = self._finish_shift(drv, pool, name, self._read(pool, name))
            last = self._idmap_last(data)
            if last == want:
                return
            for other in self._running_users(pool, name, but=instance):
                raise WrongState(f"storage volume {name!r} is in use by running instance "
                                 f"{other!r} with a different id map")
            data[SHIFT_INTENT] = {"from": last, "to": want, "step": 1}
            write_record(self._record(pool, name), data)
            self._finish_shift(drv, pool, name, data)

    def _finish_shift(self, drv: PoolDriver, pool: str, name: str,
                      data: dict[str, Any]) -> dict[str, Any]:
        """Run the shift of the volume's files that ``data`` (read under the volume's lock)
        records as under way (``SHIFT_INTENT``), from the step it is at, to its end (the
        commit: ``volatile.idmap.last`` becomes the new map). The record says which step runs,
        and each step may run again (``idmap.shift_tree_step``): a kill anywhere leaves a
        shift the next verb on the volume finishes, never one run twice over. Returns the
        record as it is now."""
        op = data.get(SHIFT_INTENT)
        if not isinstance(op, dict):
            return data
        old, new, step = int(op["from"]), int(op["to"]), int(op["step"])
        path = drv.volume_path("custom", name)
        if step == 1:
            idmap.shift_tree_step(path, old, new, 1)
            crashpoint("volume.shift.parked")
            data[SHIFT_INTENT] = {**op, "step": 2}
            write_record(self._record(pool, name), data)
        idmap.shift_tree_step(path, old, new, 2)
        crashpoint("volume.shift.moved")
        del data[SHIFT_INTENT]
        data.setdefault("config", {})[IDMAP_LAST] = str(new)
        write_record(self._record(pool, name), data)  # commit point
        return data

    def _claim_map(self, pool: str, name: str, instance: str,
                   base: int | None) -> dict[str, Any]:
        """The users' map (``USERS_MAP``) made ``base``'s, or refused. The record names the map
        of the last instance that passed here, and every instance that mounts the volume
        passes here first: when it names this one's, no user of another map can have come
        since (it would have found this map's user and been refused), so the start of an
        instance with its volume reads that record alone. Only a new map walks the instances
        (``_refuse_other_maps``): a volume's first user, a hand-over, a refusal. Not locked
        on the way that writes nothing: the start-host hook comes here while the start that
        runs it holds the volume's lock, after that start's render made the map its own.
        Returns the record as read (or written), which the caller goes on with."""
        mine = "privileged" if base is None else str(base)
        data = self._read(pool, name)
        if data.get(USERS_MAP) == mine:
            return data
        with self._lock(pool, name):
            data = self._read(pool, name)
            if data.get(USERS_MAP) == mine:
                return data
            self._refuse_other_maps(pool, name, instance, base)
            data = {**data, USERS_MAP: mine}
            write_record(self._record(pool, name), data)
            return data

    def _refuse_other_maps(self, pool: str, name: str, instance: str,
                           base: int | None) -> None:
        """As LXD ("idmaps ... are not identical"): one volume, one id map among the
        instances that use it, running or not. Each mounts it with its own map (idmapped,
        or shifted on disk), so a file its root makes as root is root's in every other
        user: an isolated container's root planted a setuid file another isolated one ran as
        its own root, and a privileged one as host root."""
        default = self.ctx.facts().idmap.base
        for other, rec, cfg in self._users(pool, name, but=instance):
            try:
                theirs = None if is_true(cfg.get("security.privileged")) \
                    else int(rec.config.get("volatile.idmap.base", str(default)))
            except ValueError:
                continue
            if theirs != base:
                raise WrongState(
                    f"storage volume {name!r} of pool {pool!r} is used by instance {other!r} "
                    "with a different id map: a custom volume is shared only by instances of "
                    "one map (detach it there first)")

    @staticmethod
    def _idmap_last(data: Mapping[str, Any]) -> int:
        return int((data.get("config") or {}).get(IDMAP_LAST, "0"))

    def _cleanup(self, pool: str) -> None:
        """Remove volumes a killed create, copy or delete left without a record (after
        settling a killed rename, whose volume may have no record under its new name)."""
        self._settle(pool)
        directory = self._dir(pool)
        if directory.is_dir():
            remove_stale_tmp(directory)
        drv = self._pool(pool)
        lister = getattr(drv, "list_volumes", None)
        if lister is None:
            return
        for vol in lister("custom"):
            if self._record(pool, vol).exists() or self._put_back(pool, vol):
                continue  # recorded, or withdrawn: its delete decides
            with contextlib.suppress(Exception), \
                    lock(self.paths, VOLUME_LOCK, f"{pool}.{vol}", timeout=0):
                if not self._record(pool, vol).exists():
                    drv.delete_custom_volume(vol)
        self._settle_pool_snapshots(pool)


# -- what users hold ---------------------------------------------------------------------------

ModifyInstance = Callable[[str, Callable[["InstanceRecord"], None]], None]


class Volume(Model):
    """One custom storage volume. Attributes are read from its record when asked; a changed
    ``size`` re-sets the quota at once."""

    kind = "storage volume"

    def __init__(self, store: VolumeStore, pool: str, name: str) -> None:
        self._store = store
        self._pool = pool
        self._name = name

    def _identity(self) -> tuple[Any, ...]:
        return (self._store.paths.root, self._pool, self._name)

    @property
    def name(self) -> str:
        return self._name

    @property
    def pool(self) -> str:
        return self._pool

    @property
    def key(self) -> str:
        """``<pool>/<name>``: the volume's key in ``host.volumes``."""
        return f"{self._pool}/{self._name}"

    def __repr__(self) -> str:
        return f"<Volume {self.key}>"

    def _repr_html_(self) -> str:
        from .notebook import volumes_html
        return volumes_html([self.record()])

    def record(self) -> dict[str, Any]:
        """``storage volume show``'s shape: name, type, config, description, used_by…"""
        return self._store.get(self._pool, self._name)

    def to_dict(self) -> dict[str, Any]:
        return self.record()

    @property
    def exists(self) -> bool:
        return self._store.exists(self._pool, self._name)

    @property
    def type(self) -> str:
        return "custom"

    @property
    def content_type(self) -> str:
        return "filesystem"

    @property
    def description(self) -> str:
        return str(self.record()["description"])

    @property
    def config(self) -> dict[str, str]:
        return dict(self.record()["config"])

    @property
    def created_at(self) -> Any:
        return self.record()["created_at"]

    @property
    def used_by(self) -> builtins.list[str]:
        """LXD's ``/1.0/instances/<name>`` and ``/1.0/profiles/<name>`` of what names it."""
        used: builtins.list[str] = self.record()["used_by"]
        return used

    @property
    def path(self) -> Path:
        """Where the volume's files are on the host."""
        return self._store.path(self._pool, self._name)

    def update(self, *, config: Mapping[str, str] | None = None,
               description: str | None = None) -> None:
        """Replace the config and/or description (``None`` keeps that part); a changed
        ``size`` re-sets the quota at once."""
        self._store.update(self._pool, self._name, config, description)

    def set_config(self, key: str, value: str) -> None:
        self._store.set_many(self._pool, self._name, {key: value})

    def unset_config(self, key: str) -> None:
        self._store.unset(self._pool, self._name, key)

    def delete(self) -> None:
        """Remove the volume and its data; refused while an instance or profile uses it."""
        self._store.delete(self._pool, self._name)

    def rename(self, new: str) -> Volume:
        """Rename the volume (refused while anything uses it); the model of the new name."""
        self._store.rename(self._pool, self._name, new)
        return Volume(self._store, self._pool, strip_type(new))

    def copy(self, new: str, pool: str | None = None, volume_only: bool = False) -> Volume:
        """A new volume ``new`` (in ``pool``, by default this one's) holding a copy of this
        one's files, config, description and snapshots (not with ``volume_only``, which a
        copy to another pool needs when there are snapshots)."""
        target = pool or self._pool
        self._store.copy(self._pool, self._name, target, new, volume_only)
        return Volume(self._store, target, strip_type(new))

    @property
    def snapshots(self) -> builtins.list[dict[str, Any]]:
        """The volume's snapshots, oldest first: ``name``, ``description``, ``created_at``,
        ``config`` (the volume's when it was taken)… (``show <volume>/<snap>``'s shape)."""
        return self._store.snapshots(self._pool, self._name)

    def snapshot(self, name: str | None = None, description: str = "", *,
                 expires_at: dt.datetime | None = None,
                 no_expiry: bool = False) -> dict[str, Any]:
        """Take a read-only snapshot of the volume now (named by ``snapshots.pattern``,
        ``snap<n>`` without one, as LXD names them); its description as the snapshots list
        shows it. It expires at ``expires_at`` (a time with its zone), else as
        ``snapshots.expiry`` says (``no_expiry``: never)."""
        return self._store.create_snapshot(self._pool, self._name, name, description,
                                           expires_at=expires_at, no_expiry=no_expiry)

    def get_snapshot(self, name: str) -> dict[str, Any]:
        """One snapshot, as ``snapshots`` shows it; ``NotFound`` when there is none."""
        return self._store.get_snapshot(self._pool, self._name, name)

    def update_snapshot(self, name: str, *, description: str | None = None,
                        expires_at: dt.datetime | None = None,
                        no_expiry: bool = False) -> dict[str, Any]:
        """Change snapshot ``name``'s description and expiry (all LXD lets change of a
        snapshot; ``None``/neither: kept, ``no_expiry``: never expires); the snapshot as
        ``snapshots`` shows it."""
        return self._store.update_snapshot(self._pool, self._name, name,
                                           description=description, expires_at=expires_at,
                                           no_expiry=no_expiry)

    def restore(self, snapshot: str) -> None:
        """Make the volume's files the snapshot's (config and description stay); refused
        while a running instance uses the volume."""
        self._store.restore_snapshot(self._pool, self._name, snapshot)

    def delete_snapshot(self, name: str) -> None:
        """Remove one snapshot of the volume."""
        self._store.delete_snapshot(self._pool, self._name, name)

    def rename_snapshot(self, name: str, new: str) -> dict[str, Any]:
        """Give snapshot ``name`` the name ``new`` (``storage volume rename <pool>
        <volume>/<name> <volume>/<new>``); the snapshot as ``snapshots`` shows it."""
        return self._store.rename_snapshot(self._pool, self._name, name, new)

    def expire_snapshots(self, now: dt.datetime | None = None) -> builtins.list[str]:
        """Delete the snapshots whose ``expires_at`` has passed (``lxdlib housekeeping``
        does it for every volume); their names."""
        return self._store.expire_snapshots(self._pool, self._name, now)

    def info(self) -> dict[str, Any]:
        """``storage volume info``: ``record()`` with ``usage`` (bytes, ``None`` where the
        pool cannot tell) and ``total`` (the ``size`` limit in bytes, or ``None``)."""
        return self._store.info(self._pool, self._name)

    def attach(self, instance: str, path: str, device: str | None = None) -> None:
        """Add a disk device for the volume to the instance (hot-plugged when running)."""
        self._store.attach(self._pool, self._name, instance, path, device)

    def detach(self, instance: str, device: str | None = None) -> None:
        """Remove the instance's disk device(s) for the volume (unmounted when running)."""
        self._store.detach(self._pool, self._name, instance, device)


class Volumes(Collection[Volume]):
    """Custom volumes: of every pool, keyed ``<pool>/<name>`` (``host.volumes``), or of one
    pool, keyed by name (``host.pools["default"].volumes``)."""

    kind = "storage volume"

    def __init__(self, ctx: Context, modify_instance: ModifyInstance | None = None,
                 pool: str | None = None) -> None:
        self.store = VolumeStore(ctx, modify_instance)
        self.pool = pool

    def _split(self, key: str) -> tuple[str, str]:
        if self.pool is not None:
            return self.pool, strip_type(key)
        pool, sep, name = key.partition("/")
        if not sep or not pool:
            raise InvalidName("storage volume", key, "give it as <pool>/<name> "
                              "(or use host.pools[<pool>].volumes)")
        return pool, strip_type(name)

    def _key(self, pool: str, name: str) -> str:
        return name if self.pool is not None else f"{pool}/{name}"

    def names(self) -> builtins.list[str]:
        pools = [self.pool] if self.pool is not None else self.store.ctx.pool_names()
        return [self._key(p, n) for p in pools for n in self.store.names(p)]

    def _exists(self, key: str) -> bool:
        pool, name = self._split(key)
        validate_name(name)
        return self.store.exists(pool, name)

    def _model(self, key: str) -> Volume:
        pool, name = self._split(key)
        return Volume(self.store, pool, name)

    def _not_found(self, key: str) -> NotFound:
        try:
            pool, name = self._split(key)
        except InvalidName:
            return NotFound("storage volume", key)
        return NotFound("storage volume", name, f"in storage pool {pool!r}")

    def get(self, key: str) -> Volume:
        """The volume; ``NotFound`` when there is none, ``InvalidName`` for a key without its
        pool (``host.volumes`` needs ``<pool>/<name>``)."""
        if isinstance(key, str):
            self._split(key)
        return super().get(key)

    def create(self, key: str, config: Mapping[str, str] | None = None,
               description: str = "") -> Volume:
        """An empty volume (``size`` sets its quota); all or nothing."""
        pool, name = self._split(key)
        self.store.create(pool, name, config, description)
        return Volume(self.store, pool, name)

    def __repr__(self) -> str:
        where = f" in {self.pool!r}" if self.pool is not None else ""
        return f"<Volumes{where} {self.names()}>"

    def _repr_html_(self) -> str:
        from .notebook import volumes_html
        pools = [self.pool] if self.pool is not None else self.store.ctx.pool_names()
        return volumes_html([v for p in pools for v in self.store.list(p)])
