"""Which containers run, their init pid and whether they are frozen, read from what the kernel
shows (cgroupfs and ``/proc``) instead of asking each container's monitor through liblxc.

Asking liblxc costs a config load and a round trip to the monitor per container, and a listing
of a thousand instances would spend most of its time there. The kernel already knows:

- liblxc puts a container's processes in a cgroup named ``lxc.payload.<name>`` (``-<n>`` added
  when that name is taken, e.g. by a container of the same name in another lxcpath), under the
  hierarchy's root or under the cgroup of the process that started it;
- the container's init is a child of its monitor, whose command line is
  ``[lxc monitor] <lxcpath> <name>``: that is what ties a cgroup to *this* lxcpath's container;
- the freezer says frozen or not (v1 ``freezer.state``, v2 ``cgroup.events``).

``read`` answers only what it can prove this way, one pass over the cgroup directory and a few
small reads per running container; for the rest (a cgroup it cannot find, an init it cannot
tie to the monitor) it answers ``None`` and the caller asks liblxc, which is always right.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from .fstree import walk_lstat
from .logs import get_logger
from .values import Value, assign

log = get_logger(__name__)

PAYLOAD = "lxc.payload."
MONITOR = b"[lxc monitor] "


class Live(Value, frozen=True):
    """A running container as the kernel shows it: liblxc's state name and its init's pid."""

    _fields = ("state", "pid")
    __slots__ = _fields

    state: str  # RUNNING, FROZEN or FREEZING, spelt as liblxc does
    pid: int

    def __init__(self, state: str, pid: int) -> None:
        assign(self, "state", state)
        assign(self, "pid", pid)


class Layout(Value, frozen=True):
    """Where liblxc's payload cgroups may be, and which freezer interface they have."""

    _fields = ("version", "bases")
    __slots__ = _fields

    version: int  # 1: the v1 freezer hierarchy; 2: the unified hierarchy
    bases: tuple[Path, ...]

    def __init__(self, version: int, bases: tuple[Path, ...]) -> None:
        assign(self, "version", version)
        assign(self, "bases", bases)


def parse_mountinfo(text: str) -> dict[str, Path]:
    """``/proc/self/mountinfo`` → the mount point of the v1 ``freezer`` hierarchy
    (key ``"freezer"``) and of the unified hierarchy (key ``""``), where mounted."""
    found = parse_hierarchies(text)
    return {key: Path(found[key]) for key in ("freezer", "") if key in found}


def parse_hierarchies(text: str) -> dict[str, str]:
    """``/proc/self/mountinfo`` → the mount point of every cgroup hierarchy: v1 ones by each
    controller they hold (``memory``, ``pids``, ``name=systemd``…), the unified one as ``""``
    (the first mount of each wins)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4:
            continue
        if fields[sep + 1] == "cgroup2":
            out.setdefault("", fields[4])
        elif fields[sep + 1] == "cgroup":
            for option in fields[sep + 3].split(","):
                if option not in ("rw", "ro"):
                    out.setdefault(option, fields[4])
    return out


def payload_dirs(proc_cgroup: str, name: str, mounts: Mapping[str, str]) -> dict[str, str]:
    """Where the counters of container ``name`` are, from its init's ``/proc/<pid>/cgroup``:
    {hierarchy (as ``parse_hierarchies`` names them): the directory of its payload cgroup}.

    The payload is the first ``lxc.payload.<name>`` (or ``…-<n>``) directory of the init's
    path, whatever the init made below it (systemd's ``init.scope``). The container's root may
    name its own cgroups as it likes, a newline included, which ``/proc`` prints as is: a
    hierarchy shown twice (a line made up that way) is not trusted, nor a path whose payload
    is not this container's; the caller asks liblxc for those."""
    seen: dict[str, str | None] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for ctrl in parts[1].split(",") if parts[1] else [""]:
            seen[ctrl] = None if ctrl in seen else parts[2]
    out: dict[str, str] = {}
    for ctrl, path in seen.items():
        if path is None or ctrl not in mounts:
            continue
        comps = path.split("/")
        at = next((i for i, c in enumerate(comps) if c.startswith(PAYLOAD)), -1)
        if at < 0:
            continue
        key = comps[at][len(PAYLOAD):]
        base, dash, num = key.rpartition("-")
        if key != name and not (dash and num.isdigit() and base == name):
            continue
        out[ctrl] = mounts[ctrl].rstrip("/") + "/".join(comps[:at + 1])
    return out


_hierarchies: dict[str, str] | None = None


def counters_of(pid: int, name: str) -> dict[str, str]:
    """``payload_dirs`` of the running container ``name`` whose init is ``pid`` ({} when
    ``/proc`` cannot tell): its counters are then plain files, where liblxc would ask the
    container's monitor for each (~0.25 ms a file)."""
    global _hierarchies
    try:
        if _hierarchies is None:
            _hierarchies = parse_hierarchies(Path("/proc/self/mountinfo").read_text())
        return payload_dirs(_read(f"/proc/{pid}/cgroup").decode(errors="replace"), name,
                            _hierarchies)
    except OSError:
        return {}


#: The file that freezes one cgroup, by hierarchy (``parse_hierarchies``' keys), and the
#: value that thaws it.
_THAW = {"freezer": ("freezer.state", b"THAWED"), "": ("cgroup.freeze", b"0")}


def thaw_below(pid: int, name: str) -> int:
    """Thaw every cgroup the container ``name`` (init ``pid``) made below its payload; how
    many were written.

    The payload's subtree is delegated to the container's root, which may move its init into
    a cgroup of its own and freeze it. liblxc thaws the payload alone before a stop: a SIGKILL
    to a task frozen below it stays pending, the init never dies and ``stop --force`` (and
    ``delete --force``) waited for it forever. The directories are the kernel's (cgroupfs
    holds no symlinks or FIFOs), found from the init's own ``/proc/<pid>/cgroup`` and checked
    to be this container's payload (``payload_dirs``)."""
    done = 0
    for ctrl, top in counters_of(pid, name).items():
        if ctrl not in _THAW:
            continue
        key, value = _THAW[ctrl]
        # a loop, not os.walk (recursive in Python 3.11): the container's root may nest its
        # cgroups past the recursion limit, and then stop --force raised RecursionError
        try:
            done += _thaw_tree(top, key, value)
        except FileNotFoundError:  # the payload itself is gone: the instance stopped meanwhile
            continue
    return done


def _thaw_tree(top: str, key: str, value: bytes) -> int:
    done = 0
    for here, st in walk_lstat(top):
        if here == top or not stat.S_ISDIR(st.st_mode):
            continue  # the payload itself is liblxc's (pause/unpause)
        try:
            fd = os.open(f"{here}/{key}", os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.write(fd, value)
            done += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return done


def read_counter(directory: str, key: str) -> str | None:
    """A cgroup file's text; None where the kernel does not keep it (``memory.peak`` before
    Linux 5.19, the ``memsw`` files without swap accounting)."""
    try:
        return _read(f"{directory}/{key}").decode(errors="replace")
    except FileNotFoundError:
        return None


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` → {controller: path}; the unified hierarchy's key is ``""``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for ctrl in parts[1].split(",") if parts[1] else [""]:
            out[ctrl] = parts[2]
    return out


def layout_from(mounts: Mapping[str, Path], own: Mapping[str, str]) -> Layout | None:
    """The hierarchy liblxc's freezer state is read from: v1 ``freezer`` where it is mounted
    (hybrid hosts), else the unified one; its root and this process's own cgroup in it."""
    if "freezer" in mounts:
        version, mount, sub = 1, mounts["freezer"], own.get("freezer", "/")
    elif "" in mounts:
        version, mount, sub = 2, mounts[""], own.get("", "/")
    else:
        return None
    bases = [mount]
    if sub not in ("", "/"):
        bases.append(mount / sub.lstrip("/"))
    return Layout(version, tuple(bases))


def layout() -> Layout | None:
    try:
        mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
        own = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError:
        return None
    return layout_from(mounts, own)


def payload_key(dirname: str) -> str | None:
    """``lxc.payload.web`` and ``lxc.payload.web-2`` → ``web`` … as candidates: the key is
    the directory name without the prefix; callers match ``name`` and ``name-<n>``."""
    return dirname[len(PAYLOAD):] if dirname.startswith(PAYLOAD) else None


def candidates(entries: Iterable[str], names: Iterable[str]) -> dict[str, list[str]]:
    """The payload directory names (among ``entries``) that may belong to each of ``names``:
    ``lxc.payload.<name>`` first, then ``lxc.payload.<name>-<n>``. Instance names never
    contain a dot, so splitting the suffix off at the last ``-`` is unambiguous only together
    with the check against the monitor, which the caller makes."""
    wanted = set(names)
    out: dict[str, list[str]] = {}
    for entry in entries:
        key = payload_key(entry)
        if key is None:
            continue
        if key in wanted:
            out.setdefault(key, []).insert(0, entry)
        base, dash, num = key.rpartition("-")
        if dash and num.isdigit() and base in wanted:
            out.setdefault(base, []).append(entry)
    return out


def parse_freezer(version: int, text: str) -> str:
    """liblxc's state of a running container from its freezer file (v1 ``freezer.state``, v2
    ``cgroup.events``)."""
    if version == 1:
        value = text.strip()
        return {"FROZEN": "FROZEN", "FREEZING": "FREEZING"}.get(value, "RUNNING")
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "frozen":
            return "FROZEN" if value.strip() == "1" else "RUNNING"
    return "RUNNING"


def parse_ppid(stat: bytes) -> int:
    """The parent pid from ``/proc/<pid>/stat`` (the command name may hold spaces and
    parentheses: the fields after the last ``)`` are safe)."""
    fields = stat.rpartition(b")")[2].split()
    return int(fields[1]) if len(fields) > 1 else -1


def parent_of(pid: int) -> int:
    """``pid``'s parent pid, from ``/proc/<pid>/stat``; -1 if it is gone."""
    try:
        return parse_ppid(_read(f"/proc/{pid}/stat"))
    except (OSError, ValueError):
        return -1


def monitor_cmdline(lxcpath: Path, name: str) -> bytes:
    """What ``/proc/<monitor>/cmdline`` holds for this container's monitor (without the NULs
    liblxc pads it with)."""
    return MONITOR + os.fsencode(str(lxcpath)) + b" " + os.fsencode(name)


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def pids_of(procs: bytes) -> list[int]:
    """The pids of a ``cgroup.procs`` text, in its order."""
    return [int(w) for w in procs.split() if w.isdigit()]


# Inits already tied to this lxcpath's monitor by this process: (payload cgroup, its inode) ->
# (monitor command line, init pid). While the cgroup directory is the same one (a restart makes
# a new one, with a new inode) and that pid is alive, it is the same init: its pid cannot be
# taken by another process while it lives, nor while it is a zombie its monitor has not reaped,
# and the monitor removes the cgroup right after reaping it. The three reads are then skipped.
_verified: dict[tuple[str, int], tuple[bytes, int]] = {}


def clear_cache() -> None:
    """Forget which inits were tied to their monitor (the next read checks each again), and
    the cgroup layout ``of`` keeps."""
    _verified.clear()
    _of_layout.cache_clear()


def cache_entries() -> dict[tuple[str, int], tuple[bytes, int]]:
    """A copy of which inits this process has tied to their monitor: what a forked child
    checked is handed back to its parent (`remember`), so the parent's next read skips it."""
    return dict(_verified)


def remember(entries: Mapping[tuple[str, int], tuple[bytes, int]]) -> None:
    """Take in what another process (a fork of this one) checked: see `cache_entries`."""
    if len(_verified) + len(entries) > 20000:
        _verified.clear()
    _verified.update(entries)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def init_among(pids: list[int], expected: bytes) -> int:
    """The process of ``pids`` (one cgroup's) whose parent is outside them and has the command
    line ``expected``; -1 if none is found.

    The walk starts at the first pid and goes up from parent to parent while the parent is
    one of ``pids``: the first pid is the init itself (one /proc read and its parent's command
    line), or a process the init started, whose ancestors lead to it. A walk that leaves the
    cgroup elsewhere (a process ``exec`` attached from the host) starts again at the next pid
    not yet seen, at most ``_WALKS`` times."""
    members = set(pids)
    seen: set[int] = set()
    parents: dict[int, bool] = {}
    walks = 0
    for start in pids:
        if start in seen:
            continue
        walks += 1
        if walks > _WALKS:
            break
        pid = start
        while pid not in seen:
            seen.add(pid)
            ppid = parent_of(pid)
            if ppid in members:
                pid = ppid
                continue
            if ppid <= 0:  # gone meanwhile
                break
            if ppid not in parents:
                try:
                    cmdline = _read(f"/proc/{ppid}/cmdline")
                except OSError:  # gone meanwhile
                    break
                parents[ppid] = cmdline.rstrip(b"\0").replace(b"\0", b" ").rstrip() == expected
            if parents[ppid]:
                return pid
            break
    return -1


#: How many walks up from a cgroup's processes `init_among` makes before it gives up.
_WALKS = 8


def _init_of(cgroup: str, expected: bytes) -> int:
    """The pid of the container's init if ``cgroup`` is the payload of the container whose
    monitor's command line is ``expected``; -1 otherwise. The init is the process of
    ``cgroup.procs`` (or, when the payload itself is empty, of its first non-empty child: an
    init that moved itself, as systemd does) that is a child of that monitor.

    The init is usually the first pid listed. But cgroup v1 lists pids in numeric order, and
    once the kernel's pids have wrapped around (at ``kernel.pid_max``: 32,768 on a small
    host) the processes the init started since then have lower pids than the init: the
    first pid is then one of them, and its ancestors lead to the init (`init_among`)."""
    try:
        ino = os.stat(cgroup).st_ino
        known = _verified.get((cgroup, ino))
        if known is not None and known[0] == expected and _alive(known[1]):
            return known[1]
        pids = pids_of(_read(cgroup + "/cgroup.procs"))
        if not pids:
            with os.scandir(cgroup) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        pids = pids_of(_read(entry.path + "/cgroup.procs"))
                        if pids:
                            break
    except (OSError, ValueError):
        return -1
    pid = init_among(pids, expected)
    if pid < 0:
        return -1
    if len(_verified) > 20000:
        _verified.clear()
    _verified[(cgroup, ino)] = (expected, pid)
    return pid


def read(lxcpath: Path, running: Iterable[str], where: Layout | None = None, *,
         quiet: bool = False, scan: bool = True) -> dict[str, Live | None]:
    """State and init pid of each running container of ``lxcpath`` (``running``: the names
    liblxc lists as active), ``None`` where the kernel's view cannot prove it. ``quiet``: no
    logging (in a forked child, which must not write to its parent's log handlers).
    ``scan=False``: only the usual place of each cgroup is looked at, never the whole
    directory (see ``of``)."""
    names = list(running)
    out: dict[str, Live | None] = dict.fromkeys(names)
    where = where or layout()
    if where is None or not names:
        return out
    freezer = "freezer.state" if where.version == 1 else "cgroup.events"

    monitor = monitor_cmdline(lxcpath, "")  # the same for all but the name: joined once

    def settle(name: str, cgroups: Iterable[str]) -> None:
        expected = monitor + os.fsencode(name)
        for cgroup in cgroups:
            pid = _init_of(cgroup, expected)
            if pid < 0:
                continue
            try:
                state = parse_freezer(where.version,
                                      _read(f"{cgroup}/{freezer}").decode(errors="replace"))
            except OSError:
                return  # gone meanwhile: liblxc will say what it is now
            out[name] = Live(state, pid)
            return

    # the usual place first (the cgroup named after the container, under the hierarchy's
    # root); the whole directory, with the ``-<n>`` names and the other bases, only for the
    # rest: it also holds every monitor's cgroup, thousands of entries
    for name in names:
        settle(name, [f"{where.bases[0]}/{PAYLOAD}{name}"])
    rest = [n for n, v in out.items() if v is None]
    if rest and scan:
        found: dict[str, list[str]] = {}
        for base in where.bases:
            try:
                with os.scandir(base) as it:
                    entries = [e.name for e in it if e.name.startswith(PAYLOAD)]
            except OSError:
                continue
            for name, dirs in candidates(entries, rest).items():
                found.setdefault(name, []).extend(f"{base}/{d}" for d in dirs)
        for name in rest:
            settle(name, (c for c in found.get(name, ())
                          if c != f"{where.bases[0]}/{PAYLOAD}{name}"))
    unknown = [n for n, v in out.items() if v is None]
    if unknown and scan and not quiet:
        log.debug("cgroups do not show the state of %d running containers (%s…): asking liblxc",
                  len(unknown), unknown[0])
    return out


def of(lxcpath: Path, name: str) -> Live | None:
    """The state and init pid of one container of ``lxcpath`` if the kernel's view proves it
    running: its payload cgroup, in the usual place, holds an init whose parent is its monitor.
    None otherwise (stopped, or its cgroup elsewhere): only liblxc can tell then.

    What ``info`` and ``InstanceCore.state`` ask first: a running instance is then shown
    without liblxc (its binding, ~1.2 ms of a command's start, a config load and two round
    trips to the monitor). Looking only at the usual place keeps the cost flat: the directory around
    it holds every container's cgroups, which a listing scans once for all, but a verb on one
    instance must not.

    The cgroup layout (two /proc files parsed, ~0.12 ms: more than the rest) is read once per
    process and kept. A layout gone stale (cgroups remounted, this process moved) can only
    miss: every init found is checked against its monitor, and a miss is asked of liblxc."""
    where = _of_layout()
    return None if where is None else read(lxcpath, [name], where, scan=False, quiet=True)[name]


@functools.cache
def _of_layout() -> Layout | None:
    """``layout()``, read at ``of``'s first call and kept (``clear_cache`` forgets it)."""
    return layout()


# -- which monitors listen ------------------------------------------------------------------------

#: The host's unix sockets. Each running container's monitor listens on the abstract socket
#: ``@<lxcpath>/<name>/command``: liblxc's own list of active containers is read from here.
PROC_NET_UNIX = "/proc/net/unix"


def running_from_sockets(table: bytes, lxcpath: str, names: Iterable[str] = ()
                         ) -> set[str] | None:
    """The containers of ``lxcpath`` whose monitor listens, from the text of ``/proc/net/unix``
    read as liblxc reads it (the socket's name is a line's last field). A monitor's name that
    was hashed (``@lxc/<hash>/command``: liblxc's form for a name past the 107 bytes a socket
    name holds) tells its container only to one who knows the name: those of ``names`` are
    found by their hash (``command_socket``); None where another such socket is listed, which
    only its monitor can tell (liblxc asks it)."""
    prefix = b"@" + os.fsencode(lxcpath.rstrip("/")) + b"/"
    found: set[str] = set()
    hashed: dict[bytes, str] | None = None
    for line in table.split(b"\n"):
        socket = line.rpartition(b" ")[2]
        if socket.startswith(prefix):
            name, slash, rest = socket[len(prefix):].lstrip(b"/").partition(b"/")
            if name and slash and rest == b"command":
                found.add(os.fsdecode(name))
        elif socket.startswith(b"@lxc/") and socket.endswith(b"/command"):
            if hashed is None:  # made at the first such socket only: a hash per long name
                base = lxcpath.rstrip("/")
                hashed = {b"@" + command_socket(Path(base), n)[1:]: n for n in names
                          if len(os.fsencode(f"{base}/{n}/command")) >= 107}
            if socket not in hashed:
                return None
            found.add(hashed[socket])
    return found


def listening(lxcpath: Path, names: Iterable[str] = ()) -> set[str] | None:
    """The containers of ``lxcpath`` that run (or start, or stop) by their monitors' sockets,
    or None when the table cannot tell (unreadable, or a hashed name not of ``names``): then
    only liblxc can (``runtime.running_by_liblxc``). Here rather than in the runtime so that a
    listing where it answers loads neither liblxc's binding nor ``subprocess`` (~4.5 ms of
    ``lxdlib list``)."""
    try:
        with open(PROC_NET_UNIX, "rb") as f:
            return running_from_sockets(f.read(), str(lxcpath), names)
    except OSError:
        return None


def command_socket(lxcpath: Path, name: str) -> bytes:
    """The abstract address container ``name``'s monitor listens on, as liblxc names it:
    ``\\0<lxcpath>/<name>/command``, or where that passes the 107 bytes a socket name holds,
    ``\\0lxc/<hash>/command`` with the FNV-1a 64-bit hash of ``<lxcpath>/<name>``."""
    address = os.fsencode(f"{lxcpath}/{name}/command")
    if len(address) < 107:
        return b"\0" + address
    h = 0xcbf29ce484222325
    for byte in os.fsencode(f"{lxcpath}/{name}"):
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return b"\0lxc/%016x/command" % h


def monitor_listens(lxcpath: Path, name: str) -> bool | None:
    """Whether container ``name``'s monitor listens on its command socket (it runs, starts or
    stops), by a connect to that abstract socket (``command_socket``), closed at once (the
    monitor reads an empty request and drops it): ~20 µs, where ``listening`` reads the
    host's whole socket table. None when the connect failed otherwise than refused."""
    import _socket  # here: only a state the cgroups do not prove asks (~0.2 ms to import)
    import errno
    s = _socket.socket(_socket.AF_UNIX,
                       _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC)
    try:
        s.connect(command_socket(lxcpath, name))
    except BlockingIOError:  # its backlog is full: a monitor that does not accept
        return True
    except ConnectionRefusedError:
        return False
    except OSError as e:
        return False if e.errno == errno.ENOENT else None
    finally:
        s.close()
    return True
