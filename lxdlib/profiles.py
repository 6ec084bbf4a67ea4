"""The profile store: named bundles of config and devices that instances stack in order.

One record per profile in ``lxc profile show``'s shape (``<name>.yaml``, written as JSON like
every record: ``state.write_record``). The ``default`` profile cannot be deleted or renamed,
and a profile in use cannot be deleted (LXD's rules). Who uses a profile is derived from the
instance records when asked, never stored twice.

This is the raw store the layers below the instance engine read (expansion, init). Users hold
``lxdlib.Profile`` and ``host.profiles`` (``lxdlib.profile_apply``), whose changes reach the
instances using the profile; the store's ``save`` alone does not, and only that service calls it.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from . import journal, runtime
from .config import names
from .config.expand import ProfileData
from .config.text import check_description
from .errors import (
    TYPE_CHECKING,
    AlreadyExists,
    CorruptRecord,
    InUse,
    InvalidArgument,
    InvalidConfig,
    LxdlibError,
    NotFound,
)
from .logs import get_logger
from .state import (
    Paths,
    RecordSyntaxError,
    fsync_dir,
    lock,
    read_record,
    rename_noreplace,
    write_record,
)
from .values import Value

if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)

#: The suffix of a profile withdrawn by a delete or rename in progress: ``.<name>.away`` (not
#: ``*.yaml``, so no listing or lookup finds it).
AWAY = ".away"


class ProfileRecord(Value):
    """A profile's content as read once (or a draft being edited under the profile's lock)."""

    _fields = ("name", "description", "config", "devices", "used_by")
    __slots__ = _fields

    name: str
    description: str
    config: dict[str, str]
    devices: dict[str, dict[str, str]]
    used_by: list[str]

    def __init__(self, name: str, description: str = "", config: dict[str, str] | None = None,
                 devices: dict[str, dict[str, str]] | None = None,
                 used_by: list[str] | None = None) -> None:
        self.name = name
        self.description = description
        self.config = {} if config is None else config
        self.devices = {} if devices is None else devices
        self.used_by = [] if used_by is None else used_by

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "config": dict(self.config),
                "devices": {k: dict(v) for k, v in self.devices.items()},
                "used_by": list(self.used_by)}

    def data(self) -> ProfileData:
        return ProfileData(name=self.name, config=self.config, devices=self.devices)

    def _repr_html_(self) -> str:
        from .notebook import profile_html
        return profile_html(self)


def validate_profile(config: Mapping[str, str], devices: Mapping[str, Mapping[str, str]]
                     ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    # here, as in check_raw_lxc: the key and device rules (~1 ms to import) check a profile
    # being written; every verb reads profiles, few write one
    from .config import devices as devcfg
    from .config import schema
    cfg = schema.validate_instance_config(config, profile=True)
    devcfg.check_devices_mapping(devices)
    devs = {name: devcfg.validate_device(name, dev) for name, dev in devices.items()}
    return cfg, devs


def check_pools(paths: Paths, devices: Mapping[str, Mapping[str, str]],
                planned: Iterable[str] = ()) -> None:
    """Refuse a disk device that names a storage pool this root does not have (as LXD's
    profile validation does): saved, it would make every instance that takes the profile fail
    at its create or start instead, far from the edit that caused it. ``planned``: pools
    that count as there (those a preseed document makes before its profiles). One directory
    listing, paid by profile writes only."""
    wanted = {dname: dev["pool"] for dname, dev in devices.items()
              if dev.get("type") == "disk" and dev.get("pool")}
    if not wanted:
        return
    from .storage import list_pools  # here: only a profile write with a pool disk asks
    pools = set(list_pools(paths)) | set(planned)
    for dname, pool in sorted(wanted.items()):
        if pool not in pools:
            raise NotFound("storage pool", pool, f"named by disk device {dname!r}")


def check_raw_lxc(lxcpath: Path, config: Mapping[str, str]) -> None:
    """A profile's ``raw.lxc`` must load in liblxc on its own, so even a profile no instance
    uses yet cannot carry a line that would make its future users unusable."""
    raw = config.get("raw.lxc", "")
    if not raw:
        return
    from .config import schema
    try:
        runtime.check_config(lxcpath, schema.parse_raw_lxc(raw))
    except InvalidConfig as e:
        raise InvalidConfig("raw.lxc", f"liblxc refuses the line {e.key} = {e.value}",
                            raw) from None


class ProfileStore:
    """Profiles of one root. ``users`` maps a profile name to the instances that use it, and
    ``all_users`` gives every profile's from one walk over the instances (``list``);
    ``quiesce`` waits for the operations under way on instances (``Context.quiesce_instances``).

    A delete or rename cannot rely on the profile's lock alone: an instance change checks that
    the profiles it names exist under the instance's lock, and may not wait for a profile's
    lock while it holds that (``profile_apply`` takes it before the users' locks; a change
    that adds profiles to a record takes theirs first, but a create, copy or import does
    not). So both first withdraw the profile —
    its file renamed to ``.<name>.away``, which no lookup finds — then ``quiesce``, then read
    the users again: a change that found the profile has committed by then and is seen; one
    that looks later finds it gone. Users found put it back (``InUse``). A kill in between
    leaves the ``.away`` file, which the next look-up of that name (or ``lxdlib recover``)
    puts back: the profile as it was, nothing deleted or renamed."""

    def __init__(self, paths: Paths, users: Callable[[str], list[str]],
                 quiesce: Callable[[], None] | None = None, *,
                 all_users: Callable[[], dict[str, list[str]]] | None = None) -> None:
        self._paths = paths
        self._users = users
        self._all_users = all_users or (lambda: {n: users(n) for n in self.names()})
        self._quiesce = quiesce or (lambda: None)

    def _path(self, name: str) -> Path:
        return self._paths.profiles / f"{name}.yaml"

    def _away(self, name: str) -> Path:
        return self._paths.profiles / f".{name}{AWAY}"

    def exists(self, name: str) -> bool:
        return self._path(name).exists() or (self.settle(name) and self._path(name).exists())

    def settle(self, name: str) -> bool:
        """Put back profile ``name`` if a killed delete or rename left it withdrawn; True if
        there was such a file. Only when no live process holds the profile's lock (the
        delete or rename still running holds it): a probe, never a wait, so a caller that
        holds an instance's lock may ask (the lock order allows no wait for a profile)."""
        away = self._away(name)
        if not os.path.lexists(away):
            return False
        try:
            with lock(self._paths, "profile", name, timeout=0):
                self._settle_locked(name)
        except LxdlibError:  # busy: the delete or rename is under way, and decides
            pass
        return True

    def _settle_locked(self, name: str) -> None:
        away = self._away(name)
        if not os.path.lexists(away):
            return
        if os.path.lexists(self._path(name)):  # cannot happen under the lock; keep the live one
            away.unlink()
            return
        os.rename(away, self._path(name))
        log.warning("profile %s: put back after an interrupted delete or rename", name)

    def settle_all(self) -> list[str]:
        """``settle`` every withdrawn profile a killed process left (``lxdlib recover``)."""
        out = []
        for entry in self._entries():
            if entry.startswith(".") and entry.endswith(AWAY):
                name = entry[1:-len(AWAY)]
                self.settle(name)
                if self._path(name).exists():
                    out.append(name)
        return out

    def _entries(self) -> list[str]:
        try:
            return os.listdir(self._paths.profiles)
        except FileNotFoundError:
            return []

    def _read(self, name: str) -> ProfileRecord:
        """The profile; ``CorruptRecord`` for a file that is no profile record (unparseable,
        or a config, device or device key of another shape: hand-edited), which listings skip
        instead of failing as a whole."""
        names.validate_profile_name(name)
        path = self._path(name)
        try:
            try:
                data = read_record(path)
            except FileNotFoundError:
                if not self.settle(name):
                    raise NotFound("profile", name) from None
                try:
                    data = read_record(path)
                except FileNotFoundError:
                    raise NotFound("profile", name) from None
        except RecordSyntaxError as e:
            raise CorruptRecord("profile", name, path, e.reason) from None
        data = data or {}
        if not isinstance(data, dict) or not isinstance(data.get("config") or {}, dict) or \
                not isinstance(data.get("devices") or {}, dict) or \
                not all(isinstance(d, dict) for d in (data.get("devices") or {}).values()):
            raise CorruptRecord("profile", name, path,
                                "not a mapping of config and devices (each a mapping)")
        return ProfileRecord(name=name, description=data.get("description") or "",
                       config={str(k): str(v) for k, v in (data.get("config") or {}).items()},
                       devices={str(k): {str(a): str(b) for a, b in v.items()}
                                for k, v in (data.get("devices") or {}).items()})

    def get(self, name: str) -> ProfileRecord:
        """The profile with ``used_by`` filled in (reads every instance record)."""
        p = self._read(name)
        p.used_by = self._users(name)
        return p

    def read(self, name: str) -> ProfileRecord:
        """The profile's content without ``used_by``: one file read."""
        return self._read(name)

    def data(self, name: str) -> ProfileData:
        """Only what expansion needs: no ``used_by`` scan, so it stays cheap on hot paths."""
        return self._read(name).data()

    def names(self) -> list[str]:
        entries = self._entries()
        if any(e.startswith(".") and e.endswith(AWAY) for e in entries):
            self.settle_all()
            entries = self._entries()
        return sorted(e[:-len(".yaml")] for e in entries
                      if e.endswith(".yaml") and not e.startswith("."))

    def list(self) -> list[ProfileRecord]:
        """Every profile with ``used_by``: the instances are read once for all of them."""
        users = self._all_users()
        out = self.contents()
        for p in out:
            p.used_by = list(users.get(p.name, []))
        return out

    def contents(self) -> builtins.list[ProfileRecord]:
        """Every profile without ``used_by`` (left empty): one file read each and no instance
        read, for a caller that looks at what profiles hold (who uses a network, a pool or a
        volume) and finds instance users itself."""
        out = []
        for n in self.names():
            try:
                out.append(self._read(n))
            except NotFound:  # deleted since the listing
                continue
            except CorruptRecord as e:  # one bad profile hides no other, breaks no listing
                log.warning("%s", e)
                continue
        return out

    def check(self, config: Mapping[str, str], devices: Mapping[str, Mapping[str, str]],
              description: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """What ``save`` refuses, refused without writing anything (the validated config and
        devices): the profile service checks before it writes its users' intents, so a
        refused edit leaves nothing behind to recover."""
        check_description(description)
        cfg, devs = validate_profile(config, devices)
        check_pools(self._paths, devs)
        check_raw_lxc(self._paths.lxcpath, cfg)
        return cfg, devs

    def _write(self, p: ProfileRecord) -> None:
        write_record(self._path(p.name), {"name": p.name, "description": p.description,
                                          "config": p.config, "devices": p.devices})

    def create(self, name: str, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None,
               description: str = "") -> ProfileRecord:
        names.validate_profile_name(name)
        cfg, devs = self.check(config or {}, devices or {}, description)
        with lock(self._paths, "profile", name):
            self._settle_locked(name)
            if self.exists(name):
                raise AlreadyExists("profile", name)
            p = ProfileRecord(name=name, description=description, config=cfg, devices=devs)
            self._write(p)
        return p

    def save(self, name: str, config: Mapping[str, str], devices: Mapping[str, Mapping[str, str]],
             description: str) -> ProfileRecord:
        """Replace a profile's content, without re-applying it to the instances using it; the
        record returned has no ``used_by`` (no caller needs it, and finding it reads every
        instance).

        Internal: only the profile service (``lxdlib.profile_apply``), which checks every user
        first and re-applies after, and initialisation on a root with no instances call it.
        Users go through ``host.profiles.update`` / ``Profile.update``."""
        cfg, devs = self.check(config, devices, description)
        with lock(self._paths, "profile", name):
            if not self.exists(name):
                raise NotFound("profile", name)
            p = ProfileRecord(name=name, description=description, config=cfg, devices=devs)
            self._write(p)
        return p

    def _refuse_users(self, name: str) -> None:
        users = self._users(name)
        if users:
            raise InUse(f"Profile is currently in use by: {', '.join(users)}")

    @contextlib.contextmanager
    def _withdrawn(self, name: str) -> Iterator[Path]:
        """Withdraw profile ``name`` (the caller holds its lock and checked its users), wait
        for the instance changes under way, and check the users again; yields the withdrawn
        file for the caller's commit (an unlink or a rename). Whatever fails before the
        commit puts the profile back."""
        self._refuse_users(name)  # the users so far: refused before anything changes
        away = self._away(name)
        os.rename(self._path(name), away)
        try:
            journal.crashpoint("profile.withdrawn")
            self._quiesce()
            self._refuse_users(name)  # and those that took it on meanwhile
            yield away
        except BaseException:
            if os.path.lexists(away):
                os.rename(away, self._path(name))
            raise

    def delete(self, name: str) -> None:
        if name == "default":
            raise InvalidArgument('The "default" profile cannot be deleted')
        names.validate_profile_name(name)
        with lock(self._paths, "profile", name):
            self._settle_locked(name)
            if not self.exists(name):
                raise NotFound("profile", name)
            with self._withdrawn(name) as away:
                away.unlink()  # commit point
                fsync_dir(self._paths.profiles)

    def rename(self, old: str, new: str) -> None:
        """Rename a profile nothing uses. The file's rename is the commit point (its name is
        the profile's; the ``name`` inside is rewritten after it), so a kill leaves the old
        profile or the new one, never both."""
        if old == "default":
            raise InvalidArgument('The "default" profile cannot be renamed')
        names.validate_profile_name(old)
        names.validate_profile_name(new)
        first, second = sorted((old, new))  # one order for everyone: no deadlock
        with lock(self._paths, "profile", first), lock(self._paths, "profile", second):
            self._settle_locked(old)
            self._settle_locked(new)
            p = self._read(old)
            if old == new:
                return
            if self.exists(new):
                raise AlreadyExists("profile", new)
            with self._withdrawn(old) as away:
                rename_noreplace(away, self._path(new))  # commit point
            fsync_dir(self._paths.profiles)
            journal.crashpoint("profile.renamed")
            p.name = new
            self._write(p)
