"""Every instance's state, pid and addresses in one pass: what ``lxc list`` shows.

Asking each instance in turn (``inst.state``, ``inst.pid``, ``inst.network_state()``) costs a
liblxc config load and a monitor round trip per instance, and an ``ip`` process in each
namespace: seconds for a thousand instances. A ``Listing`` reads the same facts in bulk, and
runs no program:

- records: parsed once per process while their file is unchanged (``record.clear_cache``);
- which run: the monitors listening on their command sockets, read from ``/proc/net/unix``
  as liblxc reads them (``livestate.listening``: one read for the whole lxcpath);
- state and init pid of those: the kernel's view (``livestate``: cgroup files and ``/proc``);
  the few it cannot prove (starting, stopping) are asked through liblxc in one forked child,
  none waiting more than ``runtime.ANSWER_WITHIN`` for its monitor (``runtime.states_within``):
  a monitor stuck in a hook answers nobody, and python3-lxc would wait for it with the GIL
  held, so one stuck instance hung the listing of all; it is listed as ``ERROR``, saying so;
- addresses: a netlink dump inside each running instance's network namespace, in-process, in a
  thread that works while the records are parsed (``netstate.start_reading``; for hundreds, in
  a process that runs one thread, a fork of it checks and reads most of them meanwhile: see
  ``take``) — the addresses
  ``inst.network_state()`` reads with one ``ip`` process per instance, in the same shape, so
  also those set inside the instance without DHCP (static, SLAAC), which the host's DHCP
  leases would miss; ``network="full"`` adds MAC, MTU, state and counters;
- an instance that is not running is checked the way liblxc would load it, so a config liblxc
  refuses shows as ``ERROR`` (a running one is shown as running: it is).

It is a snapshot: taken at once, never refreshed; take another for a newer view.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterable, Mapping

from . import livestate, record
from .errors import TYPE_CHECKING, LXCError, LxdlibError
from .logs import get_logger
from .model import Collection
from .state import file_identity, settled
from .values import Value, assign

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Literal

    from . import forkjob
    from .record import InstanceRecord
    from .state import Paths

log = get_logger(__name__)

ACTIVE = ("RUNNING", "FROZEN", "FREEZING")

#: LXD's spelling of liblxc's states (``inst.status``, ``lxc list``'s JSON ``status``).
STATUS = {"RUNNING": "Running", "STOPPED": "Stopped", "FROZEN": "Frozen",
          "STARTING": "Running", "STOPPING": "Stopped", "ABORTING": "Error",
          "FREEZING": "Frozen", "THAWED": "Running"}


#: Address scopes an instance's address list leaves out, as LXD's ``lxc list`` does: ``link``
#: (``fe80::…``, and ``169.254.…`` where the kernel gives it that scope) and ``local`` (the
#: kernel's ``host``: loopback addresses).
HIDDEN_SCOPES = frozenset({"link", "local"})


def global_addresses(network: Mapping[str, Any], family: str) -> list[tuple[str, str]]:
    """(address, interface) of the routable addresses of ``family`` in a network state (the
    shape of ``inst.network_state()``): what LXD's ``lxc list`` shows in its IPV4 and IPV6
    columns — no loopback interface, no link-local or host-scope address — in its order (the
    ``"<address> (<interface>)"`` texts sorted in reverse). The one place that decides it:
    ``inst.addresses()``, ``Listed.ipv4``/``ipv6`` and the CLI's columns all ask here."""
    found = [(a["address"], ifname) for ifname, nic in network.items()
             if ifname != "lo" and nic.get("type") != "loopback"
             for a in nic.get("addresses", ())
             if a.get("family") == family and a.get("scope") not in HIDDEN_SCOPES]
    return sorted(found, key=lambda x: f"{x[0]} ({x[1]})", reverse=True)


class Listed(Value, frozen=True):
    """One instance in a ``Listing``: its record and what it was doing when the listing ran.

    ``state`` is liblxc's spelling (RUNNING, STOPPED, FROZEN, …, or ERROR when its record or
    its liblxc config cannot be read — ``error`` says why); ``pid`` its init's host pid, -1
    when it is not running; ``network`` its interfaces in the shape of
    ``inst.network_state()`` — with every key when listed with ``network="full"``, with
    ``addresses`` alone (and only interfaces that have one) by default — ``{}`` when it is not
    running, ``None`` when it was not read (``network=False``, or its namespace could not be
    entered)."""

    _fields = ("name", "state", "pid", "record", "error", "network")
    __slots__ = _fields

    name: str
    state: str
    pid: int
    record: InstanceRecord | None
    error: str | None
    network: dict[str, Any] | None

    def __init__(self, name: str, state: str, pid: int = -1,
                 record: InstanceRecord | None = None, error: str | None = None,
                 network: dict[str, Any] | None = None) -> None:
        assign(self, "name", name)
        assign(self, "state", state)
        assign(self, "pid", pid)
        assign(self, "record", record)
        assign(self, "error", error)
        assign(self, "network", network)

    @property
    def status(self) -> str:
        """LXD's spelling: Running, Stopped, Frozen, Error."""
        return STATUS.get(self.state, self.state.title())

    @property
    def running(self) -> bool:
        return self.state in ACTIVE

    def addresses(self, family: str = "inet") -> list[tuple[str, str]]:
        """(address, interface) of each global address of ``family`` (``inet``/``inet6``),
        as ``lxc list`` shows them: no loopback, no link-local (``fe80::``) addresses."""
        return global_addresses(self.network or {}, family)

    @property
    def ipv4(self) -> list[str]:
        return [a for a, _ in self.addresses("inet")]

    @property
    def ipv6(self) -> list[str]:
        return [a for a, _ in self.addresses("inet6")]


class Listing(Collection[Listed]):
    """The instances of a root at one moment, in the collections' shape: ``listing["web"]``,
    ``"web" in listing``, iteration over the entries in name order, ``names()``, ``len``.
    Made by ``host.instances.list_state()``."""

    kind = "instance"

    def __init__(self, entries: Iterable[Listed]) -> None:
        self._entries = {e.name: e for e in sorted(entries, key=lambda e: e.name)}

    def names(self) -> builtins.list[str]:
        return list(self._entries)

    def _exists(self, name: str) -> bool:
        return name in self._entries

    def _model(self, name: str) -> Listed:
        return self._entries[name]

    def __repr__(self) -> str:
        return f"<Listing {[(e.name, e.state) for e in self._entries.values()]}>"


# liblxc's verdict on the config of a stopped instance, by the file's identity
# (``state.file_identity``, as records and profiles are kept): a listing asks it of every
# stopped instance (a config load, ~0.08 ms each: 80 ms of every listing of 1,000 stopped), and
# between two listings almost no config changes. A file changed within the last second is asked
# again each time (``state.settled``: two writes in one tick of the clock could leave equal
# identities). What the file includes (the system's lxcfs snippet) is not part of the key: a
# verdict stands until the instance's own file changes or the process ends.
_verdicts: dict[str, tuple[tuple[int, ...], str | None]] = {}
_VERDICTS_MAX = 4096


def clear_cache() -> None:
    """Forget liblxc's verdicts on stopped instances' configs (as a new process would)."""
    _verdicts.clear()


def _config_error(paths: Paths, name: str) -> str | None:
    """Why liblxc cannot load a (stopped) instance's config, or None."""
    path = f"{paths.lxcpath}/{name}/config"
    try:
        st = os.stat(path)
    except OSError:
        ident = None  # liblxc says why
    else:
        ident = file_identity(st)
        hit = _verdicts.get(path)
        if hit is not None and hit[0] == ident:
            return hit[1]
    from . import runtime
    try:
        runtime.open_container(paths.lxcpath, name)
        error = None
    except LXCError as e:
        error = str(e)
    if ident is not None and settled(st):
        if len(_verdicts) >= _VERDICTS_MAX:
            _verdicts.clear()
        _verdicts[path] = (ident, error)
    return error


def take(paths: Paths, names: Iterable[str], *, network: bool | Literal["full"] = True
         ) -> Listing:
    """The listing of the instances ``names`` of the root at ``paths`` (those that vanish
    meanwhile are left out). ``network``: ``True`` reads each running instance's addresses
    (``Listed.network`` holds ``{ifname: {"addresses": [...]}}``), ``"full"`` everything
    ``inst.network_state()`` gives (MAC, MTU, state, counters, host end of the veth),
    ``False`` nothing.

    Where the time goes, and who does what: which instances run (liblxc's list), then for
    each running one its cgroup check (state, init pid) and its namespace's addresses, and
    for every one its record. With many running in a process that runs one thread
    (``netstate.can_fork``), a fork of the process checks the cgroups and reads the
    namespaces of ``netstate.CHILD_SHARE`` of them with a GIL of its own, from the start,
    while this process checks the others, parses the records and then reads its share of
    namespaces in a thread; the fork hands back what it checked (`livestate.remember`), so
    the next listing here skips those checks too. Otherwise one thread reads the namespaces
    while the records are parsed (``netstate.start_reading``)."""
    from .network import netstate  # here: the verbs on one instance (exec, config) need none
    lxcpath = paths.lxcpath
    wanted = list(names)
    full = network == "full"
    active = livestate.listening(lxcpath, wanted)
    if active is None:  # the sockets' table cannot tell: liblxc's list
        from . import runtime
        try:
            active = runtime.running_by_liblxc(lxcpath)
        except Exception as e:  # liblxc could not list: ask each instance instead
            log.debug("liblxc cannot list the active containers of %s: %s", lxcpath, e)
    if active is not None:
        active &= set(wanted)
    running = sorted(active or ())
    child = None
    share: list[str] = []
    where = livestate.layout() if running else None
    if network and netstate.can_fork(len(running)):
        share = running[:int(len(running) * netstate.CHILD_SHARE)]
        child = _fork_reader(lxcpath, share, where, full)
        if child is None:
            share = []
    live = livestate.read(lxcpath, running[len(share):], where) if running else {}
    wait = None
    if child is None and network:  # the namespaces read in a thread meanwhile
        wait = netstate.start_reading([v.pid for v in live.values() if v is not None],
                                      full=full)
    records: dict[str, InstanceRecord | LxdlibError] = {}
    nets: dict[int, dict[str, Any]] = {}
    try:
        base = os.fspath(lxcpath)
        for name in wanted:
            try:
                records[name] = record.load_file(f"{base}/{name}/instance.yaml", name)
            except FileNotFoundError:
                continue  # deleted meanwhile
            except LxdlibError as e:  # CorruptRecord, a symlinked record
                records[name] = e
    finally:  # also on the way out of an error: the reader may be a forked child
        if child is not None:
            nets = _wait_fork(child, lxcpath, share, where, live, full)
        elif wait is not None:
            nets = wait()
    states: dict[str, tuple[str, int, str | None]] = {}
    ask: list[str] = []  # those only liblxc can tell: starting, stopping, cgroup not found
    for name, rec in records.items():
        seen = live.get(name)
        if isinstance(rec, LxdlibError):
            states[name] = ("ERROR", -1, str(rec))
        elif seen is not None:
            states[name] = (seen.state, seen.pid, None)
        elif active is None or name in active:
            ask.append(name)
        else:
            error = _config_error(paths, name)
            states[name] = ("ERROR" if error else "STOPPED", -1, error)
    if ask:  # here: a listing the kernel's view answers needs no liblxc
        from . import runtime
        # bounded: a monitor stuck in a hook must not hang the listing of every other instance
        states.update(runtime.states_within(lxcpath, ask))
    late = [pid for state, pid, _ in states.values()  # asked liblxc: not read yet
            if state in ACTIVE and pid > 0 and pid not in nets]
    if late and network:
        nets.update(netstate.start_reading(late, full=full)())
    entries = []
    for name, (state, pid, error) in states.items():
        rec = records[name]
        entries.append(Listed(
            name, state, pid, None if isinstance(rec, LxdlibError) else rec, error,
            None if not network or (state in ACTIVE and pid not in nets) else nets.get(pid, {})))
    return Listing(entries)


def _fork_reader(lxcpath: Path, share: list[str], where: livestate.Layout | None, full: bool
                 ) -> forkjob.ForkedJob | None:
    """A fork that checks the cgroups of ``share`` and reads their namespaces (see ``take``);
    None when the process cannot fork (then this process does it all)."""
    from .forkjob import ForkedJob
    from .network import netstate
    read = netstate.reader_for_fork(full=full)  # made here: the child must not import

    def job() -> Any:
        before = livestate.cache_entries()
        found = livestate.read(lxcpath, share, where, quiet=True)
        checked = {k: v for k, v in livestate.cache_entries().items() if k not in before}
        pids = [v.pid for v in found.values() if v is not None]
        return ({n: None if v is None else (v.state, v.pid) for n, v in found.items()},
                checked, read(pids))
    try:
        return ForkedJob(job)
    except OSError as e:
        log.debug("cannot fork to read the instances' state, reading it here: %s", e)
        return None


def _wait_fork(child: forkjob.ForkedJob, lxcpath: Path, share: list[str],
               where: livestate.Layout | None, live: dict[str, livestate.Live | None],
               full: bool) -> dict[int, dict[str, Any]]:
    """The fork's result, with this process's share of namespaces read in a thread meanwhile;
    ``live`` gets the fork's share. A fork that gave nothing back costs time only: its share
    is then done here."""
    from .network import netstate
    own = netstate.start_reading([v.pid for v in live.values() if v is not None], full=full)
    failures: list[tuple[int, OSError]] = []
    try:
        got = child.result(failures)
    finally:
        nets = own()
    for pid, err in failures:
        log.debug("forked listing reader: %s (%s)", err, pid)
    if got is None:
        theirs = livestate.read(lxcpath, share, where)
        live.update(theirs)
        nets.update(netstate.start_reading([v.pid for v in theirs.values() if v is not None],
                                           full=full)())
        return nets
    found, checked, read = got
    livestate.remember(checked)
    live.update({n: None if v is None else livestate.Live(v[0], v[1]) for n, v in found.items()})
    nets.update(netstate.from_fork(read, full=full))
    return nets
