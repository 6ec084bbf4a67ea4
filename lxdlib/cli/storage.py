"""``storage``: create, list, show, info, delete pools; ``storage volume …`` for custom volumes."""

from __future__ import annotations

import argparse
import sys

from ..errors import TYPE_CHECKING, LxdlibError
from . import output
from .common import edit_text, load_mapping, parse_kv, str_map, text_field

if TYPE_CHECKING:
    import datetime as dt
    from typing import Any

    from ..host import Host


def cmd_create(host: Host, a: argparse.Namespace) -> int:
    host.create_pool(a.name, a.driver, parse_kv(a.config, "pool config"), a.description or "")
    if not host_quiet(a):
        print(f"Storage pool {a.name} created")
    return 0


def host_quiet(a: argparse.Namespace) -> bool:
    return bool(getattr(a, "quiet", False))


def _used_by(host: Host, pool: str) -> list[str]:
    return host.pools_users([pool])[pool]


def cmd_list(host: Host, a: argparse.Namespace) -> int:
    rows, data = [], []
    names = host.pool_names()
    every = host.pools_users(names)  # one walk over the instances for all the pools
    for name in names:
        try:
            pool = host.pool(name)
            d = pool.describe()
            description = host.pools[name].description
        except LxdlibError as e:  # one bad pool (its record, its driver) hides no other
            sys.stderr.write(f"Warning: {e}\n")
            continue
        users = every[name]
        rows.append([name, d["driver"], pool.shown_source, description, str(len(users)),
                     "CREATED"])
        data.append(_pool_doc(d, description, users))
    output.emit(a.format, ["NAME", "DRIVER", "SOURCE", "DESCRIPTION", "USED BY", "STATE"],
                rows, data)
    return 0


def cmd_show(host: Host, a: argparse.Namespace) -> int:
    """LXD's api.StoragePool in its order (its config sorted, as Go writes a map); a root is
    never clustered, so its one location is ``none``. ``--resources``: the pool's space in
    bytes, as ``lxc storage show --resources``."""
    if a.resources:
        pool = host.pool(a.name)
        pool.mount()
        u = pool.usage()
        sys.stdout.write(output.dump_yaml({"space": {"used": u.used, "total": u.total}}))
        return 0
    d = host.pool(a.name).describe()
    doc = _pool_doc(d, host.pools[a.name].description, _used_by(host, a.name))
    sys.stdout.write(output.dump_yaml(doc))
    return 0


def _pool_doc(d: dict[str, Any], description: str, users: list[str]) -> dict[str, Any]:
    """A pool as LXD's api.StoragePool, in its order (its config sorted, as Go writes a map;
    a root is never clustered, so its one location is ``none``): ``show`` and ``list -f``."""
    return {"config": dict(sorted(d["config"].items())), "description": description,
            "name": d["name"], "driver": d["driver"], "used_by": users, "status": "Created",
            "locations": ["none"]}


def cmd_edit(host: Host, a: argparse.Namespace) -> int:
    """``storage edit <pool>``: what ``storage show`` prints is accepted back (``name``,
    ``driver``, ``used_by``… are ignored, as LXD ignores them); the description changes, and
    the config as ``storage set``/``unset`` change it (a key left out is unset)."""
    pool = host.pools[a.name]
    data = load_mapping(edit_text(output.dump_yaml({"config": pool.config,
                                                    "description": pool.description})))
    pool.update(config=str_map(data["config"], "config") if "config" in data else None,
                description=text_field(data, "description"))
    return 0


def cmd_get(host: Host, a: argparse.Namespace) -> int:
    """``storage get <pool> <key>``: the value; as lxc, nothing (not an empty line) for a key
    that is not set."""
    cfg = host.pools[a.name].config
    if a.key in cfg:
        print(cfg[a.key])
    return 0


def cmd_set(host: Host, a: argparse.Namespace) -> int:
    """``storage set <pool> <key> <value>`` or ``<key>=<value>…``: see ``Pool.configure``."""
    from ..errors import InvalidArgument
    if len(a.args) == 2 and "=" not in a.args[0]:
        kv = {a.args[0]: a.args[1]}
    else:
        bad = [x for x in a.args if "=" not in x]
        if bad:
            raise InvalidArgument(f"Invalid key=value configuration: {bad[0]}")
        kv = parse_kv(a.args, "pool config")
    host.pools[a.name].configure(dict(kv))
    return 0


def cmd_unset(host: Host, a: argparse.Namespace) -> int:
    host.pools[a.name].unset(a.key)
    return 0


def cmd_info(host: Host, a: argparse.Namespace) -> int:
    pool = host.pool(a.name)
    pool.mount()
    u = pool.usage()
    d = pool.describe()
    users = _used_by(host, a.name)

    def space(n: int | None) -> str:  # --bytes: the number, as a string (lxc quotes it)
        return str(n if n is not None else 0) if a.bytes else output.size(n)
    # as lxc prints it: Go's maps, so each level's keys sorted
    info = {"info": {"description": host.pools[a.name].description, "driver": d["driver"],
                     "name": a.name, "space used": space(u.used),
                     "total space": space(u.total)},
            "used by": {"instances": [x.rsplit("/", 1)[1] for x in users
                                      if "/instances/" in x],
                        "profiles": [x.rsplit("/", 1)[1] for x in users
                                     if "/profiles/" in x]}}
    sys.stdout.write(output.dump_yaml(info))
    return 0


def cmd_delete(host: Host, a: argparse.Namespace) -> int:
    host.delete_pool(a.name)
    if not host_quiet(a):
        print(f"Storage pool {a.name} deleted")
    return 0


# -- volumes ------------------------------------------------------------------------------------
def _volumes(host: Host) -> Any:
    """The volume store: the CLI's verbs take the pool and the name apart, as LXD's do."""
    return host.volumes.store


def _snapshot_arg(arg: str) -> tuple[str, str | None]:
    """``<volume>[/<snapshot>]`` as LXD reads it (a leading ``custom/`` is the type)."""
    from ..errors import InvalidArgument
    from ..volumes import strip_type
    kind, sep, _ = arg.partition("/")
    if sep and kind in ("custom", "image", "container", "virtual-machine"):
        arg = strip_type(arg)  # refuses the types lxdlib does not manage
    volume, sep, snap = arg.partition("/")
    if not sep:
        return volume, None
    if "/" in snap:
        raise InvalidArgument("Invalid snapshot name")
    return volume, snap


def _snapshot_not_found(e: Exception, pool: str, volume: str, snap: str) -> Exception:
    """LXD's words for a missing snapshot in ``delete`` and ``restore``, which look it up
    by its full name on the pool."""
    from ..errors import NotFound
    from ..volumes import SNAPSHOT_KIND
    from .lxdwords import worded
    if isinstance(e, NotFound) and e.kind == SNAPSHOT_KIND:
        return worded(e, f'Storage volume "{volume}/{snap}" in project "default" of type '
                         f'"custom" does not exist on pool "{pool}": Storage pool volume not '
                         'found')
    return e


def cmd_volume_snapshot(host: Host, a: argparse.Namespace) -> int:
    """``snapshot <pool> <volume> [<snapshot>]``: silent on success, as ``lxc``'s;
    ``--reuse`` deletes a snapshot of that name first, ``--no-expiry`` ignores the volume's
    ``snapshots.expiry`` (LXD 5.0's client has no flag that sets an expiry)."""
    import contextlib

    from ..errors import NotFound
    volume, snap = _snapshot_arg(a.volume)
    if snap is not None:  # LXD looks ``<volume>/<snapshot>`` up as a volume, finds none
        raise NotFound("storage volume", a.volume, f"in storage pool {a.pool!r}")
    store = _volumes(host)
    store.get(a.pool, volume)  # LXD looks the volume up first
    if a.reuse and a.snapshot:
        with contextlib.suppress(NotFound):
            store.delete_snapshot(a.pool, volume, a.snapshot)
    store.create_snapshot(a.pool, volume, a.snapshot, no_expiry=a.no_expiry)
    return 0


def cmd_volume_restore(host: Host, a: argparse.Namespace) -> int:
    """``restore <pool> <volume> <snapshot>``: silent on success, as ``lxc``'s."""
    store = _volumes(host)
    store.get(a.pool, a.volume)
    try:
        store.restore_snapshot(a.pool, a.volume, a.snapshot)
    except Exception as e:
        raise _snapshot_not_found(e, a.pool, a.volume, a.snapshot) from None
    return 0


def cmd_volume_create(host: Host, a: argparse.Namespace) -> int:
    from ..errors import InvalidArgument
    if a.content_type not in ("filesystem", "block"):
        raise InvalidArgument("Invalid volume content type name")  # lxc's words
    if a.content_type == "block":
        raise InvalidArgument("lxdlib's custom volumes are filesystems: --type block (a "
                              "block device for a VM) is not supported")
    _volumes(host).create(a.pool, a.volume, parse_kv(a.config, "volume config"),
                          a.description or "")
    if not host_quiet(a):
        print(f"Storage volume {a.volume} created")
    return 0


#: ``storage volume list -c`` letters, as LXD 5.0's (``e`` project and ``L`` location are
#: dropped from the default as LXD drops them outside a cluster and without --all-projects)
VOLUME_COLUMNS = {"t": "TYPE", "n": "NAME", "d": "DESCRIPTION", "c": "CONTENT-TYPE",
                  "u": "USED BY", "U": "USAGE"}
VOLUME_DEFAULT_COLUMNS = "etndcuL"


def volume_columns(spec: str) -> list[str]:
    """The ``-c`` letters of ``storage volume list`` with LXD's refusals."""
    from ..errors import InvalidArgument
    if spec != VOLUME_DEFAULT_COLUMNS and "L" in spec:
        raise InvalidArgument("Can't specify column L when not clustered")
    return output.columns(spec.replace("L", "").replace("e", ""), list(VOLUME_COLUMNS))


def cmd_volume_list(host: Host, a: argparse.Namespace) -> int:
    from .. import record
    from ..errors import CorruptRecord
    cols = volume_columns(a.columns)
    output.check_format(a.format)
    vols = _volumes(host).list(a.pool)
    # one record read per instance (the pool and the snapshots come from the same read): LXD
    # lists an instance's snapshots as ``container (snapshot)`` volumes named ``c1/s1``
    instances: list[str] = []
    snapshots: dict[str, list[str]] = {}
    for n in record.names(host.paths):
        try:
            rec = record.load(host.paths, n)
        except (FileNotFoundError, CorruptRecord):
            continue
        if rec.pool == a.pool:
            instances.append(n)
            snapshots[n] = [s.name for s in rec.snapshots]
    # LXD's ``U`` column (IEC units), read only when asked for, as LXD does; each kind asked
    # once for all its volumes (one ``zfs get``, one btrfs sync), not volume by volume
    used: dict[tuple[str, str], int | None] = {}
    if "U" in cols:
        pool = host.pool(a.pool)
        for kind, names in (("custom", [v["name"] for v in vols]), ("containers", instances)):
            used.update(((kind, n), u) for n, u in pool.volumes_usage(kind, names).items())

    def usage(kind: str, name: str) -> str:
        figure = used.get((kind, name))
        return output.size(figure) if figure is not None else ""
    cells = [{"t": "custom", "n": v["name"], "d": v["description"], "c": v["content_type"],
              "u": str(len(v["used_by"])), "U": usage("custom", v["name"])} for v in vols]
    data = list(vols)
    for v in vols:  # LXD lists a custom volume's snapshots as ``custom (snapshot)`` volumes
        for snap in _volumes(host).snapshots(a.pool, v["name"]):
            full = f"{v['name']}/{snap['name']}"
            cells.append({"t": "custom (snapshot)", "n": full, "d": snap["description"],
                          "c": "filesystem", "u": "0", "U": ""})
            data.append({"name": full, "type": "custom", "content_type": "filesystem",
                         "description": snap["description"], "config": snap["config"],
                         "created_at": snap["created_at"], "pool": a.pool,
                         "location": "none", "used_by": []})
    for n in instances:
        cells.append({"t": "container", "n": n, "d": "", "c": "filesystem", "u": "1",
                      "U": usage("containers", n)})
        data.append({"name": n, "type": "container", "content_type": "filesystem",
                     "pool": a.pool, "used_by": [f"/1.0/instances/{n}"]})
        for s in snapshots[n]:
            cells.append({"t": "container (snapshot)", "n": f"{n}/{s}", "d": "",
                          "c": "filesystem", "u": "1", "U": ""})
            data.append({"name": f"{n}/{s}", "type": "container",
                         "content_type": "filesystem", "pool": a.pool,
                         "used_by": [f"/1.0/instances/{n}/snapshots/{s}"]})
    rows = [[c[k] for k in cols] for c in cells]
    if len(cols) >= 2:  # LXD: by type (a snapshot beside its instance), then the second column
        rows.sort(key=lambda r: (r[0].split(" ")[0], r[1] == "", r[1]))
    output.emit(a.format, [VOLUME_COLUMNS[k] for k in cols], rows, data)
    return 0


def _api_time(value: str | None) -> str:
    """A recorded time (ISO 8601 with its zone, or none) as LXD's API has it."""
    import datetime as dt  # here: the other verbs need none of it (start-up time)

    from ..config.units import format_api_time
    return format_api_time(dt.datetime.fromisoformat(value) if value else None)


def _shown_time(value: str | None) -> str:
    """A recorded time as ``info`` tables show it (the instances' ``info`` form)."""
    if not value:
        return " "
    import datetime as dt
    return dt.datetime.fromisoformat(value).strftime("%Y/%m/%d %H:%M %Z")


def cmd_volume_show(host: Host, a: argparse.Namespace) -> int:
    """``show <pool> <volume>`` or ``<volume>/<snapshot>`` (LXD's snapshot shape: its
    description, expiry (LXD's zero time: none), name, config, content type, creation)."""
    volume, snap = _snapshot_arg(a.volume)
    if snap is not None:
        view = _volumes(host).get_snapshot(a.pool, volume, snap)
        view["expires_at"] = _api_time(view["expires_at"])
        sys.stdout.write(output.dump_yaml(view))
        return 0
    v = _volumes(host).get(a.pool, a.volume)
    # api.StorageVolume's fields in LXD's order; a root has the default project only
    shown = {"config": v["config"], "description": v["description"], "name": v["name"],
             "type": v["type"], "used_by": v["used_by"], "location": v["location"],
             "content_type": v["content_type"], "project": "default",
             "created_at": _api_time(v["created_at"])}
    sys.stdout.write(output.dump_yaml(shown))
    return 0


def cmd_volume_edit(host: Host, a: argparse.Namespace) -> int:
    """``storage volume edit <pool> <volume>``: config and description change; the rest of what
    ``storage volume show`` prints is ignored. Of a snapshot (``<volume>/<snap>``) the
    description and ``expires_at`` change, and as in LXD the document is the whole new state:
    a field left out is emptied (no description, no expiry)."""
    volume, snap = _snapshot_arg(a.volume)
    if snap is not None:
        view = _volumes(host).get_snapshot(a.pool, volume, snap)
        view["expires_at"] = _api_time(view["expires_at"])
        data = load_mapping(edit_text(output.dump_yaml(view)))
        expires = _edited_time(data.get("expires_at"))
        _volumes(host).update_snapshot(a.pool, volume, snap,
                                       description=text_field(data, "description") or "",
                                       expires_at=expires, no_expiry=expires is None)
        return 0
    v = _volumes(host).get(a.pool, a.volume)
    data = load_mapping(edit_text(output.dump_yaml({"config": v["config"],
                                                    "description": v["description"]})))
    _volumes(host).update(
        a.pool, a.volume,
        str_map(data["config"], "config") if "config" in data else None,
        text_field(data, "description"))
    return 0


def _edited_time(value: object) -> dt.datetime | None:
    """An edited ``expires_at`` (``config.units.parse_api_time``: LXD's zero time, null or
    nothing is no expiry)."""
    from ..config.units import parse_api_time
    from ..errors import InvalidArgument
    try:
        return parse_api_time(value)
    except ValueError:
        raise InvalidArgument(f"invalid expires_at {str(value)!r}: not an RFC 3339 time "
                              "(like 2100-01-02T15:04:05Z)") from None


def cmd_volume_delete(host: Host, a: argparse.Namespace) -> int:
    """``delete <pool> <volume>`` (and its snapshots) or ``<volume>/<snapshot>``."""
    volume, snap = _snapshot_arg(a.volume)
    if snap is not None:
        try:
            _volumes(host).delete_snapshot(a.pool, volume, snap)
        except Exception as e:
            raise _snapshot_not_found(e, a.pool, volume, snap) from None
    else:
        _volumes(host).delete(a.pool, a.volume)
    if not host_quiet(a):
        print(f"Storage volume {a.volume} deleted")
    return 0


def cmd_volume_attach(host: Host, a: argparse.Namespace) -> int:
    """``attach <pool> <vol> <instance> [<device>] <path>``."""
    from ..errors import InvalidArgument
    if len(a.rest) == 1:
        device, path = None, a.rest[0]
    elif len(a.rest) == 2:
        device, path = a.rest
    else:
        raise InvalidArgument("usage: storage volume attach <pool> <volume> <instance> "
                              "[<device>] <path>")
    _volumes(host).attach(a.pool, a.volume, a.instance, path, device)
    return 0


def cmd_volume_detach(host: Host, a: argparse.Namespace) -> int:
    _volumes(host).detach(a.pool, a.volume, a.instance, a.device)
    return 0


def cmd_volume_attach_profile(host: Host, a: argparse.Namespace) -> int:
    """``attach-profile <pool> <vol> <profile> [<device>] <path>``: a disk of the volume in
    the profile (device named after the volume unless given), as ``lxc`` 5.0 writes it."""
    from ..errors import InvalidArgument
    from ..volumes import disk_device, strip_type
    from .profiles import add_device
    if len(a.rest) == 1:
        device, path = None, a.rest[0]
    elif len(a.rest) == 2:
        device, path = a.rest
    elif not a.rest:  # LXD takes it for a block volume; custom volumes here are filesystems
        raise InvalidArgument(f"storage volume {a.volume!r} is a filesystem: give the path "
                              "to mount it at")
    else:
        raise InvalidArgument("Invalid number of arguments")
    volume = strip_type(a.volume)
    _volumes(host).get(a.pool, volume)  # the pool and the volume must exist (LXD's order)
    add_device(host, a.profile, device or volume, disk_device(a.pool, volume, path))
    return 0


def cmd_volume_detach_profile(host: Host, a: argparse.Namespace) -> int:
    """``detach-profile <pool> <vol> <profile> [<device>]``: the profile's disk of the volume
    goes; without a device name there must be exactly one (LXD's refusals)."""
    from ..volumes import strip_type, uses_volume
    from .profiles import detach_pick, remove_devices
    volume = strip_type(a.volume)
    _volumes(host).get(a.pool, volume)
    # LXD 5.0 removes whatever device is named; one that is not a disk of this volume is
    # refused here instead (no LXD text for that: lxdlib's own)
    remove_devices(host, a.profile, detach_pick(
        a.profile, a.device, volume, lambda d: uses_volume(d, a.pool, volume),
        f"a disk of volume {volume!r} of pool {a.pool!r}",
        "No device found for this storage volume"))
    return 0


#: What LXD says to a ``set`` or ``unset`` of a snapshot's key.
READ_ONLY_SNAPSHOT = "Snapshots are read-only and can't have their configuration changed"


def cmd_volume_set(host: Host, a: argparse.Namespace) -> int:
    from ..errors import InvalidArgument
    if _snapshot_arg(a.volume)[1] is not None:
        raise InvalidArgument(READ_ONLY_SNAPSHOT)
    if all("=" in x for x in a.args):
        kv = parse_kv(a.args, "volume config")
    elif len(a.args) == 2:
        kv = {a.args[0]: a.args[1]}
    else:
        raise InvalidArgument("usage: storage volume set <pool> <volume> <key> <value>")
    _volumes(host).set_many(a.pool, a.volume, kv)  # read under the volume's lock
    return 0


def cmd_volume_unset(host: Host, a: argparse.Namespace) -> int:
    if _snapshot_arg(a.volume)[1] is not None:
        from ..errors import InvalidArgument
        raise InvalidArgument(READ_ONLY_SNAPSHOT)
    _volumes(host).unset(a.pool, a.volume, a.key)
    return 0


def cmd_volume_get(host: Host, a: argparse.Namespace) -> int:
    """``get <pool> <volume> <key>``, or a snapshot's key (its config as it was taken)."""
    volume, snap = _snapshot_arg(a.volume)
    if snap is not None:
        cfg = _volumes(host).get_snapshot(a.pool, volume, snap)["config"]
    else:
        cfg = _volumes(host).get(a.pool, a.volume)["config"]
    if a.key in cfg:  # as lxc: a key that is not set prints nothing, not an empty line
        print(cfg[a.key])
    return 0


def cmd_volume_rename(host: Host, a: argparse.Namespace) -> int:
    """``rename <pool> <volume> <new>``, or a snapshot's: ``rename <pool> <volume>/<snap>
    <volume>/<new>`` (LXD 5.0's checks and words: the target must name the same volume and a
    snapshot; the line printed names the snapshot's new name alone, as ``lxc``'s)."""
    volume, snap = _snapshot_arg(a.volume)
    if snap is None:
        _volumes(host).rename(a.pool, a.volume, a.new)
        if not host_quiet(a):
            print(f'Renamed storage volume from "{a.volume}" to "{a.new}"')
        return 0
    from ..errors import InvalidArgument
    parent, sep, new = a.new.partition("/")
    if parent != volume:
        raise InvalidArgument("Invalid new snapshot name, parent volume must be the same as "
                              "source")
    if not sep:
        raise InvalidArgument("Invalid new snapshot name")
    if not new:
        raise InvalidArgument("No name provided")
    if "/" in new:
        raise InvalidArgument("Storage volume names may not contain slashes")
    _volumes(host).rename_snapshot(a.pool, volume, snap, new)
    if not host_quiet(a):
        print(f'Renamed storage volume from "{volume}/{snap}" to "{new}"')
    return 0


def _pool_volume(arg: str, role: str) -> tuple[str, str]:
    """``<pool>/<volume>`` of ``storage volume copy`` (LXD's words for what is missing)."""
    from ..errors import InvalidArgument
    pool, sep, name = arg.partition("/")
    if not sep or not pool:
        raise InvalidArgument(f"No storage pool for {role} volume specified")
    if "/" in name:
        raise InvalidArgument("Storage volume names may not contain slashes")
    return pool, name


def cmd_volume_copy(host: Host, a: argparse.Namespace) -> int:
    """``copy <pool>/<volume> <pool>/<volume>``, its snapshots too unless ``--volume-only``."""
    src_pool, src = _pool_volume(a.source, "source")
    dst_pool, dst = _pool_volume(a.target, "target")
    _volumes(host).copy(src_pool, src, dst_pool, dst, a.volume_only)
    if not host_quiet(a):
        print("Storage volume copied successfully!")
    return 0


def cmd_volume_info(host: Host, a: argparse.Namespace) -> int:
    """LXD 5.0's lines: name, description when set, type, content type, usage when the pool
    can tell, the size limit when set, then ``Snapshots:`` and their table when there are
    any (name, description, expiry)."""
    from ..errors import InvalidArgument
    volume, snap = _snapshot_arg(a.volume)
    if snap is not None:
        raise InvalidArgument("Only instance or custom volumes are supported")
    v = _volumes(host).info(a.pool, volume)
    lines = [f"Name: {v['name']}"]
    if v["description"]:
        lines.append(f"Description: {v['description']}")
    lines += [f"Type: {v['type']}", f"Content type: {v['content_type']}"]
    if v["usage"] is not None:
        lines.append(f"Usage: {output.size(v['usage'])}")
    if v["total"] is not None:
        lines.append(f"Total: {output.size(v['total'])}")
    if v["snapshots"]:
        lines += ["", "Snapshots:", output.table(
            ["NAME", "DESCRIPTION", "EXPIRES AT"],
            sorted(([s["name"], s["description"], _shown_time(s["expires_at"])]
                    for s in v["snapshots"]),
                   key=output.natural_key))]
    print("\n".join(lines))
    return 0


def _register_volume(s: Any) -> None:
    v = s.add_parser("volume", help="manage custom storage volumes")
    vs = v.add_subparsers(dest="volume_cmd", metavar="<verb>", required=True)

    def verb(name: str, fn: Any, *args: str, aliases: tuple[str, ...] = ()) -> Any:
        x = vs.add_parser(name, aliases=list(aliases))
        x.add_argument("pool")
        for arg in args:
            x.add_argument(arg)
        x.set_defaults(func=fn)
        return x

    x = verb("create", cmd_volume_create, "volume")
    x.add_argument("config", nargs="*", help="key=value (size=…, user.*)")
    x.add_argument("--description")
    x.add_argument("--type", dest="content_type", default="filesystem",
                   help="the content type: filesystem (block volumes are not supported)")
    x = verb("list", cmd_volume_list, aliases=("ls",))
    output.add_columns(x, VOLUME_DEFAULT_COLUMNS, {
        "c": "content type", "d": "description", "n": "name", "t": "type", "u": "used by",
        "U": "disk usage"})
    output.add_format(x)
    verb("show", cmd_volume_show, "volume")
    verb("delete", cmd_volume_delete, "volume", aliases=("rm",))
    x = verb("attach", cmd_volume_attach, "volume", "instance")
    x.add_argument("rest", nargs="+", metavar="[<device>] <path>")
    x = verb("detach", cmd_volume_detach, "volume", "instance")
    x.add_argument("device", nargs="?")
    x = verb("attach-profile", cmd_volume_attach_profile, "volume", "profile")
    x.add_argument("rest", nargs="*", metavar="[<device>] <path>")
    x = verb("detach-profile", cmd_volume_detach_profile, "volume", "profile")
    x.add_argument("device", nargs="?")
    x = verb("set", cmd_volume_set, "volume")
    x.add_argument("args", nargs="+", metavar="<key> <value> | key=value")
    verb("unset", cmd_volume_unset, "volume", "key")
    verb("get", cmd_volume_get, "volume", "key")
    verb("edit", cmd_volume_edit, "volume")
    verb("rename", cmd_volume_rename, "volume", "new")
    x = vs.add_parser("copy", aliases=["cp"])
    x.add_argument("source", metavar="<pool>/<volume>")
    x.add_argument("target", metavar="<pool>/<volume>")
    x.add_argument("--volume-only", action="store_true",
                   help="copy the volume without its snapshots")
    x.set_defaults(func=cmd_volume_copy)
    verb("info", cmd_volume_info, "volume")
    x = verb("snapshot", cmd_volume_snapshot, "volume")
    x.add_argument("snapshot", nargs="?")
    x.add_argument("--reuse", action="store_true",
                   help="if the snapshot name already exists, delete and create a new one")
    x.add_argument("--no-expiry", action="store_true",
                   help="ignore any configured auto-expiry for the storage volume")
    verb("restore", cmd_volume_restore, "volume", "snapshot")


def register(sub: Any) -> None:
    p = sub.add_parser("storage", help="manage storage pools")
    s = p.add_subparsers(dest="storage_cmd", metavar="<verb>", required=True)
    _register_volume(s)
    x = s.add_parser("create")
    x.add_argument("name")
    x.add_argument("driver", choices=("btrfs", "zfs", "dir"))
    x.add_argument("config", nargs="*")
    x.add_argument("--description")
    x.set_defaults(func=cmd_create)
    x = s.add_parser("list", aliases=["ls"])
    output.add_format(x)
    x.set_defaults(func=cmd_list)
    for name, fn in (("show", cmd_show), ("info", cmd_info), ("delete", cmd_delete)):
        x = s.add_parser(name, aliases=["rm"] if name == "delete" else [])
        x.add_argument("name")
        x.set_defaults(func=fn)
        if name == "show":
            x.add_argument("--resources", action="store_true",
                           help="the pool's space (used, total) in bytes")
        elif name == "info":
            x.add_argument("--bytes", action="store_true", help="sizes in bytes")
    x = s.add_parser("edit", help="edit a storage pool's config and description (YAML on "
                                  "stdin or $EDITOR)")
    x.add_argument("name")
    x.set_defaults(func=cmd_edit)
    x = s.add_parser("get")
    x.add_argument("name")
    x.add_argument("key")
    x.set_defaults(func=cmd_get)
    x = s.add_parser("set")
    x.add_argument("name")
    x.add_argument("args", nargs="+", metavar="<key> <value> | key=value")
    x.set_defaults(func=cmd_set)
    x = s.add_parser("unset")
    x.add_argument("name")
    x.add_argument("key")
    x.set_defaults(func=cmd_unset)
