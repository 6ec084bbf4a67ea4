"""Device drivers: one module per device type, each answering the same four questions.

- ``render``: what the device adds to the liblxc config (nics, mount entries, raw keys), and
  whether it needs host-side work once the container's init exists (a ``start-host`` hook) or
  when it stops (a ``post-stop`` hook);
- ``start``: that host-side work, given the init pid (run from the liblxc hook, so it happens on
  every start — also ``lxc-start`` or a reboot from inside — and on a live add);
- ``stop``: undo ``start``; idempotent (run from the post-stop hook, and on a live remove);
- ``update``: a running instance's device changed (default: stop the old, start the new, and
  bring the old back if the new cannot start).

There is no daemon: hooks are how device behaviour follows the container through restarts that no
lxdlib process sees. Drivers must not take the instance lock (the hook runs while the starting
process holds it).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

from ..errors import TYPE_CHECKING, InvalidConfig
from ..logs import get_logger
from ..render import MountEntry, Nic
from ..values import Value

if TYPE_CHECKING:
    from typing import Any, Protocol

    from ..context import Context
    from ..record import InstanceRecord

    class Driver(Protocol):
        hotplug: bool

        def render(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> Rendered: ...

        def start(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None: ...

        def stop(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None: ...

        def update(self, ctx: DeviceContext, name: str, old: Mapping[str, str],
                   new: Mapping[str, str]) -> None: ...

log = get_logger(__name__)


class DeviceContext(Value):
    """What a driver may know about the instance it serves."""

    _fields = ("host", "name", "record", "config", "devices", "volume", "root_uid",
               "idmap_base", "pid", "starting")
    __slots__ = _fields

    host: Context
    name: str
    record: InstanceRecord
    config: Mapping[str, str]  # expanded
    devices: Mapping[str, Mapping[str, str]]  # expanded
    volume: Path  # the instance volume (rootfs/ inside)
    root_uid: int  # host uid of the container's root (0 when privileged or idmapped on disk)
    idmap_base: int | None  # host id that container id 0 maps to (None: privileged)
    pid: int | None  # init pid when running
    # rendered for a start: what only a running instance uses (its name in the network's DNS)
    # is prepared then, not at every create, copy or edit
    starting: bool

    def __init__(self, host: Context, name: str, record: InstanceRecord,
                 config: Mapping[str, str], devices: Mapping[str, Mapping[str, str]],
                 volume: Path, root_uid: int, idmap_base: int | None,
                 pid: int | None = None, starting: bool = False) -> None:
        self.host = host
        self.name = name
        self.record = record
        self.config = config
        self.devices = devices
        self.volume = volume
        self.root_uid = root_uid
        self.idmap_base = idmap_base
        self.pid = pid
        self.starting = starting

    @property
    def instance_dir(self) -> Path:
        path: Path = self.host.paths.instance_dir(self.name)
        return path

    @property
    def device_dir(self) -> Path:
        """Per-instance runtime files of devices (pid files, sockets, logs)."""
        d = self.instance_dir / "devices"
        d.mkdir(mode=0o700, exist_ok=True)
        return d


class Rendered(Value):
    """What a device adds to the liblxc config, and whether it needs the start or stop hook."""

    _fields = ("nics", "mounts", "keys", "start_hook", "stop_hook")
    __slots__ = _fields

    nics: list[Nic]
    mounts: list[MountEntry]
    keys: list[tuple[str, str]]
    start_hook: bool
    stop_hook: bool

    def __init__(self, nics: list[Nic] | None = None, mounts: list[MountEntry] | None = None,
                 keys: list[tuple[str, str]] | None = None, start_hook: bool = False,
                 stop_hook: bool = False) -> None:
        self.nics = [] if nics is None else nics
        self.mounts = [] if mounts is None else mounts
        self.keys = [] if keys is None else keys
        self.start_hook = start_hook
        self.stop_hook = stop_hook


class BaseDriver:
    """Defaults: nothing rendered, nothing to do on the host, live changes by stop + start."""

    hotplug = False

    def render(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> Rendered:
        return Rendered()

    def start(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None:
        return None

    def stop(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None:
        return None

    def update(self, ctx: DeviceContext, name: str, old: Mapping[str, str],
               new: Mapping[str, str]) -> None:
        """Stop the old, start the new; if the new cannot start, the old comes back."""
        self.stop(ctx, name, old)
        try:
            self.start(ctx, name, new)
        except BaseException:
            try:
                self.start(ctx, name, old)
            except Exception:
                log.warning("device %s of %s: the new config did not start and the old one "
                            "did not come back", name, ctx.name, exc_info=True)
            raise


class NoneDriver(BaseDriver):
    """``type: none`` only masks a profile device of the same name."""

    hotplug = True


_MODULES = {"disk": "disk", "nic": "nic", "proxy": "proxy", "unix-char": "unix",
            "unix-block": "unix"}
_cache: dict[str, Any] = {"none": NoneDriver()}


def driver(dtype: str) -> Driver:
    """The driver of a device type (modules load on first use, keeping imports cheap)."""
    if dtype in _cache:
        d: Driver = _cache[dtype]
        return d
    module = _MODULES.get(dtype)
    if module is None:
        raise InvalidConfig("type", f"device type {dtype!r} is not supported by lxdlib")
    mod = importlib.import_module(f"{__name__}.{module}")
    d = mod.driver_for(dtype)
    _cache[dtype] = d
    return d
