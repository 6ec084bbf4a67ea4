"""The only module that imports python3-lxc: liblxc made safe to call.

python3-lxc reports failure as a bare ``False`` with the reason only in a log file, holds the GIL
in ``wait``/``shutdown``/``stop``, and returns raw wait statuses from attach. This module turns
every failure into ``LXCError`` carrying the log tail, never blocks in C while holding the GIL
(waits are polling loops with ``time.sleep``), and turns attach results into LXD's exit codes.

Other modules hold a ``Container`` handle, never python3-lxc's raw object, so none of them can
bypass those checks; each effect is logged at DEBUG on this module's logger with the container's
name.

What is imported of python3-lxc is its compiled core, ``_lxc`` (``_liblxc``): the ``lxc``
package is a thin Python layer over it that lxdlib does not use — a ``network`` helper on each
container object (a reference cycle that kept every object, and its log fd, alive until a
garbage collection), getters that split lists, templates and clones — and that imports
``subprocess`` for its own helpers, ~3.5 ms of every command that reaches liblxc. ``_lxc``
(~1.2 ms: it loads liblxc), ``subprocess`` and ``shlex`` are imported by the functions that use
them, not here: every verb imports this module through the instance and profile code, and the
ones that never reach liblxc or a tool (``info`` of a running instance, ``list``, ``snapshot``)
do not pay for them at their start.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import os
import select
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path

from . import livestate, pidfd, proctree
from .config.text import is_utf8
from .errors import (
    TYPE_CHECKING,
    ExecTimeout,
    InvalidArgument,
    InvalidConfig,
    LXCError,
    WrongState,
)
from .errors import ExecError as ExecError  # still importable from here
from .execresult import ExecResult as ExecResult  # still importable from here
from .logs import DEBUG, get_logger
from .patterns import Pattern

if TYPE_CHECKING:
    from typing import IO, Any, Literal

    State = Literal["STOPPED", "STARTING", "RUNNING", "STOPPING", "ABORTING", "FREEZING", "FROZEN",
                    "THAWED"]
    """liblxc's state names; a ``Literal`` so that mypy (strict equality) flags a misspelt one."""

LOG_NAME = "lxc.log"

log = get_logger(__name__)

# kcmp(2)'s number where it is known (x86-64; the generic table of arm64 and riscv64).
_KCMP = {"x86_64": 312, "aarch64": 272, "riscv64": 272}.get(os.uname().machine)


class Container:
    """One instance as liblxc sees it: the only way lxdlib reaches python3-lxc's container object.

    The raw object stays private so that every effect goes through the checks above (failures
    raise ``LXCError`` with the log tail, waits poll instead of holding the GIL) and is logged.
    Members keep python3-lxc's names, but effects raise rather than return ``False``. A handle
    is cheap (one config load) and reads live state on every access, so open one per
    operation, or one for several reads that should agree (a listing's state, pid, counters).

    A container that does not exist (no config file) opens fine: it is ``STOPPED``, not
    ``defined``, and every effect on it fails; a config file liblxc cannot load raises
    ``LXCError`` naming the refused line.
    """

    __slots__ = ("_c", "_lxcpath", "_name")

    def __init__(self, lxcpath: Path, name: str) -> None:
        try:
            self._c = _container(lxcpath, name)
        except RuntimeError:
            raise LXCError(f"instance {name!r} is broken: "
                           f"{config_fault(lxcpath, name)}") from None
        self._lxcpath = lxcpath
        self._name = name

    def __repr__(self) -> str:
        return f"<runtime.Container {self._name!r} in {str(self._lxcpath)!r}>"

    @property
    def name(self) -> str:
        return self._name

    @property
    def lxcpath(self) -> Path:
        return self._lxcpath

    # -- live reads (each asks liblxc afresh) -------------------------------------------------
    @property
    def state(self) -> State:
        s: State = self._c.state
        return s

    @property
    def init_pid(self) -> int:
        """The host pid of the container's init; -1 when it is not running."""
        pid: int = self._c.init_pid
        return pid

    @property
    def running(self) -> bool:
        return bool(self._c.running)

    @property
    def defined(self) -> bool:
        """Whether its config file exists (a container can be opened without one)."""
        return bool(self._c.defined)

    def _fail(self, what: str) -> LXCError:
        return LXCError(f"{what} instance {self._name!r}", log_tail(self._lxcpath, self._name))

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start it (daemonized, with no inherited fds) and return once it runs.

        The start goes through liblxc's own ``lxc-start``, exec'd, so the monitor that then
        stays for the container's whole life is a fork of that small C program rather than of
        this process: started in-process (python3-lxc's ``start``), each monitor was a copy of
        the caller's Python heap, about 7 MB of private memory per running instance once the
        copy-on-write pages diverged (and a fork of a threaded interpreter is fragile, see
        ``attach``). It reads the config file lxdlib wrote, logs to the same ``lxc.log`` at the
        same level, and outlives this process as before. Without the tool
        (it is in Debian's ``lxc`` package, python3-lxc needs only ``liblxc1``) the in-process
        start remains.
        """
        name, lxcpath = self._name, self._lxcpath
        log.debug("starting %s", name)
        if not self._c.defined:  # nothing to start: say so without running the tool
            raise self._fail("failed to start")
        rotate_log(lxcpath, name)
        reaped = reap_monitor_cgroups(name)
        if reaped:
            log.debug("removed %d stale monitor cgroups of %s", reaped, name)
        tool = _lxc_start_tool()
        try:
            if tool is not None:
                _start_with_tool(tool, lxcpath, name)
            else:
                log.debug("lxc-start is not installed: starting %s from this process", name)
                if not self._c.start(close_fds=True):
                    raise self._fail("failed to start")
            # start() waits for RUNNING itself, but an init that exits at once can be gone
            if self._c.state not in ("RUNNING", "FROZEN"):
                raise LXCError(f"instance {name!r} stopped right after starting (its init "
                               "exited)", log_tail(lxcpath, name))
        except LXCError:
            self._settle()
            raise

    def _settle(self) -> None:
        """After a failed start, wait until liblxc reports the instance stopped.

        liblxc answers a start as soon as the monitor reports a state other than RUNNING; when
        a start-host hook fails (a proxy whose address is taken) that is ABORTING, sent before
        the monitor kills and reaps init. Returning then would leave an init in the payload
        cgroup for a moment, which the kernel's view (``livestate``) reads as running. A
        monitor that is tearing down answers a state query only when it closes its socket, so
        this takes a call or a few polls. (The monitor itself may still run its post-stop hooks
        for a moment afterwards, as after any stop.)"""
        # settled either way: RUNNING too, had someone else started it meanwhile
        if not self.wait(("STOPPED", "RUNNING", "FROZEN"), 30.0):
            log.warning("instance %s is still being torn down after a failed start", self._name)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop at once (SIGKILL to init) and wait until it is stopped; a frozen instance is
        unfrozen first so that it can die."""
        log.debug("killing %s", self._name)
        self._thaw_below()
        if self._c.state == "FROZEN":
            self._c.unfreeze()
        # no attach of this process between the kill of its attached processes and liblxc's
        # stop (which holds the GIL until init has died): its zombie would hang both for ever
        with _attach_lock(self._lxcpath, self._name):
            end_attached(self._lxcpath, self._name, kill=True, timeout=timeout)
            if not self._c.stop() and self._c.state != "STOPPED":
                raise self._fail("failed to stop")
        if not self.wait("STOPPED", timeout):
            raise LXCError(f"instance {self._name!r} did not stop",
                           log_tail(self._lxcpath, self._name))

    def shutdown(self, timeout: float) -> bool:
        """Ask init to halt (``lxc.signal.halt``) and wait up to ``timeout`` (<0: forever).

        Returns False on timeout, leaving the instance running; the caller decides what follows.
        """
        log.debug("asking %s to shut down (timeout %s)", self._name, timeout)
        self._thaw_below()
        if self._c.state == "FROZEN":
            self._c.unfreeze()
        self._c.shutdown(0)  # sends the signal and returns: never wait in C with the GIL held
        return self.wait("STOPPED", timeout)

    def _thaw_below(self) -> None:
        """Thaw what the container froze below its payload cgroup (``livestate.thaw_below``):
        liblxc thaws only the payload, and a task frozen below it never dies."""
        live = livestate.of(self._lxcpath, self._name)
        if live is not None and livestate.thaw_below(live.pid, self._name):
            log.debug("thawed cgroups %s had frozen below its payload", self._name)

    def freeze(self) -> None:
        log.debug("freezing %s", self._name)
        if not self._c.freeze():
            raise self._fail("failed to freeze")

    def unfreeze(self) -> None:
        log.debug("unfreezing %s", self._name)
        if not self._c.unfreeze():
            raise self._fail("failed to unfreeze")

    def wait(self, state: str | Collection[str], timeout: float = -1) -> bool:
        """Poll until the state is ``state`` (or one of several); False after ``timeout``
        seconds (<0: never). Polls without holding the GIL, which python3-lxc's ``wait``
        holds throughout."""
        wanted = {state} if isinstance(state, str) else state
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            if self._c.state in wanted:
                return True
            # a stopping container's init waits until this process reaps what it attached
            end_attached(self._lxcpath, self._name, kill=False)
            if timeout >= 0 and time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    # -- commands -------------------------------------------------------------------------------
    def attach(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None,
               uid: int | None = None, gid: int | None = None, stdin: int | None = None,
               stdout: int | None = None, stderr: int | None = None) -> int:
        """Start ``argv`` inside with the given fds (``None``: this process's own); returns the
        host pid to wait on. ``WrongState`` unless it is running.

        Always python3-lxc's ``attach_run_command``, which execs straight away in the child,
        so no Python runs after fork (forking a multithreaded interpreter, e.g. a Jupyter
        kernel, is otherwise fragile).
        """
        st = self._c.state
        if st != "RUNNING":
            raise WrongState(f"instance {self._name!r} is "
                             f"{'frozen' if st == 'FROZEN' else 'not running'}", state=st)
        for what, n in (("user", uid), ("group", gid)):
            # liblxc takes -1 for "as the attach's own" (root): `exec --user -1` ran the
            # command as root, and a number past uid_t ended it with no word at all
            if n is not None and (isinstance(n, bool) or not isinstance(n, int)
                                  or not 0 <= n < 2**32 - 1):
                raise InvalidArgument(f"invalid {what} {n!r}: an id is 0-{2**32 - 2}")
        for word in (*argv, *env, *env.values(), cwd or ""):
            if not isinstance(word, str) or not is_utf8(word):
                # python3-lxc hands liblxc each as UTF-8 and fails inside its attach (a
                # SystemError, or a traceback from the forked child): refused here instead
                raise InvalidArgument(f"{word!r} is not text (a byte that is not UTF-8?): the "
                                      "command, its environment and directory must be")
        opts = _attach_opts(env, cwd, uid, gid)
        for key, fd in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
            if fd is not None:
                opts[key] = fd
        if log.isEnabledFor(DEBUG):
            import shlex
            log.debug("exec in %s: %s (cwd %s, uid %s, gid %s)", self._name, shlex.join(argv),
                      cwd, uid, gid)
        pid = _attach_closing_leaks(self._c, list(argv), opts)
        if pid < 0:
            raise LXCError(f"failed to run {argv[0]!r} in instance {self._name!r}")
        return pid

    # -- cgroups and running config ----------------------------------------------------------------
    def get_cgroup_item(self, key: str) -> str | None:
        """A cgroup file's content; None when it is not running or has no such file."""
        try:
            value: str = self._c.get_cgroup_item(key)
        except KeyError:
            return None
        return value.rstrip("\n")  # the file's text as liblxc read it

    def set_cgroup_item(self, key: str, value: str) -> None:
        log.debug("cgroup of %s: %s = %s", self._name, key, value)
        if not self._c.set_cgroup_item(key, value):
            raise self._fail(f"failed to set cgroup {key}={value} on")

    def get_running_config_item(self, key: str) -> str | None:
        """A key of the config the running container was started with (None when unset)."""
        try:
            value = self._c.get_running_config_item(key)
        except (KeyError, ValueError):
            return None
        return str(value) if value else None

    # -- network (as liblxc sees it from inside) ------------------------------------------------
    def get_interfaces(self) -> list[str]:
        """Interface names inside; empty when it is not running or liblxc cannot tell."""
        try:
            return list(self._c.get_interfaces() or ())
        except Exception:
            return []

    def get_ips(self, interface: str | None = None, family: str | None = None) -> list[str]:
        try:
            kwargs: dict[str, Any] = {}
            if interface:
                kwargs["interface"] = interface
            if family:
                kwargs["family"] = family
            return list(self._c.get_ips(**kwargs) or ())
        except Exception:
            return []


@functools.cache
def _lxc_start_tool() -> str | None:
    """Where liblxc's ``lxc-start`` is (looked up once), or None when it is not installed."""
    from .programs import which  # not shutil's: see lxdlib.programs
    return which("lxc-start") or which("lxc-start", path=os.defpath)


# What lxc-start says on stderr after any failure, whatever the cause: noise beside the reason.
_TOOL_BOILERPLATE = ("The container failed to start", "To get more details, run the container",
                     "Additional information can be obtained")


def _start_with_tool(tool: str, lxcpath: Path, name: str) -> None:
    """Run ``lxc-start`` for one container and return once liblxc reports it running.

    ``-d``: daemonized, as python3-lxc's ``start`` did (liblxc's daemonized start also closes
    every inherited fd in the monitor). ``-o none``: the tool opens no log of its own (by default
    it would create ``<name>/<name>.log``) and liblxc logs to the config's ``lxc.log.file`` at
    its ``lxc.log.level``, as for an in-process start. What the tool prints on stderr (errors
    from before the config is loaded) is kept in a memfd, not a pipe: the monitor inherits the
    fd until it daemonizes, and nothing has to be read while the tool runs. The wait releases
    the GIL, which python3-lxc's ``start`` held throughout.
    """
    import subprocess
    err = os.memfd_create("lxc-start-stderr", os.MFD_CLOEXEC)
    try:
        proc = subprocess.run([tool, "-n", name, "-P", str(lxcpath), "-d", "-o", "none"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                              close_fds=True, check=False)
        if proc.returncode == 0:
            return
        said = os.pread(err, 65536, 0).decode(errors="replace").splitlines()
    finally:
        os.close(err)
    said = [ln for ln in said if ln.strip() and not any(b in ln for b in _TOOL_BOILERPLATE)]
    raise LXCError(f"failed to start instance {name!r}",
                   log_tail(lxcpath, name) or "\n".join(said[-20:]))


def open_container(lxcpath: Path, name: str) -> Container:
    """The handle of one container (see ``Container``); ``LXCError`` (not a bare
    ``RuntimeError``) when liblxc cannot load its config file, naming the line."""
    return Container(lxcpath, name)


def _liblxc() -> Any:
    """python3-lxc's compiled core (``_lxc``, which the ``lxc`` package wraps), imported at the
    first call that needs liblxc (see the module's docstring)."""
    import _lxc
    return _lxc


def _container(lxcpath: Path, name: str) -> Any:
    """A raw container object of python3-lxc's core, ``_lxc.Container``.

    Loading the container's config makes liblxc open its ``lxc.log.file``; the fd is closed only
    when the object is freed. The ``lxc`` package's ``Container`` adds a ``network`` helper that
    points back at the container, a reference cycle that only the cyclic garbage collector
    breaks, so every object (one per state query, exec, …) would keep its log fd open until
    some later collection. The core's object has no such helper: reference counting frees it,
    and closes the fd, the moment the last reference (its ``Container`` handle) goes.
    """
    return _liblxc().Container(name, str(lxcpath))


def log_tail(lxcpath: Path, name: str, lines: int = 20) -> str:
    path = lxcpath / name / LOG_NAME
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    keep = [ln for ln in data.splitlines() if " ERROR " in ln or " WARN " not in ln]
    return "\n".join(keep[-lines:])


def rotate_log(lxcpath: Path, name: str) -> None:
    """Keep one previous log: each start gets a fresh file, so the tail is about this start.

    Copied then truncated, not renamed: liblxc may already hold the file open (O_APPEND), and a
    rename would send this start's lines to the old file.
    """
    path = lxcpath / name / LOG_NAME
    try:
        src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if os.fstat(src).st_size == 0:
            return
        # in the kernel (``sendfile``), not ``shutil.copyfile``: shutil costs a start ~1.5 ms
        # to import, with bz2 and lzma
        dst = os.open(path.with_suffix(".log.old"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                      os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while os.sendfile(dst, src, None, 1 << 20) > 0:
                pass
        finally:
            os.close(dst)
        os.truncate(path, 0)
    finally:
        os.close(src)


#: How long a container's monitor has to answer a state query where a stuck one must not hold
#: up the caller (a listing, ``info``): one that answers at all does so within milliseconds.
ANSWER_WITHIN = 0.5

#: What `states_within` gives for a container whose monitor did not answer in time.
NO_ANSWER = "its liblxc monitor does not answer (a hook of its start or stop may be stuck)"


#: Monitors that did not answer `states_within`, by (lxcpath, name): until when that stands.
_unanswered: dict[tuple[str, str], float] = {}
_UNANSWERED_FOR = 2.0


def states_within(lxcpath: Path, names: Sequence[str], timeout: float = ANSWER_WITHIN
                  ) -> dict[str, tuple[str, int, str | None]]:
    """liblxc's state, init pid (-1 unless active) and error (None, or why it cannot be
    asked) of each container of ``names``, none waiting more than ``timeout`` seconds for
    its monitor.

    liblxc's command to a monitor has no timeout: a monitor busy in a start's or a stop's hook
    (``lxc.hook.pre-start``, ``post-stop``…) answers only once the hook ends, and python3-lxc
    holds the GIL all the while. So the questions go to a forked child
    (``forkjob.each_within``: one fork for all of them); a container whose monitor did not
    answer in time is ``("ERROR", -1, NO_ANSWER)``, and so is, without asking, one that did
    not answer in the last ``_UNANSWERED_FOR`` seconds. For the few a caller cannot settle from
    the kernel's view (``livestate``): a container starting or stopping, not the listing's
    common path."""
    from .forkjob import each_within
    _liblxc()  # imported here, before the fork: the child must not import
    active = ("RUNNING", "FROZEN", "FREEZING", "THAWED")
    now = time.monotonic()
    # a monitor that did not answer a moment ago is not asked again at once (a listing first
    # settles what killed verbs left, then lists: one stuck monitor costs it one wait)
    recent = {n for n in names if now < _unanswered.get((str(lxcpath), n), 0.0)}
    names = [n for n in names if n not in recent]

    def ask(i: int) -> tuple[str, int] | None:
        try:
            c = _container(lxcpath, names[i])
        except RuntimeError:
            return None  # its config: the reason is found here, not in the child
        st: str = c.state
        return st, (c.init_pid if st in active else -1)

    got = each_within(len(names), ask, timeout) if names else {}
    out: dict[str, tuple[str, int, str | None]] = dict.fromkeys(recent, ("ERROR", -1, NO_ANSWER))
    for i, name in enumerate(names):
        if i not in got:
            out[name] = ("ERROR", -1, NO_ANSWER)
            if len(_unanswered) > 1000:
                _unanswered.clear()
            _unanswered[(str(lxcpath), name)] = time.monotonic() + _UNANSWERED_FOR
        elif got[i] is None:
            out[name] = ("ERROR", -1, f"instance {name!r} is broken: "
                                      f"{config_fault(lxcpath, name)}")
        else:
            out[name] = (got[i][0], got[i][1], None)
    return out


# -- module-level spellings of the handle's methods, as lxdlib's callers use them ---------------

def state(c: Container) -> State:
    return c.state


def wait_state(c: Container, wanted: set[str], timeout: float) -> bool:
    """``c.wait``: poll the state without holding the GIL (python3-lxc's ``wait`` holds it)."""
    return c.wait(wanted, timeout)


def _cgroup_dirs() -> list[Path]:
    """Where liblxc puts monitor cgroups: each hierarchy's root and this process's own cgroup."""
    own: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for ctrl in controllers.split(",") or [""]:
                own[ctrl] = path
    except (OSError, ValueError):
        pass
    dirs: list[Path] = []
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return dirs
    for line in mounts:
        fields = line.split()
        sep = fields.index("-") if "-" in fields else -1
        if sep < 0 or fields[sep + 1] not in ("cgroup", "cgroup2"):
            continue
        mountpoint = Path(fields[4])
        dirs.append(mountpoint)
        if fields[sep + 1] == "cgroup2":
            sub = own.get("", "/")
        else:
            opts = fields[sep + 3].split(",")
            sub = next((own[o] for o in opts if o in own), "/")
        if sub not in ("", "/"):
            dirs.append(mountpoint / sub.lstrip("/"))
    return dirs


def reap_monitor_cgroups(name: str) -> int:
    """Remove the empty ``lxc.monitor.<name>[-N]`` cgroups earlier runs left behind.

    liblxc 5.0 cannot remove a monitor's cgroup while the monitor is still in it, so each start
    leaks one, and after 999 leaks a container of that name can no longer start ("Failed to
    create monitor cgroup"). ``rmdir`` only succeeds on an empty cgroup, so a running container's
    monitor (of any lxcpath) is never touched. liblxc takes the lowest free suffix, so probing
    ``<name>``, ``<name>-1``, … until a few are missing finds them without listing directories.
    Returns how many were removed.
    """
    removed = 0
    for d in _cgroup_dirs():
        misses = 0
        k = 0
        while misses < 3:
            entry = d / (f"lxc.monitor.{name}" if k == 0 else f"lxc.monitor.{name}-{k}")
            k += 1
            try:
                os.rmdir(entry)
                removed += 1
                misses = 0
            except FileNotFoundError:
                misses += 1
            except OSError:
                misses = 0  # busy: a running monitor holds it; later ones may be stale
    return removed


def start(c: Container, lxcpath: Path) -> None:
    """``c.start()``; ``lxcpath`` is the handle's own (kept for existing callers)."""
    c.start()


def kill(c: Container, lxcpath: Path, timeout: float = 30.0) -> None:
    """``c.stop(timeout)``: SIGKILL to init, unfreezing first so a frozen instance can die."""
    c.stop(timeout)


def shutdown(c: Container, lxcpath: Path, timeout: float) -> bool:
    """``c.shutdown(timeout)``: False on timeout, leaving the instance running."""
    return c.shutdown(timeout)


def freeze(c: Container, lxcpath: Path) -> None:
    c.freeze()


def unfreeze(c: Container, lxcpath: Path) -> None:
    c.unfreeze()


def _attach_opts(env: Mapping[str, str], cwd: str | None, uid: int | None,
                 gid: int | None) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "env_policy": _liblxc().LXC_ATTACH_CLEAR_ENV,
        "extra_env_vars": [f"{k}={v}" for k, v in env.items()],
    }
    if cwd is not None:
        opts["initial_cwd"] = cwd
    if uid is not None:
        opts["uid"] = uid
    if gid is not None:
        opts["gid"] = gid
    return opts


def spawn(c: Container, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None,
          uid: int | None = None, gid: int | None = None, stdin: int | None = None,
          stdout: int | None = None, stderr: int | None = None) -> Attached:
    """``c.attach``: start ``argv`` inside with the given fds; the process, to wait on and
    signal through ``Attached`` (never by its bare pid)."""
    if _ATTACHED:  # those dropped without a wait (a popen let go): reaped, their pidfds closed
        _reap_ended()
    with _attach_lock(c.lxcpath, c.name):  # held by ``Attached`` before a stop can look
        pid = c.attach(argv, env=env, cwd=cwd, uid=uid, gid=gid, stdin=stdin, stdout=stdout,
                       stderr=stderr)
        return Attached(pid, c.lxcpath, c.name)


class Attached:
    """A process ``spawn`` started in a container, which this process has yet to reap.

    liblxc attaches with ``CLONE_PARENT``: the command is a child of this process, not of the
    container's init, and only this process can reap it. When the container stops, the kernel
    kills it with everything else in the container's pid namespace, and the dying init then
    waits (``zap_pid_ns_processes``) until each of those has been *reaped*; the monitor waits
    for init, liblxc's ``stop`` waits for the monitor's socket to close, and this process,
    inside that ``stop``, never reaped its zombie: a restore, restart, ``delete --force`` or
    stop of a running instance hung for ever while the same process held a ``popen`` on it
    (a graceful stop too: its poll for STOPPED never came). So the stop and every poll of
    ``Container.wait`` end the attached processes of their container first
    (``end_attached``): killed before a kill (they die with init a moment later anyway),
    reaped once ended, their exit codes kept here for the owner's ``wait``.

    A pidfd holds the process from the start (while it cannot yet have been reaped), and every
    signal and wait goes through it: whoever reaps first, no signal or wait reaches a pid the
    kernel has given to another process since. Waits that block poll the pidfd without the
    lock, so the owner's ``wait`` in one thread and a stop in another never block each other.
    """

    __slots__ = ("_fd", "_where", "code", "pid")

    def __init__(self, pid: int, lxcpath: Path, name: str) -> None:
        self.pid = pid
        self._where = (str(lxcpath), name)
        self.code: int | None = None  # LXD's exit code once reaped
        self._fd = os.pidfd_open(pid)  # close-on-exec; our unreaped child: still this process
        with _ATTACHED_LOCK:
            _ATTACHED[pid] = self

    def __repr__(self) -> str:
        return f"<runtime.Attached pid={self.pid} in {self._where[1]!r} code={self.code}>"

    def _reap_locked(self) -> int | None:
        if self.code is not None:
            return self.code
        try:
            res = os.waitid(os.P_PIDFD, self._fd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:  # reaped by a waitpid(-1) of someone else: the code is lost
            res = None
            self.code = 255
        if res is not None:
            status = res.si_status
            self.code = status if res.si_code == os.CLD_EXITED else 128 + status
        if self.code is not None:
            os.close(self._fd)
            if _ATTACHED.get(self.pid) is self:  # reaped elsewhere, its pid may be another's
                del _ATTACHED[self.pid]
        return self.code

    def wait(self, timeout: float = -1) -> int | None:
        """Its exit code (reaping it), or None if it still runs after ``timeout`` seconds
        (0: do not wait; <0: as long as it takes)."""
        deadline = None if timeout < 0 else time.monotonic() + timeout
        while True:
            with _ATTACHED_LOCK:
                code = self._reap_locked()
                if code is not None or (deadline is not None and time.monotonic() >= deadline):
                    return code
                fd = os.dup(self._fd)  # ours to poll, while another thread may reap and close
            try:
                pidfd.exited(fd, 3600.0 if deadline is None
                             else max(0.0, deadline - time.monotonic()))
            finally:
                os.close(fd)

    def signal(self, sig: int) -> None:
        """``sig`` to the process, if it has not ended (or been reaped) yet."""
        with _ATTACHED_LOCK:
            if self.code is None:
                pidfd.send(self._fd, sig)


_SIGKILL = 9  # not ``signal``'s: most verbs never import it
_ATTACHED: dict[int, Attached] = {}  # by pid, until reaped
_ATTACHED_LOCK = _thread.allocate_lock()
_ATTACH_LOCKS: dict[tuple[str, str], _thread.LockType] = {}  # by container: ``_attach_lock``


def _attach_lock(lxcpath: Path, name: str) -> _thread.LockType:
    """The lock that an attach (until its ``Attached`` is registered) and a stop (from the
    kill of the container's attached processes to the end of liblxc's stop) hold, in this
    process. liblxc's attach lets other threads run; its stop does not: an attach that ended
    between ``end_attached`` and the stop left a child no thread could reap any more, and the
    container's init waited for it for ever (a popen or exec in one thread, a stop in another)."""
    with _ATTACHED_LOCK:
        return _ATTACH_LOCKS.setdefault((str(lxcpath), name), _thread.allocate_lock())


def _reap_ended() -> None:
    """Reap every attached process of this process that has ended, whatever its container: a
    popen dropped without a wait kept its zombie and its pidfd until its instance stopped (a
    notebook starting popens in a loop, one fd each). The code stays on its ``Attached`` for
    an owner that waits later, as ``subprocess`` keeps its dropped children's."""
    with _ATTACHED_LOCK:
        attached = list(_ATTACHED.values())
    for a in attached:
        a.wait(0)


def end_attached(lxcpath: Path, name: str, *, kill: bool, timeout: float = 30.0) -> None:
    """Reap the processes this process attached to the container that have ended; with
    ``kill``, kill them first and wait for them (up to ``timeout``; <0: 30 s). See
    ``Attached``: the container's init cannot finish dying before they are reaped."""
    if not _ATTACHED:
        return
    where = (str(lxcpath), name)
    with _ATTACHED_LOCK:
        mine = [a for a in _ATTACHED.values() if a._where == where]
    if kill and mine:
        for a in mine:
            a.signal(_SIGKILL)  # as the stop sends init
        log.debug("killed %d processes attached to %s before its stop", len(mine), name)
    wait = (timeout if timeout >= 0 else 30.0) if kill else 0.0
    for a in mine:
        if a.wait(wait) is None and kill:
            log.warning("a process attached to %s (host pid %d) did not end when killed",
                        name, a.pid)


@contextlib.contextmanager
def _no_fd_inherited() -> Iterator[None]:
    """While liblxc attaches, every inheritable fd of this process above 2 is close-on-exec.

    liblxc's attach forks this process and execs the command in the container: whatever the
    caller left inheritable (a shell's ``exec 9>lock``, a file its parent handed down) would
    otherwise be open in the container, where its root reads, writes or holds it (a host
    script's ``flock`` held forever, a root-only file written through the fd). LXD hands the
    command its three standard streams and nothing else; so does this. Those three (given to
    liblxc as fds it ``dup2``s onto 0-2, or 0-2 themselves) are not touched. The flag is put
    back afterwards on each fd that is still the same open file (another thread may have
    closed and reused the number meanwhile).
    """
    marked: list[tuple[int, int, int]] = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            if not os.get_inheritable(fd):
                continue
            st = os.fstat(fd)
            os.set_inheritable(fd, False)
        except OSError:  # the listing's own fd, closed by now, or one closed meanwhile
            continue
        marked.append((fd, st.st_dev, st.st_ino))
    try:
        yield
    finally:
        for fd, dev, ino in marked:
            with contextlib.suppress(OSError):
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == (dev, ino):
                    os.set_inheritable(fd, True)


@contextlib.contextmanager
def _default_signals() -> Iterator[None]:
    """While liblxc attaches, no signal is ignored in this process, so the command starts with
    every signal at its default, as a command LXD's daemon starts does.

    An ignored signal stays ignored across ``exec``: Python ignores ``SIGPIPE`` and ``SIGXFSZ``
    in every process (so ``yes | head -1`` inside printed "Broken pipe" and went on), and a
    caller under ``nohup`` ignores ``SIGHUP`` (so ``kill -HUP $$`` inside did nothing). Python
    can change a disposition only from its main thread, and the change holds for the whole
    process: so it is done only in a process that runs no other thread (the command line, a
    script), for the few milliseconds of the attach, and put back after. A process with other
    threads (a notebook's kernel) keeps the old behaviour rather than risk one of them
    meeting a default disposition it does not expect."""
    import _thread
    if _thread._count():  # threads of ``threading`` or ``_thread`` besides the main one
        yield
        return
    # ``_signal``, the core of ``signal`` without its enums (what the command line's exec
    # would otherwise load): the same calls, with plain numbers
    import _signal  # type: ignore[import-not-found]  # no stub: the module under `signal`
    ignored = [sig for sig in _signal.valid_signals()
               if sig not in (_signal.SIGKILL, _signal.SIGSTOP)
               and _signal.getsignal(sig) == _signal.SIG_IGN]
    changed = []
    try:
        for sig in ignored:
            _signal.signal(sig, _signal.SIG_DFL)
            changed.append(sig)
    except ValueError:  # not the main thread: no disposition can change from here
        pass
    try:
        yield
    finally:
        for sig in changed:
            _signal.signal(sig, _signal.SIG_IGN)


def _attach_closing_leaks(c: Any, argv: list[str], opts: dict[str, Any]) -> int:
    """``c.attach``, then close the pidfd liblxc leaves behind in this process.

    liblxc 5.0's attach asks the monitor for a pidfd on the container's init (the monitor sends
    its own, over the command socket) and never closes it in the caller: ``put_attach_context``
    closes every other fd it opened. So each exec left one ``anon_inode:[pidfd]`` open.

    Only that copy is closed, proven by identity rather than guessed by type: a new fd (not
    open before the call) that is the *same open file* as a pidfd the init's parent (the
    monitor) holds, compared with ``kcmp(KCMP_FILE)``. A pidfd this process opens itself with
    ``pidfd_open`` is a different file and is never touched; python3-lxc exposes no call that
    hands out the monitor's pidfd, and it holds the GIL through every liblxc call that talks to
    the monitor, so no other thread is using such a copy while this Python code runs.

    The ``lxdlib`` command running its one verb (``state.SHORT_LIVED``) skips the check: its
    exit closes the copy, and the proof needs ``kcmp`` through ctypes (~2.5 ms to load).
    """
    from . import state
    run = _liblxc().attach_run_command  # execs the program in the child: (path, argv)
    if state.SHORT_LIVED:
        with _no_fd_inherited(), _default_signals():
            return int(c.attach(run, (argv[0], argv), **opts))
    before = set(os.listdir("/proc/self/fd"))
    # the listing's own fd is in ``before`` but closed again: the leaked copy, opened next, may
    # well get its number. The lowest free number now is that one (the probe takes it).
    probe = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    before.discard(str(probe))
    os.close(probe)
    with _no_fd_inherited(), _default_signals():
        pid: int = c.attach(run, (argv[0], argv), **opts)
    try:
        _close_monitor_pidfds(before)
    except OSError as e:  # a leak is better than failing the exec
        log.debug("could not check for leaked pidfds: %s", e)
    return pid


def _fdinfo_pid(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    return -1


def _kcmp_same_file(pid1: int, fd1: int, pid2: int, fd2: int) -> bool:
    if _KCMP is None:
        return False
    from .state import libc  # ctypes: loaded by the first call
    return bool(libc().syscall(_KCMP, pid1, pid2, 0, fd1, fd2) == 0)  # 0: KCMP_FILE


def _close_monitor_pidfds(before: set[str]) -> None:
    me = os.getpid()
    for name in os.listdir("/proc/self/fd"):
        if name in before:
            continue
        try:
            if os.readlink(f"/proc/self/fd/{name}") != "anon_inode:[pidfd]":
                continue
            target = _fdinfo_pid(f"/proc/self/fdinfo/{name}")
            if target <= 0:
                continue
            monitor = livestate.parent_of(target)
            # this process is no monitor: a pidfd on one of its own children is its own (an
            # ``Attached`` that another thread opened during this attach), never a leak
            if monitor <= 0 or monitor == me:
                continue
            for theirs in os.listdir(f"/proc/{monitor}/fd"):
                if _kcmp_same_file(me, int(name), monitor, int(theirs)):
                    os.close(int(name))
                    break
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to judge


def _wait_io(readers: list[int], writers: list[int], timeout: float | None
             ) -> tuple[list[int], list[int]]:
    """Which fds are ready. ``poll``, not ``select``: a long-lived process may well hold fds
    numbered above 1023, which ``select`` refuses. Hang-up and error count as ready, so the
    read sees EOF and the write sees EPIPE."""
    p = select.poll()
    for fd in readers:
        p.register(fd, select.POLLIN)
    for fd in writers:
        p.register(fd, select.POLLOUT)
    ms = None if timeout is None else int(timeout * 1000) + (timeout > 0)
    ready = dict(p.poll(ms))
    return [fd for fd in readers if fd in ready], [fd for fd in writers if fd in ready]


#: How long ``run`` still reads, past its timeout, what the command (ended or killed) wrote.
_DRAIN = 1.0


def run(c: Container, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None,
        uid: int | None = None, gid: int | None = None, input: bytes | None = None,
        stdout_cb: Callable[[bytes], None] | None = None,
        stderr_cb: Callable[[bytes], None] | None = None, timeout: float | None = None
        ) -> ExecResult:
    """Run ``argv`` to completion, feeding ``input`` and collecting (or streaming) its output.

    Output is read while the command runs (select loop), so a chatty command never blocks on a
    full pipe. With ``timeout`` the command is killed (SIGKILL) when it runs too long, then
    ``ExecTimeout`` is raised.

    The timeout bounds the whole call, not only the command: a process the command left
    behind (``cmd &`` in a subshell: reparented to the container's init, outside the tree that
    is killed) keeps the output pipes open, and the container's root controls the programs it
    runs. Past the timeout, what arrives within ``_DRAIN`` seconds is still read, then the
    call returns: the command's result if it had ended in time, else ``ExecTimeout``. Without
    a timeout it reads to the end of its output, as LXD 5.0 does.
    """
    in_r, in_w = os.pipe() if input is not None else (os.open(os.devnull, os.O_RDONLY), -1)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        # an ``Attached``, as a popen's: a stop of the instance from another thread (which
        # holds the GIL inside liblxc until init has died) kills and reaps it first; reaped
        # by pid here, it stayed a zombie that init waited for, and the process hung for ever
        child = spawn(c, argv, env=env, cwd=cwd, uid=uid, gid=gid, stdin=in_r, stdout=out_w,
                      stderr=err_w)
        pid = child.pid
    except BaseException:
        for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
            if fd >= 0:
                os.close(fd)
        raise
    os.close(in_r)
    os.close(out_w)
    os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    cbs = {out_r: stdout_cb, err_r: stderr_cb}
    pending = memoryview(input) if input is not None else None
    readers = [out_r, err_r]
    writers = [in_w] if in_w >= 0 else []
    if pending is not None and not pending:
        os.close(in_w)
        writers = []
    deadline = time.monotonic() + timeout if timeout is not None else None
    killed = False
    code: int | None = None  # the command's exit code, once reaped
    draining = False
    try:
        while readers or writers:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            r, w = _wait_io(readers, writers, wait)
            if not r and not w and deadline is not None and time.monotonic() >= deadline:
                if draining:
                    # What still holds the pipes is no longer the command's: a process it
                    # left behind (reparented to the container's init, out of its tree) or
                    # one the container's root handed the pipe to. The timeout is the
                    # caller's bound on the whole call: stop reading.
                    log.debug("exec in %s: output still held open %.1f s after the command "
                              "ended; not waiting for it", c.name, _DRAIN)
                    break
                code = child.wait(0)
                if code is None:
                    proctree.kill_tree(pid)  # with what it started: they hold the pipes too
                    killed = True
                draining = True
                deadline = time.monotonic() + _DRAIN
                continue
            for fd in r:
                data = os.read(fd, 65536)
                if not data:
                    readers.remove(fd)
                    continue
                cb = cbs[fd]
                if cb is not None:
                    cb(data)
                else:
                    chunks[fd].append(data)
            for fd in w:
                assert pending is not None
                try:
                    n = os.write(fd, pending[:65536])
                except BrokenPipeError:
                    n = len(pending)
                pending = pending[n:]
                if not pending:
                    os.close(fd)
                    writers.remove(fd)
    except BaseException:
        # A raising callback or Ctrl-C: end the command and reap it, as subprocess.run does,
        # rather than leave it running with nobody reading its output, and a zombie after it.
        if child.wait(0) is None:  # not reaped yet: its pid is still its own
            with contextlib.suppress(OSError):
                proctree.kill_tree(pid)
            child.wait()
        raise
    finally:
        for fd in (out_r, err_r, *writers):
            with contextlib.suppress(OSError):
                os.close(fd)
    if code is None:
        code = child.wait()
        assert code is not None  # no timeout: until it has ended
    result = ExecResult(code, b"".join(chunks[out_r]), b"".join(chunks[err_r]))
    if killed:
        raise ExecTimeout(result, c.name, argv, timeout or 0)
    return result


def interactive(c: Container, argv: Sequence[str], *, env: Mapping[str, str],
                cwd: str | None = None, uid: int | None = None, gid: int | None = None,
                stdin: IO[bytes] | int = 0, stdout: IO[bytes] | int = 1,
                stderr: IO[bytes] | int = 2) -> int:
    """Run with the caller's own fds (a terminal, or inherited pipes) and return the exit code."""
    def fd(x: IO[bytes] | int) -> int:
        return x if isinstance(x, int) else x.fileno()
    child = spawn(c, argv, env=env, cwd=cwd, uid=uid, gid=gid, stdin=fd(stdin),
                  stdout=fd(stdout), stderr=fd(stderr))  # an ``Attached``: see ``run``
    code = child.wait()
    assert code is not None  # no timeout: until it has ended
    return code


# -- cgroups -----------------------------------------------------------------------------------

def cgroup_version() -> int:
    """2 on a pure cgroup2 host; 1 where the v1 controllers are mounted (hybrid included)."""
    return 2 if Path("/sys/fs/cgroup/cgroup.controllers").exists() else 1


def cgroup_get(c: Container, key: str) -> str | None:
    return c.get_cgroup_item(key)


def cgroup_set(c: Container, lxcpath: Path, key: str, value: str) -> None:
    c.set_cgroup_item(key, value)


def running_item(c: Container, key: str) -> str | None:
    """A key of the config the running container was started with (None when unset)."""
    return c.get_running_config_item(key)


def interfaces(c: Container) -> list[str]:
    return c.get_interfaces()


def ips(c: Container, interface: str | None = None, family: str | None = None) -> list[str]:
    return c.get_ips(interface, family)


def list_running(lxcpath: Path) -> set[str]:
    """The containers of ``lxcpath`` that run (or start, or stop): those whose monitor listens.
    Read from ``/proc/net/unix`` in one go — liblxc reads the same table, then builds its list
    in ways that took 12 ms at 1,000 running against about 1 ms here — and from liblxc where
    that table does not answer (``livestate.listening``)."""
    found = livestate.listening(lxcpath)
    return running_by_liblxc(lxcpath) if found is None else found


def running_by_liblxc(lxcpath: Path) -> set[str]:
    """liblxc's own list of the active containers of ``lxcpath`` (it asks each monitor where
    a socket's name was hashed)."""
    if not lxcpath.exists():
        return set()
    try:
        return set(_liblxc().list_containers(active=True, defined=False,
                                             config_path=str(lxcpath)))
    except ValueError:  # liblxc could not list (python3-lxc's own wrapper says: none)
        return set()


# -- config check ------------------------------------------------------------------------------

# A name no instance can have (instance names are hostnames): the scratch container object the
# check loads into never gets a directory, only liblxc's lock file next to the real instances'.
_CHECK_NAME = ".lxdlib-config-check"
# Opened by liblxc as soon as the key is loaded: the check must not touch the instance's log
# (nor hold an fd to it until garbage collection). lxdlib writes this key itself, never raw.lxc.
_CHECK_SKIP = frozenset({"lxc.log.file"})


def _loads(lxcpath: Path, lines: Sequence[tuple[str, str]]) -> int:
    """Load ``lines`` into a fresh scratch container object, one ``load_config`` call per
    batch; returns the index of the first line liblxc refuses, or -1 when all load.

    The text goes through a memfd, so nothing is written to disk. Lines are appended one at
    a time only after the whole text failed (rare), to name the line at fault.
    """
    fd = os.memfd_create("lxdlib-config-check", os.MFD_CLOEXEC)
    try:
        src = f"/proc/self/fd/{fd}"

        def load(c: Any, batch: Sequence[tuple[str, str]]) -> bool:
            os.ftruncate(fd, 0)
            os.pwrite(fd, "".join(f"{k} = {v}\n" for k, v in batch).encode(), 0)
            return bool(c.load_config(src))

        c = _container(lxcpath, _CHECK_NAME)
        try:
            if load(c, lines):
                return -1
        finally:
            del c
        c = _container(lxcpath, _CHECK_NAME)
        try:
            for i, line in enumerate(lines):
                if not load(c, [line]):
                    return i
        finally:
            del c
        return len(lines) - 1 if lines else -1
    finally:
        os.close(fd)


#: The shapes (``_shape``) of the configs liblxc loaded in this process: a config of the same
#: shape loads alike, so it is not loaded again (a copy, or a new instance from one image and
#: profile, differs from the last one only in its name and MACs). Bounded: cleared when full.
_LOADED: dict[tuple[tuple[str, str], ...], None] = {}
_LOADED_MAX = 512
#: Keys whose value liblxc keeps as given when it loads a config (a host name, a path), checking
#: only its length: the instance's name inside them does not decide whether the line loads.
_NAME_KEYS = frozenset({"lxc.uts.name", "lxc.rootfs.path", "lxc.console.logfile",
                        "lxc.seccomp.profile",
                        # every instance's stop mark (``hooklog.stop_marker_command``) is a
                        # file of its directory: a hook's value is text to liblxc's parser
                        "lxc.hook.post-stop"})
#: A MAC as lxdlib writes one (liblxc keeps it as given too; ``x`` digits it would fill in).
_MAC = Pattern(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z")
#: The host end of a nic's veth as lxdlib names it by default (``veth`` and 8 hex digits of
#: the instance's and the device's hash): liblxc checks only that a name fits IFNAMSIZ.
_VETH = Pattern(r"veth[0-9a-f]{8}\Z")
#: Room left under liblxc's path limit (PATH_MAX) for any instance name (at most 63 characters).
_PATH_ROOM = 4096 - 128


def _shape(lines: Sequence[tuple[str, str]], name: str | None) -> tuple[tuple[str, str], ...]:
    """``lines`` with what liblxc loads alike whatever its value left out: the instance's
    ``name`` (a valid instance name) where it is the host name or a whole component of a path
    — only while no other name could push the path over the length liblxc takes — and MAC
    addresses and veth names of the forms lxdlib writes."""
    if not name:
        return tuple(lines)
    seg = f"/{name}/"
    out = []
    for key, value in lines:
        if key in _NAME_KEYS:
            if key == "lxc.uts.name":
                if value == name:
                    value = "\0name"
            elif seg in value and len(value) + 64 * value.count(seg) < _PATH_ROOM:
                value = value.replace(seg, "/\0name/")
        elif key.startswith("lxc.net.") and key.endswith(".hwaddr") and _MAC.match(value):
            value = "\0mac"
        elif key.startswith("lxc.net.") and key.endswith(".veth.pair") and _VETH.match(value):
            value = "\0veth"
        out.append((key, value))
    return tuple(out)


def check_config(lxcpath: Path, lines: Sequence[tuple[str, str]],
                 name: str | None = None) -> None:
    """Have liblxc itself load a rendered config before it is saved.

    liblxc's parsers are stricter than lxdlib's schema in places (``lxc.environment`` needs a
    ``=``, ``lxc.idmap`` four fields …), and a config file liblxc cannot load makes the
    instance unusable: every ``lxc.Container`` of it fails to construct. Loading into a
    throwaway container object (no directory, no files; about 0.2 ms) is the ground truth.
    Raises ``InvalidConfig`` naming the refused line; callers run it only when the rendered
    text changed, so starts with an unchanged config do not pay for it.

    ``name``: the instance's name; a config that differs from one loaded before in this
    process only by that name and by MACs (see ``_shape``) is not loaded again.
    """
    checked = [(k, v) for k, v in lines if k not in _CHECK_SKIP]
    shape = _shape(checked, name)
    if shape in _LOADED:
        return
    log.debug("checking %d config lines with liblxc", len(checked))
    bad = _loads(lxcpath, checked)
    if bad >= 0:
        key, value = checked[bad]
        raise InvalidConfig(key, "liblxc refuses to load this line of the instance's config",
                            value)
    if len(_LOADED) >= _LOADED_MAX:
        _LOADED.clear()
    _LOADED[shape] = None


def config_fault(lxcpath: Path, name: str) -> str:
    """Why liblxc cannot load an instance's config file (for an error or a listing)."""
    path = lxcpath / name / "config"
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"its liblxc config {path} is missing"
    except OSError as e:
        return f"cannot read its liblxc config {path}: {e.strerror}"
    lines = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition("=")
            lines.append((key.strip(), value.strip()))
    checked = [(k, v) for k, v in lines if k not in _CHECK_SKIP]
    bad = _loads(lxcpath, checked)
    if bad >= 0:
        key, value = checked[bad]
        return f"liblxc refuses the line {key} = {value!r} of {path}"
    return f"liblxc cannot load {path}"
