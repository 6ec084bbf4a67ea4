"""Profile expansion: how an instance's profiles and local settings combine, exactly as LXD does.

Config merges key by key, profiles in the instance's order, local config last. Devices are
replaced *whole* by name (never merged option by option; LXD keeps it that way on purpose), local
devices last. A device of type ``none`` that survives to the end removes that name: that is how an
instance drops a device its profile gives it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ..errors import AlreadyExists, InvalidArgument, InvalidConfig, NotFound
from ..values import Value, assign
from .names import validate_profile_name

DEFAULT_PROFILE = "default"


def _frozen_config(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(value)


def _frozen_devices(value: Mapping[str, Mapping[str, str]]) -> Mapping[str, Mapping[str, str]]:
    return {name: dict(dev) for name, dev in value.items()}


class ProfileData(Value, frozen=True):
    """What expansion needs from a profile (the store keeps the rest: description, used_by)."""

    _fields = ("name", "config", "devices")
    __slots__ = _fields

    name: str
    config: Mapping[str, str]
    devices: Mapping[str, Mapping[str, str]]

    def __init__(self, name: str, config: Mapping[str, str] | None = None,
                 devices: Mapping[str, Mapping[str, str]] | None = None) -> None:
        assign(self, "name", name)
        assign(self, "config", _frozen_config(config or {}))
        assign(self, "devices", _frozen_devices(devices or {}))


def resolve_profile_list(requested: Sequence[str] | None) -> list[str]:
    """The profile list for a new instance: None -> ``['default']``; ``[]`` -> no profiles.

    Names are validated; a name given twice is refused with LXD's message.
    """
    if requested is None:
        return [DEFAULT_PROFILE]
    if isinstance(requested, str) or not isinstance(requested, (list, tuple)):
        raise InvalidArgument(f"profiles must be a list of names, not "
                              f"{type(requested).__name__}")
    seen: set[str] = set()
    out: list[str] = []
    for name in requested:
        validate_profile_name(name)
        if name in seen:
            raise InvalidArgument("Duplicate profile found in request")
        seen.add(name)
        out.append(name)
    return out


def expand_config(
    profiles: Iterable[ProfileData],
    local_config: Mapping[str, str],
    *,
    global_config: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Profiles' config key by key in order, then the local config on top.

    ``global_config`` may carry LXD's ``instances.migration.stateful``: when true it seeds
    ``migration.stateful`` under the profiles.
    """
    out: dict[str, str] = {}
    if global_config is not None:
        stateful = global_config.get("instances.migration.stateful", "")
        if stateful.lower() in ("1", "t", "true"):  # Go's strconv.ParseBool truthy forms
            out["migration.stateful"] = stateful
    for profile in profiles:
        out.update(profile.config)
    out.update(local_config)
    return out


def expand_devices(
    profiles: Iterable[ProfileData],
    local_devices: Mapping[str, Mapping[str, str]],
    *,
    keep_none: bool = False,
) -> dict[str, dict[str, str]]:
    """Profiles' devices replaced whole by name, local devices on top; ``none`` devices removed
    (unless ``keep_none``, to show what masks a profile device)."""
    out: dict[str, dict[str, str]] = {}
    for profile in profiles:
        for name, dev in profile.devices.items():
            out[name] = dict(dev)
    for name, dev in local_devices.items():
        out[name] = dict(dev)
    if not keep_none:
        out = {name: dev for name, dev in out.items() if dev.get("type") != "none"}
    return out


def expand(
    profiles: Sequence[ProfileData],
    local_config: Mapping[str, str],
    local_devices: Mapping[str, Mapping[str, str]],
    *,
    global_config: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The expanded ``(config, devices)`` of an instance with these profiles, in order."""
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise InvalidArgument("Duplicate profile found in request")
    return (
        expand_config(profiles, local_config, global_config=global_config),
        expand_devices(profiles, local_devices),
    )


def root_disk(devices: Mapping[str, Mapping[str, str]]) -> tuple[str, dict[str, str]]:
    """The one root disk (``type=disk``, ``path=/``, no ``source``) among expanded devices."""
    found: list[str] = [
        name for name, dev in devices.items()
        if dev.get("type") == "disk" and dev.get("path") == "/" and not dev.get("source")
    ]
    if not found:
        raise InvalidConfig("devices", "No root disk device found")
    if len(found) > 1:
        raise InvalidConfig("devices", "More than one root disk device found")
    return found[0], dict(devices[found[0]])


def override_device(
    expanded_devices: Mapping[str, Mapping[str, str]],
    local_devices: Mapping[str, Mapping[str, str]],
    name: str,
    changes: Mapping[str, str],
) -> dict[str, dict[str, str]]:
    """``lxc config device override``: copy a profile device into the local devices with changes.

    Returns the new local devices. Fails if the instance already has a local device of that name
    or no profile gives one.
    """
    if name in local_devices:
        raise AlreadyExists("device", name)
    if name not in expanded_devices:
        raise NotFound("device", name, "The profile device does not exist")
    out = {n: dict(d) for n, d in local_devices.items()}
    dev = dict(expanded_devices[name])
    dev.update(changes)
    out[name] = dev
    return out


def profiles_using(
    profile: str, instances: Mapping[str, Sequence[str]]
) -> list[str]:
    """The instances (name -> profile list) that use ``profile``, sorted: LXD's ``used_by``."""
    return sorted(name for name, names in instances.items() if profile in names)
