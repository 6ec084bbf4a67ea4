"""Snapshots of an instance, taken by the pool driver: no stop, no liblxc snapshot API.

liblxc's own snapshots refuse running containers and restore by destroy-then-clone; lxdlib uses
btrfs read-only snapshots / ``zfs snapshot`` (the ``dir`` pool freezes and copies) and keeps each
snapshot's config, devices and profiles in the instance record, as LXD does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING

from . import record, runtime
from .config import names
from .errors import AlreadyExists, NotFound

if TYPE_CHECKING:
    from .instance import Instance


class Snapshots:
    """An instance's snapshots, taken by the pool driver (no stop, no liblxc snapshot API)."""

    def __init__(self, inst: Instance) -> None:
        self.inst = inst

    def __repr__(self) -> str:
        return f"<Snapshots of {self.inst.name!r}: {', '.join(self.names())}>"

    def names(self) -> list[str]:
        return [s.name for s in self.inst.record().snapshots]

    def __iter__(self) -> Iterator[record.SnapshotRecord]:
        return iter(self.inst.record().snapshots)

    def __len__(self) -> int:
        return len(self.inst.record().snapshots)

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def get(self, name: str) -> record.SnapshotRecord:
        snap = self.inst.record().snapshot(name)
        if snap is None:
            raise NotFound("snapshot", f"{self.inst.name}/{name}")
        return snap

    __getitem__ = get

    def create(self, name: str | None = None, *, stateful: bool = False, reuse: bool = False,
               expires_at: dt.datetime | None = None, no_expiry: bool = False
               ) -> record.SnapshotRecord:
        from .config.snapshots import next_snapshot_name
        from .config.units import expiry_date
        if stateful:
            from .errors import ToolMissing
            raise ToolMissing("stateful snapshots need CRIU checkpointing, which lxdlib does not "
                              "do yet")
        inst = self.inst
        with inst._lock():
            rec = inst.record()
            cfg, _ = inst.expanded(rec)
            now = record.now()
            existing = [s.name for s in rec.snapshots]
            if name is None:
                name = next_snapshot_name(cfg.get("snapshots.pattern", "snap%d"), existing, now)
            names.validate_snapshot_name(name)
            pool = inst._pool(rec)
            if name in existing:
                if not reuse:
                    raise AlreadyExists("snapshot", f"{inst.name}/{name}")
                pool.delete_snapshot(inst.name, name)
                rec.snapshots = [s for s in rec.snapshots if s.name != name]
            if expires_at is None and not no_expiry and cfg.get("snapshots.expiry"):
                expires_at = expiry_date(now, cfg["snapshots.expiry"])
            c = inst._c()
            frozen = False
            if pool.snapshot_needs_freeze and c.state == "RUNNING":
                runtime.freeze(c, inst.host.paths.lxcpath)
                frozen = True
            try:
                pool.create_snapshot(inst.name, name)
            finally:
                if frozen:
                    runtime.unfreeze(c, inst.host.paths.lxcpath)
            snap = record.SnapshotRecord(name=name, created_at=now, expires_at=expires_at,
                                         config=dict(rec.config), devices=dict(rec.devices),
                                         profiles=list(rec.profiles))
            rec.snapshots.append(snap)
            try:
                record.save(inst.host.paths, rec)
            except BaseException:
                pool.delete_snapshot(inst.name, name)
                raise
        inst.host.events.emit("snapshot-created", f"{inst.name}/{name}")
        return snap

    def delete(self, name: str) -> None:
        inst = self.inst
        with inst._lock():
            rec = inst.record()
            if rec.snapshot(name) is None:
                raise NotFound("snapshot", f"{inst.name}/{name}")
            rec.snapshots = [s for s in rec.snapshots if s.name != name]
            record.save(inst.host.paths, rec)  # commit: the snapshot is gone
            inst._pool(rec).delete_snapshot(inst.name, name)
        inst.host.events.emit("snapshot-deleted", f"{inst.name}/{name}")

    def rename(self, old: str, new: str) -> None:
        names.validate_snapshot_name(new)
        inst = self.inst
        with inst._lock():
            rec = inst.record()
            snap = rec.snapshot(old)
            if snap is None:
                raise NotFound("snapshot", f"{inst.name}/{old}")
            if rec.snapshot(new) is not None:
                raise AlreadyExists("snapshot", f"{inst.name}/{new}")
            inst._pool(rec).rename_snapshot(inst.name, old, new)
            snap.name = new
            record.save(inst.host.paths, rec)

    def restore(self, name: str) -> None:
        """Make the instance what it was at the snapshot: volume, config, devices, profiles.

        A running instance is stopped, restored and started again, as LXD does.
        """
        inst = self.inst
        with inst._lock():
            rec = inst.record()
            snap = rec.snapshot(name)
            if snap is None:
                raise NotFound("snapshot", f"{inst.name}/{name}")
            c = inst._c()
            was_running = c.state != "STOPPED"
            if was_running:
                runtime.kill(c, inst.host.paths.lxcpath)
            inst._pool(rec).restore_snapshot(inst.name, name)
            keep = {k: v for k, v in rec.config.items() if k in ("volatile.uuid",)}
            rec.config = {**snap.config, **keep}
            rec.devices = {k: dict(v) for k, v in snap.devices.items()}
            rec.profiles = list(snap.profiles)
            record.save(inst.host.paths, rec)
            inst._apply_quota(inst.expanded(rec)[1], rec)
            inst._write_lxc_config(rec)
            if was_running:
                inst._start_locked()
        inst.host.events.emit("snapshot-restored", f"{inst.name}/{name}")
