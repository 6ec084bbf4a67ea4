"""Instance verbs: init, launch, start, stop, restart, pause, delete, move, list, info, exec,
snapshot, restore."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..errors import (
    TYPE_CHECKING,
    AlreadyExists,
    InvalidArgument,
    InvalidName,
    LxdlibError,
    NotFound,
)
from . import output
from .common import parse_kv

if TYPE_CHECKING:
    import datetime as dt
    from typing import Any, Literal

    from ..host import Host
    from ..instances import Instance
    from ..listing import Listed
    from ..record import InstanceRecord, SnapshotRecord
    from ..state import Paths
    from .listcols import Custom


def _resolve_image(host: Host, ref: str, quiet: bool) -> str:
    """A local alias or fingerprint as is; ``<remote>:<alias>`` (``ubuntu:`` = its ``default``
    alias) is downloaded and cached first, with LXD's progress line on a terminal."""
    from ..progress import LineProgress  # here: `list`, `info`, `exec`… draw no progress
    bar = LineProgress("Retrieving image", quiet=quiet)
    try:
        return host.images.resolve(ref, progress=bar)
    finally:
        bar.done()


def parse_device_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    """``-d root,size=50MiB`` → {"root": {"size": "50MiB"}}."""
    out: dict[str, dict[str, str]] = {}
    for it in items or []:
        name, _, rest = it.partition(",")
        if not name or not rest:
            raise InvalidArgument(f"device override must be <device>,<key>=<value>, got {it!r}")
        out.setdefault(name, {}).update(parse_kv(rest.split(","), "device override"))
    return out


def _create(host: Host, args: argparse.Namespace, start: bool) -> int:
    image = _resolve_image(host, args.image, args.quiet) if args.image and not args.empty \
        else None
    if args.empty:
        image = None
    elif image is None:
        raise InvalidArgument("an image is required (or --empty)")
    profiles = None
    if args.no_profiles:
        profiles = []
    elif args.profile:
        profiles = args.profile
    config = parse_kv(args.config, "config")
    devices: dict[str, dict[str, str]] = {}
    overrides = parse_device_overrides(args.device)
    name = args.name
    if not args.quiet:
        print(f"Creating {name}" if name else "Creating the instance")
    # lxc's flags for what an lxdlib root never has, refused in LXD's words (after its line)
    if args.vm:
        raise InvalidArgument("Asked for a VM but image is of type container")
    if args.cluster_target is not None:
        raise InvalidArgument("Target only allowed when clustered")
    if args.network:
        devices["eth0"] = _network_nic(host, args.network)
    if overrides:
        # LXD copies the expanded profile device (or the --network nic) and overrides keys on it
        _, exp = host.expand(profiles, config, {})
        for dname, kv in overrides.items():
            base = devices.get(dname) or exp.get(dname)
            if base is None:
                raise NotFound("device", dname, "not in the instance's profiles")
            devices[dname] = {**base, **kv}
    inst = host.create(image, name, profiles=profiles, config=config, devices=devices,
                       pool=args.storage, ephemeral=args.ephemeral,
                       description=args.description or "")
    if not name and not args.quiet:
        print(f"Instance name is: {inst.name}")
    if start:
        if not args.quiet:
            print(f"Starting {inst.name}")
        inst.start()
    return 0


def _network_nic(host: Host, network: str) -> dict[str, str]:
    """``--network``'s device, as lxc 5.0.2 makes it: ``eth0`` (whatever the profiles call
    their nic) on a managed network by name; on a host interface lxdlib does not manage, a
    bridged nic if it is a bridge, else a macvlan one on it."""
    try:
        host.networks.get(network)
    except (NotFound, InvalidArgument):  # a name no managed network can have: the host's?
        from ..network import hostlinks
        kind = hostlinks.kind(network)
        if kind is None:
            raise NotFound("network", network) from None
        return {"name": "eth0", "type": "nic",
                "nictype": "bridged" if kind == "bridge" else "macvlan", "parent": network}
    return {"name": "eth0", "type": "nic", "network": network}


def _instance(host: Host, name: str) -> Instance:
    return host.instances.get(name)


def _each(host: Host, a: argparse.Namespace, fn: Any) -> int:
    """``fn`` on each instance ``a`` names, as ``lxc start|stop|restart|pause`` runs a batch:
    one name fails with its own error; of several, each is tried whatever the others did, a
    failure printed as ``<name>: error: <text>``, and the command then fails with ``Some
    instances failed to <verb>`` (lxdlib ended at the first failure and left the rest).
    ``--all``: every instance the verb applies to (``_ALL_STATES``), as LXD's bulk state
    change picks them, its failures said in one error as LXD words it."""
    from .lxdwords import lxd_text, verb_of
    if getattr(a, "all", False):
        if a.names:
            raise InvalidArgument("Both --all and instance name given")  # lxc's words
        wanted = _ALL_STATES[verb_of(a)[0]]
        failures = []
        for inst in host.instances.list():
            if inst.state not in wanted:
                continue
            try:
                fn(inst)
            except LxdlibError as e:
                failures.append(f" - Instance: {inst.name}: {lxd_text(e, a, inst.name)}\n")
        if failures:
            raise LxdlibError("local: The following instances failed to update state:\n"
                              + "".join(failures))
        return 0
    if not a.names:  # as a wrong count: the usage line and lxc's words, status 1
        a.parser.error("the following arguments are required: names")
    if len(a.names) == 1:
        fn(_instance(host, a.names[0]))
        return 0
    failed = False
    for n in a.names:
        try:
            fn(_instance(host, n))
        except LxdlibError as e:
            failed = True
            for line in f"error: {lxd_text(e, a, n)}".split("\n"):
                sys.stderr.write(f"{n}: {line}\n")
    if failed:
        sys.stderr.write("\n")
        raise LxdlibError(f"Some instances failed to {verb_of(a)[0]}")
    return 0


#: The states of the instances ``<verb> --all`` acts on, as LXD 5.0.2's bulk state change
#: picks them (read off it: ``start --all`` leaves a frozen instance frozen, ``stop --all``
#: stops it, ``restart --all`` tries it)
_ALL_STATES = {"start": ("STOPPED",), "stop": ("RUNNING", "FROZEN"),
               "restart": ("RUNNING", "FROZEN"), "pause": ("RUNNING",)}


def cmd_start(host: Host, a: argparse.Namespace) -> int:
    return _each(host, a, lambda i: i.start(stateless=a.stateless))


def cmd_stop(host: Host, a: argparse.Namespace) -> int:
    if a.stateful:
        return _each(host, a, lambda i: i.stop(stateful=True))
    return _each(host, a, lambda i: i.stop(force=a.force, timeout=a.timeout))


def cmd_restart(host: Host, a: argparse.Namespace) -> int:
    return _each(host, a, lambda i: i.restart(force=a.force, timeout=a.timeout))


def cmd_pause(host: Host, a: argparse.Namespace) -> int:
    return _each(host, a, lambda i: i.pause())


def cmd_delete(host: Host, a: argparse.Namespace) -> int:
    for n in a.names:
        # as lxc: each name asked for, snapshots too, before it goes; only `yes` goes on, and
        # anything else ends the command with an error (a script sees it did not delete)
        if a.interactive and not _confirm(f"Remove {n} (yes/no): "):
            raise LxdlibError("User aborted delete operation")
        if "/" in n:
            inst, snap = n.split("/", 1)
            _instance(host, inst).snapshots.delete(snap)
        else:
            _instance(host, n).delete(force=a.force)
    return 0


def _confirm(prompt: str) -> bool:
    """The prompt on stdout and the answer from stdin, as lxc reads it: ``yes`` in any case
    (``y`` is not yes); end of input is no."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    return sys.stdin.readline().rstrip("\n").lower() == "yes"


def cmd_move(host: Host, a: argparse.Namespace) -> int:
    from .crosshost import between_hosts
    rc = between_hosts(host, a, move=True)  # `move c1 h2:c1`: to another host
    if rc is not None:
        return rc
    src, dst = a.source, a.target
    if "/" in src:
        if dst is None:
            raise InvalidArgument("move needs a new snapshot name")
        inst, snap = src.split("/", 1)
        dinst, dsnap = dst.split("/", 1) if "/" in dst else (inst, dst)
        if dinst != inst:
            raise InvalidArgument("a snapshot can only be renamed within its instance")
        _instance(host, inst).snapshots.rename(snap, dsnap)
        return 0
    if dst is None and not a.storage:
        raise InvalidArgument("move needs a new name or a storage pool (-s)")
    if dst == src and not a.storage:  # as lxc: the name is taken (by the instance itself)
        _instance(host, src)
        raise AlreadyExists("instance", dst)
    host.move(src, dst, pool=a.storage or None)
    return 0


def cmd_copy(host: Host, a: argparse.Namespace) -> int:
    """``copy <source>[/<snapshot>] [<target>]`` with LXD's options."""
    from .crosshost import between_hosts
    rc = between_hosts(host, a, move=False)  # `copy c1 h2:c1`: to or from another host
    if rc is not None:
        return rc
    src_name = a.source.split("/", 1)[0]
    src = _instance(host, src_name)
    profiles = [] if a.no_profiles else (a.profile or None)
    config = parse_kv(a.config, "config")
    devices: dict[str, dict[str, str]] = {}
    overrides = parse_device_overrides(a.device)
    if overrides:
        # like LXD: the source's expanded device, with the given keys changed, made local
        rec = src.record()
        _, exp = host.expand(profiles if profiles is not None else rec.profiles, rec.config,
                             rec.devices)
        for dname, kv in overrides.items():
            if dname not in exp:
                raise NotFound("device", dname, f"not in instance {src_name!r}")
            devices[dname] = {**exp[dname], **kv}
    # as lxc 5.0: without a target name the copy takes the source's, which is taken (the
    # API's None, a generated name, is kept for a snapshot's copy)
    target = a.target if a.target is not None or "/" in a.source else src_name
    inst = host.copy(a.source, target, instance_only=a.instance_only,
                     ephemeral=a.ephemeral, profiles=profiles, config=config,
                     devices=devices, pool=a.storage, refresh=a.refresh)
    if a.target is None and not a.quiet:
        print(f"Instance name is: {inst.name}")
    if a.start:
        inst.start()
    return 0


# -- list ---------------------------------------------------------------------------------------
def _fmt_time(t: dt.datetime | None) -> str:
    return t.strftime("%Y/%m/%d %H:%M %Z") if t else ""


def _no_instance_dir(root: str) -> bool:
    """The root's lxcpath exists and holds nothing (not even a leftover to settle)."""
    try:
        with os.scandir(os.path.join(root, "containers")) as it:
            return next(it, None) is None
    except (FileNotFoundError, NotADirectoryError):
        return False


def _scan(paths: Paths) -> tuple[list[str], list[str]]:
    """``record.scan``, without importing the records' module for a root that has no instance
    directory at all."""
    with os.scandir(paths.lxcpath) as it:
        if next(it, None) is None:
            return [], []
    from ..record import scan
    return scan(paths)


def cmd_list(host: Host | None, a: argparse.Namespace) -> int:
    """``lxc list``: state, pid and addresses of every instance come from one listing
    (``lxdlib.listing``: no process per instance). Called without a ``Host`` (``opens_root``):
    the table needs only the root's records and the kernel's view, so the whole library is
    imported only for what needs it — JSON/YAML (expanded config), the resource columns
    (liblxc per instance), a root to set up or with leftovers to recover."""
    from . import listcols
    cols = listcols.parse(a.columns, a.fast, a.all_projects)
    headers = listcols.headers(cols)
    columns = listcols.letters(cols)
    output.check_format(a.format)  # LXD's refusals, before anything is read
    full = a.format in ("json", "yaml")
    network: bool | Literal["full"] = "full" if full else (
        any(ch in columns for ch in "46") or listcols.wants_network(a.filters))
    shows_config = listcols.wants_config(cols, a.filters)
    opened = [host] if host is not None else []

    def the_host() -> Host:
        if not opened:
            from ..host import Host
            opened.append(Host(a.root))
        return opened[0]
    from ..rootdir import imports_pending, root_dir
    where = root_dir(a.root)
    if host is None and _no_instance_dir(where) and not imports_pending(where):
        # a root without instances: the empty table, before importing the records' code
        # (``state`` and attrs cost more than the rest of the command)
        output.emit(a.format, headers, [], [])
        return 0
    from ..state import Paths  # here: the other verbs' start needs none of it (attrs)
    paths = Paths.at(a.root)
    root = paths.root
    names, leftovers = _scan(paths) if host is None and paths.lxcpath.is_dir() else ([], ["?"])
    if not leftovers and imports_pending(root):
        leftovers = ["?"]  # what a killed image import left is cleared by opening a Host
    listing: Any
    if full or leftovers or any(ch in columns for ch in listcols.USAGE_LETTERS):
        listing = the_host().instances.list_state(network=network)
    elif not names:
        listing = []  # an empty root: nothing to read, no need to load the listing's code
    else:
        from ..listing import take
        listing = take(paths, names, network=network)
    rows: list[list[str]] = []
    data: list[dict[str, Any]] = []
    disks = disk_usages(the_host(), listing) if full or "D" in columns else {}
    for entry in listing:
        if entry.error is not None:
            # one broken instance must not hide the others: shown as ERROR, as LXD does
            print(f"Warning: instance {entry.name!r}: {entry.error}", file=sys.stderr)
        rec = entry.record
        shown: tuple[dict[str, str], dict[str, dict[str, str]]] = ({}, {})
        if rec is not None and shows_config:
            shown = _shown(the_host(), rec.profiles, rec.config, rec.devices)
        if a.filters and not listcols.matches(
                a.filters, entry.name,
                {"status": entry.status, "type": "container", "location": "none",
                 "architecture": rec.architecture if rec else ""},
                shown[0], entry.network):
            continue
        try:
            row, d = (_broken_entry(entry, cols, entry.error) if entry.state == "ERROR"
                      else _list_entry(the_host, entry, cols, full, disks, shown))
        except NotFound:
            continue  # deleted meanwhile
        except LxdlibError as e:
            print(f"Warning: instance {entry.name!r}: {e}", file=sys.stderr)
            row, d = _broken_entry(entry, cols, str(e))
        rows.append(row)
        data.append(d)
    if a.format == "yaml":
        data = [_yaml_empties(d) for d in data]
    output.emit(a.format, headers, rows, data)
    return 0


def _yaml_empties(d: dict[str, Any]) -> dict[str, Any]:
    """An instance as ``lxc list -f yaml`` writes it: yaml.v2 writes Go's nil slices and maps
    (``backups``, ``snapshots``, a stopped instance's ``state.network``), which JSON writes as
    ``null``, as ``[]`` and ``{}``."""
    d = dict(d)
    for key in ("backups", "snapshots"):
        if key in d and d[key] is None:
            d[key] = []
    state = d.get("state")
    if isinstance(state, dict) and "network" in state and state["network"] is None:
        d["state"] = {**state, "network": {}}
    return d


def _record_cells(rec: InstanceRecord, columns: str) -> dict[str, str]:
    """The cells the record fills; the two times only when shown (formatting them was ~3 ms
    of a listing of 1,000 that shows neither)."""
    return {"t": "CONTAINER" + (" (EPHEMERAL)" if rec.ephemeral else ""),
            "S": str(len(rec.snapshots)), "a": rec.architecture,
            "c": _fmt_time(rec.created_at) if "c" in columns else "",
            "l": _fmt_time(rec.last_used_at) if "l" in columns else "",
            "P": "\n".join(rec.profiles), "b": rec.pool, "d": rec.description,
            "f": rec.config.get("volatile.base_image", "")[:12],
            "F": rec.config.get("volatile.base_image", "")}


def _broken_entry(entry: Listed, cols: Sequence[str | Custom], error: str | None
                  ) -> tuple[list[str], dict[str, Any]]:
    """The row of an instance whose record or liblxc config cannot be read."""
    from . import listcols
    rec = entry.record
    cell = dict.fromkeys(listcols.LETTERS, "")
    cell.update({"n": entry.name, "s": "ERROR", "e": "default"})
    d: dict[str, Any] = {"name": entry.name}
    if rec is not None:
        cell.update(_record_cells(rec, listcols.letters(cols)))
        d = rec.to_dict()
    d.update({"status": "Error", "status_code": STATUS_CODES["Error"], "error": error})
    return [cell[c] if isinstance(c, str) else "" for c in cols], d


def _list_entry(the_host: Callable[[], Host], entry: Listed, cols: Sequence[str | Custom],
                full: bool, disk_usage: Mapping[str, int | None],
                shown: tuple[dict[str, str], dict[str, dict[str, str]]]
                ) -> tuple[list[str], dict[str, Any]]:
    """The row (and JSON object) of a readable instance; ``the_host()`` opens the Host for
    what the listing does not hold (expanded config, cgroup counters); ``disk_usage``: the
    root volumes' usage, asked of each pool once for the whole listing (``disk_usages``);
    ``shown``: the expanded config and devices, where the columns need them."""
    from .listcols import USAGE_LETTERS, letters
    columns = letters(cols)
    rec = entry.record
    assert rec is not None  # only ERROR entries lack a record
    net = entry.network
    usage: dict[str, Any] = {}
    wants_net = full or any(ch in columns for ch in "46")
    wants_usage = full or any(ch in columns for ch in USAGE_LETTERS)
    if entry.running and ((net is None and wants_net) or wants_usage):
        inst = the_host().instances.get(entry.name)
        if net is None and wants_net:
            net = inst.network_state()  # its namespace could not be read with the others
        if wants_usage:
            usage = inst.usage(pid=entry.pid)  # the listing's pid: no round trip to liblxc

    from ..listing import global_addresses

    def addrs(family: str) -> str:
        return "\n".join(f"{addr} ({ifname})"
                         for addr, ifname in global_addresses(net or {}, family))
    cell = {
        "n": entry.name, "s": entry.state,
        "4": addrs("inet"), "6": addrs("inet6"),
        **_record_cells(rec, columns),
        "p": str(entry.pid) if entry.running else "",
        "N": str(usage.get("processes") or ""),
        # as LXD: nothing for a counter at 0, whole seconds of CPU (truncated)
        "m": output.size(usage.get("memory_usage")) if usage.get("memory_usage") else "",
        "M": _memory_percent(usage.get("memory_usage") or 0, shown[0].get("limits.memory", "")),
        "u": f"{int(usage.get('cpu_usage_ns') or 0) // 1_000_000_000}s"
             if usage.get("cpu_usage_ns") else "",
        "D": output.size(disk_usage.get(entry.name)) if disk_usage.get(entry.name) else "",
        "e": "default",
    }
    d = instance_full(the_host(), entry, rec, net, usage, disk_usage) if full else {}
    return [cell[c] if isinstance(c, str)
            else c.cell(rec.config, shown[0], rec.devices, shown[1]) for c in cols], d


def _memory_percent(used: int, limit: str) -> str:
    """``M``: the memory used as a share of ``limits.memory``, as LXD prints it (nothing for a
    limit in % or none)."""
    if not used or not limit or "%" in limit:
        return ""
    from ..config.units import parse_size
    try:
        size = parse_size(limit)
    except InvalidArgument:
        return ""
    return f"{used / size * 100:.1f}%" if size > 0 else ""


def disk_usages(host: Host, entries: Iterable[Listed]) -> dict[str, int | None]:
    """The root volume's usage of each listed instance, by name: one question per pool
    (``volumes_usage``: one ``zfs get``, one btrfs sync), none per instance."""
    by_pool: dict[str, list[str]] = {}
    for entry in entries:
        if entry.record is not None:
            by_pool.setdefault(entry.record.pool, []).append(entry.name)
    out: dict[str, int | None] = {}
    for pool, names in by_pool.items():
        # a pool that cannot say (gone, its tools missing): no disk entry, as LXD shows none
        with contextlib.suppress(LxdlibError, OSError):
            out.update(host.pool(pool).volumes_usage("containers", names))
    return out


# -- LXD's instance object (``list --format json|yaml``) ----------------------------------------
#: LXD's status codes (``api.StatusCode``) of the statuses an instance can have.
STATUS_CODES = {"Stopped": 102, "Running": 103, "Starting": 106, "Stopping": 107,
                "Aborting": 108, "Freezing": 109, "Frozen": 110, "Thawed": 111, "Error": 112}
_COUNTERS = ("bytes_received", "bytes_sent", "packets_received", "packets_sent",
             "errors_received", "errors_sent", "packets_dropped_outbound",
             "packets_dropped_inbound")
_NIC_KEYS = ("hwaddr", "host_name", "mtu", "state", "type")


def _shown(host: Host, profiles: list[str], config: Mapping[str, str],
           devices: Mapping[str, Mapping[str, str]]
           ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Expanded config and devices as LXD shows them (a masking ``none`` device kept); the
    local ones where a profile is gone (a snapshot may name one deleted since)."""
    from ..config import expand  # not at import: a plain ``list`` table needs no config code
    try:
        datas = [host.ctx.profile_data(p) for p in profiles]
    except LxdlibError:
        return dict(config), {n: dict(d) for n, d in devices.items()}
    return (expand.expand_config(datas, config),
            expand.expand_devices(datas, devices, keep_none=True))


def _network_state(net: Mapping[str, Any]) -> dict[str, Any]:
    """Interfaces with LXD's keys in LXD's order (``api.InstanceStateNetwork``)."""
    out: dict[str, Any] = {}
    for ifname, nic in net.items():
        counters = nic.get("counters") or {}
        out[ifname] = {"addresses": [dict(a) for a in nic.get("addresses", ())],
                       "counters": {k: int(counters.get(k, 0)) for k in _COUNTERS},
                       **{k: nic.get(k, 0 if k == "mtu" else "") for k in _NIC_KEYS}}
    return out


def instance_state(entry: Listed, net: Mapping[str, Any] | None, usage: Mapping[str, Any],
                   devices: Mapping[str, Mapping[str, str]],
                   disk_usage: Mapping[str, int | None]) -> dict[str, Any]:
    """LXD's ``api.InstanceState``: the counters of a running instance, zeros (and no network)
    for a stopped one; the root disk's usage either way, where the pool can say it
    (``disk_usage``: the listing's figures, ``disk_usages``), under the name the expanded
    ``devices`` give the root disk."""
    from ..config import expand
    status = entry.status
    disk: dict[str, Any] = {}
    used = disk_usage.get(entry.name)
    if used is not None:
        with contextlib.suppress(LxdlibError):  # no root disk (a profile gone): no entry
            disk[expand.root_disk(devices)[0]] = {"usage": used}
    running = entry.running

    def num(key: str) -> int:
        return int(usage.get(key) or 0) if running else 0
    return {
        "status": status, "status_code": STATUS_CODES.get(status, 112), "disk": disk,
        "memory": {"usage": num("memory_usage"), "usage_peak": num("memory_usage_peak"),
                   "swap_usage": num("swap_usage"), "swap_usage_peak": num("swap_usage_peak")},
        "network": _network_state(net or {}) if running else None,
        "pid": entry.pid if running else 0, "processes": num("processes"),
        "cpu": {"usage": num("cpu_usage_ns")},
    }


def api_snapshot(host: Host, rec: InstanceRecord, snap: SnapshotRecord) -> dict[str, Any]:
    """One snapshot of ``rec`` as LXD's API gives it (``api.InstanceSnapshot``: ``config show
    c1/snap`` and each of ``list --format json``'s ``snapshots``): its keys in its order."""
    from ..config.units import ZERO_TIME, format_api_time
    scfg, sdevs = _shown(host, snap.profiles, snap.config, snap.devices)
    return {
        "expires_at": format_api_time(snap.expires_at),
        "architecture": rec.architecture, "config": dict(sorted(snap.config.items())),
        "created_at": format_api_time(snap.created_at),
        "devices": output.sorted_devices(snap.devices), "ephemeral": False,
        "expanded_config": dict(sorted(scfg.items())),
        "expanded_devices": output.sorted_devices(sdevs), "last_used_at": ZERO_TIME,
        "name": snap.name, "profiles": list(snap.profiles), "stateful": snap.stateful,
        "size": -1}


def instance_full(host: Host, entry: Listed, rec: InstanceRecord,
                  net: Mapping[str, Any] | None, usage: Mapping[str, Any],
                  disk_usage: Mapping[str, int | None]) -> dict[str, Any]:
    """One instance as LXD's ``lxc list --format json`` prints it (``api.InstanceFull``): the
    same keys in the same order, ``snapshots`` and ``backups`` null when there are none."""
    from ..config.units import EPOCH_TIME, format_api_time
    cfg, devs = _shown(host, rec.profiles, rec.config, rec.devices)
    snapshots = [api_snapshot(host, rec, snap) for snap in rec.snapshots]
    status = entry.status
    return {
        "architecture": rec.architecture, "config": dict(sorted(rec.config.items())),
        "devices": output.sorted_devices(rec.devices), "ephemeral": rec.ephemeral,
        "profiles": list(rec.profiles), "stateful": False, "description": rec.description,
        "created_at": format_api_time(rec.created_at),
        "expanded_config": dict(sorted(cfg.items())),
        "expanded_devices": output.sorted_devices(devs),
        "name": rec.name, "status": status, "status_code": STATUS_CODES.get(status, 112),
        # never started: LXD's database gives back the epoch, not Go's zero time
        "last_used_at": format_api_time(rec.last_used_at, EPOCH_TIME), "location": "none",
        "type": rec.type, "project": "default", "backups": None,
        "state": instance_state(entry, net, usage, devs, disk_usage),
        "snapshots": snapshots or None,
    }


# -- info ---------------------------------------------------------------------------------------
def cmd_info(host: Host, a: argparse.Namespace) -> int:
    if a.name is None:
        facts = host.facts()
        summary = {"root": str(host.paths.root), "driver": "lxc (liblxc via python3-lxc)",
                "cgroup_version": facts.cgroup_version, "cpus": facts.cpus,
                "memory": facts.mem_total, "idmap": {"base": facts.idmap.base,
                                                     "size": facts.idmap.size},
                "storage_pools": host.pool_names(), "profiles": host.profiles.names()}
        sys.stdout.write(output.dump_yaml(summary))
        return 0
    if "/" in a.name:  # lxc refuses a snapshot's name (or any "/") before asking the server
        from .lxdwords import worded
        raise worded(InvalidName("instance", a.name, "info takes an instance, not a snapshot"),
                     "Invalid instance name")
    inst = _instance(host, a.name)
    info = inst.info()
    lines = [f"Name: {info['name']}", f"Status: {info['status'].upper()}",
             f"Type: {info['type']}", f"Architecture: {info['architecture']}"]
    if info.get("error"):
        lines.append(f"Error: {info['error']}")
    if "pid" in info:
        lines.append(f"PID: {info['pid']}")
    if info.get("maps_host_root"):  # said plainly: this container's root is host root
        why = info.get("host_root_mapping", [])
        if why and all(w.startswith("from its next start") for w in why):
            lines.append("Maps host root: YES from its next start (its root will act as host "
                         "root)")
        else:
            lines.append("Maps host root: YES (the container's root can act as host root)")
        lines += [f"  {w}" for w in why]
    import datetime as dt  # here: the other verbs need none of it (start-up time)
    created = dt.datetime.fromisoformat(info["created"])
    lines.append(f"Created: {_fmt_time(created)}")
    if info.get("last_used"):
        lines.append(f"Last Used: {_fmt_time(dt.datetime.fromisoformat(info['last_used']))}")
    res = info.get("resources")
    if res is not None and info.get("pid"):
        lines += ["", "Resources:", *_resource_lines(info, res)]
    if info["snapshots"]:
        lines += ["", "Snapshots:"]
        rows = [[s["name"], _fmt_time(dt.datetime.fromisoformat(s["created_at"])),
                 _fmt_time(dt.datetime.fromisoformat(s["expires_at"])) if s["expires_at"] else " ",
                 "YES" if s["stateful"] else "NO"] for s in info["snapshots"]]
        lines.append(output.table(["NAME", "TAKEN AT", "EXPIRES AT", "STATEFUL"], rows))
    print("\n".join(lines))
    if a.show_log:
        from .. import runtime
        print("\nLog:\n")
        print(runtime.log_tail(host.paths.lxcpath, inst.name, 200))
    return 0


def si_size(n: int) -> str:
    """Bytes in SI units with two decimals (``2.30kB``): how ``lxc info`` prints network
    counters (its memory and disk figures are IEC: ``output.size``), as its progress lines do."""
    from ..progress import byte_size
    return byte_size(n)


def _resource_lines(info: Mapping[str, Any], res: Mapping[str, Any]) -> list[str]:
    """The ``Resources:`` part of ``lxc info`` in LXD's order and units: processes; disk, CPU
    and memory figures only where non-zero (memory and disk in IEC units); then each interface
    with its counters (SI units) before its addresses."""
    lines = [f"  Processes: {res.get('processes') or 0}"]
    disk = [f"    {name}: {output.size(d['usage'])}"
            for name, d in (info.get("disk") or {}).items() if d.get("usage")]
    if disk:
        lines += ["  Disk usage:", *disk]
    if res.get("cpu_usage_ns"):
        lines += ["  CPU usage:",
                  f"    CPU usage (in seconds): {res['cpu_usage_ns'] // 1_000_000_000}"]
    memory = [f"    {label}: {output.size(res[key])}"
              for label, key in (("Memory (current)", "memory_usage"),
                                 ("Memory (peak)", "memory_usage_peak"),
                                 ("Swap (current)", "swap_usage"),
                                 ("Swap (peak)", "swap_usage_peak")) if res.get(key)]
    if memory:
        lines += ["  Memory usage:", *memory]
    net = info.get("network") or {}
    if net:
        lines.append("  Network usage:")
    for ifname, v in net.items():
        cnt = v.get("counters") or {}
        lines += [f"    {ifname}:", f"      Type: {v.get('type', '')}",
                  f"      State: {str(v.get('state', '')).upper()}"]
        if v.get("host_name"):
            lines.append(f"      Host interface: {v['host_name']}")
        if v.get("hwaddr"):
            lines.append(f"      MAC address: {v['hwaddr']}")
        if v.get("mtu"):
            lines.append(f"      MTU: {v['mtu']}")
        lines += [f"      Bytes received: {si_size(int(cnt.get('bytes_received', 0)))}",
                  f"      Bytes sent: {si_size(int(cnt.get('bytes_sent', 0)))}",
                  f"      Packets received: {cnt.get('packets_received', 0)}",
                  f"      Packets sent: {cnt.get('packets_sent', 0)}",
                  "      IP addresses:"]
        for ad in v.get("addresses") or ():
            pad = "  " if ad["family"] == "inet" else " "
            lines.append(f"        {ad['family']}:{pad}{ad['address']}/{ad['netmask']} "
                         f"({ad['scope']})")
    return lines


# -- exec ---------------------------------------------------------------------------------------
def cmd_exec(host: Host, a: argparse.Namespace) -> int:
    cmd = list(a.cmd)
    if not cmd:
        raise InvalidArgument("Invalid number of arguments")  # lxc's words
    inst = _instance(host, a.name)
    # As lxc does: the caller's TERM goes along (interactive or not), --env may override it.
    term = os.environ.get("TERM")
    env = {"TERM": term} if term and not any(ch in term for ch in "\0\n\r") else {}
    for item in a.env:  # as lxc: `--env NAME` alone sets it empty
        key, _, value = item.partition("=")
        env[key] = value
    if a.disable_stdin:  # `-n`: the command reads an empty stdin, never the caller's
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    if a.mode == "interactive" or (a.mode == "auto" and sys.stdin.isatty() and
                                   sys.stdout.isatty() and not a.force_noninteractive):
        from ..console import exec_pty
        rc = exec_pty(inst, cmd, env=env, cwd=a.cwd, user=a.user, group=a.group)
    else:
        rc = inst.exec_interactive(cmd, env=env, cwd=a.cwd, user=a.user, group=a.group)
    message = EXEC_ERRORS.get(rc)
    if message is not None:
        print(f"Error: {message}", file=sys.stderr)
    return rc


#: What ``lxc exec`` says for the two exit codes LXD turns into errors (the status stays the
#: command's): 127 from a shell or ``execvp`` that found nothing to run, 126 from a file found
#: but not executable. LXD says it for any command exiting so, and so does lxdlib.
EXEC_ERRORS = {127: "Command not found", 126: "Command not executable"}


# -- snapshots ----------------------------------------------------------------------------------
def cmd_snapshot(host: Host, a: argparse.Namespace) -> int:
    inst = _instance(host, a.instance)
    inst.snapshots.create(a.snapshot, stateful=a.stateful, reuse=a.reuse,
                          no_expiry=a.no_expiry)
    return 0


def cmd_restore(host: Host, a: argparse.Namespace) -> int:
    _instance(host, a.instance).snapshots.restore(a.snapshot, stateful=a.stateful)
    return 0


def cmd_init(host: Host, a: argparse.Namespace) -> int:
    if a.image is None:
        if a.preseed:
            import yaml

            from ..state import load_yaml
            try:  # the alias and depth guards of YAML from elsewhere
                data = load_yaml(sys.stdin.read()) or {}
            except yaml.YAMLError as e:
                raise InvalidArgument(f"invalid preseed YAML: {e}") from None
            host.init_preseed(data)
        elif a.auto or a.minimal:
            host.init_auto(pool_driver=a.storage_backend or "btrfs",
                           pool_size=loop_size(a.storage_create_loop),
                           network=not a.minimal, network_name=a.network_name)
        else:
            raise InvalidArgument("init needs an image, or --auto, --minimal or --preseed to "
                                  "initialise the host")
        if not a.quiet:
            print("lxdlib is initialised in", host.paths.root)
        return 0
    return _create(host, a, start=False)


def loop_size(text: str | None) -> str:
    """``init --storage-create-loop``'s size: a bare number is gigabytes, as in ``lxd init``
    (``2`` is ``2GB``, not 2 bytes); a size with its unit is taken as written."""
    if not text:
        return "5GiB"
    return f"{text}GB" if text.isdigit() else text


def _add_create_args(p: argparse.ArgumentParser, with_image_optional: bool) -> None:
    p.add_argument("image", nargs="?" if with_image_optional else None)
    p.add_argument("name", nargs="?")
    p.add_argument("-p", "--profile", action="append", default=[])
    p.add_argument("--no-profiles", action="store_true")
    p.add_argument("-c", "--config", action="append", default=[])
    p.add_argument("-d", "--device", action="append", default=[])
    p.add_argument("-s", "--storage")
    p.add_argument("-e", "--ephemeral", action="store_true")
    p.add_argument("--empty", action="store_true")
    p.add_argument("--description")
    p.add_argument("-n", "--network", help="the network (or host interface) of the instance's "
                   "eth0")
    p.add_argument("--vm", action="store_true", help="refused: lxdlib runs containers only")
    p.add_argument("--target", dest="cluster_target", metavar="<member>",
                   help="refused: an lxdlib root is never a cluster")


#: lxdlib's own flag (not LXD's): what another host sends is checked as a backup is, and its
#: root-equivalent settings are for this host's root to accept (docs/security.md, 2b).
ALLOW_HELP = ("from another host: accept its root-equivalent settings (raw.lxc, privileged, "
              "host devices…); without it they are refused")


def _add_names_or_all(p: argparse.ArgumentParser) -> None:
    """The instances of ``start|stop|restart|pause``: names, or ``--all`` (``_each``)."""
    p.add_argument("names", nargs="*")
    p.add_argument("--all", action="store_true", help="every instance the verb applies to")
    p.set_defaults(parser=p)


def register(sub: Any) -> None:
    p = sub.add_parser("init", help="create an instance (with an image) or initialise the host")
    _add_create_args(p, True)
    p.add_argument("--auto", action="store_true")
    p.add_argument("--minimal", action="store_true")
    p.add_argument("--preseed", action="store_true")
    p.add_argument("--storage-backend")
    p.add_argument("--storage-create-loop", metavar="SIZE",
                   help="the loop file's size: a number of GB (as lxd init), or a size (5GiB)")
    p.add_argument("--network-name", help="the default bridge (default lxdbr0, or the first "
                   "free lxdbr<N> when the host has an lxdbr0)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("launch", help="create and start an instance")
    _add_create_args(p, False)
    p.set_defaults(func=lambda h, a: _create(h, a, start=True))

    for name, fn, hlp in (("start", cmd_start, "start (or resume) instances"),
                          ("pause", cmd_pause, "freeze instances")):
        p = sub.add_parser(name, help=hlp)
        _add_names_or_all(p)
        if name == "start":
            p.add_argument("--stateless", action="store_true",
                           help="drop the processes a stateful stop saved: boot afresh")
        p.set_defaults(func=fn)
    for name, fn, hlp in (("stop", cmd_stop, "stop instances"),
                          ("restart", cmd_restart, "restart instances")):
        p = sub.add_parser(name, help=hlp)
        _add_names_or_all(p)
        p.add_argument("-f", "--force", action="store_true")
        p.add_argument("--timeout", type=float, default=-1)
        if name == "stop":
            p.add_argument("--stateful", action="store_true",
                           help="save the running processes (CRIU) for the next start")
        p.set_defaults(func=fn)

    p = sub.add_parser("delete", aliases=["rm"], help="delete instances or snapshots")
    p.add_argument("names", nargs="+")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("move", aliases=["mv"],
                       help="rename an instance or a snapshot, or move it to another pool")
    p.add_argument("source")
    p.add_argument("target", nargs="?")
    p.add_argument("-s", "--storage", help="move the instance to this storage pool")
    p.add_argument("--instance-only", action="store_true",
                   help="between hosts: without the snapshots")
    p.add_argument("--stateless", action="store_true",
                   help="between hosts: a running instance is stopped, sent and started there")
    p.add_argument("--allow-root-equivalent", action="store_true", help=ALLOW_HELP)
    p.set_defaults(func=cmd_move)

    p = sub.add_parser("copy", aliases=["cp"],
                       help="copy an instance (or make one from a snapshot)")
    p.add_argument("source", help="<instance> or <instance>/<snapshot>")
    p.add_argument("target", nargs="?")
    p.add_argument("--instance-only", action="store_true", help="without the snapshots")
    p.add_argument("-e", "--ephemeral", action="store_true")
    p.add_argument("-p", "--profile", action="append", default=[])
    p.add_argument("--no-profiles", action="store_true")
    p.add_argument("-c", "--config", action="append", default=[])
    p.add_argument("-d", "--device", action="append", default=[])
    p.add_argument("-s", "--storage")
    p.add_argument("--refresh", action="store_true",
                   help="update an existing copy instead of failing")
    p.add_argument("--stateless", action="store_true",
                   help="between hosts: copy a running instance from a snapshot of it")
    p.add_argument("--start", action="store_true", help="start the copy")
    p.add_argument("--allow-root-equivalent", action="store_true", help=ALLOW_HELP)
    p.set_defaults(func=cmd_copy)

    p = sub.add_parser("list", aliases=["ls"], help="list instances")
    p.add_argument("filters", nargs="*")
    p.add_argument("--fast", action="store_true", help="same as --columns=nsacPt")
    p.add_argument("--all-projects", action="store_true",
                   help="with a PROJECT column first (a root has the default project only)")
    p.add_argument("-c", "--columns", metavar="COLUMNS",
                   help="letters (default ns46tS): 4 IPv4, 6 IPv6, a architecture, b storage "
                        "pool, c created, d description, D disk usage, e project, f/F base "
                        "image, l last used, m memory usage, M memory usage %%, n name, N "
                        "processes, p pid, P profiles, s state, S snapshots, t type, u CPU "
                        "usage; or custom columns [config:|devices:]key[:name][:maxWidth]")
    output.add_format(p)
    p.set_defaults(func=cmd_list, opens_root=True)

    p = sub.add_parser("info", help="show an instance (or the host)")
    p.add_argument("name", nargs="?")
    p.add_argument("--show-log", action="store_true")
    p.add_argument("--resources", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("exec", help="run a command in an instance")
    p.add_argument("name")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--cwd")
    p.add_argument("--user", type=int, default=0)
    p.add_argument("--group", type=int, default=0)
    p.add_argument("--mode", choices=("auto", "interactive", "non-interactive"), default="auto")
    p.add_argument("-n", "--disable-stdin", action="store_true",
                   help="give the command an empty stdin (/dev/null)")
    p.add_argument("-t", "--force-interactive", dest="mode", action="store_const",
                   const="interactive")
    p.add_argument("-T", "--force-noninteractive", action="store_true")
    p.set_defaults(func=cmd_exec, cmd=[])  # the command is split off before parsing
    p.usage = "lxdlib exec [-h] [--env K=V] [--cwd D] [--user U] [--group G] [-t|-T] " \
              "<instance> [--] <command>…"

    p = sub.add_parser("snapshot", help="snapshot an instance")
    p.add_argument("instance")
    p.add_argument("snapshot", nargs="?")
    p.add_argument("--stateful", action="store_true")
    p.add_argument("--reuse", action="store_true")
    p.add_argument("--no-expiry", action="store_true")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("restore", help="restore an instance from a snapshot")
    p.add_argument("instance")
    p.add_argument("snapshot")
    p.add_argument("--stateful", action="store_true")
    p.set_defaults(func=cmd_restore)
