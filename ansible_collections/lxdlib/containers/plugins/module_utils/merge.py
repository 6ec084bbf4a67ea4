# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)
"""The desired-state rules the lxdlib modules share, kept free of Ansible and of lxdlib so that
they can be unit-tested on their own.

A task names only what it cares about: a config key or a device given in the task is made so,
a key or device given as ``null`` is removed, and anything the task does not name is left
alone, unless ``purge`` asks for the task's set to be the whole set. Values are compared as
the strings lxdlib stores, so ``limits.cpu: 2`` and ``"2"`` are the same wish and YAML's
booleans become ``"true"``/``"false"``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

Config = Dict[str, str]
Devices = Dict[str, Dict[str, str]]


def stringify(value: Any) -> Optional[str]:
    """The string lxdlib stores for a YAML scalar (``None`` stays ``None``: "remove it")."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def wanted_config(config: Optional[Mapping[str, Any]]) -> Dict[str, Optional[str]]:
    """A task's ``config`` with its values as strings (``None`` marks a key to remove)."""
    return {str(k): stringify(v) for k, v in (config or {}).items()}


def wanted_devices(devices: Optional[Mapping[str, Any]]) -> Dict[str, Optional[Config]]:
    """A task's ``devices`` as name -> settings (strings), ``None`` marking a device to remove."""
    out: Dict[str, Optional[Config]] = {}
    for name, dev in (devices or {}).items():
        if dev is None:
            out[str(name)] = None
            continue
        if not isinstance(dev, Mapping):
            raise ValueError("device %r must be a mapping of settings, or null to remove it"
                             % (name,))
        out[str(name)] = {str(k): str(stringify(v)) for k, v in dev.items() if v is not None}
    return out


def merge_config(current: Mapping[str, str], wanted: Mapping[str, Optional[str]],
                 purge: bool = False,
                 keep: Callable[[str], bool] = lambda key: False) -> Config:
    """The config after applying ``wanted`` to ``current``; with ``purge``, keys not in
    ``wanted`` are dropped, except those ``keep`` protects (``volatile.*`` and the like)."""
    result = {k: v for k, v in current.items() if not purge or keep(k)}
    for key, value in wanted.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def merge_devices(current: Mapping[str, Mapping[str, str]],
                  wanted: Mapping[str, Optional[Mapping[str, str]]],
                  purge: bool = False) -> Devices:
    """The devices after applying ``wanted``: a named device is replaced whole (so a setting
    left out of the task is removed from that device), ``None`` removes it; with ``purge`` the
    devices not named go too."""
    result = {} if purge else {k: dict(v) for k, v in current.items()}
    for name, dev in wanted.items():
        if dev is None:
            result.pop(name, None)
        else:
            result[name] = dict(dev)
    return result


def changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> List[str]:
    """The keys whose value differs (added, removed or changed), sorted."""
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def satisfied(current: Mapping[str, str], wanted: Mapping[str, Optional[str]],
              resolved: Iterable[str] = ()) -> bool:
    """Whether ``current`` already is what ``wanted`` asks for. Keys in ``resolved`` hold
    ``auto`` until made, then the value picked (a network's subnet): ``auto`` is then met by
    any value other than ``none``."""
    auto_keys = set(resolved)
    for key, value in wanted.items():
        have = current.get(key)
        if value is None:
            if have is not None:
                return False
        elif key in auto_keys and value == "auto":
            if have in (None, "none"):
                return False
        elif have != value:
            return False
    return True
