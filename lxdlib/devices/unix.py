"""``unix-char`` / ``unix-block`` devices: a device node inside the instance.

A node made inside an unprivileged container cannot be opened: its ``/dev`` is a tmpfs mounted in
the container's user namespace, and the kernel ignores device nodes on such filesystems. So, as
LXD does, lxdlib makes the node on the host (``<instance>/devices/unix.<device>``, owned by the
host ids that the configured ``uid``/``gid`` map to, with ``mode``) and bind-mounts it at ``path``
with ``hotmount``: from the start-host hook at each start, and at once on a running instance.
A privileged instance also gets the ``devices`` cgroup rule that lets it use the node (its
cgroup denies devices by default).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping

from .. import idmap, runtime
from ..errors import InvalidConfig, NotFound
from ..logs import get_logger
from ..render import PRIVILEGED_DEVICES
from ..values import Value, assign
from . import BaseDriver, DeviceContext, Rendered, hotmount

log = get_logger(__name__)


def truthy(v: str | None) -> bool:
    return (v or "").lower() in ("true", "1", "yes", "on")


def _err(device: str, key: str, reason: str, value: str | None = None) -> InvalidConfig:
    e = InvalidConfig(key, reason, value)
    e.args = (f"device {device!r}: {e.args[0]}",)
    return e


class Node(Value, frozen=True):
    """A device node one unix-char or unix-block device makes inside the instance."""

    _fields = ("kind", "major", "minor", "path", "uid", "gid", "mode")
    __slots__ = _fields

    kind: str  # "c" or "b"
    major: int
    minor: int
    path: str  # absolute, inside the instance
    uid: int  # inside the instance
    gid: int
    mode: int

    def __init__(self, kind: str, major: int, minor: int, path: str, uid: int, gid: int,
                 mode: int) -> None:
        assign(self, "kind", kind)
        assign(self, "major", major)
        assign(self, "minor", minor)
        assign(self, "path", path)
        assign(self, "uid", uid)
        assign(self, "gid", gid)
        assign(self, "mode", mode)

    @property
    def rule(self) -> str:
        return f"{self.kind} {self.major}:{self.minor} rwm"


def node_spec(dtype: str, name: str, dev: Mapping[str, str]) -> Node | None:
    """What node the device asks for; ``None`` when an optional source is absent."""
    kind = "c" if dtype == "unix-char" else "b"
    source = dev.get("source") or dev.get("path", "")  # either one names both, as in LXD
    path = dev.get("path") or source
    mode: int | None = int(dev["mode"], 8) if dev.get("mode") else None
    if dev.get("major") and dev.get("minor"):
        major, minor = int(dev["major"]), int(dev["minor"])
    else:
        try:
            st = os.stat(source)
        except FileNotFoundError:
            if truthy(dev.get("required", "true")):
                raise NotFound("unix device", source,
                               f"device {name!r}, key 'source' (required=false lets the "
                               "instance start without it)") from None
            return None
        wanted = stat.S_ISCHR if kind == "c" else stat.S_ISBLK
        if not wanted(st.st_mode):
            what = "character" if kind == "c" else "block"
            raise _err(name, "source", f"{source} is not a {what} device", source)
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        if mode is None:
            mode = stat.S_IMODE(st.st_mode)
    return Node(kind, major, minor, "/" + path.strip("/"), int(dev.get("uid") or 0),
                int(dev.get("gid") or 0), 0o660 if mode is None else mode & 0o7777)


def host_id(ctx: DeviceContext, kind: str, cid: int, device: str) -> int:
    """The host id that instance id ``cid`` is (``kind`` ``u`` or ``g``)."""
    if ctx.idmap_base is None:
        return cid
    size = int(ctx.record.config.get("volatile.idmap.size", str(ctx.host.facts().idmap.size)))
    for r in idmap.instance_map(ctx.idmap_base, size, ctx.config.get("raw.idmap", "")):
        if r.kind == kind and r.nsid <= cid < r.nsid + r.size:
            return r.hostid + cid - r.nsid
    key = "uid" if kind == "u" else "gid"
    raise _err(device, key, "id is not mapped in the instance", str(cid))


def covered(rule: str, rules: tuple[str, ...]) -> bool:
    """Whether ``rules`` already grant everything ``rule`` does."""
    kind, nums, access = rule.split(" ")
    major, minor = nums.split(":")
    for other in rules:
        okind, onums, oaccess = other.split(" ")
        omajor, ominor = onums.split(":")
        if okind in (kind, "a") and omajor in (major, "*") and ominor in (minor, "*") \
                and set(access) <= set(oaccess):
            return True
    return False


class UnixDriver(BaseDriver):
    hotplug = True

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype

    def _privileged(self, ctx: DeviceContext) -> bool:
        return ctx.idmap_base is None

    def render(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> Rendered:
        node = node_spec(self.dtype, name, dev)
        if node is None:
            return Rendered()
        host_id(ctx, "u", node.uid, name)  # an unmapped id fails before the start
        host_id(ctx, "g", node.gid, name)
        keys: list[tuple[str, str]] = []
        if self._privileged(ctx):
            prefix = "lxc.cgroup2" if ctx.host.facts().cgroup_version == 2 else "lxc.cgroup"
            keys.append((f"{prefix}.devices.allow", node.rule))
        return Rendered(keys=keys, start_hook=True)

    def host_node(self, ctx: DeviceContext, name: str) -> str:
        return str(ctx.device_dir / f"unix.{name}")

    def _made_marker(self, ctx: DeviceContext, name: str) -> str:
        """The file that says the mount point in the instance is lxdlib's (removed with the
        device). Not ``unix.<name>.made``: that is the node of a device named ``<name>.made``,
        whose presence made the unplug of ``<name>`` delete the instance's own file it was
        mounted over (and the plug open that node to write the marker)."""
        return str(ctx.device_dir / f"unix-made.{name}")

    def _old_marker(self, ctx: DeviceContext, name: str) -> str | None:
        """The marker an earlier lxdlib wrote, when it is one (a regular file, not a node)."""
        old = f"{self.host_node(ctx, name)}.made"
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISREG(os.lstat(old).st_mode):
                return old
        return None

    def _make_node(self, ctx: DeviceContext, name: str, node: Node) -> str:
        final = self.host_node(ctx, name)
        tmp = str(ctx.device_dir / f"unix-tmp{os.getpid()}.{name}")  # no other device's node
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        kind = stat.S_IFCHR if node.kind == "c" else stat.S_IFBLK
        os.mknod(tmp, kind | 0o600, os.makedev(node.major, node.minor))
        try:
            os.chown(tmp, host_id(ctx, "u", node.uid, name), host_id(ctx, "g", node.gid, name))
            os.chmod(tmp, node.mode)  # after chown, which clears setuid/setgid bits
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        log.debug("%s %s of %s: node %s made (%s %d:%d, mode %o)", self.dtype, name, ctx.name,
                  final, node.kind, node.major, node.minor, node.mode)
        return final

    def start(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None:
        if ctx.pid is None:
            return
        node = node_spec(self.dtype, name, dev)
        if node is None:
            return
        path = self._make_node(ctx, name, node)
        c = None
        if self._privileged(ctx) and not hotmount.in_start_hook():
            c = runtime.open_container(ctx.host.paths.lxcpath, ctx.name)
            runtime.cgroup_set(c, ctx.host.paths.lxcpath, "devices.allow",
                               node.rule)
            log.debug("%s %s of %s: cgroup devices.allow %s", self.dtype, name, ctx.name,
                      node.rule)
        made = self._made_marker(ctx, name)
        try:
            if hotmount.attach(ctx.pid, path, node.path, idmap=False):
                with open(made, "w"):
                    pass  # the mount point is ours: remove it with the device
        except BaseException:
            if c is not None and not self._still_allowed(ctx, name, node):
                try:
                    runtime.cgroup_set(c, ctx.host.paths.lxcpath,
                                       "devices.deny", node.rule)
                except Exception as e:
                    log.warning("%s %s of %s: cannot take back the cgroup rule %s: %s",
                                self.dtype, name, ctx.name, node.rule, e)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise

    def _still_allowed(self, ctx: DeviceContext, name: str, node: Node) -> bool:
        """Whether the default allow-list or another unix device of the instance needs the rule."""
        return self._rule_still_allowed(ctx, name, node.rule)

    def _rule_still_allowed(self, ctx: DeviceContext, name: str, rule: str) -> bool:
        if covered(rule, PRIVILEGED_DEVICES):
            return True
        for other, dev in ctx.devices.items():
            if other != name and dev.get("type") in ("unix-char", "unix-block"):
                with contextlib.suppress(Exception):
                    if self._granted_rule(ctx, other, dev) == rule:
                        return True
        return False

    def _granted_rule(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> str | None:
        """The cgroup rule the device was given: that of the node made for it on the host while
        it is there (the numbers it was made with, whatever ``source`` names now: a source that
        went away or came back as another device left the old numbers allowed), else the one
        its config gives."""
        try:
            st = os.lstat(self.host_node(ctx, name))
        except FileNotFoundError:
            spec = node_spec(dev.get("type", self.dtype), name, dev)
            return None if spec is None else spec.rule
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else None
        if kind is None:
            return None
        return f"{kind} {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} rwm"

    def stop(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None:
        path = "/" + (dev.get("path") or dev.get("source") or "").strip("/")
        made = self._made_marker(ctx, name)
        old_made = self._old_marker(ctx, name)
        if ctx.pid is not None and path != "/":
            try:
                hotmount.detach(ctx.pid, path, remove=os.path.exists(made) or
                                old_made is not None)
            except (FileNotFoundError, ProcessLookupError) as e:
                log.debug("%s %s of %s: nothing to unmount, the instance is gone (%s)",
                          self.dtype, name, ctx.name, e)
            if self._privileged(ctx):
                try:
                    rule = self._granted_rule(ctx, name, dev)
                    if rule is not None and not self._rule_still_allowed(ctx, name, rule):
                        c = runtime.open_container(ctx.host.paths.lxcpath, ctx.name)
                        runtime.cgroup_set(c, ctx.host.paths.lxcpath, "devices.deny", rule)
                        log.debug("%s %s of %s: cgroup devices.deny %s", self.dtype, name,
                                  ctx.name, rule)
                except NotFound as e:
                    log.warning("%s %s of %s: its cgroup rule is left in place, the source "
                                "is gone: %s", self.dtype, name, ctx.name, e)
        for leftover in (self.host_node(ctx, name), made, *([old_made] if old_made else [])):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
                log.debug("%s %s of %s: removed %s", self.dtype, name, ctx.name, leftover)



def driver_for(dtype: str) -> UnixDriver:
    return UnixDriver(dtype)
