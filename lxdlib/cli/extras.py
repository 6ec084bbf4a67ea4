"""``lxc`` words that lxdlib answers without a daemon behind them: ``rename``, ``version``,
``alias`` (the user's command aliases), ``operation``, ``project`` and ``warning``.

There is no background operation, one project and no warning log in lxdlib (every verb runs to
its end in the process that asked), so ``operation list`` and ``warning list`` print LXD's
empty tables and ``project`` knows ``default`` alone; they exist so that scripts and habits
written for ``lxc`` get LXD's answers here too.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
from collections.abc import Callable

from ..errors import (
    TYPE_CHECKING,
    AlreadyExists,
    InvalidArgument,
    LxdlibError,
    NotFound,
    WrongState,
)
from . import output, useraliases

if TYPE_CHECKING:
    from typing import Any, TypeVar

    from ..host import Host

    E = TypeVar("E", bound=LxdlibError)

    Verb = Callable[[Any, argparse.Namespace], int]


def _worded(e: E, message: str) -> E:
    """``e`` (its type still says what went wrong) with LXD's own sentence as its message."""
    e.args = (message,)
    return e


def _says_errors(func: Verb) -> Verb:
    """Verbs that open no root run outside the command's error handling: print an error as
    the command prints every other (``Error: …``, exit 1)."""
    @functools.wraps(func)
    def run(host: Any, a: argparse.Namespace) -> int:
        try:
            return func(host, a)
        except LxdlibError as e:
            if getattr(a, "debug", False):
                raise
            from .lxdwords import lxd_text
            sys.stderr.write(f"Error: {lxd_text(e, a)}\n")
            return 1
    return run


def _local(ref: str) -> str:
    """A name with the ``local:`` remote prefix accepted (lxdlib has only that server)."""
    remote, sep, rest = ref.partition(":")
    if not sep:
        return ref
    if remote != "local":
        raise InvalidArgument(f"The remote \"{remote}\" doesn't exist")
    return rest


# -- rename ---------------------------------------------------------------------------------------
def cmd_rename(host: Host, a: argparse.Namespace) -> int:
    """``rename <old> <new>`` is ``move <old> <new>`` (instances and snapshots), as in LXD."""
    if ":" in a.new and not a.new.startswith("local:") and ":" not in a.old:
        raise InvalidArgument("Can't specify a different remote for rename")
    old, new = _local(a.old), _local(a.new)
    if "/" in old:
        inst, snap = old.split("/", 1)
        dinst, dsnap = new.split("/", 1) if "/" in new else (inst, new)
        if dinst != inst:
            raise InvalidArgument("a snapshot can only be renamed within its instance")
        host.instances.get(inst).snapshots.rename(snap, dsnap)
        return 0
    if new == old:  # as lxc: the name is taken (by the instance itself); the API's no-op
        host.instances.get(old)
        raise AlreadyExists("instance", new)
    host.move(old, new)
    return 0


# -- version --------------------------------------------------------------------------------------
def version() -> str:
    """lxdlib's version (``lxdlib.version``: setup.cfg reads it there too)."""
    from ..version import VERSION
    return VERSION


@_says_errors
def cmd_version(host: Host | None, a: argparse.Namespace) -> int:
    """Client and server are the same library here: both lines name its version; an image
    server or an unknown remote answers none (``unreachable``, as ``lxc`` says of a server it
    cannot ask, still exiting 0)."""
    print(f"Client version: {version()}")
    # like lxc, any remote but this one (an image server, an unknown name) is "unreachable"
    local = not a.remote or a.remote.rstrip(":") == "local"
    print(f"Server version: {version() if local else 'unreachable'}")
    return 0


# -- alias ----------------------------------------------------------------------------------------
@_says_errors
def cmd_alias_add(host: Host | None, a: argparse.Namespace) -> int:
    def add(aliases: dict[str, str]) -> None:
        if a.alias in aliases:
            raise _worded(AlreadyExists("alias", a.alias), f"Alias {a.alias} already exists")
        aliases[a.alias] = a.target
    useraliases.modify(add)
    return 0


@_says_errors
def cmd_alias_list(host: Host | None, a: argparse.Namespace) -> int:
    output.check_format(a.format)
    aliases = useraliases.load()
    rows = [[k, v] for k, v in sorted(aliases.items())]
    output.emit(a.format, ["ALIAS", "TARGET"], rows, aliases)
    return 0


@_says_errors
def cmd_alias_rename(host: Host | None, a: argparse.Namespace) -> int:
    def rename(aliases: dict[str, str]) -> None:
        if a.old not in aliases:
            raise _worded(NotFound("alias", a.old), f"Alias {a.old} doesn't exist")
        if a.new in aliases:
            raise _worded(AlreadyExists("alias", a.new), f"Alias {a.new} already exists")
        aliases[a.new] = aliases.pop(a.old)
    useraliases.modify(rename)
    return 0


@_says_errors
def cmd_alias_remove(host: Host | None, a: argparse.Namespace) -> int:
    def remove(aliases: dict[str, str]) -> None:
        if a.alias not in aliases:
            raise _worded(NotFound("alias", a.alias), f"Alias {a.alias} doesn't exist")
        del aliases[a.alias]
    useraliases.modify(remove)
    return 0


# -- operation ------------------------------------------------------------------------------------
OPERATION_HEADERS = ["ID", "TYPE", "DESCRIPTION", "STATUS", "CANCELABLE", "CREATED"]


@_says_errors
def cmd_operation_list(host: Host | None, a: argparse.Namespace) -> int:
    """Every lxdlib verb finishes before its command returns: nothing runs in the
    background, so the list is LXD's empty one."""
    if a.remote and _local(a.remote):
        raise InvalidArgument("Filtering isn't supported yet")
    output.emit(a.format, OPERATION_HEADERS, [], [])
    return 0


@_says_errors
def cmd_operation_missing(host: Host | None, a: argparse.Namespace) -> int:
    _local(a.operation)
    raise _worded(NotFound("operation", a.operation), "Operation not found")


# -- cluster --------------------------------------------------------------------------------------
@_says_errors
def cmd_cluster_list(host: Host | None, a: argparse.Namespace) -> int:
    """A root is one machine's: never a cluster member, which LXD says of a standalone server."""
    output.check_format(a.format)
    if a.remote:
        _local(a.remote)
    raise _worded(WrongState("lxdlib roots are never clustered"),
                  "LXD server isn't part of a cluster")


# -- project --------------------------------------------------------------------------------------
PROJECT_FEATURES = ("features.images", "features.profiles", "features.storage.volumes",
                    "features.networks")


def default_project(host: Host) -> dict[str, Any]:
    """LXD's ``default`` project as it stands on a fresh LXD 5.0: every feature on, used by
    every instance, profile, image, custom volume and network of the root."""
    from .. import record
    used = [f"/1.0/instances/{n}" for n in record.names(host.paths)]
    used += [f"/1.0/profiles/{n}" for n in host.profiles.names()]
    used += [f"/1.0/images/{i.fingerprint}" for i in host.images.list()]
    for pool in host.pool_names():
        used += [f"/1.0/storage-pools/{pool}/volumes/custom/{v['name']}"
                 for v in host.volumes.store.list(pool)]
    used += [f"/1.0/networks/{n}" for n in host.networks.names()]
    return {"config": dict.fromkeys(sorted(PROJECT_FEATURES), "true"),
            "description": "Default LXD project", "name": "default", "used_by": used}


def _project(host: Host, ref: str) -> dict[str, Any]:
    name = _local(ref)
    if not name:
        raise InvalidArgument("Missing project name")
    if name != "default":
        raise _worded(NotFound("project", name), "Project not found")
    return default_project(host)


def cmd_project_list(host: Host, a: argparse.Namespace) -> int:
    output.check_format(a.format)
    if a.remote:
        _local(a.remote)
    p = default_project(host)
    yes = ["YES" if p["config"][f] == "true" else "NO" for f in PROJECT_FEATURES]
    rows = [["default (current)", *yes, p["description"], str(len(p["used_by"]))]]
    output.emit(a.format, ["NAME", "IMAGES", "PROFILES", "STORAGE VOLUMES", "NETWORKS",
                           "DESCRIPTION", "USED BY"], rows, [p])
    return 0


def cmd_project_show(host: Host, a: argparse.Namespace) -> int:
    sys.stdout.write(output.dump_yaml(_project(host, a.project)))
    return 0


def cmd_project_get(host: Host, a: argparse.Namespace) -> int:
    print(_project(host, a.project)["config"].get(a.key, ""))
    return 0


@_says_errors
def cmd_project_current(host: Host | None, a: argparse.Namespace) -> int:
    print("default")
    return 0


def cmd_project_switch(host: Host, a: argparse.Namespace) -> int:
    _project(host, a.project)  # default is the only one, and the current one
    return 0


#: ``project info``'s resources, in LXD 5.0's order (its table, and the keys of its YAML).
PROJECT_RESOURCES = ("containers", "cpu", "disk", "instances", "memory", "networks",
                     "processes", "virtual-machines")


def project_usage(host: Host) -> dict[str, int]:
    """What the instances of the (only) project take, as LXD's ``project info`` counts it: the
    CPUs, memory and processes their limits ask for (the expanded ``limits.cpu``,
    ``limits.memory``, ``limits.processes``; an instance without one counts 0), the sizes of
    their root disks and of the custom volumes, and the managed networks. An instance whose
    record cannot be read counts as an instance and nothing more."""
    from ..config import limits
    from ..config.units import parse_size
    usage = dict.fromkeys(PROJECT_RESOURCES, 0)
    mem_total = host.facts().mem_total
    for inst in host.instances.list():
        usage["containers"] += 1
        usage["instances"] += 1
        try:
            cfg, devs = inst.expanded()  # one record read and composition for both
        except LxdlibError:
            continue
        with contextlib.suppress(LxdlibError, ValueError):
            cpu = limits.cpu_limit(cfg["limits.cpu"]) if cfg.get("limits.cpu") else 0
            usage["cpu"] += cpu if isinstance(cpu, int) else len(cpu)
        with contextlib.suppress(LxdlibError, ValueError):
            if cfg.get("limits.memory"):
                usage["memory"] += limits.memory_limit_bytes(cfg["limits.memory"], mem_total)
        with contextlib.suppress(ValueError):
            usage["processes"] += int(cfg.get("limits.processes") or 0)
        root = next((d for d in devs.values()
                     if d.get("type") == "disk" and d.get("path") == "/"), {})
        with contextlib.suppress(LxdlibError, ValueError):
            usage["disk"] += parse_size(root["size"]) if root.get("size") else 0
    for pool in host.pool_names():
        for vol in host.volumes.store.list(pool):
            with contextlib.suppress(LxdlibError, ValueError, KeyError, TypeError):
                size = vol.get("config", {}).get("size")
                usage["disk"] += parse_size(size) if size else 0
    usage["networks"] = len(host.networks.names())
    return usage


def cmd_project_info(host: Host, a: argparse.Namespace) -> int:
    output.check_format(a.format)
    _project(host, a.project)
    usage = project_usage(host)
    if a.format == "json":  # LXD's JSON keeps its Go field names, capitalised
        print(json.dumps({"resources": {k: {"Limit": -1, "Usage": v}
                                        for k, v in usage.items()}}, separators=(",", ":")))
        return 0
    rows = [[k.upper(), "UNLIMITED",
             output.size(v) if k in ("disk", "memory") else str(v)] for k, v in usage.items()]
    output.emit(a.format, ["RESOURCE", "LIMIT", "USAGE"], rows,
                {"resources": {k: {"limit": -1, "usage": v} for k, v in usage.items()}})
    return 0


@_says_errors
def cmd_project_single(host: Host | None, a: argparse.Namespace) -> int:
    """The verbs that would make, change or remove a project: lxdlib has the default one."""
    raise InvalidArgument(f"lxdlib has one project, \"default\", which cannot be "
                          f"{'created' if a.project_cmd == 'create' else 'changed or removed'}"
                          f" (project {a.project_cmd})")


# -- warning --------------------------------------------------------------------------------------
WARNING_COLUMNS = {"c": "COUNT", "f": "FIRST SEEN", "l": "LAST SEEN", "p": "PROJECT",
                   "s": "SEVERITY", "S": "STATUS", "t": "TYPE", "u": "UUID"}
WARNING_DEFAULT_COLUMNS = "utSscpLl"


@_says_errors
def cmd_warning_list(host: Host | None, a: argparse.Namespace) -> int:
    """lxdlib logs its warnings (the ``lxdlib`` logger) instead of keeping them: LXD's list
    with no entries, its columns and its refusals."""
    if a.columns != WARNING_DEFAULT_COLUMNS and "L" in a.columns:
        raise InvalidArgument("Can't specify column L when not clustered")
    cols = output.columns(a.columns.replace("L", ""), list(WARNING_COLUMNS))
    output.emit(a.format, [WARNING_COLUMNS[c] for c in cols], [], [])
    return 0


@_says_errors
def cmd_warning_missing(host: Host | None, a: argparse.Namespace) -> int:
    raise _worded(NotFound("warning", a.uuid), "Warning not found")


def register(sub: Any) -> None:
    p = sub.add_parser("rename", help="rename instances and snapshots")
    p.add_argument("old", metavar="<instance>[/<snapshot>]")
    p.add_argument("new", metavar="<instance>[/<snapshot>]")
    p.set_defaults(func=cmd_rename)

    p = sub.add_parser("version", help="show local and remote versions")
    p.add_argument("remote", nargs="?", metavar="<remote>:")
    p.set_defaults(func=cmd_version, no_host=True)

    p = sub.add_parser("alias", help="manage command aliases")
    s = p.add_subparsers(dest="alias_cmd", metavar="<verb>", required=True)
    x = s.add_parser("add", help="add new aliases",
                     description='e.g. lxdlib alias add list "list -c ns46S"')
    x.add_argument("alias")
    x.add_argument("target")
    x.set_defaults(func=cmd_alias_add, no_host=True)
    x = s.add_parser("list", aliases=["ls"], help="list aliases")
    output.add_format(x)
    x.set_defaults(func=cmd_alias_list, no_host=True)
    x = s.add_parser("rename", aliases=["mv"], help="rename aliases")
    x.add_argument("old")
    x.add_argument("new")
    x.set_defaults(func=cmd_alias_rename, no_host=True)
    x = s.add_parser("remove", aliases=["rm"], help="remove aliases")
    x.add_argument("alias")
    x.set_defaults(func=cmd_alias_remove, no_host=True)

    p = sub.add_parser("operation", help="list, show and delete background operations")
    s = p.add_subparsers(dest="operation_cmd", metavar="<verb>", required=True)
    x = s.add_parser("list", aliases=["ls"], help="list background operations (none here)")
    x.add_argument("remote", nargs="?", metavar="<remote>:")
    output.add_format(x)
    x.set_defaults(func=cmd_operation_list, no_host=True)
    for name, aliases in (("show", []), ("delete", ["cancel", "rm"])):
        x = s.add_parser(name, aliases=aliases)
        x.add_argument("operation")
        x.set_defaults(func=cmd_operation_missing, no_host=True)

    p = sub.add_parser("project", help="projects (lxdlib has the default project only)")
    s = p.add_subparsers(dest="project_cmd", metavar="<verb>", required=True)
    x = s.add_parser("list", aliases=["ls"], help="list projects")
    x.add_argument("remote", nargs="?", metavar="<remote>:")
    output.add_format(x)
    x.set_defaults(func=cmd_project_list)
    x = s.add_parser("show", help="show project options")
    x.add_argument("project")
    x.set_defaults(func=cmd_project_show)
    x = s.add_parser("get", help="get a project option")
    x.add_argument("project")
    x.add_argument("key")
    x.set_defaults(func=cmd_project_get)
    x = s.add_parser("switch", help="switch the current project")
    x.add_argument("project")
    x.set_defaults(func=cmd_project_switch)
    x = s.add_parser("get-current", help="show the current project")
    x.set_defaults(func=cmd_project_current, no_host=True)
    x = s.add_parser("info", help="show the project's resource usage")
    x.add_argument("project")
    output.add_format(x)
    x.set_defaults(func=cmd_project_info)
    for verb, what in (("create", "create a project (refused: only default exists)"),
                       ("delete", "delete a project (refused)"),
                       ("edit", "edit a project (refused)"),
                       ("rename", "rename a project (refused)"),
                       ("set", "set a project option (refused)"),
                       ("unset", "unset a project option (refused)")):
        x = s.add_parser(verb, help=what)
        x.add_argument("rest", nargs=argparse.REMAINDER)
        x.set_defaults(func=cmd_project_single, no_host=True)

    p = sub.add_parser("cluster", help="cluster members (lxdlib is never clustered)")
    s = p.add_subparsers(dest="cluster_cmd", metavar="<verb>", required=True)
    x = s.add_parser("list", aliases=["ls"], help="list cluster members (refused)")
    x.add_argument("remote", nargs="?", metavar="<remote>:")
    output.add_format(x)
    x.set_defaults(func=cmd_cluster_list, no_host=True)

    p = sub.add_parser("warning", help="manage warnings (lxdlib logs them instead)")
    s = p.add_subparsers(dest="warning_cmd", metavar="<verb>", required=True)
    x = s.add_parser("list", aliases=["ls"], help="list warnings (none here)")
    x.add_argument("remote", nargs="?", metavar="<remote>:")
    output.add_columns(x, WARNING_DEFAULT_COLUMNS, {
        "c": "count", "l": "last seen", "L": "location", "f": "first seen", "p": "project",
        "s": "severity", "S": "status", "u": "UUID", "t": "type"})
    output.add_format(x)
    x.add_argument("-a", "--all", action="store_true", help="list all warnings")
    x.set_defaults(func=cmd_warning_list, no_host=True)
    for name, aliases in (("show", []), ("acknowledge", ["ack"]), ("delete", ["rm"])):
        x = s.add_parser(name, aliases=aliases)
        x.add_argument("uuid")
        x.set_defaults(func=cmd_warning_missing, no_host=True)
