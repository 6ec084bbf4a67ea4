"""How a killed multi-step operation on pool volumes is finished or undone.

The journal records intents and calls what is registered for each kind; the kinds whose undo
touches only pools and records (snapshots, temporary snapshots, new instances that never got a
record, a stateful stop) are settled here, below the instance layer. Operations that need an
instance (a config change, a rename, a move between pools) register their own in their modules.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from . import journal, record, runtime
from .errors import TYPE_CHECKING, LxdlibError, NotFound
from .journal import STATE_DIR
from .state import remove_tree

if TYPE_CHECKING:
    from typing import Any

    from .context import Context


# -- handlers --------------------------------------------------------------------------------------

def record_or_none(ctx: Context, name: str) -> record.InstanceRecord | None:
    try:
        return record.load(ctx.paths, name)
    except FileNotFoundError:
        return None


def pool_or_none(ctx: Context, pool: str) -> Any:
    try:
        return ctx.pool(pool)
    except (NotFound, LxdlibError):
        return None


def _remove_state(volume: Path) -> None:
    target = volume / STATE_DIR
    if os.path.lexists(target) and not target.is_symlink():
        remove_tree(target)


def _snapshot(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """A snapshot create or delete: the record decides; an unrecorded volume goes."""
    rec = record_or_none(ctx, name)
    if rec is None:
        return
    pool = pool_or_none(ctx, rec.pool)
    if pool is None:
        return
    snap = str(op.get("snapshot") or "")
    if snap and rec.snapshot(snap) is None:
        with contextlib.suppress(NotFound):
            pool.delete_snapshot(name, snap)
    if op.get("stateful"):  # a dump into the live volume of a running instance: never kept
        _remove_state(pool.volume_path("containers", name))
    pool.cleanup_leftovers()


def _snapshot_rename(ctx: Context, name: str, op: dict[str, Any]) -> None:
    rec = record_or_none(ctx, name)
    if rec is None:
        return
    pool = pool_or_none(ctx, rec.pool)
    old, new = str(op["old"]), str(op["new"])
    if pool is None or rec.snapshot(new) is not None:
        return  # committed
    have = set(pool.list_snapshots(name))
    if new in have and old not in have:
        pool.rename_snapshot(name, new, old)


def _new_instance(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """A copy or an import into a new instance that has no record yet: what it made on the
    target pool (snapshots first, so the caller's search for the live volume may miss them)
    and the temporary volumes of the dead process go; the caller removes the directory."""
    target = pool_or_none(ctx, str(op.get("target_pool") or ""))
    if target is not None and record_or_none(ctx, name) is None:
        target.delete_instance_volume(name)
    for pname in op.get("pools") or []:
        pool = pool_or_none(ctx, str(pname))
        if pool is not None:
            pool.cleanup_leftovers()
    for extra in op.get("files") or []:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(str(extra))


def _temp_snapshot(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """An export or a copy that took a temporary snapshot of a running instance."""
    rec = record_or_none(ctx, name)
    pool = pool_or_none(ctx, rec.pool) if rec is not None else None
    snap = str(op.get("snapshot") or "")
    if pool is not None and snap and (rec is None or rec.snapshot(snap) is None):
        with contextlib.suppress(NotFound):
            pool.delete_snapshot(name, snap)
    if pool is not None:
        pool.cleanup_leftovers()
    for extra in op.get("files") or []:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(str(extra))
    for extra in op.get("dirs") or []:
        remove_tree(str(extra))


def _stop_stateful(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """A stateful stop that died: a dump that did not complete is worthless."""
    rec = record_or_none(ctx, name)
    pool = pool_or_none(ctx, rec.pool) if rec is not None else None
    if pool is None:
        return
    vol = pool.volume_path("containers", name)
    c = runtime.open_container(ctx.paths.lxcpath, name)
    if c.state != "STOPPED" or not (vol / STATE_DIR / ".complete").exists():
        _remove_state(vol)


for _kind, _handler in (("snapshot", _snapshot), ("snapshot-rename", _snapshot_rename),
                       ("copy", _new_instance), ("import", _new_instance),
                       ("temp-snapshot", _temp_snapshot), ("stop-stateful", _stop_stateful)):
    journal.register(_kind, _handler)
