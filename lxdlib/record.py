"""An instance's record on disk: LXD's backup.yaml shape, lxdlib's source of truth.

``instance.yaml`` holds the record as JSON (``state.encode_record``): every YAML reader reads
it, and one an older version wrote as YAML is still read, and saved as JSON the next time.

The record is the commit point of creation: an instance directory without ``instance.yaml`` is a
leftover of a killed ``create`` (its volume, if any, is found by asking the pools), and one with
``.deleting.yaml`` instead is a ``delete`` to finish. Only local config and devices are
stored; the expanded view is computed from the profiles each time, as LXD does.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from pathlib import Path

from .errors import TYPE_CHECKING, CorruptRecord
from .journal import PENDING
from .state import (
    ParsedCache,
    Paths,
    PreparedWrite,
    RecordSyntaxError,
    atomic_write,
    encode_record,
    held,
)
from .values import Value

if TYPE_CHECKING:
    from typing import Any

DELETING = ".deleting.yaml"

# The instance records this process has parsed, reused while their file is unchanged: a second
# listing of a thousand instances parses only what changed (see ``state.ParsedCache``).
_parsed = ParsedCache()


def is_veth_key(key: str) -> bool:
    """``volatile.<nic>.host_name``: the host end of a nic's veth, recorded while the instance
    runs (LXD's key); a stopped instance, and a snapshot's restore, have none."""
    return key.startswith("volatile.") and key.endswith(".host_name")


def clear_cache() -> None:
    """Forget the parsed records (the next reads parse every file again, as a new process)."""
    _parsed.clear()
    _built.clear()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _ts(value: Any) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    # a time written without its zone (as a naive datetime given to snapshots.create was) is
    # UTC, as lxdlib writes its own: read naive, it broke every comparison with "now" (the
    # expiry sweep's TypeError ended housekeeping for every instance after it)
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class SnapshotRecord(Value):
    """One snapshot in an instance's record: its local config, devices and profiles as they
    were when it was taken. (A ``Value``, not an attrs class: see ``lxdlib.values``.)"""

    _fields = ("name", "created_at", "expires_at", "stateful", "description", "config",
               "devices", "profiles")
    __slots__ = _fields

    name: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    stateful: bool
    description: str
    config: dict[str, str]
    devices: dict[str, dict[str, str]]
    profiles: list[str]

    def __init__(self, name: str, created_at: dt.datetime,
                 expires_at: dt.datetime | None = None, stateful: bool = False,
                 description: str = "", config: dict[str, str] | None = None,
                 devices: dict[str, dict[str, str]] | None = None,
                 profiles: list[str] | None = None) -> None:
        self.name, self.created_at, self.expires_at = name, created_at, expires_at
        self.stateful, self.description = stateful, description
        self.config = {} if config is None else config
        self.devices = {} if devices is None else devices
        self.profiles = [] if profiles is None else profiles

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "stateful": self.stateful, "description": self.description,
                "config": dict(self.config),
                "devices": {k: dict(v) for k, v in self.devices.items()},
                "profiles": list(self.profiles)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SnapshotRecord:
        return cls(name=d["name"], created_at=_ts(d["created_at"]) or now(),
                   expires_at=_ts(d.get("expires_at")), stateful=bool(d.get("stateful")),
                   description=d.get("description") or "", config=dict(d.get("config") or {}),
                   devices={k: dict(v) for k, v in (d.get("devices") or {}).items()},
                   profiles=_profile_list(d.get("profiles")))


def _profile_list(value: Any) -> list[str]:
    """A record's profile list: a list of names. Anything else (a hand edit's ``profiles:
    default``, which ``list`` would split into letters) is a ``TypeError``, reported by
    ``load`` as a corrupt record like any other malformed one."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise TypeError(f"profiles must be a list of names, not {value!r}")
    return list(value)


class InstanceRecord(Value):
    """An instance's record (LXD's backup.yaml shape): its local config, devices and profiles,
    its pool and its snapshots. (A ``Value``, not an attrs class: see ``lxdlib.values``.)"""

    _fields = ("name", "architecture", "created_at", "pool", "profiles", "config", "devices",
               "description", "ephemeral", "last_used_at", "snapshots", "type")
    __slots__ = _fields

    name: str
    architecture: str
    created_at: dt.datetime
    pool: str
    profiles: list[str]
    config: dict[str, str]
    devices: dict[str, dict[str, str]]
    description: str
    ephemeral: bool
    last_used_at: dt.datetime | None
    snapshots: list[SnapshotRecord]
    type: str

    def __init__(self, name: str, architecture: str, created_at: dt.datetime, pool: str,
                 profiles: list[str] | None = None, config: dict[str, str] | None = None,
                 devices: dict[str, dict[str, str]] | None = None, description: str = "",
                 ephemeral: bool = False, last_used_at: dt.datetime | None = None,
                 snapshots: list[SnapshotRecord] | None = None,
                 type: str = "container") -> None:
        self.name, self.architecture, self.created_at, self.pool = (
            name, architecture, created_at, pool)
        self.profiles = [] if profiles is None else profiles
        self.config = {} if config is None else config
        self.devices = {} if devices is None else devices
        self.description, self.ephemeral, self.last_used_at = (
            description, ephemeral, last_used_at)
        self.snapshots = [] if snapshots is None else snapshots
        self.type = type

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type, "architecture": self.architecture,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "description": self.description, "ephemeral": self.ephemeral, "pool": self.pool,
            "profiles": list(self.profiles), "config": dict(self.config),
            "devices": {k: dict(v) for k, v in self.devices.items()},
            "snapshots": [s.to_dict() for s in self.snapshots],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InstanceRecord:
        return cls(name=d["name"], architecture=d.get("architecture") or "x86_64",
                   created_at=_ts(d.get("created_at")) or now(), pool=d.get("pool") or "",
                   profiles=_profile_list(d.get("profiles")),
                   config={str(k): str(v) for k, v in (d.get("config") or {}).items()},
                   devices={k: {str(a): str(b) for a, b in v.items()}
                            for k, v in (d.get("devices") or {}).items()},
                   description=d.get("description") or "", ephemeral=bool(d.get("ephemeral")),
                   last_used_at=_ts(d.get("last_used_at")),
                   snapshots=[SnapshotRecord.from_dict(s) for s in d.get("snapshots") or []],
                   type=d.get("type") or "container")

    def snapshot(self, name: str) -> SnapshotRecord | None:
        return next((s for s in self.snapshots if s.name == name), None)


@functools.lru_cache(maxsize=64)
def _lxcpath(paths: Paths) -> str:
    return os.fspath(paths.lxcpath)


# The record last built from each cached parse (the very object ``_parsed`` returns while the
# file is unchanged): a listing copies it rather than converting the parsed data again.
_built: dict[str, tuple[Any, InstanceRecord]] = {}


def _copy(rec: InstanceRecord) -> InstanceRecord:
    """A record sharing nothing mutable with ``rec`` (its datetimes and strings are immutable)."""
    return InstanceRecord(
        name=rec.name, architecture=rec.architecture, created_at=rec.created_at, pool=rec.pool,
        profiles=list(rec.profiles), config=dict(rec.config),
        devices={k: dict(v) for k, v in rec.devices.items()}, description=rec.description,
        ephemeral=rec.ephemeral, last_used_at=rec.last_used_at,
        snapshots=[SnapshotRecord(
            name=s.name, created_at=s.created_at, expires_at=s.expires_at, stateful=s.stateful,
            description=s.description, config=dict(s.config),
            devices={k: dict(v) for k, v in s.devices.items()}, profiles=list(s.profiles))
            for s in rec.snapshots],
        type=rec.type)


def load(paths: Paths, name: str) -> InstanceRecord:
    """The record; ``CorruptRecord`` when the file holds something else than a record (so a
    caller walking every instance can report this one and go on), ``FileNotFoundError`` when
    there is none. Each call returns a record of its own, free to change."""
    # paths.instance_record, without pathlib
    return load_file(f"{_lxcpath(paths)}/{name}/instance.yaml", name)


def _parsed_and_built(path: str, name: str) -> tuple[Any, InstanceRecord | None]:
    """The file's current parse, and the record this process built from that very parse if
    any (``_built``), so that an unchanged record is neither rebuilt nor read again."""
    try:
        data = _parsed.read(path)
    except RecordSyntaxError as e:
        raise CorruptRecord("instance", name, path, e.reason) from None
    built = _built.get(path)
    return data, (built[1] if built is not None and built[0] is data else None)


def load_file(path: str, name: str) -> InstanceRecord:
    """``load`` of the record at ``path`` (``<lxcpath>/<name>/instance.yaml``): for a caller
    reading many, which joins the lxcpath once."""
    data, built = _parsed_and_built(path, name)
    if built is not None:
        return _copy(built)
    try:
        if not isinstance(data, dict):
            raise TypeError(f"a mapping was expected, not {type(data).__name__}")
        rec = InstanceRecord.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CorruptRecord("instance", name, path, f"{type(e).__name__}: {e}") from None
    if len(_built) > 8192:
        _built.clear()
    _built[path] = (data, _copy(rec))
    return rec


def profiles_of(paths: Paths, name: str) -> list[str]:
    """The profiles ``name``'s record names (``load``'s errors): for a walk over every
    instance that asks only this. A record this process built from the file's current parse
    is asked directly, neither loaded nor copied again, so a second walk in one process — a
    profile change reads its users once, then again once it holds their locks — costs a
    ``stat`` per instance, not a load."""
    path = f"{_lxcpath(paths)}/{name}/instance.yaml"
    built = _parsed_and_built(path, name)[1]
    if built is not None:
        return list(built.profiles)
    return load_file(path, name).profiles


class PreparedSave:
    """A record's next content on disk, not yet its record: ``save`` in two steps, so that
    writing and fsyncing it overlaps the storage call that makes what it names (see
    ``state.PreparedWrite``). ``commit`` is the commit point; ``discard`` leaves the record as
    it was. Without the instance's lock (which a spare file needs) nothing is written before
    the commit, which is then ``save``'s."""

    __slots__ = ("_data", "_durable", "_path", "_raw", "_write")

    def __init__(self, paths: Paths, rec: InstanceRecord, durable: bool = True) -> None:
        self._path = f"{_lxcpath(paths)}/{rec.name}/instance.yaml"  # as ``load`` names it
        self._data = rec.to_dict()
        self._raw = encode_record(self._data)
        self._durable = durable
        self._write = PreparedWrite(self._path, self._raw, durable=durable) \
            if held(paths, "instance", rec.name) else None

    def commit(self) -> None:
        if self._write is not None:
            self._write.commit()
        else:
            atomic_write(self._path, self._raw, durable=self._durable)
        # the next load (this verb's, or the next verb's) reads these bytes without parsing
        # them (JSON reads back as the very mapping: tests/unit/test_record_yaml.py)
        _parsed.remember(self._path, self._raw, self._data)

    def discard(self) -> None:
        if self._write is not None:
            self._write.discard()


def save(paths: Paths, rec: InstanceRecord, durable: bool = True) -> None:
    """Write the record atomically (the commit point; ``durable`` also survives a power loss).

    Under the instance's lock (every verb) through the record's spare file (``swap_write``),
    which makes and frees no inode per save; otherwise as a new file renamed into place."""
    PreparedSave(paths, rec, durable).commit()


def prepare_save(paths: Paths, rec: InstanceRecord) -> PreparedSave:
    """``save`` (durable) up to its commit point: see ``PreparedSave``."""
    return PreparedSave(paths, rec)


def exists(paths: Paths, name: str) -> bool:
    """Whether ``name`` has a record: anything at its path, even what is no record file (a
    symlink, a directory: hand-made), which is then a ``CorruptRecord`` to show and repair —
    never a create killed before its record, whose leftovers (volume, snapshots) are
    removed."""
    return os.path.lexists(paths.instance_record(name))


def directories(paths: Paths) -> list[str]:
    """The instance directories of a root in name order, each with a record or not (a create
    not yet committed, a delete not finished): for a caller that reads each record anyway and
    skips those it does not find, with one ``stat`` less per instance than ``names``."""
    try:
        with os.scandir(os.fspath(paths.lxcpath)) as it:
            return sorted(e.name for e in it if e.is_dir())
    except FileNotFoundError:
        return []


def scan(paths: Paths) -> tuple[list[str], list[str]]:
    """The instances of a root, in name order, and the directories an interrupted operation
    left (no record, or a change not finished: ``PENDING``), which opening a ``Host``
    finishes or undoes. A read-only listing of the first needs no ``Host``: only while the
    second is empty (``lxdlib list`` opens one otherwise, as every other command does)."""
    names: list[str] = []
    leftovers: list[str] = []
    base = os.fspath(paths.lxcpath)
    for name in directories(paths):
        d = f"{base}/{name}"
        if os.path.lexists(f"{d}/instance.yaml") and not os.path.lexists(f"{d}/{PENDING}"):
            names.append(name)
        else:
            leftovers.append(name)
    return names, leftovers


def names(paths: Paths) -> list[str]:
    """The instances of a root: the directories holding a record (one directory scan and one
    ``stat`` each: a listing of a thousand instances starts here)."""
    base = os.fspath(paths.lxcpath)
    return [d for d in directories(paths) if os.path.lexists(f"{base}/{d}/instance.yaml")]


def marker(paths: Paths, name: str, which: str) -> Path:
    return paths.instance_dir(name) / which
