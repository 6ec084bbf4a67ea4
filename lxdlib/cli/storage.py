"""``storage``: create, list, show, info, delete pools."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from . import output
from .instances import parse_kv

if TYPE_CHECKING:
    from ..host import Host


def cmd_create(host: Host, a: argparse.Namespace) -> int:
    host.create_pool(a.name, a.driver, parse_kv(a.config, "pool config"), a.description or "")
    if not host_quiet(a):
        print(f"Storage pool {a.name} created")
    return 0


def host_quiet(a: argparse.Namespace) -> bool:
    return bool(getattr(a, "quiet", False))


def _used_by(host: Host, pool: str) -> list[str]:
    from .. import record
    users = [f"/1.0/instances/{n}" for n in record.names(host.paths)
             if host._instance_pool(n) == pool]
    users += [f"/1.0/profiles/{p.name}" for p in host.profiles.list()
              if any(d.get("pool") == pool for d in p.devices.values())]
    return users


def cmd_list(host: Host, a: argparse.Namespace) -> int:
    rows, data = [], []
    for name in host.pool_names():
        pool = host.pool(name)
        d = pool.describe()
        users = _used_by(host, name)
        rows.append([name, d["driver"], d["config"].get("source", ""), str(len(users)),
                     "CREATED"])
        data.append({**d, "used_by": users, "status": "Created"})
    output.emit(a.format, ["NAME", "DRIVER", "SOURCE", "USED BY", "STATE"], rows, data)
    return 0


def cmd_show(host: Host, a: argparse.Namespace) -> int:
    d = host.pool(a.name).describe()
    d["used_by"] = _used_by(host, a.name)
    sys.stdout.write(output.dump_yaml(d))
    return 0


def cmd_info(host: Host, a: argparse.Namespace) -> int:
    pool = host.pool(a.name)
    pool.mount()
    u = pool.usage()
    d = pool.describe()
    info = {"info": {"name": a.name, "driver": d["driver"],
                     "description": d.get("description", ""),
                     "total space": output.size(u.total), "space used": output.size(u.used)},
            "used by": {"instances": [x.rsplit("/", 1)[1] for x in _used_by(host, a.name)
                                      if "/instances/" in x],
                        "profiles": [x.rsplit("/", 1)[1] for x in _used_by(host, a.name)
                                     if "/profiles/" in x]}}
    sys.stdout.write(output.dump_yaml(info))
    return 0


def cmd_delete(host: Host, a: argparse.Namespace) -> int:
    host.delete_pool(a.name)
    if not host_quiet(a):
        print(f"Storage pool {a.name} deleted")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("storage", help="manage storage pools")
    s = p.add_subparsers(dest="storage_cmd", metavar="<verb>", required=True)
    x = s.add_parser("create")
    x.add_argument("name")
    x.add_argument("driver", choices=("btrfs", "zfs", "dir"))
    x.add_argument("config", nargs="*")
    x.add_argument("--description")
    x.set_defaults(func=cmd_create)
    x = s.add_parser("list", aliases=["ls"])
    x.add_argument("-f", "--format", choices=output.FORMATS, default="table")
    x.set_defaults(func=cmd_list)
    for name, fn in (("show", cmd_show), ("info", cmd_info), ("delete", cmd_delete)):
        x = s.add_parser(name, aliases=["rm"] if name == "delete" else [])
        x.add_argument("name")
        x.set_defaults(func=fn)
