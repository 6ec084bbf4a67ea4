"""``disk`` devices: the root disk (the pool's volume itself) and host paths or custom volumes
mounted inside.

Ids, as in LXD: a host path is bound into an unprivileged instance *without* an id shift by
default. The kernel then shows files of host ids outside the instance's map as ``nobody``/
``nogroup`` (65534) inside, and what the container writes lands with its mapped host ids (its
root becomes, e.g., host uid 1000000). So the container's root has no more rights in a shared
host directory than that unprivileged host uid: it cannot make files owned by host root there,
let alone setuid-root ones. ``shift=true`` on the device opts into an idmapped bind
(``idmap=container``), where host root's files are the container root's and the container's
root acts as host root in that directory: a root-equivalent grant, for trusted containers only.
Custom volumes of a pool belong to the instances that mount them and are always shifted (as LXD
does): idmapped where the pool allows it, else shifted on disk to the instance's map.

At start, the disks of an unprivileged instance are mounted from the start-host hook by
``hotmount``, as on a running one; liblxc (a ``lxc.mount.entry`` bind) mounts only a privileged
instance's. liblxc's child would not do: it runs as the container's root, so it cannot reach a
source below a directory it cannot search (a custom volume of a pool, a 0700 home), nor make a
non-recursive bind of a directory with mounts below it (the kernel refuses that to a user
namespace: it would uncover what those mounts hide; ``hotmount`` covers them); it makes a
``ro`` bind inside the container's user namespace, whose root may then remount it read-write,
where ``hotmount`` hands over a mount whose read-only flag the kernel has locked; and it
creates a missing mount point (``create=dir|file``) by a path it resolves from the host's root,
following the symlinks the container's root planted in its rootfs: ``/mnt -> /var/tmp`` and a
disk at ``/mnt/x`` made ``/var/tmp/x`` on the host, owned by the container's root.
``hotmount`` resolves the path in the container's own mount namespace, as its root.
On a running instance, disks are added, changed and removed live through ``hotmount`` too.

Ownership can be shifted only where the source's filesystem supports idmapped mounts; a
``shift=true`` host path elsewhere (FUSE, procfs…) is refused at start rather than silently
left unshifted.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from ..errors import NotFound, StorageError
from ..logs import get_logger
from ..render import MountEntry
from ..values import Value, assign
from . import BaseDriver, DeviceContext, Rendered, hotmount

log = get_logger(__name__)

#: Filesystems that support idmapped mounts on current kernels (``devtmpfs``, FUSE, procfs,
#: sysfs… do not; there the files keep their host ids).
IDMAP_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay",
                               "f2fs", "vfat", "erofs", "squashfs", "zfs"})


def truthy(v: str | None) -> bool:
    return (v or "").lower() in ("true", "1", "yes", "on")


def fs_type(path: str | os.PathLike[str]) -> str:
    """The type of the filesystem ``path`` lives on (the last mount covering it)."""
    real = os.path.realpath(path)
    best, kind = "", ""
    for point, fstype in hotmount.mounts():
        if (real == point or real.startswith(point.rstrip("/") + "/")) and \
                len(point) >= len(best):
            best, kind = point, fstype
    return kind


def supports_idmap(path: str | os.PathLike[str]) -> bool:
    """Whether an idmapped bind of ``path`` works: a directory or a regular file on a
    filesystem that allows it (a device node has nothing to map)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return (stat.S_ISDIR(mode) or stat.S_ISREG(mode)) and fs_type(path) in IDMAP_FILESYSTEMS


class Plan(Value, frozen=True):
    """How one disk device is mounted in one instance."""

    _fields = ("source", "path", "idmap", "readonly", "recursive", "propagation", "required",
               "by_liblxc")
    __slots__ = _fields

    source: str
    path: str  # absolute, inside the instance
    idmap: bool
    readonly: bool
    recursive: bool
    propagation: str
    required: bool
    by_liblxc: bool  # a mount entry liblxc makes at start; else the start-host hook mounts it

    def __init__(self, source: str, path: str, idmap: bool, readonly: bool, recursive: bool,
                 propagation: str, required: bool, by_liblxc: bool) -> None:
        assign(self, "source", source)
        assign(self, "path", path)
        assign(self, "idmap", idmap)
        assign(self, "readonly", readonly)
        assign(self, "recursive", recursive)
        assign(self, "propagation", propagation)
        assign(self, "required", required)
        assign(self, "by_liblxc", by_liblxc)


def plan(ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> Plan | None:
    """``None`` for the root disk and for an optional source that is absent."""
    source = dev.get("source", "")
    if not source:
        return None
    required = truthy(dev.get("required", "true"))
    pool = dev.get("pool", "")
    pool_idmap = True
    if pool:
        from ..volumes import VolumeStore
        vols = VolumeStore(ctx.host)
        try:
            src = vols.path(pool, source)
        except NotFound:
            raise NotFound("storage volume", source,
                           f"in pool {pool!r} (device {name!r} of instance {ctx.name!r}, key "
                           "'source')") from None
        pool_idmap = ctx.host.pool(pool).supports_idmapped_mounts
        # no other user of another map; files shifted to this one's where not idmapped
        vols.prepare_for(pool, source, ctx.name, ctx.idmap_base)
    else:
        src = Path(source)
        if not os.path.exists(src):
            if required:
                raise NotFound("disk source", source,
                               f"device {name!r} of instance {ctx.name!r}, key 'source' "
                               "(required=false lets the instance start without it)")
            return None
    unprivileged = ctx.idmap_base is not None
    if pool:  # the instance's own volume: always shifted, like its rootfs
        idmap = unprivileged and pool_idmap and supports_idmap(src)
    else:  # a host path: host ids unless the device opts in (root-equivalent, see above)
        idmap = unprivileged and truthy(dev.get("shift"))
        if idmap and not supports_idmap(src):
            raise StorageError(
                f"device {name!r} of instance {ctx.name!r} sets shift=true but {source!r} "
                f"(filesystem {fs_type(src) or 'unknown'!r}) does not support idmapped mounts")
    return Plan(source=str(src), path="/" + dev["path"].strip("/"), idmap=idmap,
                readonly=truthy(dev.get("readonly")), recursive=truthy(dev.get("recursive")),
                propagation=dev.get("propagation", ""), required=required,
                by_liblxc=not unprivileged)


def mount_entry(p: Plan) -> MountEntry:
    opts = ["rbind" if p.recursive else "bind",
            "create=dir" if os.path.isdir(p.source) else "create=file"]
    if p.readonly:
        opts.append("ro")
    if p.propagation:
        opts.append(p.propagation)
    if p.idmap:
        opts.append("idmap=container")
    if not p.required:
        opts.append("optional")
    return MountEntry(p.source, p.path, "none", ",".join(opts))


class DiskDriver(BaseDriver):
    hotplug = True

    def render(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> Rendered:
        p = plan(ctx, name, dev)
        if p is None:
            return Rendered()
        if p.by_liblxc:
            return Rendered(mounts=[mount_entry(p)])
        return Rendered(start_hook=True)

    def start(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None:
        if ctx.pid is None:
            return
        p = plan(ctx, name, dev)
        if p is None or (p.by_liblxc and hotmount.in_start_hook()):
            return  # nothing to mount, or liblxc has just mounted it
        # a kernel filesystem cannot create a mount point: masking a file the host's kernel
        # lacks (the docker profile's AppArmor parameter) mounts nothing, as the render's
        # ``optional`` does for liblxc
        hotmount.attach(ctx.pid, p.source, p.path, idmap=p.idmap, readonly=p.readonly,
                        recursive=p.recursive, propagation=p.propagation,
                        point_optional=p.path.startswith(("/sys/", "/proc/")))

    def stop(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None:
        if ctx.pid is None or not dev.get("source"):
            return  # stopped: the instance's mounts went with its mount namespace
        try:
            hotmount.detach(ctx.pid, "/" + dev["path"].strip("/"))
        except (FileNotFoundError, ProcessLookupError) as e:
            log.debug("disk %s of %s: nothing to unmount, the instance is gone (%s)", name,
                      ctx.name, e)



def driver_for(dtype: str) -> DiskDriver:
    return DiskDriver()
