"""Profiles: named bundles of config and devices that instances stack in order.

One YAML file per profile in ``lxc profile show``'s shape. The ``default`` profile cannot be
deleted or renamed, and a profile in use cannot be deleted (LXD's rules). Who uses a profile is
derived from the instance records when asked, never stored twice.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from . import runtime
from .config import devices as devcfg
from .config import names, schema
from .config.expand import ProfileData
from .errors import AlreadyExists, InUse, InvalidArgument, InvalidConfig, NotFound
from .state import Paths, lock, read_yaml, write_yaml


@attrs.define
class Profile:
    name: str
    description: str = ""
    config: dict[str, str] = attrs.field(factory=dict)
    devices: dict[str, dict[str, str]] = attrs.field(factory=dict)
    used_by: list[str] = attrs.field(factory=list)

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
    cfg = schema.validate_instance_config(dict(config), profile=True)
    devs = {name: devcfg.validate_device(name, dict(dev)) for name, dev in devices.items()}
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

    def _read(self, name: str) -> Profile:
        names.validate_profile_name(name)
        try:
            data = read_yaml(self._path(name))
        except FileNotFoundError:
            raise NotFound("profile", name) from None
        return Profile(name=name, description=data.get("description") or "",
                       config={str(k): str(v) for k, v in (data.get("config") or {}).items()},
                       devices={str(k): {str(a): str(b) for a, b in v.items()}
                                for k, v in (data.get("devices") or {}).items()})

    def get(self, name: str) -> Profile:
        """The profile with ``used_by`` filled in (reads every instance record)."""
        p = self._read(name)
        p.used_by = self._users(name)
        return p

    def data(self, name: str) -> ProfileData:
        """Only what expansion needs: no ``used_by`` scan, so it stays cheap on hot paths."""
        return self._read(name).data()

    def names(self) -> list[str]:
        return sorted(p.stem for p in self._paths.profiles.glob("*.yaml"))

    def list(self) -> list[Profile]:
        return [self.get(n) for n in self.names()]

    def __iter__(self) -> Iterator[Profile]:
        return iter(self.list())

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def _ipython_key_completions_(self) -> builtins.list[str]:
        return self.names()

    def _repr_html_(self) -> str:
        from .notebook import profiles_html
        return profiles_html(self.list())

    def _write(self, p: Profile) -> None:
        write_yaml(self._path(p.name), {"name": p.name, "description": p.description,
                                        "config": p.config, "devices": p.devices})

    def create(self, name: str, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None,
               description: str = "") -> Profile:
        names.validate_profile_name(name)
        if any(ch in description for ch in "\r\0"):
            raise InvalidArgument("description contains a carriage return or NUL")
        cfg, devs = validate_profile(config or {}, devices or {})
        check_raw_lxc(self._paths.lxcpath, cfg)
        with lock(self._paths, "profile", name):
            if self.exists(name):
                raise AlreadyExists("profile", name)
            p = Profile(name=name, description=description, config=cfg, devices=devs)
            self._write(p)
        return p

    def save(self, name: str, config: Mapping[str, str], devices: Mapping[str, Mapping[str, str]],
             description: str) -> Profile:
        """Replace a profile's content (the caller re-applies it to the instances using it)."""
        cfg, devs = validate_profile(config, devices)
        check_raw_lxc(self._paths.lxcpath, cfg)
        with lock(self._paths, "profile", name):
            if not self.exists(name):
                raise NotFound("profile", name)
            p = Profile(name=name, description=description, config=cfg, devices=devs)
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
