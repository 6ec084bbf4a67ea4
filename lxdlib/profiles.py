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

from collections.abc import Callable, Mapping
from pathlib import Path

from . import runtime
from .config import devices as devcfg
from .config import names, schema
from .config.expand import ProfileData
from .config.text import check_description
from .errors import TYPE_CHECKING, AlreadyExists, InUse, InvalidArgument, InvalidConfig, NotFound
from .state import Paths, lock, read_record, write_record
from .values import Value

if TYPE_CHECKING:
    from typing import Any


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
    cfg = schema.validate_instance_config(config, profile=True)
    devcfg.check_devices_mapping(devices)
    devs = {name: devcfg.validate_device(name, dev) for name, dev in devices.items()}
    return cfg, devs


def check_raw_lxc(lxcpath: Path, config: Mapping[str, str]) -> None:
    """A profile's ``raw.lxc`` must load in liblxc on its own, so even a profile no instance
    uses yet cannot carry a line that would make its future users unusable."""
    raw = config.get("raw.lxc", "")
    if not raw:
        return
    try:
        runtime.check_config(lxcpath, schema.parse_raw_lxc(raw))
    except InvalidConfig as e:
        raise InvalidConfig("raw.lxc", f"liblxc refuses the line {e.key} = {e.value}",
                            raw) from None


class ProfileStore:
    """Profiles of one root. ``users`` maps a profile name to the instances that use it."""

    def __init__(self, paths: Paths, users: Callable[[str], list[str]]) -> None:
        self._paths = paths
        self._users = users

    def _path(self, name: str) -> Path:
        return self._paths.profiles / f"{name}.yaml"

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def _read(self, name: str) -> ProfileRecord:
        names.validate_profile_name(name)
        try:
            data = read_record(self._path(name))
        except FileNotFoundError:
            raise NotFound("profile", name) from None
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
        return sorted(p.stem for p in self._paths.profiles.glob("*.yaml"))

    def list(self) -> list[ProfileRecord]:
        return [self.get(n) for n in self.names()]

    def _write(self, p: ProfileRecord) -> None:
        write_record(self._path(p.name), {"name": p.name, "description": p.description,
                                          "config": p.config, "devices": p.devices})

    def create(self, name: str, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None,
               description: str = "") -> ProfileRecord:
        names.validate_profile_name(name)
        check_description(description)
        cfg, devs = validate_profile(config or {}, devices or {})
        check_raw_lxc(self._paths.lxcpath, cfg)
        with lock(self._paths, "profile", name):
            if self.exists(name):
                raise AlreadyExists("profile", name)
            p = ProfileRecord(name=name, description=description, config=cfg, devices=devs)
            self._write(p)
        return p

    def save(self, name: str, config: Mapping[str, str], devices: Mapping[str, Mapping[str, str]],
             description: str) -> ProfileRecord:
        """Replace a profile's content, without re-applying it to the instances using it.

        Internal: only the profile service (``lxdlib.profile_apply``), which checks every user
        first and re-applies after, and initialisation on a root with no instances call it.
        Users go through ``host.profiles.update`` / ``Profile.update``."""
        cfg, devs = validate_profile(config, devices)
        check_raw_lxc(self._paths.lxcpath, cfg)
        with lock(self._paths, "profile", name):
            if not self.exists(name):
                raise NotFound("profile", name)
            p = ProfileRecord(name=name, description=description, config=cfg, devices=devs)
            self._write(p)
        p.used_by = self._users(name)
        return p

    def delete(self, name: str) -> None:
        if name == "default":
            raise InvalidArgument('The "default" profile cannot be deleted')
        with lock(self._paths, "profile", name):
            if not self.exists(name):
                raise NotFound("profile", name)
            users = self._users(name)
            if users:
                raise InUse(f"Profile is currently in use by: {', '.join(users)}")
            self._path(name).unlink()

    def rename(self, old: str, new: str) -> None:
        if old == "default":
            raise InvalidArgument('The "default" profile cannot be renamed')
        names.validate_profile_name(new)
        first, second = sorted((old, new))  # one order for everyone: no deadlock
        with lock(self._paths, "profile", first), lock(self._paths, "profile", second):
            p = self.get(old)
            if p.used_by:
                raise InUse(f"Profile is currently in use by: {', '.join(p.used_by)}")
            if self.exists(new):
                raise AlreadyExists("profile", new)
            p.name = new
            self._write(p)
            self._path(old).unlink()
