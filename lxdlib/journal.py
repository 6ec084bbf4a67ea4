"""Intent records: how a multi-step operation on one instance survives a ``kill -9``.

Before its first change, an operation that touches several things (a snapshot: a pool volume and
the record; a restore: the stop, the volume swap, the record and the start again; a move between
pools; a copy (but a lone clone into place) or an import into a new instance; a config or device
change of a running instance: the record, then the live cgroups and devices; a profile edit, on
each instance using it) writes
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
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import TYPE_CHECKING, CorruptRecord, DiskFull, LxdlibError
from .logs import get_logger
from .state import (
    Paths,
    RecordNotAFile,
    atomic_write,
    encode_record,
    exchange_if_loaded,
    lock,
    read_record,
    remove_stale_tmp,
    unlink_record,
)

if TYPE_CHECKING:
    from typing import Any, Protocol

    class Site(Protocol):
        """What recovery needs of the root it runs in (``lxdlib.context.Context`` is one); the
        journal sits below the operations and their context, so it names only this much."""

        @property
        def paths(self) -> Paths: ...

        @property
        def events(self) -> Any: ...

    #: ``recoverer(context, name, intent)``: finishes or undoes one kind of operation. The context
    #: is the registering module's own type (a ``Context``), hence ``Any`` here.
    Recoverer = Callable[[Any, str, dict[str, Any]], None]

    #: ``leftover(context, name) -> bool``: settles an instance directory left without a record.
    Leftover = Callable[[Any, str], bool]

log = get_logger(__name__)


PENDING = ".pending.yaml"
#: The file of the last intent that ended, rewritten by the next one instead of a new file:
#: making a file allocates an inode, which on a busy ext4 costs up to a millisecond — more than
#: everything else an intent costs, paid by every snapshot, restore and copy.
SPARE = ".pending.spare"
#: Left in the instance's directory by the liblxc ``post-stop`` hook every instance has
#: (``hooklog.stop_marker_command``) when its container stopped for good — a ``poweroff``,
#: ``halt`` or exit of its init, a kill — rather than rebooted. It holds the pid of the init
#: that stopped. No lxdlib process may be around then, so the record still says RUNNING:
#: the next call that takes the instance's lock (``recover``) folds it into the record.
#: Also the kind under which the instance layer registers that fold (no intent has it).
STOPPED_INSIDE = "stopped-inside"
#: The mark of an intent whose operation froze the running instance (a file-by-file read of
#: its volume): whatever its kind, its recovery first thaws the instance (the instance layer
#: registers that under this kind, which no intent has).
FROZEN = "frozen"
#: The mark of an intent written inside a restart (``RESTART_KIND``'s intent, which says
#: ``restart``; see ``nested``): after its own recovery the instance is started again, as the
#: restart's recovery does (registered under ``RESTART_KIND`` by the instance layer).
RESTART = "restart"
RESTART_KIND = "stop"
#: Where a CRIU dump lives inside an instance volume (beside ``rootfs/``, out of the guest's view).
STATE_DIR = "state"

#: Test-only: the step boundary at which this process kills itself (``LXDLIB_CRASHPOINT``), read
#: once at import so that an unset variable costs one comparison per boundary.
_CRASHPOINT = os.environ.get("LXDLIB_CRASHPOINT") or None


def crashpoint(name: str) -> None:
    """A step boundary of a multi-step operation: with ``LXDLIB_CRASHPOINT=name`` the process
    dies here by ``SIGKILL``, as a ``kill -9`` would, so crash tests hit exact points."""
    if _CRASHPOINT is not None and name == _CRASHPOINT:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


def register(kind: str, recoverer: Recoverer) -> None:
    """Let the module that defines an operation say how to finish or undo it after a kill.

    The journal sits below the operations and never imports them: ``lxdlib.instances`` imports
    every module that registers, at once or through ``register_loader``, so the table is full
    wherever an ``Instance`` (and so a ``Host``) exists to recover with.
    """
    _HANDLERS[kind] = recoverer


def register_loader(load: Callable[[], None]) -> None:
    """``load()`` imports modules that ``register`` recoverers: called the first time an intent
    of a kind not yet registered is found. The operations no verb on one instance runs
    (snapshots, copies, restores) are recovered after a kill without their modules being part
    of every command's start (~0.7 ms: ``lxdlib.instances``)."""
    _LOADERS.append(load)


def recoverer(kind: str) -> Recoverer | None:
    """The recoverer of an interrupted ``kind`` (None if none is registered, even after the
    loaders ran)."""
    if kind not in _HANDLERS:
        for load in _LOADERS:  # each time: another thread may be amid the same imports
            load()
    return _HANDLERS.get(kind)


def register_leftover(handler: Leftover) -> None:
    """The instance layer's way to settle a directory a killed create or delete left."""
    _LEFTOVER.append(handler)


def recover_leftover(site: Site, name: str) -> bool:
    """Settle what a killed process left on ``name`` (the caller holds its lock)."""
    return any(handler(site, name) for handler in _LEFTOVER[:1])


_HANDLERS: dict[str, Recoverer] = {}
_LOADERS: list[Callable[[], None]] = []
_LEFTOVER: list[Leftover] = []


def path(paths: Paths, name: str) -> Path:
    return paths.instance_dir(name) / PENDING


def begin(paths: Paths, name: str, op: str, **details: Any) -> None:
    """Record the intent of ``op`` on instance ``name`` before its first change.

    A first intent is written whole into the file the last one left (``SPARE``) and renamed
    into place; where there is none yet it is written in place with one ``write``, as JSON
    (``state.encode_record``) ending with ``"end": true}``: cut short, it is neither JSON nor
    YAML (an unclosed flow mapping) and means "nothing started yet" (as does an intent of an
    older version, written as YAML, that lacks its last line ``end: true``). A later stage
    of the same operation is written into the spare and swapped with the earlier stage in one
    ``rename`` (``RENAME_EXCHANGE``), so the earlier stage stays readable until then. The
    caller holds the instance's lock, so no other intent is written meanwhile.
    """
    text = encode_record({"op": op, "pid": os.getpid(), **details, "end": True})
    target = path(paths, name)
    spare = target.with_name(SPARE)
    later = os.path.lexists(target)
    if later:  # a later stage: written into the spare, then swapped with the earlier one
        try:
            fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:  # not a plain file: a new file renamed over the earlier stage
            atomic_write(target, text, durable=False)
            return
        written = spare
    else:
        try:
            fd = os.open(spare, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            written = spare
        except OSError:  # none yet (or not a plain file): a new one
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW |
                         os.O_CLOEXEC, 0o600)
            written = target
    try:
        # The spare is overwritten in place and cut to the new length, not emptied first:
        # emptying frees its block, which ext4 journals (measured: a third of a millisecond
        # while the last commit is written). The spare is read by no one until it is renamed.
        size = os.fstat(fd).st_size if written is spare else 0
        view = memoryview(text)
        offset = 0
        while offset < len(text):  # the closing brace comes last: any prefix reads as cut short
            offset += os.pwrite(fd, view[offset:], offset)
        if size > len(text):
            os.ftruncate(fd, len(text))
    except OSError as e:
        os.close(fd)
        # a cut-short first intent means "nothing started": nothing to keep; a later stage
        # leaves the earlier one in place
        os.unlink(written)
        if DiskFull.is_full(e):
            raise DiskFull(target, "the operation's intent record") from None
        raise
    os.close(fd)
    if later:
        if not exchange_if_loaded(spare, target):
            os.replace(spare, target)
    elif written is spare:
        os.rename(spare, target)


@contextlib.contextmanager
def nested(paths: Paths, name: str, op: str, **details: Any) -> Iterator[None]:
    """The intent of ``op``, a step of the operation whose intent is under way on ``name``
    (if any; the caller holds the lock): that intent's ``restart`` is carried along, so a
    kill -9 in the step is recovered as the step and then as the restart around it (a move
    of a running instance: the send in the middle of its stop and start), and it is written
    back after the step, whatever happens. Without an outer intent, it ends with the step."""
    outer = read(paths, name)
    carried = {RESTART: outer[RESTART]} if outer and outer.get(RESTART) is not None else {}
    begin(paths, name, op, **details, **carried)
    try:
        yield
    finally:
        if outer is None:
            end(paths, name)
        else:
            back = {k: v for k, v in outer.items() if k not in ("op", "pid", "end")}
            now = read(paths, name)
            if carried and (now is None or now.get(RESTART) is None):
                back.pop(RESTART)  # the step gave it up (``drop_restart``): for good
            begin(paths, name, str(outer["op"]), **back)


def drop_restart(paths: Paths, name: str) -> Any:
    """From here on neither a kill -9 nor the caller's own failure must start the instance
    again (the caller holds its lock): a move is sending its last word, after which the far
    side may have the instance running — two would run. The intent under way keeps
    everything else. Returns what was dropped, for ``keep_restart``."""
    current = read(paths, name)
    if current is None or current.get(RESTART) is None:
        return None
    begin(paths, name, str(current["op"]),
          **{k: v for k, v in current.items() if k not in ("op", "pid", "end", RESTART)})
    return current[RESTART]


def keep_restart(paths: Paths, name: str, restart: Any) -> None:
    """Undo ``drop_restart`` (``restart``: what it returned): the far side answered that it
    does not have the instance (its error, or no commit), so it is started here again."""
    current = read(paths, name)
    if current is not None and restart is not None:
        begin(paths, name, str(current["op"]),
              **{k: v for k, v in current.items() if k not in ("op", "pid", "end")},
              **{RESTART: restart})


def restarts(paths: Paths, name: str) -> bool:
    """Whether the intent under way still says to start the instance again (``RESTART``,
    not given up by ``drop_restart``)."""
    current = read(paths, name)
    return current is not None and current.get(RESTART) is not None


def prepare(paths: Paths, name: str) -> None:
    """Give a new instance's directory the file its intents are written into (``SPARE``), made
    with the directory rather than by its first snapshot, restore or copy."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path(paths, name).with_name(SPARE), os.O_WRONLY | os.O_CREAT |
                         os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))


def end(paths: Paths, name: str) -> None:
    """The operation reached its commit point (or undid itself): forget the intent, keeping
    its file as the next intent's ``SPARE``."""
    target = path(paths, name)
    try:
        os.replace(target, target.with_name(SPARE))
    except FileNotFoundError:
        pass
    except OSError:  # the spare's name is taken by something else: drop the intent instead
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)


def read(paths: Paths, name: str) -> dict[str, Any] | None:
    try:
        data = read_record(path(paths, name))
    except FileNotFoundError:
        return None
    except LxdlibError:  # a symlink or a directory planted in place of the file: dropped
        target = path(paths, name)
        try:
            unlink_record(target)
        except RecordNotAFile:  # a directory that holds something is the user's to look at
            raise CorruptRecord("instance", name, target,
                                "its intent record is a directory that is not empty: "
                                "remove it") from None
        return None
    except Exception:  # half-written: the process died while writing the intent itself
        return {"op": "unknown"}
    if not isinstance(data, dict) or data.get("end") is not True:
        return {"op": "unknown"}  # cut short before its first change: nothing to undo
    return data


def stopped_marker(paths: Paths, name: str) -> Path:
    return paths.instance_dir(name) / STOPPED_INSIDE


def pending(paths: Paths, name: str) -> bool:
    """Whether ``recover`` has something to do: an intent, or a stop from inside to record
    (one more ``lstat`` per lock taken, and only when there is no intent)."""
    d = paths.instance_dir(name)
    return os.path.lexists(d / PENDING) or os.path.lexists(d / STOPPED_INSIDE)


def recover(ctx: Site, name: str) -> bool:
    """Finish or undo what a killed process left on ``name``, then record a stop from inside
    (``STOPPED_INSIDE``); True if an interrupted operation was found.

    The caller holds the instance lock. The intent is removed only once the instance is
    consistent again; a recovery that fails leaves it for the next call.
    """
    done = _recover_intent(ctx, name)
    if os.path.lexists(stopped_marker(ctx.paths, name)):
        fold = recoverer(STOPPED_INSIDE)
        if fold is not None:
            try:
                fold(ctx, name, {})
            except Exception as e:  # kept for the next call, as an intent is
                log.warning("instance %s: recording its stop from inside failed: %s", name, e)
    return done


def _recover_intent(ctx: Site, name: str) -> bool:
    paths = ctx.paths
    op = read(paths, name)
    if op is None:
        return False
    kind = op.get("op")
    handler = recoverer(str(kind)) if kind != "unknown" else None
    if handler is None and kind != "unknown":  # kept: a recoverer that was not registered
        log.error("instance %s: no recovery is registered for an interrupted %s", name, kind)
        return False
    if handler is not None:
        try:
            thaw = recoverer(FROZEN) if op.get(FROZEN) else None
            if thaw is not None:
                thaw(ctx, name, op)
            handler(ctx, name, op)
            if kind != RESTART_KIND and op.get(RESTART) is not None:
                resume = recoverer(RESTART_KIND)
                if resume is not None:
                    resume(ctx, name, {"op": RESTART_KIND, RESTART: op[RESTART]})
        except Exception as e:  # kept for the next call; the caller's own verb goes on
            log.warning("instance %s: recovery of an interrupted %s failed: %s", name, kind, e)
            return False
    end(paths, name)
    with contextlib.suppress(FileNotFoundError):
        remove_stale_tmp(paths.instance_dir(name))  # a record write cut short
    ctx.events.emit("instance-recovered", name, op=str(kind))
    return True


def recover_with_lock(ctx: Site, name: str) -> bool:
    """Recover ``name`` if no live process holds its lock (used when scanning all instances)."""
    try:
        with lock(ctx.paths, "instance", name, timeout=0):
            return recover(ctx, name)
    except LxdlibError:
        return False
