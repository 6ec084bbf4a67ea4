"""``disk`` devices: the root disk (handled by the pool) and host paths bind-mounted inside."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import NotFound
from ..render import MountEntry
from . import BaseDriver, DeviceContext, Rendered


def _truthy(v: str | None) -> bool:
    return (v or "").lower() in ("true", "1", "yes", "on")


class DiskDriver(BaseDriver):
    hotplug = False

    def render(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> Rendered:
        if dev.get("path") == "/" and not dev.get("source"):
            return Rendered()  # the root disk: the pool volume itself
        src = dev.get("source", "")
        if not src:
            return Rendered()
        required = _truthy(dev.get("required", "true"))
        if not os.path.exists(src) and required:
            raise NotFound("disk source", src, f"device {name!r} of instance {ctx.name!r}")
        opts = "bind,create=" + ("dir" if os.path.isdir(src) else "file")
        if _truthy(dev.get("readonly")):
            opts += ",ro"
        if not required:
            opts += ",optional"
        return Rendered(mounts=[MountEntry(src, dev["path"], "none", opts)])


def driver_for(dtype: str) -> DiskDriver:
    return DiskDriver()
