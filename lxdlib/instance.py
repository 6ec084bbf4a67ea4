"""Instances: the model users hold, and the orchestration behind each verb.

An ``Instance`` is a name plus a host: every property is read live (state from liblxc, config
from the record), so nothing goes stale between calls — the most reported complaint about pylxd
and docker-py. Every verb takes the instance's lock, so several processes can drive one root.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from . import idmap, journal, livestate, record, runtime
from .config import expand, limits, names
from .config.ids import random_uuid
from .config.text import check_description, check_flag
from .config.units import parse_size
from .errors import (
    TYPE_CHECKING,
    AlreadyExists,
    Busy,
    CorruptRecord,
    ExecError,
    InvalidArgument,
    InvalidConfig,
    LXCError,
    LxdlibError,
    NetworkError,
    NotFound,
    StorageError,
    WrongState,
)
from .execresult import ExecResult
from .listing import STATUS, global_addresses
from .logs import get_logger
from .record import InstanceRecord
from .state import (
    atomic_write,
    held,
    load_yaml,
    load_yaml_kept,
    lock,
    read_fd,
    read_record,
    remove_tree,
    swap_write,
)

if TYPE_CHECKING:
    from typing import Any

    from . import render
    from .context import Context
    from .devices import DeviceContext
    from .state import Paths
    from .storage.base import PoolDriver

log = get_logger(__name__)

SECCOMP_FILE = "seccomp.policy"  # an instance's own policy (security.syscalls.*, raw.seccomp)

#: An instance's config and devices composed from its profiles and local settings.
Expanded = tuple[dict[str, str], dict[str, dict[str, str]]]


def random_mac() -> str:
    import secrets  # here: secrets loads OpenSSL (~2 ms at start-up), for new MACs only
    b = secrets.token_bytes(3)
    return "00:16:3e:" + ":".join(f"{x:02x}" for x in b)


#: How many random MACs ``fresh_mac`` draws before it gives up on a network that full.
MAC_TRIES = 64


def fresh_mac(ctx: Context, dev: Mapping[str, str]) -> str:
    """A new MAC for the nic ``dev``: random in LXD's 00:16:3e range, and on a managed network
    one no other nic of that network holds. Three random bytes meet an earlier draw often
    enough at scale (about one fill of 1,000 instances in 34), and the network refuses the
    second holder of a MAC when its nic is rendered, which would fail that create."""
    network = dev.get("network")
    for _ in range(MAC_TRIES):
        mac = random_mac()
        if not network or ctx.networks.mac_holder(network, mac) is None:
            return mac
    raise NetworkError(f"no free MAC address found on network {network!r} after "
                       f"{MAC_TRIES} tries")


class RenderedConfig:
    """A liblxc config rendered (and checked) for writing: the file's bytes, the instance's
    own seccomp policy (None: the root's shared one), and whether the file already holds
    those bytes."""

    __slots__ = ("policy", "text", "unchanged")

    def __init__(self, text: bytes, policy: bytes | None, unchanged: bool) -> None:
        self.text, self.policy, self.unchanged = text, policy, unchanged


class InstanceCore:
    """A container of one host. Cheap to make; all state is read when asked."""

    def __init__(self, ctx: Context, name: str) -> None:
        self.ctx = ctx
        self.name = name

    # -- identity and representation -------------------------------------------------------
    def __repr__(self) -> str:
        return f"<Instance {self.name!r} {self.status.lower()}>"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, InstanceCore) and other.name == self.name
                and other.ctx.paths == self.ctx.paths)

    def __hash__(self) -> int:
        return hash((self.name, self.ctx.paths.root))

    def _repr_html_(self) -> str:
        from .notebook import instance_html
        return instance_html(self)

    # -- internals --------------------------------------------------------------------------
    @property
    def _paths(self) -> Any:
        return self.ctx.paths

    @property
    def _dir(self) -> Path:
        path: Path = self._paths.instance_dir(self.name)
        return path

    def _c(self) -> runtime.Container:
        return runtime.open_container(self._paths.lxcpath, self.name)

    def handle(self) -> runtime.Container:
        """liblxc's view of this instance, opened once for several reads (state, pid, cgroup
        counters) that should agree with each other, as a listing needs."""
        return self._c()

    def usage(self, handle: runtime.Container | None = None, pid: int = -1) -> dict[str, Any]:
        """Memory, CPU time and process count from the instance's cgroup (running only).
        ``pid``: its init, where the caller knows it (a listing has it from the kernel's view):
        liblxc is then opened only for a counter ``/proc/<pid>/cgroup`` does not lead to,
        rather than asked for the pid (a round trip to the monitor) by every instance."""
        if pid > 0:
            return cgroup_usage(self.name, pid, lambda: handle or self._c())
        c = handle or self._c()
        return cgroup_usage(c.name, c.init_pid, lambda: c)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        nested = held(self._paths, "instance", self.name)
        with lock(self._paths, "instance", self.name):
            from . import journal
            # a killed process's unfinished work; when nested, any pending intent is our own
            if not nested and journal.pending(self._paths, self.name):
                journal.recover(self.ctx, self.name)
            yield

    @contextlib.contextmanager
    def _lock_present(self) -> Iterator[None]:
        """``_lock``, for a verb on an instance that must exist: one deleted, renamed or moved
        between the caller's look-up and this lock is ``NotFound`` (liblxc takes a name
        without a directory for a stopped instance, so the verb went on to fail untyped or
        to say that it was stopped)."""
        with self._lock():
            if not record.exists(self._paths, self.name):
                raise NotFound("instance", self.name)
            yield

    def settle(self) -> None:
        """Take the instance's lock and let go: what a killed process left is finished or
        undone, and a stop from inside is recorded (``journal.recover``). For readers of the
        record that take no lock themselves (``Host.autostart``) when ``journal.pending``."""
        with self._lock():
            pass

    def record(self) -> InstanceRecord:
        try:
            return record.load(self._paths, self.name)
        except FileNotFoundError:
            raise NotFound("instance", self.name) from None

    def _pool(self, rec: InstanceRecord | None = None) -> PoolDriver:
        rec = rec or self.record()
        return self.ctx.pool(rec.pool)

    @property
    def volume(self) -> Path:
        path: Path = self._pool().volume_path("containers", self.name)
        return path

    # -- live properties --------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return record.exists(self._paths, self.name)

    @property
    def state(self) -> str:
        """liblxc's state: RUNNING, STOPPED, FROZEN, …; ERROR when liblxc cannot load the
        instance's config (``error`` says why), so a listing never fails on one instance.

        A running instance is seen from the kernel first (``livestate.of``: its payload cgroup
        holds an init whose parent is its monitor), as a listing sees it; liblxc (a handle, a
        config load and a round trip to the monitor; in a new process its binding) is asked
        only where that proves nothing, so a stopped or broken instance is judged by
        liblxc as before."""
        live = livestate.of(self._paths.lxcpath, self.name)
        if live is not None:
            return live.state
        if livestate.monitor_listens(self._paths.lxcpath, self.name) is not False:
            return self._asked_within()[0]
        try:
            c = self._c()
        except LXCError:
            return "ERROR"
        return runtime.state(c)

    def _asked_within(self) -> tuple[str, int, str | None]:
        """liblxc's state, pid and error of an instance whose monitor listens but which the
        kernel's view does not show running (starting, stopping), asked with a bound
        (``runtime.states_within``): a monitor stuck in a hook answers nobody, and this
        instance's ``info``, or a walk over every instance's ``status``, must not hang on it
        (``ERROR`` then)."""
        return runtime.states_within(self._paths.lxcpath, [self.name])[self.name]

    @property
    def error(self) -> str | None:
        """Why the instance is unusable (unreadable record, config liblxc refuses), or None."""
        try:
            self.record()
            self._c()
        except NotFound:
            raise
        except LxdlibError as e:
            return str(e)
        return None

    @property
    def status(self) -> str:
        """LXD's spelling: Running, Stopped, Frozen."""
        state = self.state  # once: each ask may be a round trip to the monitor
        return STATUS.get(state, state.title())

    @property
    def running(self) -> bool:
        return self.state in ("RUNNING", "FROZEN")

    @property
    def pid(self) -> int:
        """The host pid of its init; -1 when it is not running (seen as ``state`` is)."""
        live = livestate.of(self._paths.lxcpath, self.name)
        if live is not None:
            return live.pid
        if livestate.monitor_listens(self._paths.lxcpath, self.name) is not False:
            return self._asked_within()[1]
        pid: int = self._c().init_pid
        return pid

    @property
    def config(self) -> dict[str, str]:
        return dict(self.record().config)

    @property
    def devices(self) -> dict[str, dict[str, str]]:
        return {k: dict(v) for k, v in self.record().devices.items()}

    @property
    def profiles(self) -> list[str]:
        return list(self.record().profiles)

    @property
    def description(self) -> str:
        return self.record().description

    @property
    def ephemeral(self) -> bool:
        return self.record().ephemeral

    @property
    def architecture(self) -> str:
        return self.record().architecture

    @property
    def created_at(self) -> dt.datetime:
        return self.record().created_at

    def expanded(self, rec: InstanceRecord | None = None
                 ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        rec = rec or self.record()
        try:
            return self.ctx.expand(rec.profiles, rec.config, rec.devices)
        except NotFound as e:
            if e.kind != "profile" or e.name not in rec.profiles:
                raise
            how = (f"instance {self.name!r} names it; remove it from the instance "
                   f"(profile remove {self.name} {e.name}) or create it again")
            raise NotFound("profile", e.name, how, repair=True) from None

    def _expanded_present(self, rec: InstanceRecord
                          ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """The expansion with only the profiles that exist: where a record names one that is
        gone (deleted by hand, or by an older version racing a change), what a delete or a
        change of the profile list starts from, so the instance stays deletable and
        repairable rather than stuck on the missing profile."""
        try:
            return self.expanded(rec)
        except NotFound:
            present = [p for p in rec.profiles if self.ctx.profiles.exists(p)]
            return self.ctx.expand(present, rec.config, rec.devices)

    def _readable_profile(self, name: str) -> bool:
        try:
            self.ctx.profiles.get(name)
        except (NotFound, CorruptRecord):
            return False
        return True

    @property
    def expanded_config(self) -> dict[str, str]:
        return self.expanded()[0]

    @property
    def expanded_devices(self) -> dict[str, dict[str, str]]:
        return self.expanded()[1]

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, stateless: bool = False) -> None:
        """Start a stopped instance, or resume a frozen one (as ``lxc start`` does).
        ``stateless`` (``lxc start --stateless``): the processes a stateful stop saved are
        dropped and the instance boots afresh."""
        with self._lock_present():
            c = self._c()
            st = c.state
            if st == "FROZEN":
                runtime.unfreeze(c, self._paths.lxcpath)
                self.ctx.events.emit("instance-resumed", self.name)
                return
            if st != "STOPPED":
                raise WrongState(f"The instance {self.name!r} is already running", state=st)
            if stateless and self.has_saved_state():
                from . import criu  # as ``has_saved_state``
                saved = self.volume / journal.STATE_DIR
                (saved / criu.COMPLETE).unlink()  # first: a kill -9 leaves no half dump
                remove_tree(saved)
            # the record says RUNNING before liblxc starts it (so that a kill -9 after the
            # start leaves it right): a kill -9 before the start has taken would leave a
            # stopped instance recorded running, which ``autostart`` would start at the next
            # boot. The intent lets the next call set the record by what happened.
            journal.begin(self._paths, self.name, "start")
            try:
                self._start_locked()
            finally:
                journal.end(self._paths, self.name)

    def _volume_locks(self, devs: Mapping[str, Mapping[str, str]], starting: bool = False
                      ) -> contextlib.AbstractContextManager[None]:
        """For a start or a hot-plug (the caller holds the instance's lock): the locks of the
        custom volumes in ``devs``, held until liblxc has answered (or the mount is made), so
        that a restore of one (or a shift of its files to another id map), which refuses
        running users under the volume's lock, is not undercut by a start between its check
        and its change (``volumes.start_locks``, which states the lock order). ``starting``:
        liblxc starts the instance under them, and its start-host hook is told so. An
        instance without one pays a look at its devices."""
        if not any(d.get("type") == "disk" and d.get("pool") and d.get("source")
                   for d in devs.values()):
            return contextlib.nullcontext()
        from . import volumes  # here: only a start of a volume's user needs it
        return volumes.start_locks(self._paths, devs, self.name if starting else None)

    def _start_locked(self) -> None:
        rec = self.record()
        expanded = self.expanded(rec)
        with self._volume_locks(expanded[1], starting=True):
            self._start_expanded(rec, expanded)

    def _start_expanded(self, rec: InstanceRecord,
                        expanded: Expanded) -> None:
        cfg, devs = expanded
        if cfg.get("security.protection.start", "").lower() in ("true", "1", "yes", "on"):
            raise WrongState(f"instance {self.name!r} is protected from starting "
                             "(security.protection.start)")
        self._check_kernel_modules(cfg)
        # a host-wide limit named, not failed on inside liblxc: the ptys here; a full bridge,
        # whose count grows with the instances, only if liblxc refuses the start (below)
        from . import hostlimits  # here: only a start reads the host's limits
        need = hostlimits.need_for([(cfg, devs)])
        hostlimits.check(need, bridges=False)
        redrawn = self._redraw_taken_macs(rec, devs)
        if redrawn:
            expanded = self.expanded(rec)
            cfg, devs = expanded
        # what nics removed or changed while it ran still held (see ``update``)
        self._keep_dhcp(devs)
        self._follow_idmap_keys(rec, cfg)
        self._write_lxc_config(rec, expanded, starting=True)
        # the host's subuid/subgid may have changed since the instance was made
        idmap.check_newuidmap(self.name, idmap.parse_lxc_idmap((self._dir / "config").read_text()))
        vol = self._pool(rec).volume_path("containers", self.name)
        if not vol.is_dir():  # said plainly, not as liblxc's "Failed to prepare rootfs"
            raise StorageError(f"cannot start instance {self.name!r}: its volume is missing "
                               f"from storage pool {rec.pool!r} ({vol})")
        if self.has_saved_state():  # stopped with --stateful: bring the processes back
            self.restore_saved_state()
            self.ctx.events.emit("instance-started", self.name)
            return
        meta = read_metadata(vol, self._paths.metadata_memos)
        trigger = rec.config.get("volatile.apply_template")
        if meta.get("templates"):
            from . import templates  # here: Jinja2 and the confined writer load for templates
            for t in ([trigger] if trigger else []) + ["start"]:
                templates.apply(vol, meta, t, self._template_context(rec), *self._root_owner(rec))
        if trigger:
            rec.config.pop("volatile.apply_template", None)
        # a stop from inside of an earlier run is this start's to forget (the record below
        # says RUNNING); done again once it runs, against the earlier run's post-stop hook,
        # which liblxc runs after it reports the instance stopped
        forget_stopped_inside(self._paths, self.name)
        _mark_running(rec, self._paths.root, devs)
        # durable only when templates or a new MAC changed the record; the power state is a hint
        record.save(self._paths, rec, durable=bool(trigger) or redrawn)
        journal.crashpoint("start.recorded")
        if not truthy(cfg.get("security.privileged")):
            self.ctx.check_traversable(vol)
        # a fresh liblxc object: one made before the config was rewritten would start the old one
        try:
            runtime.start(self._c(), self._paths.lxcpath)
        except LXCError as e:
            # it did not start (``runtime.start`` returns once liblxc says stopped): what the
            # record says of it must not make ``autostart`` start it at the next boot
            _mark_stopped(rec)
            record.save(self._paths, rec, durable=False)
            crossed = hostlimits.crossed_after_failure(need) if need.bridge_ports else None
            if crossed is not None:
                raise crossed from e
            from .hooklog import log_tail
            tail = log_tail(self._paths.root, self.name)
            if tail:
                raise LXCError(f"failed to start instance {self.name!r}",
                               f"{e.log_tail}\n--- lxdlib hooks ---\n{tail}") from None
            raise
        forget_stopped_inside(self._paths, self.name)
        self.ctx.events.emit("instance-started", self.name)

    def _redraw_taken_macs(self, rec: InstanceRecord,
                           devs: Mapping[str, Mapping[str, str]]) -> bool:
        """Draw again a MAC lxdlib drew (``volatile.<nic>.hwaddr``) that another nic of its
        network holds, rather than have the render refuse it: an import or a move keeps its
        archive's MACs (``commit_instance``), and an instance an older lxdlib made held its MAC
        only from its first start (the start). A MAC the user gave (``hwaddr``) is kept, and a
        clash refused by the render. One index read per
        nic; the render checks again under the network's lock. Returns whether one changed."""
        changed = False
        for dname, dev in devs.items():
            network = dev.get("network")
            key = f"volatile.{dname}.hwaddr"
            mac = rec.config.get(key)
            if dev.get("type") != "nic" or not network or dev.get("hwaddr") or not mac:
                continue
            if self.ctx.networks.mac_holder(network, mac) not in (None, f"{self.name}/{dname}"):
                new = fresh_mac(self.ctx, dev)
                log.info("instance %s: %s's MAC %s is held by another nic of network %s; "
                         "drew %s", self.name, dname, mac, network, new)
                rec.config[key] = new
                changed = True
        return changed

    def stop(self, force: bool = False, timeout: float = -1, stateful: bool = False) -> None:
        """Stop: ask init to halt and wait ``timeout`` s (<0: as long as it takes), or kill.

        A graceful stop that times out leaves the instance running and raises ``WrongState``,
        as LXD does; ``force=True`` kills at once. ``stateful`` saves the processes with CRIU
        for the next ``start`` (see ``lxdlib.criu``).
        """
        if stateful:
            self._stop_stateful()
            self.ctx.events.emit("instance-stopped", self.name)
            return
        with self._lock_present():
            c = self._c()
            if c.state == "STOPPED":
                raise WrongState(f"The instance {self.name!r} is already stopped",
                                 state="STOPPED")
            self._stop_locked(c, force, timeout)

    # -- stateful stop and start (CRIU) -------------------------------------------------------
    def has_saved_state(self) -> bool:
        """Whether a stateful stop left a complete dump for the next start."""
        from . import criu  # here, as below: only a stateful stop or start uses CRIU
        return (self.volume / journal.STATE_DIR / criu.COMPLETE).exists()

    def restore_saved_state(self) -> None:
        """Bring back the processes a stateful snapshot or stop saved in the live volume (the
        caller holds the lock); the dump is removed whatever happens (good for one restore)."""
        from . import criu
        state = self.volume / journal.STATE_DIR
        try:
            rec = self.record()
            with self._volume_locks(self.expanded(rec)[1], starting=True):  # as ``_start_locked``
                self._write_lxc_config(rec, starting=True)
                criu.restore(self._paths.lxcpath, self.name, state)
            forget_stopped_inside(self._paths, self.name)  # as ``_start_locked``
            rec = self.record()
            _mark_running(rec, self._paths.root, self.expanded(rec)[1])
            record.save(self._paths, rec, durable=False)
        finally:
            remove_tree(state)

    def _stop_stateful(self) -> None:
        """``lxc stop --stateful``: dump the processes and stop; ``start`` brings them back."""
        from . import criu
        paths = self._paths
        with self._lock_present():
            c = self._c()
            if c.state != "RUNNING":
                raise WrongState(f"The instance {self.name!r} is not running")
            rec = self.record()
            if rec.ephemeral:
                raise WrongState("Stateful stop of an ephemeral instance is not allowed: it "
                                 "would be deleted once stopped")
            criu.require()
            state = self.volume / journal.STATE_DIR
            if os.path.lexists(state):
                remove_tree(state)
            journal.begin(paths, self.name, "stop-stateful")
            try:
                criu.dump(paths.lxcpath, self.name, state, stop=True)
            finally:
                journal.end(paths, self.name)
            runtime.wait_state(c, {"STOPPED"}, 30)
            _mark_stopped(rec)
            record.save(paths, rec, durable=False)

    def _stop_locked(self, c: runtime.Container, force: bool, timeout: float, *,
                     restart: dict[str, Any] | None = None) -> None:
        """Stop, then record it. Between the two a ``kill -9`` would leave an instance that is
        stopped while its record says running (``autostart`` would start it at the next boot),
        an ephemeral one stopped and not deleted: the intent lets the next call finish the
        stop (``_recover_stop``). ``restart``: the details of a restart, which that call
        finishes by starting it again (the caller ends the intent after its start)."""
        journal.begin(self._paths, self.name, "stop", **({"restart": restart}
                                                          if restart is not None else {}))
        journal.crashpoint("stop.stopping")
        try:
            if force:
                runtime.kill(c, self._paths.lxcpath)
            elif not runtime.shutdown(c, self._paths.lxcpath, timeout):
                raise WrongState(f"instance {self.name!r} did not stop within {timeout}s; "
                                 "use force to kill it")
        except BaseException:
            journal.end(self._paths, self.name)  # still running: nothing to finish
            raise
        journal.crashpoint("stop.stopped")
        rec = self.record()
        _mark_stopped(rec)
        record.save(self._paths, rec, durable=False)
        # liblxc's stop returns after the post-stop hooks: the mark they left says what the
        # record says now
        forget_stopped_inside(self._paths, self.name)
        if restart is not None:
            return
        journal.end(self._paths, self.name)
        self.ctx.events.emit("instance-stopped", self.name)
        if rec.ephemeral:
            self._delete_locked(rec)

    def restart(self, force: bool = False, timeout: float = -1) -> None:
        with self._lock_present():
            if self._c().state == "STOPPED":
                raise WrongState(f"The instance {self.name!r} is not running", state="STOPPED")
            with self._stopped_meanwhile(force, timeout):
                pass
        self.ctx.events.emit("instance-restarted", self.name)

    @contextlib.contextmanager
    def stopped_meanwhile(self, force: bool = True, timeout: float = -1) -> Iterator[None]:
        """Hold the instance's lock and, if it runs, stop it for the body and start it again
        after (``publish --force``): a ``kill -9`` anywhere between is finished as an
        interrupted restart is (started again), and an ephemeral instance is neither deleted
        by that stop nor loses its flag. The body writes no intent of its own on it; it may
        delete it (a move that committed): then nothing is started."""
        with self._lock_present():
            if self._c().state == "STOPPED":
                yield
                return
            with self._stopped_meanwhile(force, timeout):
                yield

    @contextlib.contextmanager
    def _stopped_meanwhile(self, force: bool, timeout: float) -> Iterator[None]:
        """``restart`` with the body between its stop and its start; the caller holds the lock
        and has seen the instance running. The stop's intent says ``restart`` until the start
        is done, so the next call starts it again after a kill."""
        c = self._c()
        rec = self.record()
        ephemeral = rec.ephemeral
        if ephemeral:
            # an ephemeral instance would be deleted by its own stop (its post-stop hook
            # reads the record); the stop's intent, written before the flag goes, brings it
            # back after a kill -9 anywhere from here
            journal.begin(self._paths, self.name, "stop", restart={"ephemeral": True})
            rec.ephemeral = False
            record.save(self._paths, rec)
            journal.crashpoint("restart.unflagged")
        try:
            self._stop_locked(c, force, timeout, restart={"ephemeral": ephemeral})
        finally:
            if ephemeral:
                rec = self.record()
                rec.ephemeral = True
                record.save(self._paths, rec)
        journal.crashpoint("restart.stopped")
        failed = True
        try:
            yield
            failed = False
        finally:
            try:
                # not moved away meanwhile, nor past the point where a move's far side may
                # run it (``journal.drop_restart``: the move's failure then leaves it stopped,
                # as a kill does, not running beside the far side's)
                if record.exists(self._paths, self.name) and \
                        journal.restarts(self._paths, self.name):
                    try:
                        self._start_locked()
                    except LxdlibError as e:
                        if not failed:
                            raise
                        # the body's own error is the one to report
                        log.warning("instance %s: not started again: %s", self.name, e)
            finally:
                journal.end(self._paths, self.name)

    def pause(self) -> None:
        """Freeze every process (``lxc pause``); ``start`` resumes."""
        with self._lock_present():
            c = self._c()
            if c.state != "RUNNING":
                raise WrongState(f"instance {self.name!r} is not running", state=c.state)
            runtime.freeze(c, self._paths.lxcpath)
        self.ctx.events.emit("instance-paused", self.name)

    freeze = pause

    def resume(self) -> None:
        with self._lock_present():
            c = self._c()
            if c.state != "FROZEN":
                raise WrongState(f"instance {self.name!r} is not frozen", state=c.state)
            runtime.unfreeze(c, self._paths.lxcpath)
        self.ctx.events.emit("instance-resumed", self.name)

    unfreeze = resume

    def delete(self, force: bool = False) -> None:
        """Delete the instance, its volume and snapshots; a running one only with ``force``.

        An instance whose record cannot be read is deleted only with ``force`` (its record may
        be worth repairing); its volume is then found by asking the pools."""
        with self._lock():
            try:
                rec = self.record()
            except CorruptRecord as e:
                if not force:
                    raise WrongState(f"{e}; repair it, or delete the instance with force") from None
                if self.name in runtime.list_running(self._paths.lxcpath):
                    raise WrongState(f"{e}; the instance is running: stop it first") from None
                os.replace(self._paths.instance_record(self.name),
                           record.marker(self._paths, self.name, record.DELETING))
                recover_leftover(self.ctx, self.name)  # finds its volume in the pools
                return
            try:
                cfg, devs = self._expanded_present(rec)
            except CorruptRecord as e:  # a profile it names cannot be read
                if not force:
                    raise WrongState(f"{e}; repair it, or delete the instance with "
                                     "force") from None
                # what can be read: a protection only that profile gives is not known, as
                # for an instance whose own record cannot be read
                present = [n for n in rec.profiles if self._readable_profile(n)]
                cfg, devs = self.ctx.expand(present, rec.config, rec.devices)
            if cfg.get("security.protection.delete", "").lower() in ("true", "1", "yes", "on"):
                raise WrongState(f"instance {self.name!r} is protected from deletion "
                                 "(security.protection.delete)")
            if rec.pool:
                # a pool whose record cannot be read (CorruptRecord) refuses the delete before
                # its commit point: past it the instance is gone and its volume could not be
                # removed, an error after a change. A pool that is gone holds nothing to remove
                with contextlib.suppress(NotFound):
                    self.ctx.pool(rec.pool)
            try:
                c = self._c()
            except LXCError:
                # a broken instance can still be deleted, once nothing of it runs
                if self.name in runtime.list_running(self._paths.lxcpath):
                    raise
                c = None
            if c is not None and c.state != "STOPPED":
                if not force:
                    raise WrongState(f"The instance {self.name!r} is running, stop it first "
                                     "or use force", state="RUNNING")
                # the stop and the delete are one: a kill -9 between them left the instance
                # stopped and kept; the intent lets the next call finish the delete
                journal.begin(self._paths, self.name, "delete")
                try:
                    runtime.kill(c, self._paths.lxcpath)
                except BaseException:
                    journal.end(self._paths, self.name)  # still running: nothing to finish
                    raise
                journal.crashpoint("delete.stopped")
            _collect_ifbs(self.ctx, self.name, devs)
            self._delete_locked(rec)

    def _delete_locked(self, rec: InstanceRecord) -> None:
        # Commit point: once the record is renamed away the instance no longer exists.
        os.replace(self._paths.instance_record(self.name),
                   record.marker(self._paths, self.name, record.DELETING))
        finish_delete(self.ctx, self.name, rec.pool)

    # -- configuration ----------------------------------------------------------------------
    def update(self, *, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None,
               profiles: Sequence[str] | None = None, description: str | None = None) -> None:
        """Replace local config, devices, profiles or description (``lxc config edit``).

        Everything is validated first; nothing changes on a bad value. Live keys are applied to a
        running instance at once, the rest at its next start.
        """
        # here, as in create: the key and device rules (~1 ms to import) check a change, and
        # `exec` or `info` make none
        from .config import devices as devcfg
        from .config import schema
        if profiles is not None and not held(self._paths, "instance", self.name):
            wanted = list(profiles) if isinstance(profiles, (list, tuple)) else None
            if wanted is not None and all(isinstance(p, str) for p in wanted):
                def attempt(rec: InstanceRecord, locked: set[str] | None) -> set[str]:
                    more = _not_locked(set(wanted) - set(rec.profiles), locked)
                    if not more:
                        self.update(config=config, devices=devices, profiles=profiles,
                                    description=description)
                    return more
                self._with_added_profiles_locked(attempt)
                return
        with self._lock():
            rec = self.record()
            old_cfg, old_devs = self._expanded_present(rec)
            new = InstanceRecord.from_dict(rec.to_dict())
            if config is not None:
                schema.check_mapping(config)  # its keys are read before it is validated
                volatile = {k: v for k, v in rec.config.items() if k.startswith("volatile.")}
                # volatile keys are lxdlib's own state (MACs, id maps, the last power state):
                # an edit that repeats them (`config show` prints them) or leaves them out
                # keeps them, but a change is refused, never dropped in silence
                for k, v in config.items():
                    if k.startswith("volatile.") and volatile.get(k) != v:
                        raise InvalidConfig(k, "volatile keys are lxdlib's own state and "
                                               "cannot be set", str(v))
                user = {k: v for k, v in config.items() if not k.startswith("volatile.")}
                kept: dict[str, str] = {}
                if user.items() <= rec.config.items():
                    # only removals (`config unset`, an edit that drops keys): a key kept as
                    # the record holds it that no config may hold now (an image property an
                    # older lxdlib copied into image.*) stays until it is removed in turn; it
                    # made every unset of the others refused (LXD takes any image.* key)
                    kept = {k: user.pop(k) for k in schema.unholdable_keys(user)}
                new.config = {**schema.validate_instance_config(user), **kept, **volatile}
            if devices is not None:
                devcfg.check_devices_mapping(devices)
                new.devices = {n: devcfg.validate_device(n, d) for n, d in devices.items()}
            if profiles is not None:
                new.profiles = self.ctx.check_profiles(profiles)
            if description is not None:
                check_description(description)
                new.description = description
            new_cfg, new_devs = self.expanded(new)
            schema.check_combinations(new_cfg)  # rules across keys, profiles' included
            devcfg.validate_devices(new_devs)  # rules across devices: one disk per path…
            for dname, dev in new_devs.items():
                key = f"volatile.{dname}.hwaddr"
                if dev.get("type") == "nic" and not dev.get("hwaddr") and key not in new.config:
                    new.config[key] = fresh_mac(self.ctx, dev)  # stable from the first start
            # the balancer reads the other instances' configs: once, for the render and the live
            # write, and only for a CPU count
            cpus = self.ctx.pick_cpus(self.name, new_cfg)
            root_name, root = expand.root_disk(new_devs)
            if root.get("pool", rec.pool) != rec.pool:
                raise InvalidConfig(f"devices.{root_name}.pool",
                                    "the root disk's pool cannot change (use move -s)")
            # the intent: before the record (the commit point) the old record comes back;
            # after it, the running instance is brought to the new one (see _recover_update)
            intent = {"old": rec.to_dict(), "before": {"config": old_cfg, "devices": old_devs}}
            # a nic removed, moved or given another address: its static DHCP entry must go
            # (the render writes the new ones; the others are looked for only then, as they
            # cost a look per network)
            nics_moved = _dhcp_view(old_devs) != _dhcp_view(new_devs)
            journal.begin(self._paths, self.name, "update", stage="prepare", **intent)
            try:
                journal.crashpoint("update.begun")
                self._apply_quota(new_devs, rec, old_devs)
                # renders the devices: a missing source fails unsaved
                self._write_lxc_config(new, (new_cfg, new_devs), cpus)
                journal.crashpoint("update.config-written")
                record.save(self._paths, new)
                journal.crashpoint("update.saved")
            except BaseException:
                with contextlib.suppress(Exception):
                    self._write_lxc_config(rec)  # the old nics' entries as they were
                if nics_moved:
                    self._keep_dhcp(old_devs)  # and none the refused render added
                journal.end(self._paths, self.name)
                raise
            running = self.state in ("RUNNING", "FROZEN")
            if running:
                journal.begin(self._paths, self.name, "update", stage="live", **intent)
                journal.crashpoint("update.live")
                try:
                    self._apply_live(old_cfg, new_cfg, cpus)
                    journal.crashpoint("update.live-config")
                    self._apply_devices_live(old_devs, new_devs, new, new_cfg)
                except BaseException:
                    # as LXD: a device change the running instance refused is not kept
                    with contextlib.suppress(Exception):
                        self._apply_live(new_cfg, old_cfg)
                    record.save(self._paths, rec)
                    self._write_lxc_config(rec)
                    if nics_moved:
                        self._keep_dhcp(old_devs)
                    journal.end(self._paths, self.name)
                    raise
            if nics_moved and not running:
                # before the intent ends: a kill first leaves its recovery to do it. A running
                # instance keeps its nics as they were until its next start (but for a
                # secured one removed, unplugged at once), and their addresses with them:
                # its start drops what they no longer claim
                self._keep_dhcp(new_devs)
            journal.end(self._paths, self.name)
        self.ctx.events.emit("instance-updated", self.name)

    def modify(self, change: Callable[[InstanceRecord], None]) -> None:
        """Read-modify-write: ``change`` edits a copy of the record read under the lock (its
        config, devices, profiles, description), then ``update`` validates, saves and applies
        it live. Two concurrent ``modify`` calls therefore both land: neither writes back a copy
        read before the other's change (the lost update of ``inst.config`` … ``update``)."""
        def attempt(rec: InstanceRecord, locked: set[str] | None) -> set[str]:
            draft = InstanceRecord.from_dict(rec.to_dict())
            change(draft)
            more = _not_locked(set(draft.profiles) - set(rec.profiles), locked)
            if not more:
                self.update(config=draft.config if draft.config != rec.config else None,
                            devices=draft.devices if draft.devices != rec.devices else None,
                            profiles=draft.profiles if draft.profiles != rec.profiles else None,
                            description=(draft.description
                                         if draft.description != rec.description else None))
            return more
        self._with_added_profiles_locked(attempt)

    def _with_added_profiles_locked(
            self, attempt: Callable[[InstanceRecord, set[str] | None], set[str]]) -> None:
        """Make a change that may add profiles to the record holding the locks of the
        profiles it adds, taken (in name order) before the instance's, as a profile edit
        takes them.

        A profile edit re-applies itself to the instances whose records name it. An instance
        that took the profile on under its own lock alone composed it as it was then: one
        that committed after the edit had looked for users ran on the old content (its
        liblxc config, its running cgroups) while the profile said otherwise.
        ``attempt(record, locked)``, called under the instance's lock with the record read
        there, makes the change unless it adds profiles not in ``locked`` (None: a nested
        change, whose caller chose the locks), which it returns instead (the empty set once
        it made the change); then every lock is let go and taken again with them. Called
        with the instance's lock held (a change inside another), the change is made at once:
        the caller chose the locks."""
        if held(self._paths, "instance", self.name):
            with self._lock():
                attempt(self.record(), None)
            return
        locked: set[str] = set()
        while True:
            with contextlib.ExitStack() as stack:
                for p in sorted(locked):
                    stack.enter_context(lock(self._paths, "profile", p))
                with self._lock():
                    more = attempt(self.record(), locked)
            if not more:
                return
            locked |= more

    def set_config(self, key: str, value: str) -> None:
        def change(rec: InstanceRecord) -> None:
            rec.config[key] = value
        self.modify(change)

    def unset_config(self, key: str) -> None:
        if isinstance(key, str) and key.startswith("volatile."):  # see update()
            raise InvalidConfig(key, "volatile keys are lxdlib's own state and cannot be unset")

        def change(rec: InstanceRecord) -> None:
            if key not in rec.config:
                raise NotFound("config key", key, f"not set on instance {self.name!r}")
            del rec.config[key]
        self.modify(change)

    def _keep_dhcp(self, devices: Mapping[str, Mapping[str, str]],
                   since: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Drop the static DHCP entries of this instance that its nics in ``devices`` (the
        expanded devices of the record that stands) do not claim: those a removed or moved
        nic, or a refused change's render, left. They would hold an address (and a MAC)
        against every other instance until this one is deleted. ``since``: the devices before
        a change, nothing looked for when no nic's network or address changed. Failing to is
        logged: the change itself stands, and the next change or the delete drops them."""
        if since is not None and _dhcp_view(since) == _dhcp_view(devices):
            return
        from .config.devices import dhcp_claims
        try:
            self.ctx.network_retain(self.name, dhcp_claims(self.name, devices))
        except Exception as e:
            log.warning("instance %s: cannot drop the DHCP entries of nics it no longer has: %s",
                        self.name, e)

    def _apply_quota(self, devs: Mapping[str, Mapping[str, str]], rec: InstanceRecord,
                     old: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Set the root volume's quota from the root disk's ``size`` (only when it changed)."""
        _, root = expand.root_disk(devs)
        size = root.get("size")
        if old is not None and expand.root_disk(old)[1].get("size") == size:
            return
        pool = self._pool(rec)
        pool.set_quota("containers", self.name, parse_size(size) if size else None)

    def _apply_live(self, old: Mapping[str, str], new: Mapping[str, str],
                    cpus: list[int] | None = None) -> None:
        """Write the cgroup changes of a config change to a running instance, in safe order."""
        changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
        if not changed:
            return
        facts = self.ctx.facts()
        # choosing CPUs reads the other instances' configs: only when the count changed
        if cpus is None and "limits.cpu" in changed:
            cpus = self.ctx.pick_cpus(self.name, new)
        writes = limits.live_settings(
            new, changed, cgroup_version=facts.cgroup_version, host_cpus=facts.cpus,
            mem_total=facts.mem_total, chosen_cpus=cpus,
            swap_accounting=facts.swap_accounting)
        c = self._c()
        for key, value in writes:
            runtime.cgroup_set(c, self._paths.lxcpath, key, value)

    def _check_kernel_modules(self, cfg: Mapping[str, str]) -> None:
        mods = [m.strip() for m in cfg.get("linux.kernel_modules", "").split(",") if m.strip()]
        if mods:
            from .kmod import ensure_loaded
            ensure_loaded(mods)

    def _follow_idmap_keys(self, rec: InstanceRecord, cfg: Mapping[str, str]) -> None:
        """Give the instance, before it starts, the id map its config now asks for, as LXD
        does at the next start: ``security.idmap.isolated``, ``.base`` or ``.size`` set or
        unset since its map was chosen (at its create, copy or import) were otherwise kept
        in the config and not obeyed — an instance shown isolated shared the host range
        with every other. On a pool with idmapped mounts the files need no change: the new
        map is recorded (the one write, so a kill leaves the old map or the new) before the
        start renders it. A pool without them would need every file's owner shifted, which a
        kill could leave half done: the start is refused, naming the ways out (the keys as
        they were, or a copy, which shifts on its way under an intent). An instance whose
        host range itself changed (see ``idmap``) is left to ``check_newuidmap``: only a
        change of these keys moves a map."""
        if truthy(cfg.get("security.privileged")):
            return
        alloc = self.ctx.facts().idmap
        have = (int(rec.config.get("volatile.idmap.base", str(alloc.base))),
                int(rec.config.get("volatile.idmap.size", str(alloc.size))))
        isolated = truthy(cfg.get("security.idmap.isolated"))
        if cfg.get("security.idmap.base"):
            stale = have[0] != int(cfg["security.idmap.base"])
        elif isolated:  # any block of its own, of the size asked
            stale = have[0] == alloc.base or \
                have[1] != int(cfg.get("security.idmap.size") or idmap.MIN_SIZE)
        else:  # back on the shared range from a block of its own (found inside that range:
            # a map outside it is an older host range, see above)
            stale = alloc.base < have[0] < alloc.base + alloc.size and have[1] < alloc.size
        if not stale:
            return
        pool = self._pool(rec)
        if not pool.supports_idmapped_mounts:
            raise WrongState(
                f"instance {self.name!r}: its security.idmap.* keys ask for another id map "
                f"than the one its files on storage pool {rec.pool!r} are owned by, and that "
                "pool has no idmapped mounts to map them: set the keys back, or copy the "
                "instance (the copy gets the map asked for, its files shifted)")
        # the choice and the record under the idmap lock: a create choosing meanwhile counts
        # this instance's new block from its record (its reservation does not, once it has one)
        with lock(self._paths, "host", "idmap"):
            base, size = choose_idmap(self.ctx, self.name, cfg, alloc)
            if (base, size) == have:
                return
            # a map newuidmap refuses (a security.idmap.base outside root's /etc/subuid, or
            # past the last id) is refused before it is recorded: recorded, it outlived the
            # key (unset, a map outside the host's range is taken for an older host range
            # and kept), and the instance never started again
            idmap.check_newuidmap(self.name, idmap.instance_map(base, size,
                                                                cfg.get("raw.idmap", "")))
            rec.config["volatile.idmap.base"] = str(base)
            rec.config["volatile.idmap.size"] = str(size)
            record.save(self._paths, rec)
        log.info("instance %s: id map %d+%d -> %d+%d (security.idmap.* changed)",
                 self.name, have[0], have[1], base, size)

    # -- liblxc config ----------------------------------------------------------------------
    def _root_owner(self, rec: InstanceRecord, config: Mapping[str, str] | None = None
                    ) -> tuple[int, int]:
        """Host uid/gid that container root owns files as on disk (``config``: the expanded
        config when the caller has it)."""
        pool = self._pool(rec)
        cfg = config if config is not None else self.expanded(rec)[0]
        if truthy(cfg.get("security.privileged")) or \
                pool.supports_idmapped_mounts:
            return 0, 0
        base = int(rec.config.get("volatile.idmap.base", "0"))
        return base, base

    def _template_context(self, rec: InstanceRecord) -> dict[str, Any]:
        cfg, devs = self.expanded(rec)
        inst = {"name": rec.name, "architecture": rec.architecture,
                "privileged": truthy(cfg.get("security.privileged")),
                "ephemeral": rec.ephemeral, "type": "container"}
        return {"container": inst, "instance": inst, "config": cfg, "devices": devs}

    def device_context(self, rec: InstanceRecord | None = None, pid: int | None = None,
                       expanded: Expanded | None = None, starting: bool = False
                       ) -> DeviceContext:
        """What the device drivers know of this instance; ``expanded`` is ``rec``'s composed
        config and devices when the caller already has them (composed once per operation);
        ``starting``: for the render right before a start."""
        from .devices import DeviceContext
        rec = rec or self.record()
        cfg, devs = expanded if expanded is not None else self.expanded(rec)
        pool = self._pool(rec)
        privileged = truthy(cfg.get("security.privileged"))
        base = None if privileged else int(rec.config.get("volatile.idmap.base",
                                                          str(self.ctx.facts().idmap.base)))
        return DeviceContext(host=self.ctx, name=self.name, record=rec, config=cfg, devices=devs,
                             volume=pool.volume_path("containers", self.name),
                             root_uid=self._root_owner(rec, cfg)[0], idmap_base=base, pid=pid,
                             starting=starting)

    def _write_lxc_config(self, rec: InstanceRecord, expanded: Expanded | None = None,
                          cpus: list[int] | None = None, starting: bool = False) -> None:
        """Render the liblxc config and write it when it changed, after liblxc itself has
        loaded it (``runtime.check_config``): a file liblxc refuses would make the instance
        unusable, so it is refused before anything is saved. ``starting``: the render right
        before a start (see ``DeviceContext.starting``)."""
        self._store_lxc_config(rec, self._prepare_lxc_config(rec, expanded, cpus, starting))

    def _prepare_lxc_config(self, rec: InstanceRecord, expanded: Expanded | None = None,
                            cpus: list[int] | None = None, starting: bool = False
                            ) -> RenderedConfig:
        """``_write_lxc_config`` up to the write: rendered, and checked by liblxc unless the
        file already holds it. Touches nothing of the instance's volume, which a new instance's
        may not have yet (``copy`` renders while its volume is being made)."""
        lines, text, policy = self._render_lxc_config(rec, expanded, cpus, starting)
        path = self._dir / "config"
        try:
            unchanged = path.read_bytes() == text
        except FileNotFoundError:
            unchanged = False
        if not unchanged:
            self._check_lxc_config(rec, lines, expanded)
        return RenderedConfig(text, policy, unchanged)

    def _store_lxc_config(self, rec: InstanceRecord, rendered: RenderedConfig) -> None:
        self._secure_volume(rec, rendered)
        self._write_config_files(rendered)

    def _secure_volume(self, rec: InstanceRecord, rendered: RenderedConfig) -> None:
        """Closed to host users, searchable by the container's root only: liblxc opens the
        rootfs as that uid on pools without idmapped mounts. Redone with every config write,
        so the owner follows a changed map (isolated, copied, privileged toggled). Here, not
        in the render, which also serves checks that must change nothing."""
        root_uid = idmap.host_root(idmap.parse_lxc_idmap(rendered.text.decode()))
        self._pool(rec).secure_instance_volume(self.name, root_uid)

    def _write_config_files(self, rendered: RenderedConfig) -> None:
        if rendered.policy is not None:  # its own seccomp policy, read by liblxc at each start
            ppath = self._dir / SECCOMP_FILE
            try:
                same = ppath.read_bytes() == rendered.policy
            except FileNotFoundError:
                same = False
            if not same:
                self._replace(ppath, rendered.policy, 0o600)
        if rendered.unchanged:
            return
        # Derived from the (durable) record and re-rendered before every start, so a rename is
        # enough: other processes never see half a file, and no fsync is paid per instance.
        self._replace(self._dir / "config", rendered.text, 0o640)

    def _replace(self, path: Path, data: bytes, mode: int) -> None:
        """Replace a file of the instance's directory (not durable: derived from the record);
        through its spare file (``swap_write``: no inode made per write) under the instance's
        lock, which every writer holds."""
        if held(self._paths, "instance", self.name):
            swap_write(path, data, mode, durable=False)
        else:
            atomic_write(path, data, mode, durable=False)

    def _check_lxc_config(self, rec: InstanceRecord, lines: Sequence[tuple[str, str]],
                          expanded: Expanded | None = None) -> None:
        """``runtime.check_config``, naming ``raw.lxc`` when the refused line came from it."""
        from .config import schema
        try:
            runtime.check_config(self._paths.lxcpath, lines, self.name)
        except InvalidConfig as e:
            raw = (expanded or self.expanded(rec))[0].get("raw.lxc", "")
            if raw and (e.key, e.value) in schema.parse_raw_lxc(raw):
                raise InvalidConfig("raw.lxc", f"liblxc refuses the line {e.key} = {e.value}",
                                    raw) from None
            raise

    def _render_lxc_config(self, rec: InstanceRecord, expanded: Expanded | None = None,
                           cpus: list[int] | None = None, starting: bool = False,
                           device_errors: dict[str, LxdlibError] | None = None
                           ) -> tuple[list[tuple[str, str]], bytes, bytes | None]:
        """The liblxc config of ``rec``: its keys, the file's bytes, and the instance's own
        seccomp policy (None: the root's shared one).

        With ``device_errors``, a device that fails to render is noted there and left out
        rather than ending the render: a check of a change (``profile_apply``) then sees every
        device's error and the rest of the config, not only the first device's."""
        from . import hooklog as hooks
        from . import render  # here, as in _exec_env: `info` renders no liblxc config
        from .devices import driver
        pool = self._pool(rec)
        pool.mount()
        dctx = self.device_context(rec, expanded=expanded, starting=starting)
        cfg = dctx.config
        privileged = truthy(cfg.get("security.privileged"))
        facts = self.ctx.facts()
        idm: list[idmap.IdRange] = []
        if not privileged:
            size = int(rec.config.get("volatile.idmap.size", str(facts.idmap.size)))
            assert dctx.idmap_base is not None
            idm = idmap.instance_map(dctx.idmap_base, size, cfg.get("raw.idmap", ""))
        nics: list[render.Nic] = []
        mounts: list[render.MountEntry] = []
        extra: list[tuple[str, str]] = []
        start_hook = stop_hook = rec.ephemeral
        for dname in sorted(dctx.devices):
            dev = dctx.devices[dname]
            try:
                out = driver(dev["type"]).render(dctx, dname, dev)
            except LxdlibError as e:
                if device_errors is None:
                    raise
                device_errors[dname] = e
                continue
            nics += out.nics
            mounts += out.mounts
            extra += out.keys
            start_hook = start_hook or out.start_hook
            stop_hook = stop_hook or out.stop_hook or out.start_hook
        # every instance: a stop from inside is written down for its record (no Python; first,
        # so that it is written before a device hook's or ephemeral reaper's work)
        hook_lines: list[tuple[str, str]] = [
            ("version", "1"),
            ("post-stop", hooks.stop_marker_command(journal.stopped_marker(self._paths,
                                                                           self.name)))]
        if start_hook or stop_hook:
            cmd = hooks.command(self._paths.root)
            if start_hook:
                hook_lines.append(("start-host", cmd))
            if stop_hook:
                hook_lines.append(("post-stop", cmd))
        policy = render.seccomp_policy(cfg)
        inp = render.RenderInput(
            name=self.name, rootfs=dctx.volume / "rootfs", config=cfg,
            log_file=self._dir / runtime.LOG_NAME, console_log=self._dir / "console.log",
            seccomp_file=self._dir / SECCOMP_FILE if policy is not None
            else self.ctx.seccomp_policy(), idmap=idm,
            idmapped_rootfs=pool.supports_idmapped_mounts, nics=nics, mounts=mounts,
            hooks=hook_lines, extra=extra,
            cgroup_version=facts.cgroup_version, host_cpus=facts.cpus,
            mem_total=facts.mem_total,
            chosen_cpus=cpus if cpus is not None else self.ctx.pick_cpus(self.name, cfg),
            architecture=rec.architecture, lxcfs=facts.lxcfs,
            swap_accounting=facts.swap_accounting)
        lines = render.render(inp)
        return lines, render.to_text(lines).encode(), \
            policy.encode() if policy is not None else None

    def _ensure_stop_work(self, dctx: DeviceContext,
                          devices: Mapping[str, Mapping[str, str]]) -> None:
        """Devices hot-plugged into a container started without a post-stop hook still get
        their stop-time work: liblxc read its hooks at start, so a watcher stands in."""
        from . import hooklog as hooks
        from .devices import driver
        needs = any(driver(d["type"]).hotplug and
                    (out := driver(d["type"]).render(dctx, n, d)).stop_hook | out.start_hook
                    for n, d in devices.items())
        if not needs or dctx.pid is None:
            return
        # every instance has the stop-marker hook: only lxdlib's own Python hook does device work
        if hooks.command(self._paths.root) in (runtime.running_item(self._c(),
                                                                    "lxc.hook.post-stop") or ""):
            return
        hooks.spawn_watcher(self._paths.root, self.name, dctx.pid)

    def _apply_devices_live(self, old: Mapping[str, Mapping[str, str]],
                            new: Mapping[str, Mapping[str, str]], rec: InstanceRecord,
                            config: Mapping[str, str] | None = None) -> None:
        """Hot-plug: devices added, removed or changed on a running instance. If one fails,
        what was done is undone: a device being added is stopped too (``stop`` is idempotent,
        so a half-done start is cleaned); a failing ``update`` must restore the old itself."""
        from .devices import driver
        if {k: dict(v) for k, v in old.items()} == {k: dict(v) for k, v in new.items()}:
            return  # a config-only change: no device to touch, no device context to build
        plugged = {d: nd for d, nd in new.items() if d not in old or dict(old[d]) != dict(nd)}
        with self._volume_locks(plugged):  # a hot-plugged volume is a start of its use
            dctx = self.device_context(rec, pid=self.pid, expanded=None if config is None else (
                dict(config), {k: dict(v) for k, v in new.items()}))
            self._ensure_stop_work(dctx, new)
            undo: list[Callable[[], None]] = []
            try:
                for dname in sorted(set(old) - set(new)):
                    od = old[dname]
                    drv = driver(od["type"])
                    if drv.hotplug:
                        drv.stop(dctx, dname, od)
                        undo.append(functools.partial(drv.start, dctx, dname, od))
                for dname in sorted(new):
                    nd = new[dname]
                    drv = driver(nd["type"])
                    if not drv.hotplug:
                        continue
                    if dname not in old:
                        undo.append(functools.partial(drv.stop, dctx, dname, nd))
                        drv.start(dctx, dname, nd)
                    elif dict(old[dname]) != dict(nd):
                        od = old[dname]
                        if od.get("type") == nd.get("type"):
                            drv.update(dctx, dname, od, nd)
                            undo.append(functools.partial(drv.update, dctx, dname, nd, od))
                        else:
                            odrv = driver(od["type"])
                            odrv.stop(dctx, dname, od)
                            undo.append(functools.partial(odrv.start, dctx, dname, od))
                            undo.append(functools.partial(drv.stop, dctx, dname, nd))
                            drv.start(dctx, dname, nd)
                    journal.crashpoint("update.device")
            except BaseException:
                for step in reversed(undo):
                    with contextlib.suppress(Exception):
                        step()
                raise

    def _converge_live(self, before: tuple[Mapping[str, str], Mapping[str, Mapping[str, str]]],
                       after: tuple[Mapping[str, str], Mapping[str, Mapping[str, str]]],
                       rec: InstanceRecord) -> None:
        """Bring a running instance whose live state is anywhere between ``before`` and
        ``after`` (expanded config and devices) to ``after``: what a killed process left half
        done. Cgroup values are absolute, so writing them again is safe; each changed device is
        stopped in both versions (``stop`` is idempotent: a half-started one is cleaned, and
        none is plugged twice), then started as it is now."""
        from .devices import driver
        if self.state not in ("RUNNING", "FROZEN"):
            return  # the next start renders everything from the record
        self._apply_live(before[0], after[0])
        old, new = before[1], after[1]
        dctx = self.device_context(rec, pid=self.pid, expanded=(
            dict(after[0]), {k: dict(v) for k, v in new.items()}))
        self._ensure_stop_work(dctx, new)
        plugged = {d: nd for d, nd in new.items() if d not in old or dict(old[d]) != dict(nd)}
        with self._volume_locks(plugged):  # a hot-plugged volume is a start of its use
            for dname in sorted(set(old) | set(new)):
                od, nd = old.get(dname), new.get(dname)
                if od is not None and nd is not None and dict(od) == dict(nd):
                    continue
                for dev in (od, nd):
                    if dev is not None and driver(dev["type"]).hotplug:
                        driver(dev["type"]).stop(dctx, dname, dev)
                if nd is not None and driver(nd["type"]).hotplug:
                    driver(nd["type"]).start(dctx, dname, nd)

    # -- exec -------------------------------------------------------------------------------
    def _exec_env(self, env: Mapping[str, str] | None, uid: int) -> dict[str, str]:
        from .render import DEFAULT_PATH
        cfg = self.expanded_config
        out = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
        if uid == 0:
            out.update({"HOME": "/root", "USER": "root"})
        out.update({k[len("environment."):]: v for k, v in cfg.items()
                    if k.startswith("environment.")})
        if env is not None and not isinstance(env, Mapping):
            raise InvalidArgument(f"env must be a mapping of names to values, not "
                                  f"{type(env).__name__}")
        out.update(env or {})
        for k, v in out.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidArgument(f"invalid environment variable {k!r}: names and values "
                                      "are strings")
            if not k or "=" in k or any(ch in k + v for ch in "\0\n\r"):
                # as for environment.* keys: no variable may carry a line break or NUL
                raise InvalidArgument(f"invalid environment variable {k!r}: names cannot be "
                                      "empty or hold \"=\"; no newline, carriage return or "
                                      "NUL in names or values")
        return out

    def exec(self, command: Sequence[str] | str, *, env: Mapping[str, str] | None = None,
             cwd: str | None = None, user: int = 0, group: int = 0, input: bytes | None = None,
             check: bool = False, timeout: float | None = None,
             stdout: Callable[[bytes], None] | None = None,
             stderr: Callable[[bytes], None] | None = None) -> ExecResult:
        """Run a command inside and return its exit code and output.

        A string is run with ``sh -c``. ``stdout``/``stderr`` callbacks stream output instead of
        collecting it. Exit codes follow LXD: 126 not executable, 127 not found, 128+N signal N.
        ``check=True`` raises ``ExecError`` (naming this instance and the command) on a non-zero
        exit; a command still running after ``timeout`` seconds is killed with everything it
        started, and ``ExecTimeout`` (a ``Timeout``, and a builtin ``TimeoutError``) is raised.
        """
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        if not argv:
            raise InvalidArgument("empty command")
        c = self._c()
        result = runtime.run(c, argv, env=self._exec_env(env, user),
                             cwd=cwd if cwd is not None else ("/root" if user == 0 else "/"),
                             uid=user, gid=group, input=input, stdout_cb=stdout,
                             stderr_cb=stderr, timeout=timeout)
        if check and not result.ok:
            raise ExecError(result, self.name, argv)
        return result

    execute = exec

    def exec_interactive(self, command: Sequence[str], *, env: Mapping[str, str] | None = None,
                         cwd: str | None = None, user: int = 0, group: int = 0) -> int:
        """Run with this process's own stdin/stdout/stderr (terminals included)."""
        return runtime.interactive(self._c(), command, env=self._exec_env(env, user),
                                   cwd=cwd if cwd is not None else ("/root" if user == 0 else "/"),
                                   uid=user, gid=group)

    # -- state ------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What ``lxc info`` shows: status, pid, addresses, resources, snapshots."""
        rec = self.record()
        error = None
        live = livestate.of(self._paths.lxcpath, self.name)  # running: no liblxc needed
        opened: list[runtime.Container] = []

        def handle() -> runtime.Container:
            if not opened:
                opened.append(self._c())
            return opened[0]
        asked_pid = None
        if live is not None:
            st: str = live.state
        elif livestate.monitor_listens(self._paths.lxcpath, self.name) is not False:
            st, asked_pid, error = self._asked_within()  # a stuck monitor: ERROR, says why
        else:
            try:
                st = handle().state
            except LXCError as e:  # shown, as LXD shows a broken instance, rather than raised
                error, st = str(e), "ERROR"
        out: dict[str, Any] = {
            "name": rec.name, "status": STATUS.get(st, st.title()),
            "type": "container" + (" (ephemeral)" if rec.ephemeral else ""),
            "architecture": rec.architecture, "created": rec.created_at.isoformat(),
            "last_used": rec.last_used_at.isoformat() if rec.last_used_at else None,
            "profiles": rec.profiles, "pool": rec.pool,
            "snapshots": [{"name": s.name, "created_at": s.created_at.isoformat(),
                           "expires_at": s.expires_at.isoformat() if s.expires_at else None,
                           "stateful": s.stateful} for s in rec.snapshots],
        }
        if error is not None:
            out["error"] = error
        elif st in ("RUNNING", "FROZEN"):
            # asked once: each ask of liblxc is a round trip to the monitor
            pid = out["pid"] = (live.pid if live is not None else
                                asked_pid if asked_pid is not None else handle().init_pid)
            out["resources"] = cgroup_usage(self.name, pid, handle)
            out["network"] = _interfaces(handle, pid)
        with contextlib.suppress(LxdlibError):
            out["disk"] = {"root": {"usage": self._pool(rec).volume_usage("containers", rec.name)}}
        mapping = self.host_root_mapping(rec, out.get("pid"))
        out["maps_host_root"] = bool(mapping)
        out["host_root_mapping"] = mapping
        return out

    @property
    def maps_host_root(self) -> bool:
        """Whether the instance's root (or any of its ids) is host uid or gid 0: privileged, or
        an id map that includes host id 0 (``raw.idmap``, ``security.idmap.base=0``). Such an
        instance's root is host root; see ``host_root_mapping`` for why."""
        return bool(self.host_root_mapping())

    def host_root_mapping(self, rec: InstanceRecord | None = None, pid: int | None = None
                          ) -> list[str]:
        """Why the instance's ids include host id 0, one line per reason; empty if they do not.

        ``raw.idmap`` may map any container id onto any host id (LXD allows it too: ``raw.*``
        keys are for host root only). A running instance is judged by the map its init really
        has (``/proc/<pid>/uid_map``); a stopped one by the map its next start will use."""
        rec = rec or self.record()
        cfg, _ = self.expanded(rec)
        if truthy(cfg.get("security.privileged")):
            return ["security.privileged=true: the container's ids are the host's, its root is "
                    "host root"]
        running: list[idmap.IdRange] = []
        if pid is not None:
            with contextlib.suppress(OSError):
                for kind, fname in (("u", "uid_map"), ("g", "gid_map")):
                    text = Path(f"/proc/{pid}/{fname}").read_text()
                    for line in text.splitlines():
                        ns, hst, size = (int(x) for x in line.split())
                        running.append(idmap.IdRange(kind, ns, hst, size))
        facts = self.ctx.facts()
        base = int(rec.config.get("volatile.idmap.base", str(facts.idmap.base)))
        size = int(rec.config.get("volatile.idmap.size", str(facts.idmap.size)))
        planned = idmap.instance_map(base, size, cfg.get("raw.idmap", ""))
        source = "raw.idmap" if cfg.get("raw.idmap", "").strip() else "the instance's id map"

        def host_zero(ranges: list[idmap.IdRange]) -> list[str]:
            out = []
            for r in ranges:
                if r.hostid <= 0 < r.hostid + r.size:
                    what = "uid" if r.kind == "u" else "gid"
                    out.append(f"container {what} {r.nsid - r.hostid} is host {what} 0 "
                               f"({source})")
            return out

        if not running:
            return host_zero(planned)
        # a changed map takes effect at the next start: say both, so neither surprises
        now = host_zero(running)
        later = [f"from its next start: {why}" for why in host_zero(planned) if why not in now]
        return now + later

    def network_state(self, c: runtime.Container | None = None) -> dict[str, Any]:
        """Per-interface addresses and byte counters, read in the instance's network namespace:
        in-process over netlink (an ``ip`` run in the namespace cost more than the rest of
        ``info``), through ``ip`` where this process cannot enter the namespace."""
        c = c or self._c()
        if c.state not in ("RUNNING", "FROZEN"):
            return {}
        return _interfaces(lambda: c, c.init_pid)

    def addresses(self, family: str = "inet") -> list[str]:
        """The instance's routable addresses of ``family`` (``inet``/``inet6``), as ``lxc list``
        shows them: no loopback, no link-local ``fe80::`` (``listing.global_addresses``)."""
        return [a for a, _ in global_addresses(self.network_state(), family)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0,
                 interval: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return predicate()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Wait until ``exec`` works (init has set up enough to run a shell)."""
        return self.wait_for(lambda: self.exec(["true"]).returncode == 0, timeout)


def _interfaces(handle: Callable[[], runtime.Container], pid: int) -> dict[str, Any]:
    """``network_state`` of a running container whose init is ``pid``; ``handle()`` opens the
    liblxc handle only where this process cannot read the namespace itself."""
    if pid <= 0:
        return {}
    from .network.netstate import interfaces_many, interfaces_of
    state = interfaces_many([pid]).get(pid)
    return state if state is not None else interfaces_of(handle())


def get_instance(ctx: Context, name: str) -> InstanceCore:
    """The instance ``name`` of the context's root; ``NotFound`` if there is none."""
    if not record.exists(ctx.paths, name):
        raise NotFound("instance", name)
    return InstanceCore(ctx, name)


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes", "on")


def cgroup_usage(name: str, pid: int, handle: Callable[[], runtime.Container]
                 ) -> dict[str, Any]:
    """Memory (``memory_usage``, its peak ``memory_usage_peak``, ``swap_usage``,
    ``swap_usage_peak``), CPU time (``cpu_usage_ns``) and ``processes`` from the cgroup of the
    instance ``name``, each ``None`` where the kernel does not keep it (a v2 peak needs
    ``memory.peak``, Linux 5.19). With the init's ``pid``, the files are read where
    ``/proc/<pid>/cgroup`` shows them (``livestate.counters_of``); liblxc (``handle()``,
    opened at the first such need) is asked for the rest, one round trip to the monitor
    each."""
    ver = runtime.cgroup_version()
    dirs = livestate.counters_of(pid, name) if pid > 0 else {}
    opened: list[runtime.Container] = []

    def read(key: str) -> str | None:
        where = dirs.get("" if ver == 2 else key.partition(".")[0])
        if where is not None:
            try:
                return livestate.read_counter(where, key)
            except OSError:
                pass  # gone meanwhile, or refused: liblxc says what it can
        if not opened:
            opened.append(handle())
        return runtime.cgroup_get(opened[0], key)

    def number(key: str) -> int | None:
        value = read(key)
        return int(value) if value and value.strip().isdigit() else None
    out: dict[str, Any] = {}
    if ver == 2:
        mem = read("memory.current")
        cpu = read("cpu.stat")
        out["memory_usage"] = int(mem) if mem and mem.strip().isdigit() else None
        out["memory_usage_peak"] = number("memory.peak")
        out["swap_usage"] = number("memory.swap.current")
        out["swap_usage_peak"] = number("memory.swap.peak")
        usec = None
        for line in (cpu or "").splitlines():
            if line.startswith("usage_usec"):
                usec = int(line.split()[1])
        out["cpu_usage_ns"] = usec * 1000 if usec is not None else None
    else:
        mem = read("memory.usage_in_bytes")
        cpu = read("cpuacct.usage")
        out["memory_usage"] = int(mem) if mem and mem.strip().isdigit() else None
        out["cpu_usage_ns"] = int(cpu) if cpu and cpu.strip().isdigit() else None
        peak = number("memory.max_usage_in_bytes")
        out["memory_usage_peak"] = peak
        # v1 counts memory and swap together (memsw): swap is the difference, as LXD reads it
        memsw, memsw_peak = number("memory.memsw.usage_in_bytes"), \
            number("memory.memsw.max_usage_in_bytes")
        mem_now = out["memory_usage"]
        out["swap_usage"] = memsw - mem_now if memsw is not None and mem_now is not None \
            else None
        out["swap_usage_peak"] = memsw_peak - peak if memsw_peak is not None and \
            peak is not None else None
    procs = read("pids.current")
    out["processes"] = int(procs) if procs and procs.strip().isdigit() else None
    return out


def read_metadata(volume: Path, memos: Path | None = None) -> dict[str, Any]:
    """The image's metadata.yaml in ``volume``; with ``memos`` (the root's directory of them,
    ``Paths.metadata_memos``), parsed once per text (``state.load_yaml_kept``)."""
    path = volume / "metadata.yaml"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise LxdlibError(f"cannot read {path}: {e.strerror} (a symlink is refused)") from None
    if os.fstat(fd).st_nlink != 1:  # a second name, in the rootfs: the container's to write
        os.close(fd)
        raise LxdlibError(f"refusing to read {path}: it is hard-linked to another file; "
                          "replace it (config metadata edit)")
    raw = read_fd(fd)
    try:
        # the image's YAML, from elsewhere: the safe loader, and no alias bombs
        data = load_yaml(raw) if memos is None else load_yaml_kept(raw, memos)
    except Exception as e:
        # a YAML error means PyYAML is loaded: no import for a parse that was kept
        yaml = sys.modules.get("yaml")
        if yaml is not None and isinstance(e, yaml.YAMLError):
            raise LxdlibError(f"cannot read {path}: {e}") from None
        raise
    return data if isinstance(data, dict) else {}


def expansion(data: Any) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    data = data if isinstance(data, dict) else {}
    return ({str(k): str(v) for k, v in (data.get("config") or {}).items()},
            {str(k): {str(a): str(b) for a, b in v.items()}
             for k, v in (data.get("devices") or {}).items()})


def _dhcp_view(devices: Mapping[str, Mapping[str, str]]) -> dict[str, tuple[str, str]]:
    """What a nic's static DHCP entry follows: its network and static address."""
    return {n: (d.get("network", ""), d.get("ipv4.address", "")) for n, d in devices.items()
            if d.get("type") == "nic"}


def _recover_update(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """A config/device change that died. Before its record was saved (``prepare``) the old
    record comes back (a kill right after the save lands here too: nothing live changed yet);
    once saved (``live``) the running instance is brought to the record — and if it refuses
    now (a port taken meanwhile), back to the old record and its live state, as a live
    change that fails in the call itself."""
    inst = InstanceCore(ctx, name)
    old = InstanceRecord.from_dict(dict(op["old"]))
    before = expansion(op.get("before"))
    if op.get("stage") != "live":
        inst._apply_quota(before[1], old, inst.expanded()[1])
        inst._write_lxc_config(old)
        record.save(ctx.paths, old)
        inst._keep_dhcp(before[1])  # what the unsaved change's render added goes
        return
    rec = inst.record()
    after = inst.expanded(rec)
    try:
        inst._write_lxc_config(rec)
        inst._converge_live(before, after, rec)
        # a running instance's removed nics keep their addresses until its next start
    except Exception as e:
        import logging
        logging.getLogger("lxdlib").warning(
            "instance %s: an interrupted change cannot be applied live (%s): undone", name, e)
        inst._apply_quota(before[1], old, after[1])
        inst._write_lxc_config(old)
        record.save(ctx.paths, old)
        inst._converge_live(after, before, old)
        inst._keep_dhcp(before[1])


def _recover_profile_apply(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """A profile change that died before it reached this instance: the profile file decides
    (saved or not), the running instance is brought from what it had to what that gives."""
    inst = InstanceCore(ctx, name)
    rec = inst.record()
    before = expansion(op.get("before"))
    after = inst.expanded(rec)
    inst._apply_quota(after[1], rec, before[1])
    inst._write_lxc_config(rec)
    inst._converge_live(before, after, rec)


def _recover_stop(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """A stop or restart that died. Still running: nothing happened (a restart killed before
    its stop). Stopped: the stop is recorded, an ephemeral instance deleted as its stop would
    have; a restart's ephemeral flag comes back and the instance is started again — the state
    its caller asked for (a start that fails now is logged, and the instance stays stopped)."""
    inst = InstanceCore(ctx, name)
    rec = inst.record()
    restart = op.get("restart")
    if isinstance(restart, dict) and restart.get("ephemeral"):
        rec.ephemeral = True
    if inst._c().state != "STOPPED":
        record.save(ctx.paths, rec)
        return
    _mark_stopped(rec)
    record.save(ctx.paths, rec, durable=restart is not None)
    if restart is not None:
        try:
            inst._start_locked()
        except LxdlibError as e:
            log.warning("instance %s: an interrupted restart could not start it again: %s",
                        name, e)
    elif rec.ephemeral:
        inst._delete_locked(rec)


def _recover_delete(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """A forced delete of a running instance that died after its stop began: stopped, it is
    deleted as asked (its commit point, the record renamed away, may not have been reached);
    still running, nothing happened."""
    inst = InstanceCore(ctx, name)
    try:
        rec = inst.record()
    except NotFound:
        return
    if inst._c().state != "STOPPED":
        return
    with contextlib.suppress(LxdlibError):  # an ifb left is collected by ``recover`` too
        _collect_ifbs(ctx, name, inst.expanded(rec)[1])
    inst._delete_locked(rec)


def _recover_start(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """A start that died: the record is set by what happened (a started instance keeps
    running; one that never started is recorded stopped, as a start that fails is)."""
    inst = InstanceCore(ctx, name)
    if inst._c().state == "STOPPED":
        rec = inst.record()
        _mark_stopped(rec)
        record.save(ctx.paths, rec, durable=False)


def forget_stopped_inside(paths: Paths, name: str) -> None:
    """Drop the mark of a stop from inside (``journal.STOPPED_INSIDE``): the caller records
    the power state itself (a start) or has found it stale."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(journal.stopped_marker(paths, name))


def _fold_stopped_inside(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """Record what the post-stop hook marked: the container stopped with no lxdlib verb
    asking (``poweroff`` inside, its init gone), so the record still says RUNNING and
    ``autostart`` would start it at the next boot, which LXD does not. Only once liblxc says
    it is stopped; a mark found while it runs is of an earlier run (started again since by
    ``lxc-start``, or its hook ran late) and is dropped; while it starts or stops, kept.
    A stop by lxdlib's own ``stop`` leaves the mark too: folded here, it changes nothing."""
    paths = ctx.paths
    rec = record.load(paths, name) if record.exists(paths, name) else None
    if rec is not None and (rec.config.get("volatile.last_state.power") == "RUNNING" or
                            any(record.is_veth_key(k) for k in rec.config)):
        state = runtime.open_container(paths.lxcpath, name).state
        if state == "STOPPED" and rec.ephemeral:
            # what the hook's detached reaper does, had it not been killed, or given up
            # waiting for the lock: an ephemeral instance that stopped is deleted, not kept
            # stopped (a stopped ephemeral instance that ran is none LXD ever shows)
            log.info("ephemeral instance %s stopped from inside: deleted", name)
            os.replace(paths.instance_record(name),
                       record.marker(paths, name, record.DELETING))
            finish_delete(ctx, name, rec.pool)
            return
        if state == "STOPPED":
            log.info("instance %s stopped from inside: recorded stopped", name)
            _mark_stopped(rec)
            # durable: the mark goes next, and after a power loss the record must not be
            # the older of the two
            record.save(paths, rec)
        elif state not in ("RUNNING", "FROZEN", "FREEZING", "THAWED"):
            return
    # else already recorded stopped (lxdlib's own stop, whose hook marks too): nothing to
    # record, and no liblxc handle to open
    forget_stopped_inside(paths, name)


@contextlib.contextmanager
def frozen_meanwhile(paths: Paths, name: str) -> Iterator[None]:
    """Freeze a running instance while its live volume is read file by file (a copy, an
    export or a snapshot on a pool that copies files); the caller holds its lock.

    A ``kill -9`` while it was frozen left it frozen for good, its processes stopped with no
    one to thaw them: the intent under way on it (an export's, a snapshot's; a copy's source
    has none, so one is written) says ``frozen`` until it is thawed, and the next call that
    takes its lock thaws it (``journal``'s recovery of any intent so marked)."""
    c = runtime.open_container(paths.lxcpath, name)
    if c.state != "RUNNING":
        yield
        return
    current = journal.read(paths, name)
    op = str(current["op"]) if current else FREEZE
    details = {k: v for k, v in (current or {}).items() if k not in ("op", "pid", "end")}
    journal.begin(paths, name, op, **details, frozen=True)
    try:
        runtime.freeze(c, paths.lxcpath)
        try:
            journal.crashpoint("frozen.read")
            yield
        finally:
            runtime.unfreeze(c, paths.lxcpath)
    finally:
        if current:
            journal.begin(paths, name, op, **details)  # back to the stage it was at
        else:
            journal.end(paths, name)


#: The intent of a read of a running instance's volume with no intent of its own (a copy's
#: source): only its ``frozen`` mark matters (``_thaw``).
FREEZE = "freeze"


def _thaw(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """An operation killed while the instance was frozen for it (``frozen_meanwhile``): the
    instance runs again."""
    c = runtime.open_container(ctx.paths.lxcpath, name)
    if c.state == "FROZEN":
        runtime.unfreeze(c, ctx.paths.lxcpath)


journal.register(journal.STOPPED_INSIDE, _fold_stopped_inside)
journal.register(journal.FROZEN, _thaw)
journal.register(FREEZE, lambda ctx, name, op: None)  # thawed by its mark
journal.register("update", _recover_update)
journal.register("start", _recover_start)
journal.register("delete", _recover_delete)
journal.register("stop", _recover_stop)
journal.register("profile-apply", _recover_profile_apply)


def _collect_ifbs(ctx: Context, name: str, devices: Mapping[str, Mapping[str, str]]) -> None:
    """The ifbs of the instance's nics that outlived their veths (limits added to it while it
    ran without a post-stop hook, or a killed monitor) go with it; ``lxdlib recover`` finds
    any other."""
    nics = [dname for dname, dev in devices.items() if dev.get("type") == "nic"]
    if nics:
        from .devices.nic import ifb_for
        from .network import tc
        for dname in nics:
            tc.collect_orphan(ifb_for(ctx.paths.root, name, dname))


def finish_delete(ctx: Context, name: str, pool_name: str) -> None:
    """Remove what is left of a deleted (or half-created) instance; idempotent."""
    paths = ctx.paths
    if pool_name:
        try:
            pool = ctx.pool(pool_name)
            pool.delete_instance_volume(name)
        except NotFound:
            pass
    with contextlib.suppress(FileNotFoundError):
        ctx.network_forget(name)
    remove_tree(paths.instance_dir(name))
    ctx.events.emit("instance-deleted", name)


def recover_leftover(ctx: Context, name: str) -> bool:
    """Finish or undo an operation a killed process left on ``name``; True if one was found.

    The caller holds the instance lock, so no live process is still working on it.
    """
    paths = ctx.paths
    d = paths.instance_dir(name)
    from . import journal
    if journal.pending(paths, name):
        done = journal.recover(ctx, name)
        if record.exists(paths, name):
            return done
    if not d.exists() or record.exists(paths, name):
        return False
    pool = ""
    marker = d / record.DELETING
    if marker.exists():
        with contextlib.suppress(Exception):
            # read_record: the marker is what was in the record's place, a FIFO put there too
            pool = str((read_record(marker) or {}).get("pool") or "")
    c = runtime.open_container(paths.lxcpath, name)
    if c.state != "STOPPED":
        runtime.kill(c, paths.lxcpath)
    if not pool:
        # a create killed before its record: the volume, if any, is in one of the pools
        for pname in ctx.pool_names():
            with contextlib.suppress(Exception):
                if ctx.pool(pname).volume_exists("containers", name):
                    pool = pname
                    break
    finish_delete(ctx, name, pool)
    return True


def expand_with_root(ctx: Context, profiles: Sequence[str], config: Mapping[str, str],
                     devices: dict[str, dict[str, str]], pool: str | None
                     ) -> tuple[dict[str, str], dict[str, dict[str, str]], dict[str, str]]:
    """Expanded config and devices and the root disk, put on ``pool`` when one is given.

    ``-s pool`` copies the profile's root disk into ``devices`` with the new pool (or adds a
    root disk when the profiles have none), as LXD does; ``devices`` is updated in place. As
    LXD's, the copy is made also when the profile's root disk is on that pool already: the
    instance then keeps its pool whatever its profiles say later.
    """
    from .config import devices as devcfg
    from .config import schema
    exp_cfg, exp_devs = ctx.expand(profiles, config, devices)
    schema.check_combinations(exp_cfg)  # rules across keys, profiles' included
    devcfg.validate_devices(exp_devs)  # rules across devices: one disk per path…
    changed = False  # what the expansion says: a root disk added, or moved to ``pool``
    try:
        root_name, root = expand.root_disk(exp_devs)
    except InvalidConfig:
        if pool is None:
            raise
        root_name, root = "root", {"type": "disk", "path": "/", "pool": pool}
        changed = True
    if pool is not None and (root.get("pool") != pool or root_name not in devices):
        changed = changed or root.get("pool") != pool
        devices[root_name] = {**root, "pool": pool}
    if changed:
        exp_cfg, exp_devs = ctx.expand(profiles, config, devices)
        root_name, root = expand.root_disk(exp_devs)
    if not root.get("pool"):
        raise InvalidConfig(f"devices.{root_name}.pool", "the root disk names no storage pool")
    return exp_cfg, exp_devs, root


@contextlib.contextmanager
def new_instance_dir(ctx: Context, name: str, pool: PoolDriver, *,
                     spare_intent: bool = True) -> Iterator[Path]:
    """The directory of an instance being made (create, copy, import; the caller holds the
    name's lock). Until ``commit_instance``, any failure removes its volume and directory.

    ``spare_intent``: give it the file its later intents are written into (``journal.prepare``);
    a caller that writes an intent at once passes False (that intent's file becomes the spare
    when it ends: one file made instead of two steps)."""
    inst_dir = ctx.paths.instance_dir(name)
    inst_dir.mkdir(mode=0o700)
    try:
        if spare_intent:
            journal.prepare(ctx.paths, name)
        yield inst_dir
    except BaseException:
        with contextlib.suppress(Exception):
            pool.delete_instance_volume(name)
        # a nic's static address is held from its first render, before liblxc's own check
        # of the config: a refused create must not keep it from every other instance
        with contextlib.suppress(Exception):
            ctx.network_forget(name)
        remove_tree(inst_dir)
        raise


def _mark_running(rec: InstanceRecord, root: Path,
                  devices: Mapping[str, Mapping[str, str]]) -> None:
    """What a start records (the caller saves): the power state, the use time, and the host
    end of each nic's veth in ``volatile.<nic>.host_name`` (LXD's keys)."""
    _forget_veths(rec)  # those of an earlier start, which may have had other nics
    rec.config["volatile.last_state.power"] = "RUNNING"
    if any(dev.get("type") == "nic" for dev in devices.values()):
        # here, and only for nics: the module is a start's cost only where it names veths
        from .devices.nic import running_host_names
        rec.config.update(running_host_names(root, rec.name, devices))
    rec.last_used_at = record.now()


def _mark_stopped(rec: InstanceRecord) -> None:
    """What a stop records (the caller saves): the power state, and no veth names (a stopped
    instance has none; LXD drops them too)."""
    rec.config["volatile.last_state.power"] = "STOPPED"
    _forget_veths(rec)


def _forget_veths(rec: InstanceRecord) -> None:
    for key in [k for k in rec.config if record.is_veth_key(k)]:
        del rec.config[key]


def commit_instance(ctx: Context, rec: InstanceRecord) -> InstanceCore:
    """Write the liblxc config, then the record — the commit point — and forget the intent."""
    return prepare_commit(ctx, rec).commit()


class PreparedCommit:
    """A new instance's commit up to its commit point (``prepare_commit``): the liblxc config
    rendered, checked and written (a directory without a record is a create not finished,
    whatever it holds), the record written and fsync'd but not yet named. ``commit`` gives
    the volume its owner, names the record and forgets the intent; ``discard`` drops the
    record's content (the caller's undo removes the rest, as for any create that fails)."""

    __slots__ = ("_config", "_save", "inst", "rec")

    def __init__(self, inst: InstanceCore, rec: InstanceRecord, config: RenderedConfig,
                 save: record.PreparedSave) -> None:
        self.inst, self.rec, self._config, self._save = inst, rec, config, save

    def commit(self) -> InstanceCore:
        from . import journal
        try:
            self.inst._secure_volume(self.rec, self._config)
            journal.crashpoint("create.rendered")  # its nics' MACs held, no record yet
        except BaseException:
            self._save.discard()
            raise
        self._save.commit()
        journal.end(self.inst.ctx.paths, self.rec.name)
        return self.inst

    def discard(self) -> None:
        self._save.discard()


def prepare_commit(ctx: Context, rec: InstanceRecord) -> PreparedCommit:
    """``commit_instance`` up to what needs the instance's volume: nothing of it is read or
    written here, so a copy or a create does this while its volume is being made
    (``lxdlib.background``)."""
    inst = InstanceCore(ctx, rec.name)
    expanded = inst.expanded(rec)
    # a MAC lxdlib drew that another nic of its network holds by now (an import or a move
    # that keeps the archive's MACs, beside an instance that has one of them): drawn again,
    # as a start does, rather than the instance refused by the render; a MAC the user set is
    # still refused there
    if inst._redraw_taken_macs(rec, expanded[1]):
        expanded = inst.expanded(rec)
    config = inst._prepare_lxc_config(rec, expanded)
    inst._write_config_files(config)
    save = record.prepare_save(ctx.paths, rec)
    journal.crashpoint("commit.prepared")  # beside a copy's clone: it may be made or not
    return PreparedCommit(inst, rec, config, save)


def create(ctx: Context, name: str, image: str | None, *,
           profiles: Sequence[str] | None = None, config: Mapping[str, str] | None = None,
           devices: Mapping[str, Mapping[str, str]] | None = None, pool: str | None = None,
           ephemeral: bool = False, description: str = "") -> InstanceCore:
    """Create an instance from a local image (or empty with ``image=None``), not started.

    Order: validate everything → take the name → image volume (once per pool) → instance volume
    (copy-on-write clone) → quota → templates → liblxc config → record (the commit point).
    Any failure before the record undoes what was done; a kill -9 leaves a directory that the
    next call on that name removes.
    """
    from .config import devices as devcfg
    from .config import schema
    paths = ctx.paths
    names.validate_instance_name(name)
    check_description(description)
    check_flag(ephemeral, "ephemeral")
    local_cfg = schema.validate_instance_config(config if config is not None else {})
    devcfg.check_devices_mapping(devices if devices is not None else {})
    local_devs = {n: devcfg.validate_device(n, d) for n, d in (devices or {}).items()}
    img = ctx.images.get(image) if image is not None else None
    prof_names = ctx.new_instance_profiles(
        profiles, img.fingerprint if img is not None else None)
    exp_cfg, exp_devs, root = expand_with_root(ctx, prof_names, local_cfg, local_devs, pool)
    pool_name = root["pool"]
    pool_drv = ctx.pool(pool_name)
    size = parse_size(root["size"]) if root.get("size") else None
    for dev in exp_devs.values():
        if dev.get("type") == "nic":
            ctx.nic_check(dev)  # fails early on an unknown network (brought up at render)

    facts = ctx.facts()
    # the instance's identity, and the id cloud-init inside keys its first boot on (LXD's)
    volatile: dict[str, str] = {"volatile.uuid": random_uuid(),
                                "volatile.cloud-init.instance-id": random_uuid()}
    for dname, dev in exp_devs.items():
        if dev.get("type") == "nic" and not dev.get("hwaddr"):
            volatile[f"volatile.{dname}.hwaddr"] = fresh_mac(ctx, dev)
    privileged = truthy(exp_cfg.get("security.privileged"))

    with lock(paths, "instance", name):
        recover_leftover(ctx, name)
        if record.exists(paths, name) or paths.instance_dir(name).exists():
            raise AlreadyExists("instance", name)
        with new_instance_dir(ctx, name, pool_drv):
            if not privileged:
                base, isize = choose_idmap(ctx, name, exp_cfg, facts.idmap)
                volatile["volatile.idmap.base"] = str(base)
                volatile["volatile.idmap.size"] = str(isize)
            if img is not None:
                volatile["volatile.base_image"] = img.fingerprint
                ctx.ensure_image_volume(pool_drv, img.fingerprint)
                try:
                    vol = pool_drv.create_instance_volume(name, img.fingerprint)
                except LxdlibError as e:
                    # the image deleted since its volume was found: its volume went with it
                    if not ctx.images.exists(img.fingerprint):
                        raise NotFound("image", img.fingerprint) from e
                    raise
                ctx.images.touch(img.fingerprint)
            else:
                vol = pool_drv.create_instance_volume(name, None)
                (vol / "rootfs").mkdir(exist_ok=True)
            if size is not None:
                pool_drv.set_quota("containers", name, size)
            if not privileged and not pool_drv.supports_idmapped_mounts:
                idmap.shift_tree(vol / "rootfs", int(volatile["volatile.idmap.base"]))
            image_cfg = schema.image_config(img.properties) if img else {}
            rec = InstanceRecord(
                name=name, architecture=img.architecture if img else os.uname().machine,
                created_at=record.now(), pool=pool_name, profiles=prof_names,
                config={**image_cfg, **local_cfg, **volatile}, devices=local_devs,
                description=description, ephemeral=ephemeral)
            if read_metadata(vol, paths.metadata_memos).get("templates"):
                # as LXD (DeferTemplateApply): rendered at the first start, with the config then
                rec.config["volatile.apply_template"] = "create"
            inst = commit_instance(ctx, rec)
    ctx.events.emit("instance-created", name)
    return inst


def _not_locked(added: set[str], locked: set[str] | None) -> set[str]:
    return set() if locked is None else added - locked


def choose_idmap(ctx: Context, name: str, cfg: Mapping[str, str],
                  alloc: idmap.Allocation) -> tuple[int, int]:
    """The id map (base, size) of a new instance ``name`` (create, copy, import, migration;
    the caller holds ``name``'s lock until the record is committed).

    An isolated instance gets a block no other isolated instance holds. Its record, which
    says so, is written only at the end of the create, long after this choice, and two
    creates at once would see neither's record and take the same block (an instance's root
    would own the other's files). So the choice is also written down as a reservation
    (``run/idmap/<name>``) that later choices count as taken while ``name`` has no record and
    its creator still holds its lock; one whose creator is gone (a failed or killed create)
    is dropped, and one whose instance now has a record has done its work."""
    if not truthy(cfg.get("security.idmap.isolated")):
        if cfg.get("security.idmap.base"):
            return int(cfg["security.idmap.base"]), alloc.size
        return alloc.base, alloc.size
    size = int(cfg.get("security.idmap.size") or idmap.MIN_SIZE)
    if cfg.get("security.idmap.base"):
        return int(cfg["security.idmap.base"]), size
    used = {}
    reserved = ctx.paths.run / "idmap"
    with lock(ctx.paths, "host", "idmap"):
        # reservations first: one whose create commits meanwhile is in the records read next
        used.update(_idmap_reservations(ctx, reserved, name))
        used.update(_recorded_idmaps(ctx, name, alloc))
        base = idmap.allocate_isolated(alloc, size, used)
        reserved.mkdir(mode=0o700, exist_ok=True)
        atomic_write(reserved / name, f"{base} {size}\n".encode(), durable=False)
        return base, size


def _recorded_idmaps(ctx: Context, name: str, alloc: idmap.Allocation
                     ) -> dict[str, tuple[int, int]]:
    """The isolated blocks the records of the other instances hold. A record that vanishes
    between the listing and its reading was deleted or renamed (a rename moves the whole
    directory under the two names' locks, not the idmap lock): the walk is made again, so
    that a renamed instance's block is found under its new name rather than taken for free."""
    for _ in range(10):
        used: dict[str, tuple[int, int]] = {}
        vanished = False
        for other in record.names(ctx.paths):
            if other == name:
                continue
            try:
                o = record.load(ctx.paths, other).config
            except FileNotFoundError:
                vanished = True
                continue
            except LxdlibError:
                continue
            if "volatile.idmap.base" in o and int(o["volatile.idmap.base"]) != alloc.base:
                used[other] = (int(o["volatile.idmap.base"]),
                               int(o.get("volatile.idmap.size", idmap.MIN_SIZE)))
        if not vanished:
            break
    return used


def _idmap_reservations(ctx: Context, reserved: Path, name: str) -> dict[str, tuple[int, int]]:
    """The blocks reserved by creates under way (see ``choose_idmap``; the caller holds the
    ``idmap`` lock); the reservations that no longer hold anything are removed."""
    out: dict[str, tuple[int, int]] = {}
    try:
        entries = os.listdir(reserved)
    except FileNotFoundError:
        return out
    for other in entries:
        if other == name or other.startswith("."):
            continue
        path = reserved / other
        alive = not os.path.lexists(ctx.paths.instance_record(other))
        if alive:
            try:  # a probe, never a wait: its creator holds the name's lock until its commit
                with lock(ctx.paths, "instance", other, timeout=0):
                    alive = False
            except Busy:
                pass
        if not alive:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        try:
            base, size = (int(w) for w in path.read_text().split())
        except (FileNotFoundError, ValueError):
            continue
        out[other] = (base, size)
    return out


journal.register_leftover(recover_leftover)
