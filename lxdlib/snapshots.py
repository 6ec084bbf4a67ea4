"""Snapshots of an instance, taken by the pool driver: no stop, no liblxc snapshot API.

liblxc's own snapshots refuse running containers and restore by destroy-then-clone; lxdlib uses
btrfs read-only snapshots / ``zfs snapshot`` (the ``dir`` pool freezes and copies) and keeps each
snapshot's config, devices and profiles in the instance record, as LXD does.

Each operation is journaled (:mod:`lxdlib.journal`) with the record as its commit point, so a
``kill -9`` leaves the snapshot either complete and recorded or gone. Stateful snapshots dump the
running processes with CRIU into the live volume, snapshot it, and remove the dump from the live
volume again: the dump travels inside the snapshot.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import enum

from . import journal, record, runtime
from .background import beside
from .config import names
from .config.text import check_description
from .errors import TYPE_CHECKING, AlreadyExists, InvalidArgument, LxdlibError, NotFound, WrongState
from .logs import get_logger
from .model import Collection, Model
from .state import on_behalf, remove_tree

if TYPE_CHECKING:
    from typing import Any

    from .context import Context
    from .instance import InstanceCore


class Keep(enum.Enum):
    """``Snapshot.update``'s "not given": ``None`` is a value there (never expires)."""

    KEEP = "keep"


KEEP = Keep.KEEP


class Snapshot(Model):
    """One snapshot of an instance: ``inst.snapshots["snap0"]``. Its attributes are read from the
    instance's record when asked (``record()`` reads them all at once)."""

    kind = "snapshot"

    def __init__(self, inst: InstanceCore, name: str) -> None:
        self._inst = inst
        self._name = name

    def _identity(self) -> tuple[Any, ...]:
        return (self._inst.ctx.paths.root, self._inst.name, self._name)

    @property
    def name(self) -> str:
        return self._name

    @property
    def instance(self) -> str:
        """The name of the instance the snapshot belongs to."""
        return self._inst.name

    def __repr__(self) -> str:
        return f"<Snapshot {self._inst.name}/{self._name}>"

    def _repr_html_(self) -> str:
        from .notebook import snapshots_html
        return snapshots_html(self._inst.name, [self.record()])

    def record(self) -> record.SnapshotRecord:
        """The snapshot's record as stored now; ``NotFound`` once it is deleted."""
        snap = self._inst.record().snapshot(self._name)
        if snap is None:
            raise NotFound("snapshot", f"{self._inst.name}/{self._name}")
        return snap

    def to_dict(self) -> dict[str, Any]:
        return self.record().to_dict()

    @property
    def exists(self) -> bool:
        try:
            return self._inst.record().snapshot(self._name) is not None
        except NotFound:
            return False

    @property
    def created_at(self) -> dt.datetime:
        return self.record().created_at

    @property
    def expires_at(self) -> dt.datetime | None:
        return self.record().expires_at

    @property
    def stateful(self) -> bool:
        return self.record().stateful

    @property
    def description(self) -> str:
        return self.record().description

    @property
    def config(self) -> dict[str, str]:
        """The instance's local config when the snapshot was taken."""
        return dict(self.record().config)

    @property
    def devices(self) -> dict[str, dict[str, str]]:
        return {k: dict(v) for k, v in self.record().devices.items()}

    @property
    def profiles(self) -> list[str]:
        return list(self.record().profiles)

    def update(self, *, expires_at: dt.datetime | Keep | None = KEEP) -> None:
        """Change what LXD lets change on a snapshot: when it expires (``None``: never)."""
        if expires_at is not KEEP:
            if expires_at is not None and not isinstance(expires_at, dt.datetime):
                raise InvalidArgument("expires_at must be a datetime or None")
            Snapshots(self._inst).set_expiry(self._name, expires_at)

    def delete(self) -> None:
        Snapshots(self._inst).delete(self._name)

    def rename(self, new: str) -> Snapshot:
        """``lxc move inst/old inst/new``; the snapshot under its new name."""
        Snapshots(self._inst).rename(self._name, new)
        return Snapshot(self._inst, new)

    def restore(self, *, stateful: bool = False) -> None:
        """Make the instance what it was at this snapshot (see ``Snapshots.restore``)."""
        Snapshots(self._inst).restore(self._name, stateful=stateful)

    def copy(self, target: str | None = None, **kw: Any) -> InstanceCore:
        """A new instance from this snapshot (``lxc copy inst/snap new``)."""
        return Snapshots(self._inst).copy(self._name, target, **kw)


class Snapshots(Collection[Snapshot]):
    """An instance's snapshots: ``inst.snapshots.create()``, ``["snap0"]``, ``restore``…"""

    kind = "snapshot"

    def __init__(self, inst: InstanceCore) -> None:
        self.inst = inst

    def __repr__(self) -> str:
        return f"<Snapshots of {self.inst.name!r}: {', '.join(self.names())}>"

    def names(self) -> builtins.list[str]:
        """In the order they were taken (the record's order), as LXD lists them."""
        return [s.name for s in self.inst.record().snapshots]

    def _model(self, name: str) -> Snapshot:
        return Snapshot(self.inst, name)

    def _not_found(self, name: str) -> NotFound:
        return NotFound("snapshot", f"{self.inst.name}/{name}")

    def _repr_html_(self) -> str:
        from .notebook import snapshots_html
        return snapshots_html(self.inst.name, self.inst.record().snapshots)

    # -- verbs -------------------------------------------------------------------------------
    def create(self, name: str | None = None, *, stateful: bool = False, reuse: bool = False,
               expires_at: dt.datetime | None = None, no_expiry: bool = False,
               description: str = "") -> Snapshot:
        """Take a snapshot (``lxc snapshot``) without stopping a running instance.

        ``name`` defaults to the next ``snapshots.pattern`` name; ``reuse`` replaces an
        existing snapshot of that name; the expiry comes from ``snapshots.expiry`` unless
        ``expires_at`` or ``no_expiry`` is given. ``stateful`` also saves the running
        processes (CRIU); where CRIU cannot, ``LXCError`` and nothing is left behind.
        """
        inst = self.inst
        with inst._lock():
            snap = create_locked(inst, name, stateful=stateful, reuse=reuse,
                                 expires_at=expires_at, no_expiry=no_expiry,
                                 description=description)
        inst.ctx.events.emit("snapshot-created", f"{inst.name}/{snap.name}")
        return Snapshot(inst, snap.name)

    def delete(self, name: str) -> None:
        inst = self.inst
        with inst._lock():
            delete_locked(inst, name)
        inst.ctx.events.emit("snapshot-deleted", f"{inst.name}/{name}")

    def rename(self, old: str, new: str) -> None:
        """``lxc move inst/old inst/new``."""
        names.validate_snapshot_name(new)
        inst = self.inst
        paths = inst.ctx.paths
        with inst._lock():
            rec = inst.record()
            if rec.snapshot(old) is None:
                raise NotFound("snapshot", f"{inst.name}/{old}")
            if rec.snapshot(new) is not None:
                raise AlreadyExists("snapshot", f"{inst.name}/{new}")
            pool = inst._pool(rec)
            pool.volume_path("containers-snapshots", f"{inst.name}/{new}")  # validates
            journal.begin(paths, inst.name, "snapshot-rename", old=old, new=new)
            try:
                pool.rename_snapshot(inst.name, old, new)
                snap = rec.snapshot(old)
                assert snap is not None
                snap.name = new
                record.save(paths, rec)  # commit point
            except BaseException:
                journal.recover(inst.ctx, inst.name)  # puts the volume name back if needed
                raise
            journal.end(paths, inst.name)
        inst.ctx.events.emit("snapshot-renamed", f"{inst.name}/{new}", old_name=old)

    def set_expiry(self, name: str, expires_at: dt.datetime | None) -> None:
        """Change when a snapshot expires (``None``: never), the one thing editable on it."""
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidArgument("expires_at must carry a time zone")
        inst = self.inst
        with inst._lock():
            rec = inst.record()
            snap = rec.snapshot(name)
            if snap is None:
                raise NotFound("snapshot", f"{inst.name}/{name}")
            snap.expires_at = expires_at
            record.save(inst.ctx.paths, rec)

    def restore(self, name: str, *, stateful: bool = False) -> None:
        """Make the instance what it was at the snapshot: volume, config, devices, profiles.

        A running instance is stopped, restored and started again, as LXD does; ``stateful``
        brings the snapshot's processes back instead of a fresh start.

        The profiles the snapshot names and the record no longer does are locked before the
        instance (``_with_added_profiles_locked``, as ``update`` adding them): an edit of one
        that found no user while the restore ran saved its change after the restart had
        composed the old content, and re-applied it to none.
        """
        inst = self.inst

        def attempt(rec: record.InstanceRecord, locked: set[str] | None) -> set[str]:
            snap = rec.snapshot(name)
            if snap is None:
                raise NotFound("snapshot", f"{inst.name}/{name}")
            more = set() if locked is None else \
                {p for p in snap.profiles if isinstance(p, str)} - set(rec.profiles) - locked
            if not more:
                self._restore_locked(rec, name, stateful)
            return more

        inst._with_added_profiles_locked(attempt)  # nested in a change: at once
        inst.ctx.events.emit("snapshot-restored", f"{inst.name}/{name}")

    def _restore_locked(self, rec: record.InstanceRecord, name: str, stateful: bool) -> None:
        """``restore`` with the instance's lock held and ``rec`` read under it."""
        inst = self.inst
        ctx = inst.ctx
        snap = rec.snapshot(name)
        if snap is None:
            raise NotFound("snapshot", f"{inst.name}/{name}")
        if stateful and not snap.stateful:
            raise WrongState("Stateful snapshot restore requested but snapshot is stateless")
        # a profile deleted since: refuse up front (under its lock when the restore adds
        # it, see ``restore``)
        ctx.check_profiles(snap.profiles)
        pool = inst._pool(rec)
        _check_rollback(pool, inst.name, name, rec.snapshots[-1].name)
        c = inst.handle()
        was_running = c.state != "STOPPED"
        # the intent names the power state to end in: a kill after the stop must not leave
        # a running instance stopped (stage "start" once the volume and record are swapped)
        intent = {"snapshot": name, "running": was_running, "stateful": stateful}
        journal.begin(ctx.paths, inst.name, "restore", stage="swap", **intent)
        journal.crashpoint("restore.begun")
        if was_running:
            runtime.kill(c, ctx.paths.lxcpath)
        journal.crashpoint("restore.stopped")
        # an instance started again gets its liblxc config rendered by that start
        apply_restore(ctx, inst.name, name, keep_state=stateful, rec=rec,
                      render=not (was_running or stateful), render_unchanged=False)
        journal.crashpoint("restore.swapped")
        if was_running or stateful:
            journal.begin(ctx.paths, inst.name, "restore", stage="start", **intent)
            journal.crashpoint("restore.starting")
            try:
                _restart(inst, stateful)
            except Exception:  # restored; the start's own error is the caller's to see
                journal.end(ctx.paths, inst.name)
                raise
            journal.crashpoint("restore.started")
        journal.end(ctx.paths, inst.name)

    def copy(self, name: str, target: str | None = None, **kw: Any) -> InstanceCore:
        """A new instance from this snapshot (``lxc copy inst/snap new``), of the same class as
        the instance it came from (an ``Instance`` when reached through one)."""
        from .copy import copy_instance
        made = copy_instance(self.inst.ctx, f"{self.inst.name}/{name}", target, **kw)
        return type(self.inst)(self.inst.ctx, made.name)


# -- the work, under the instance lock -------------------------------------------------------------

def create_locked(inst: InstanceCore, name: str | None = None, *, stateful: bool = False,
                  reuse: bool = False, expires_at: dt.datetime | None = None,
                  no_expiry: bool = False, description: str = "") -> record.SnapshotRecord:
    """Take a snapshot; the caller holds the instance lock (housekeeping uses this too)."""
    from .config.snapshots import next_snapshot_name
    from .config.units import expiry_date
    ctx = inst.ctx
    paths = ctx.paths
    check_description(description)
    # before anything, and above all before ``reuse`` deletes the snapshot of that name (a
    # string here failed at the record write, after it); a naive time as ``set_expiry``
    if expires_at is not None and (not isinstance(expires_at, dt.datetime)
                                   or expires_at.tzinfo is None):
        raise InvalidArgument("expires_at must be a datetime with a time zone, or None")
    rec = inst.record()
    cfg, _ = inst.expanded(rec)
    now = record.now()
    existing = [s.name for s in rec.snapshots]
    if name is None:
        name = next_snapshot_name(cfg.get("snapshots.pattern", "snap%d"), existing, now)
    names.validate_snapshot_name(name)
    pool = inst._pool(rec)
    pool.volume_path("containers-snapshots", f"{inst.name}/{name}")  # the pool's own name rules
    if name in existing and not reuse:
        raise AlreadyExists("snapshot", f"{inst.name}/{name}")
    # liblxc's view is needed only to dump the processes, or to freeze them while a pool that
    # copies files reads the volume (``frozen_meanwhile``): a btrfs or zfs snapshot of a
    # running instance is atomic
    c = inst.handle() if stateful else None
    if stateful:
        assert c is not None
        if c.state != "RUNNING":
            raise WrongState("Unable to create a stateful snapshot. The instance isn't running")
        from . import criu
        criu.require()
    if expires_at is None and not no_expiry and cfg.get("snapshots.expiry"):
        expires_at = expiry_date(now, cfg["snapshots.expiry"])
    if name in existing:
        delete_locked(inst, name)
        rec = inst.record()
    snap = record.SnapshotRecord(
        name=name, created_at=now, expires_at=expires_at, stateful=stateful,
        description=description, config=dict(rec.config),
        devices={k: dict(v) for k, v in rec.devices.items()}, profiles=list(rec.profiles))
    volume = pool.volume_path("containers", inst.name)

    def prepare() -> record.PreparedSave:
        written = record.prepare_save(paths, rec)  # ``rec`` with the snapshot, by then
        journal.crashpoint("snapshot.prepared")  # the snapshot being made, or not
        return written
    journal.begin(paths, inst.name, "snapshot", snapshot=name, stateful=stateful)
    made = False
    save: record.PreparedSave | None = None
    try:
        if stateful:
            from . import criu
            criu.dump(inst.ctx.paths.lxcpath, inst.name, volume / journal.STATE_DIR, stop=False)
        rec.snapshots.append(snap)
        # the intent says ``frozen`` while it is: a kill -9 must not leave it so
        from .instance import frozen_meanwhile
        with frozen_meanwhile(paths, inst.name) if pool.snapshot_needs_freeze else \
                contextlib.nullcontext():
            # a btrfs snapshot is a transaction commit without the GIL: the record that
            # names it is written meanwhile, on a thread, and named once the snapshot exists
            with beside(on_behalf(prepare), pool.snapshots_overlap,
                        record.PreparedSave.discard) as prepared:
                pool.create_snapshot(inst.name, name)
            made = True
            save = prepared.result()
        journal.crashpoint("snapshot.made")  # the volume made, the record not yet
        if stateful:
            remove_tree(volume / journal.STATE_DIR)
        assert save is not None
        save.commit()  # commit point
    except BaseException:
        if save is not None:
            save.discard()
        rec.snapshots = [s for s in rec.snapshots if s is not snap]
        if stateful:
            remove_tree(volume / journal.STATE_DIR)
        if made:
            pool.delete_snapshot(inst.name, name)
        journal.end(paths, inst.name)
        raise
    journal.end(paths, inst.name)
    return snap


def delete_locked(inst: InstanceCore, name: str) -> None:
    """Delete a snapshot: the record first (the commit point), then its volume."""
    paths = inst.ctx.paths
    rec = inst.record()
    if rec.snapshot(name) is None:
        raise NotFound("snapshot", f"{inst.name}/{name}")
    journal.begin(paths, inst.name, "snapshot", snapshot=name)
    rec.snapshots = [s for s in rec.snapshots if s.name != name]
    record.save(paths, rec)  # commit point: the snapshot is gone
    with contextlib.suppress(NotFound):
        inst._pool(rec).delete_snapshot(inst.name, name)
    journal.end(paths, inst.name)


def apply_restore(ctx: Context, name: str, snapshot: str, *, keep_state: bool = False,
                  rec: record.InstanceRecord | None = None, render: bool = True,
                  render_unchanged: bool = True) -> None:
    """The volume becomes the snapshot's, then the record takes the snapshot's config, devices
    and profiles, then (with ``render``) the liblxc config follows the record. Idempotent, so a
    restore that died is finished by running it again.

    ``render_unchanged=False``: no render when the restore leaves everything the render reads
    as it was (config but the power-state hint, devices, profiles), as when a snapshot is
    restored right after it was taken; the config file then stays what it was. Recovery
    renders always: a restore killed before its render left the file behind its record."""
    from .instance import InstanceCore
    inst = InstanceCore(ctx, name)
    rec = rec or inst.record()
    snap = rec.snapshot(snapshot)
    if snap is None:
        raise NotFound("snapshot", f"{name}/{snapshot}")
    pool = inst._pool(rec)
    before = _rendered_part(rec)
    # the root disk's size comes from the devices and profiles only: unchanged by the restore,
    # the composition after it tells the size before it too
    same_devices = rec.devices == snap.devices and rec.profiles == snap.profiles
    size_before: str | None = None
    if not same_devices:
        try:
            size_before = _root_size(inst.expanded(rec))
        except LxdlibError:  # e.g. a profile of the current record gone: the snapshot's decides
            size_before = None
    pool.restore_snapshot(name, snapshot)
    volume = pool.volume_path("containers", name)
    if not keep_state:  # a stateful snapshot restored without its processes
        remove_tree(volume / journal.STATE_DIR)
    # zfs rolls back by destroying later snapshots (zfs.remove_snapshots): forget them too
    if rec.snapshots[-1].name != snapshot:
        on_disk = set(pool.list_snapshots(name))
        rec.snapshots = [s for s in rec.snapshots if s.name in on_disk]
    keep = {k: v for k, v in rec.config.items() if k == "volatile.uuid"}
    rec.config = {**{k: v for k, v in snap.config.items()
                     if k not in ("volatile.last_state.power", "volatile.apply_template")
                     and not record.is_veth_key(k)},
                  **keep}
    if "volatile.last_state.power" in rec.config:
        del rec.config["volatile.last_state.power"]
    rec.devices = {k: dict(v) for k, v in snap.devices.items()}
    rec.profiles = list(snap.profiles)
    record.save(ctx.paths, rec)
    after = inst.expanded(rec)
    if same_devices:
        size_before = _root_size(after)
    if _root_size(after) != size_before or size_before is not None:
        inst._apply_quota(after[1], rec)  # the snapshot's own root disk size
    if render and (render_unchanged or _rendered_part(rec) != before):
        inst._write_lxc_config(rec, after)


def _rendered_part(rec: record.InstanceRecord) -> tuple[Any, ...]:
    """What of a record a restore changes and the liblxc config is rendered from: the config
    (less ``volatile.last_state.power`` and the veth names, which no render reads), devices
    and profiles."""
    return ({k: v for k, v in rec.config.items()
             if k != "volatile.last_state.power" and not record.is_veth_key(k)},
            rec.devices, list(rec.profiles))


def _restart(inst: InstanceCore, stateful: bool) -> None:
    """The last step of a restore: the snapshot's processes (stateful) or a fresh start."""
    if stateful:
        inst.restore_saved_state()
    else:
        inst._start_locked()


def _recover_restore(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """Roll a restore forward: the instance stopped, the volume and record become the
    snapshot's (again: ``apply_restore`` is idempotent), then it runs if it ran before."""
    from .instance import InstanceCore
    try:
        rec = record.load(ctx.paths, name)
    except FileNotFoundError:
        return
    snap = str(op.get("snapshot") or "")
    inst = InstanceCore(ctx, name)
    if op.get("stage") != "start":
        if rec.snapshot(snap) is None:
            return  # the snapshot is gone: nothing was swapped (its delete is a commit point)
        c = inst.handle()
        if c.state != "STOPPED":  # killed before or during the stop
            runtime.kill(c, ctx.paths.lxcpath)
        pool = inst._pool(rec)
        pool.cleanup_leftovers()  # an aside volume of a swap that died is put back first
        apply_restore(ctx, name, snap, keep_state=bool(op.get("stateful")))
    if (op.get("running") or op.get("stateful")) and inst.handle().state == "STOPPED":
        try:
            _restart(inst, bool(op.get("stateful")))
        except Exception as e:  # restored and consistent: a start that fails is not retried
            get_logger("lxdlib").warning(
                "instance %s: restored, but it does not start again: %s", name, e)


journal.register("restore", _recover_restore)


def _root_size(expanded: tuple[dict[str, str], dict[str, dict[str, str]]]) -> str | None:
    """The root disk's ``size`` in an expanded view (None: no limit, or no root disk)."""
    from .config import expand
    try:
        return expand.root_disk(expanded[1])[1].get("size")
    except LxdlibError:
        return None


def _check_rollback(pool: Any, name: str, snapshot: str, latest: str) -> None:
    """ZFS rolls back to the latest snapshot only (unless ``zfs.remove_snapshots``): refuse
    before the instance is stopped, not after."""
    if pool.driver != "zfs" or snapshot == latest:
        return
    from .config.units import is_true
    if is_true(pool.config.get("zfs.remove_snapshots")):
        return
    order = pool.list_snapshots(name)
    later = order[order.index(snapshot) + 1:] if snapshot in order else []
    if later:
        raise WrongState(
            f"snapshot {name}/{snapshot} cannot be restored: later snapshots exist "
            f"({', '.join(later)}); ZFS can only roll back to the latest one (set "
            "zfs.remove_snapshots=true on the pool to destroy the later snapshots)")


def expired(rec: record.InstanceRecord, now: dt.datetime) -> list[str]:
    """Names of the snapshots whose expiry date has passed at ``now``."""
    return [s.name for s in rec.snapshots if s.expires_at is not None and s.expires_at <= now]
