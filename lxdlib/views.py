"""Storage pools as users hold them: ``Pool`` and the ``host.pools`` collection.

A pool's driver (``PoolDriver``, loaded once per root through ``Context.pool``) does the work on
disk; a ``Pool`` is the name plus the questions users ask — driver, config, description, space,
who uses it, its custom volumes (``pool.volumes["data"]``) — each read when asked.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping

from . import record
from .context import Context
from .errors import TYPE_CHECKING, InUse, InvalidConfig
from .model import Collection, RootModel
from .volumes import ModifyInstance, Volumes

if TYPE_CHECKING:
    from typing import Any

    from .storage.base import PoolDriver, PoolUsage


def instance_users(ctx: Context, pool: str) -> builtins.list[str]:
    """The instances whose root volume is on ``pool``."""
    return [n for n in record.names(ctx.paths) if ctx.instance_pool(n) == pool]


def pools_users(ctx: Context, pools: Iterable[str]) -> dict[str, builtins.list[str]]:
    """LXD's ``used_by`` of each of ``pools`` (``/1.0/instances/<name>`` of the instances whose
    root volume is there, then ``/1.0/profiles/<name>`` of the profiles with a disk there) in
    one walk over the instance records and one over the profiles: ``storage list`` of P pools
    reads each record once, not P times."""
    wanted: dict[str, builtins.list[str]] = {p: [] for p in pools}
    for n in record.names(ctx.paths):
        pool = ctx.instance_pool(n)  # "" for an unreadable record: no pool's user
        if pool in wanted:
            wanted[pool].append(f"/1.0/instances/{n}")
    for prof in ctx.profiles.contents():
        for pool in sorted({d["pool"] for d in prof.devices.values() if d.get("pool")}
                           & wanted.keys()):
            wanted[pool].append(f"/1.0/profiles/{prof.name}")
    return wanted


def delete_pool(ctx: Context, name: str) -> None:
    """Remove a pool that no instance and no profile's disk names (``InUse`` otherwise: a
    profile naming a pool that is gone is what profile writes refuse, as LXD does); its image
    volumes go with it, custom volumes keep it (the driver refuses)."""
    from .storage import delete_pool as remove
    users = instance_users(ctx, name)
    if users:
        raise InUse(f"storage pool {name!r} is used by instances: {', '.join(users)}")
    for prof in ctx.profiles.contents():  # what they hold; their users are not asked
        for dev in prof.devices.values():
            if dev.get("type") == "disk" and dev.get("pool") == name:
                raise InUse(f"storage pool {name!r} is used by profile {prof.name!r}")
    remove(ctx.paths, name)
    ctx.forget_pool(name)


class Pool(RootModel[Context]):
    """One storage pool (btrfs, zfs or dir). ``driver_object()`` is the driver itself."""

    kind = "storage pool"

    def __init__(self, ctx: Context, name: str,
                 modify_instance: ModifyInstance | None = None) -> None:
        super().__init__(ctx, name)
        self._modify_instance = modify_instance

    def _repr_html_(self) -> str:
        from .notebook import pools_html
        return pools_html(self._ctx, [self._name])

    def record(self) -> dict[str, Any]:
        """The pool's record as stored: name, driver, description, config."""
        from .storage.pools import pool_record
        return pool_record(self._ctx.paths, self._name)

    def to_dict(self) -> dict[str, Any]:
        """LXD's shape (``storage show``): name, driver, description, config, used_by."""
        rec = self.record()
        return {"name": self._name, "driver": rec.get("driver", ""),
                "description": rec.get("description", ""),
                "config": {str(k): str(v) for k, v in (rec.get("config") or {}).items()},
                "used_by": self.used_by}

    def driver_object(self) -> PoolDriver:
        """The pool's driver (mounted), for the volume-level operations."""
        return self._ctx.pool(self._name)

    # -- live attributes ----------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return self._name in self._ctx.pool_names()

    @property
    def driver(self) -> str:
        return str(self.record().get("driver", ""))

    @property
    def description(self) -> str:
        return str(self.record().get("description") or "")

    @property
    def config(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.record().get("config") or {}).items()}

    @property
    def used_by(self) -> builtins.list[str]:
        """LXD's ``/1.0/instances/<name>`` and ``/1.0/profiles/<name>`` of what keeps data on
        the pool (instances' root volumes, profiles' disks)."""
        self.record()  # NotFound for a deleted pool
        return pools_users(self._ctx, [self._name])[self._name]

    def usage(self) -> PoolUsage:
        """Space used and total, in bytes."""
        return self._ctx.pool(self._name).usage()

    @property
    def volumes(self) -> Volumes:
        """The pool's custom volumes, by name: ``pool.volumes["data"]``."""
        return Volumes(self._ctx, self._modify_instance, pool=self._name)

    # -- verbs --------------------------------------------------------------------------------
    def update(self, *, config: Mapping[str, str] | None = None,
               description: str | None = None) -> None:
        """Change the description and the config (the whole of it: a key left out is unset;
        see ``configure``)."""
        if config is not None:
            if not isinstance(config, Mapping):
                raise InvalidConfig("config", "must be a mapping of keys to strings",
                                    repr(config))
            current = self.config
            changes: dict[str, str | None] = {k: v for k, v in config.items()
                                              if current.get(k) != v}
            changes.update({k: None for k in current if k not in config})
            if changes:
                self.configure(changes)
        if description is not None:
            from .storage.pools import set_pool_description
            set_pool_description(self._ctx.paths, self._name, description)

    def configure(self, changes: Mapping[str, str | None]) -> dict[str, str]:
        """Set keys of the pool's config (``None`` unsets one) and apply them; the new config.
        What lxdlib can change on a live pool: a loop-file btrfs pool's ``size`` grows (never
        shrinks), ``btrfs.mount_options`` remounts, zfs's ``zfs.use_refquota`` and
        ``zfs.remove_snapshots`` apply from the next operation. Any other change (``source``,
        above all) is refused before anything changes (``InvalidConfig``)."""
        from .storage.pools import update_pool_config
        try:
            return update_pool_config(self._ctx.paths, self._name, changes)
        finally:
            self._ctx.forget_pool(self._name)  # its driver is loaded again with the record

    def set(self, key: str, value: str) -> None:
        """``lxc storage set``: one key (see ``configure``)."""
        self.configure({key: value})

    def unset(self, key: str) -> None:
        """``lxc storage unset``: a key of the driver that is not set is left so."""
        self.configure({key: None})

    def delete(self) -> None:
        """Remove the pool; refused while an instance, a profile's root disk or a custom
        volume uses it."""
        delete_pool(self._ctx, self._name)


class Pools(Collection[Pool]):
    """The storage pools of a root: ``host.pools["default"]``, ``in``, iteration, ``create``."""

    kind = "storage pool"

    def __init__(self, ctx: Context, modify_instance: ModifyInstance | None = None) -> None:
        self.ctx = ctx
        self._modify_instance = modify_instance

    def names(self) -> builtins.list[str]:
        return self.ctx.pool_names()

    def _model(self, name: str) -> Pool:
        return Pool(self.ctx, name, self._modify_instance)

    def create(self, name: str, driver: str = "btrfs", config: Mapping[str, str] | None = None,
               description: str = "") -> Pool:
        """Make the pool on the host (a loop file, a device, a directory or a dataset, as
        ``config`` says) and record it; on any failure nothing is left."""
        self.ctx.create_pool(name, driver, config, description)
        return self._model(name)

    def delete(self, name: str) -> None:
        self.get(name).delete()

    def _repr_html_(self) -> str:
        from .notebook import pools_html
        return pools_html(self.ctx, self.names())
