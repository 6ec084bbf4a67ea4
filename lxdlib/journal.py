"""Intent records: how a multi-step operation on one instance survives a ``kill -9``.

Before its first change, an operation that touches several things (a snapshot: a pool volume and
the record; a restore: the stop, the volume swap, the record and the start again; a move between
pools; a copy or an import into a new instance; a config or device change of a running instance:
the record, then the live cgroups and devices; a profile edit, on each instance using it) writes
``<instance dir>/.pending.yaml`` saying what it is about to do, and removes it after its last
step. A process killed in between leaves the file behind; the next call that takes the
instance's lock (every verb), lists the instances, or ``lxdlib recover`` reads it and finishes or
undoes the operation — whichever gives a consistent state, old or new, power state included.

The file is written without fsync: it has to outlive a process, not the machine (after a power
loss ``lxdlib recover`` compares the pools with the records instead). Recovery runs with the
instance lock held, so it never calls a verb that takes the lock again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import record
from .errors import DiskFull, LxdlibError, NotFound
from .state import Paths, atomic_write, dump_yaml, lock, read_yaml, remove_stale_tmp

if TYPE_CHECKING:
    from .host import Host

_logger = logging.getLogger("lxdlib")

PENDING = ".pending.yaml"
#: Where a CRIU dump lives inside an instance volume (beside ``rootfs/``, out of the guest's view).
STATE_DIR = "state"

#: Test-only: the step boundary at which this process kills itself (``LXDLIB_CRASHPOINT``), read
#: once at import so that an unset variable costs one comparison per boundary.
_CRASHPOINT = os.environ.get("LXDLIB_CRASHPOINT") or None

Recoverer = Callable[["Host", str, dict[str, Any]], None]


def crashpoint(name: str) -> None:
    """A step boundary of a multi-step operation: with ``LXDLIB_CRASHPOINT=name`` the process
    dies here by ``SIGKILL``, as a ``kill -9`` would, so crash tests hit exact points."""
    if _CRASHPOINT is not None and name == _CRASHPOINT:
        os.kill(os.getpid(), signal.SIGKILL)


def register(kind: str, recoverer: Recoverer) -> None:
    """Let the module that defines an operation say how to finish or undo it after a kill.

    The journal sits below the operations and never imports them: ``lxdlib.host`` imports every
    module that registers, so the table is full wherever a ``Host`` exists to recover with.
    """
    _HANDLERS[kind] = recoverer


def path(paths: Paths, name: str) -> Path:
    return paths.instance_dir(name) / PENDING


def begin(paths: Paths, name: str, op: str, **details: Any) -> None:
    """Record the intent of ``op`` on instance ``name`` before its first change.

    A first intent is written in place with one ``write`` and ends with ``end: true``: cut
    short, it lacks that line and means "nothing started yet". A later stage of the same
    operation replaces the file atomically, so the earlier stage stays readable until then.
    """
    text = dump_yaml({"op": op, "pid": os.getpid(), **details, "end": True}).encode()
    target = path(paths, name)
    if os.path.lexists(target):
        atomic_write(target, text, durable=False)
        return
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        view = memoryview(text)
        while view:  # "end: true" comes last: any prefix of the text reads as cut short
            view = view[os.write(fd, view):]
    except OSError as e:
        os.close(fd)
        os.unlink(target)  # a cut-short intent means "nothing started": nothing to keep
        if DiskFull.is_full(e):
            raise DiskFull(target, "the operation's intent record") from None
        raise
    else:
        os.close(fd)


def end(paths: Paths, name: str) -> None:
    """The operation reached its commit point (or undid itself): forget the intent."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path(paths, name))


def read(paths: Paths, name: str) -> dict[str, Any] | None:
    try:
        data = read_yaml(path(paths, name))
    except FileNotFoundError:
        return None
    except LxdlibError:  # a symlink planted in place of the file: drop it
        os.unlink(path(paths, name))
        return None
    except Exception:  # half-written: the process died while writing the intent itself
        return {"op": "unknown"}
    if not isinstance(data, dict) or data.get("end") is not True:
        return {"op": "unknown"}  # cut short before its first change: nothing to undo
    return data


def pending(paths: Paths, name: str) -> bool:
    return os.path.lexists(path(paths, name))


def recover(host: Host, name: str) -> bool:
    """Finish or undo what a killed process left on ``name``; True if there was something.

    The caller holds the instance lock. The intent is removed only once the instance is
    consistent again; a recovery that fails leaves it for the next call.
    """
    paths = host.paths
    op = read(paths, name)
    if op is None:
        return False
    kind = op.get("op")
    handler = _HANDLERS.get(str(kind))
    if handler is None and kind != "unknown":  # kept: a recoverer that was not registered
        _logger.error("instance %s: no recovery is registered for an interrupted %s", name, kind)
        return False
    if handler is not None:
        try:
            handler(host, name, op)
        except Exception as e:  # kept for the next call; the caller's own verb goes on
            from .hooks import _log
            _log(paths.root, name, f"recovery of an interrupted {kind} failed: {e}")
            return False
    end(paths, name)
    with contextlib.suppress(FileNotFoundError):
        remove_stale_tmp(paths.instance_dir(name))  # a record write cut short
    host.events.emit("instance-recovered", name, op=str(kind))
    return True


# -- handlers --------------------------------------------------------------------------------------

def _record(host: Host, name: str) -> record.InstanceRecord | None:
    try:
        return record.load(host.paths, name)
    except FileNotFoundError:
        return None


def _pool(host: Host, pool: str) -> Any:
    try:
        return host.pool(pool)
    except (NotFound, LxdlibError):
        return None


def _remove_state(volume: Path) -> None:
    target = volume / STATE_DIR
    if os.path.lexists(target) and not target.is_symlink():
        shutil.rmtree(target, ignore_errors=True)


def _snapshot(host: Host, name: str, op: dict[str, Any]) -> None:
    """A snapshot create or delete: the record decides; an unrecorded volume goes."""
    rec = _record(host, name)
    if rec is None:
        return
    pool = _pool(host, rec.pool)
    if pool is None:
        return
    snap = str(op.get("snapshot") or "")
    if snap and rec.snapshot(snap) is None:
        with contextlib.suppress(NotFound):
            pool.delete_snapshot(name, snap)
    if op.get("stateful"):  # a dump into the live volume of a running instance: never kept
        _remove_state(pool.volume_path("containers", name))
    pool.cleanup_leftovers()


def _snapshot_rename(host: Host, name: str, op: dict[str, Any]) -> None:
    rec = _record(host, name)
    if rec is None:
        return
    pool = _pool(host, rec.pool)
    old, new = str(op["old"]), str(op["new"])
    if pool is None or rec.snapshot(new) is not None:
        return  # committed
    have = set(pool.list_snapshots(name))
    if new in have and old not in have:
        pool.rename_snapshot(name, new, old)


def _rename(host: Host, name: str, op: dict[str, Any]) -> None:
    """An instance rename: forward once the directory moved, back before that."""
    from .copy import finish_rename
    finish_rename(host, name, str(op["old"]), str(op["new"]), str(op.get("pool") or ""))


def _move_pool(host: Host, name: str, op: dict[str, Any]) -> None:
    """The record names the pool that holds the instance; the other one's copy goes."""
    rec = _record(host, name)
    src, dst = str(op["source"]), str(op["target"])
    current = rec.pool if rec is not None else src
    other = dst if current == src else src
    pool = _pool(host, other)
    if pool is not None:
        pool.delete_instance_volume(name)
        pool.cleanup_leftovers()
    here = _pool(host, current)
    if here is not None:
        here.cleanup_leftovers()
    if rec is not None:  # the liblxc config may already name the other pool's volume
        from .instance import Instance
        Instance(host, name)._write_lxc_config(rec)


def _new_instance(host: Host, name: str, op: dict[str, Any]) -> None:
    """A copy or an import into a new instance that has no record yet: what it made on the
    target pool (snapshots first, so the caller's search for the live volume may miss them)
    and the temporary volumes of the dead process go; the caller removes the directory."""
    target = _pool(host, str(op.get("target_pool") or ""))
    if target is not None and _record(host, name) is None:
        target.delete_instance_volume(name)
    for pname in op.get("pools") or []:
        pool = _pool(host, str(pname))
        if pool is not None:
            pool.cleanup_leftovers()
    for extra in op.get("files") or []:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(str(extra))


def _refresh(host: Host, name: str, op: dict[str, Any]) -> None:
    from .copy import finish_refresh
    finish_refresh(host, name, op)


def _temp_snapshot(host: Host, name: str, op: dict[str, Any]) -> None:
    """An export or a copy that took a temporary snapshot of a running instance."""
    rec = _record(host, name)
    pool = _pool(host, rec.pool) if rec is not None else None
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
        shutil.rmtree(str(extra), ignore_errors=True)


def _stop_stateful(host: Host, name: str, op: dict[str, Any]) -> None:
    """A stateful stop that died: a dump that did not complete is worthless."""
    from . import runtime
    rec = _record(host, name)
    pool = _pool(host, rec.pool) if rec is not None else None
    if pool is None:
        return
    vol = pool.volume_path("containers", name)
    c = runtime.open_container(host.paths.lxcpath, name)
    if c.state != "STOPPED" or not (vol / STATE_DIR / ".complete").exists():
        _remove_state(vol)


_HANDLERS: dict[str, Recoverer] = {
    "snapshot": _snapshot,
    "snapshot-rename": _snapshot_rename,
    "rename": _rename,
    "move-pool": _move_pool,
    "copy": _new_instance,
    "import": _new_instance,
    "refresh": _refresh,
    "temp-snapshot": _temp_snapshot,
    "stop-stateful": _stop_stateful,
}


def recover_with_lock(host: Host, name: str) -> bool:
    """Recover ``name`` if no live process holds its lock (used when scanning all instances)."""
    try:
        with lock(host.paths, "instance", name, timeout=0):
            return recover(host, name)
    except LxdlibError:
        return False
