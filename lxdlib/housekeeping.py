"""What LXD's daemon does on its minute ticker, for a host with no daemon: ``lxdlib
housekeeping`` takes the scheduled snapshots that are due (``snapshots.schedule``) and removes
the expired ones, of instances and of custom storage volumes; ``lxdlib recover`` puts a root
back in order after crashes.

Housekeeping is meant for cron or a systemd timer every minute. It is idempotent: each instance
records when it was last looked at (``<instance dir>/housekeeping.yaml``), and a snapshot is due
only if a scheduled minute lies between that time and now, so two runs in one minute take one
snapshot, and a run after a pause takes one (not one per missed minute). The stamp never goes
back (a run that waited for a lock behind a later one), and it names the snapshot a run is
about to take, so a run killed between that snapshot's commit and its stamp is not taken for
one that took none. An instance another process is busy with is skipped and caught up on the
next run; one whose volume or pool is gone is reported skipped, and the others go on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os

from . import journal, record
from .config.snapshots import (
    next_snapshot_name,
    schedule_due,
    stamp_looked,
    stamp_time,
    stamp_when,
    taking_stamp,
)
from .config.units import is_true
from .errors import TYPE_CHECKING, Busy, CorruptRecord, LxdlibError, NotFound
from .instance import recover_leftover
from .instances import Instance
from .patterns import Pattern
from .snapshots import create_locked, delete_locked, expired
from .state import Paths, lock, read_record, remove_stale_tmp, write_record
from .values import Value

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .host import Host

LAST_RUN = "housekeeping.yaml"
_REFRESH_VOLUME = Pattern(r"refresh-(\d+)-.+")


class Report(Value):
    """What one run did: ``inst/snap`` names created and removed, instances skipped (why)."""

    _fields = ("created", "expired", "recovered", "skipped")
    __slots__ = _fields

    created: list[str]
    expired: list[str]
    recovered: list[str]
    skipped: dict[str, str]

    def __init__(self, created: list[str] | None = None, expired: list[str] | None = None,
                 recovered: list[str] | None = None,
                 skipped: dict[str, str] | None = None) -> None:
        self.created = [] if created is None else created
        self.expired = [] if expired is None else expired
        self.recovered = [] if recovered is None else recovered
        self.skipped = {} if skipped is None else skipped


def _stamp(host: Host, name: str) -> dict[str, object]:
    try:
        data = read_record(host.paths.instance_dir(name) / LAST_RUN)
    except (FileNotFoundError, LxdlibError):
        return {}
    return data if isinstance(data, dict) else {}


def last_run(host: Host, name: str) -> dt.datetime | None:
    return stamp_when(_stamp(host, name).get("last_run"))


def run(host: Host, now: dt.datetime | None = None, *, startup: bool = False,
        lock_timeout: float = 5.0) -> Report:
    """One pass over every instance: expired snapshots deleted, due scheduled snapshots taken.

    ``startup`` is the pass at host start, where ``@startup`` schedules fire.
    """
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    report = Report()
    for name in host.instances.names():
        with _alone(report, name, "instance", name), \
                lock(host.paths, "instance", name, timeout=lock_timeout):
            if journal.pending(host.paths, name) and journal.recover(host.ctx, name):
                report.recovered.append(name)
            _one(host, name, now, startup, report)
    _volumes(host, now, startup, report)
    return report


@contextlib.contextmanager
def _alone(report: Report, key: str, kind: str, name: str) -> Iterator[None]:
    """One instance's or volume's turn: what fails there is reported under ``key`` (busy, an
    error, a stamp that is no file: hand-made) and the run goes on with the others; the
    ``kind`` ``name`` itself deleted meanwhile is passed over. Anything else not found (its
    volume, its pool) is reported: passed over too, an instance whose volume had gone lost
    its scheduled snapshots run after run with nothing said."""
    try:
        yield
    except Busy:
        report.skipped[key] = "busy"
    except NotFound as e:
        if (e.kind, e.name) != (kind, name):
            report.skipped[key] = str(e)
    except LxdlibError as e:
        report.skipped[key] = str(e)
    except OSError as e:
        report.skipped[key] = f"{e.strerror}: {e.filename}"


def _volumes(host: Host, now: dt.datetime, startup: bool, report: Report) -> None:
    """The custom volumes' snapshots as the instances': expired ones deleted, scheduled ones
    taken (named ``<pool>/<volume>/<snapshot>`` in the report)."""
    store = host.volumes.store
    for pname in host.pool_names():
        try:
            vols = store.names(pname)
        except LxdlibError as e:
            report.skipped[f"pool:{pname}"] = str(e)
            continue
        for vol in vols:
            key = f"{pname}/{vol}"
            with _alone(report, key, "storage volume", vol):
                for snap in store.expire_snapshots(pname, vol, now):
                    report.expired.append(f"{key}/{snap}")
                taken = store.scheduled_snapshot(pname, vol, now, startup=startup)
                if taken is not None:
                    report.created.append(f"{key}/{taken}")


def _one(host: Host, name: str, now: dt.datetime, startup: bool, report: Report) -> None:
    inst = Instance(host.ctx, name)
    rec = inst.record()
    gone = expired(rec, now)
    for snap in gone:
        delete_locked(inst, snap)
        journal.crashpoint("housekeeping.expired")
        report.expired.append(f"{name}/{snap}")
        host.events.emit("snapshot-deleted", f"{name}/{snap}", reason="expired")
    cfg, _ = inst.expanded(rec)
    spec = cfg.get("snapshots.schedule", "")
    stamp = host.paths.instance_dir(name) / LAST_RUN
    data = _stamp(host, name)
    looked = stamp_looked(data, {s.name for s in rec.snapshots})
    if spec and schedule_due(spec, looked or rec.created_at, now, subject=name,
                             at_startup=startup) and (
            inst.state != "STOPPED" or is_true(cfg.get("snapshots.schedule.stopped"))):
        snap = next_snapshot_name(cfg.get("snapshots.pattern"),  # as create_locked names it
                                  [s.name for s in rec.snapshots if s.name not in gone],
                                  record.now())
        # the stamp says which snapshot this run is taking before it is taken
        write_record(stamp, taking_stamp(looked, now, snap), durable=False)
        taken = create_locked(inst, snap)
        journal.crashpoint("housekeeping.snapshot")
        report.created.append(f"{name}/{taken.name}")
        host.events.emit("snapshot-created", f"{name}/{taken.name}", reason="scheduled")
    write_record(stamp, {"last_run": stamp_time(now, looked).isoformat()}, durable=False)


# -- recover ---------------------------------------------------------------------------------------

def recover(host: Host) -> Report:
    """Put a root back in order after crashes (``lxdlib recover``): interrupted operations
    finished or undone, temporary volumes of dead processes removed, snapshot volumes matched
    with the records, volumes no record names removed. Safe while other processes work: what
    they hold locked is left alone."""
    report = Report()
    paths = host.paths
    with contextlib.suppress(FileNotFoundError):
        for d in sorted(paths.lxcpath.iterdir()):
            if not d.is_dir():
                continue
            try:
                with lock(paths, "instance", d.name, timeout=0):
                    if recover_leftover(host.ctx, d.name):
                        report.recovered.append(d.name)
                    with contextlib.suppress(FileNotFoundError):
                        remove_stale_tmp(d)
                    if record.exists(paths, d.name):
                        _reconcile_snapshots(host, d.name, report)
            except Busy:
                report.skipped[d.name] = "busy"
            except LxdlibError as e:
                report.skipped[d.name] = str(e)
    # profiles a killed delete or rename left withdrawn: put back
    report.recovered += [f"profile:{n}" for n in host.ctx.profiles.settle_all()]
    from .storage.pools import settle_pool
    for pname in host.pool_names():
        try:
            if settle_pool(paths, pname):  # a storage set killed before its record: finished
                report.recovered.append(f"pool:{pname}")
            pool = host.pool(pname)
            pool.cleanup_leftovers()
            _orphans(host, pool, report)
        except LxdlibError as e:
            report.skipped[f"pool:{pname}"] = str(e)
    # networks a killed `network set` left with the record new and the bridge not yet
    report.recovered += [f"network:{n}" for n in host.ctx.networks.settle()]
    from .network import tc  # ifbs that outlived their veths, whichever instance made them
    report.recovered += [f"ifb:{name}" for name in tc.collect_orphans()]
    return report


def _reconcile_snapshots(host: Host, name: str, report: Report) -> None:
    rec = record.load(host.paths, name)
    pool = host.pool(rec.pool)
    if not pool.volume_exists("containers", name):
        report.skipped[name] = f"its volume is missing from storage pool {rec.pool!r}"
        return
    on_disk = set(pool.list_snapshots(name))
    recorded = {s.name for s in rec.snapshots}
    for extra in sorted(on_disk - recorded):
        pool.delete_snapshot(name, extra)
        report.recovered.append(f"{name}/{extra}")
    if recorded - on_disk:
        rec.snapshots = [s for s in rec.snapshots if s.name in on_disk]
        record.save(host.paths, rec)
        report.recovered += [f"{name}/{s}" for s in sorted(recorded - on_disk)]


def _claims(paths: Paths, name: str, pool: str) -> bool:
    """Whether the record of ``name`` places it on ``pool``; an unreadable record is taken to
    claim it (its data is kept until the record is repaired or the instance deleted)."""
    try:
        return record.load(paths, name).pool == pool
    except CorruptRecord:
        return True


def _orphans(host: Host, pool: object, report: Report) -> None:
    """Instance volumes that no instance directory or record claims on this pool."""
    from .storage.base import PoolDriver
    assert isinstance(pool, PoolDriver)
    lister = getattr(pool, "list_volumes", None)
    if lister is None:
        return
    paths = host.paths
    for vol in lister("containers"):
        m = _REFRESH_VOLUME.fullmatch(vol)
        if m is not None and os.path.exists(f"/proc/{m.group(1)}"):
            continue  # a refresh still at work
        try:
            with lock(paths, "instance", vol, timeout=0):
                if paths.instance_dir(vol).exists() and (
                        not record.exists(paths, vol) or _claims(paths, vol, pool.name)):
                    continue
                pool.delete_instance_volume(vol)
                report.recovered.append(f"{pool.name}:{vol}")
        except Busy:
            continue
