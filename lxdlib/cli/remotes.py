"""``remote``: the image servers references like ``images:alpine/3.19`` name."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from . import output

if TYPE_CHECKING:
    from ..host import Host


def cmd_list(host: Host, a: argparse.Namespace) -> int:
    remotes = host.images.remotes
    default = remotes.default
    items = remotes.list()
    rows = [[f"{r.name} (current)" if r.name == default else r.name, r.addr, r.protocol,
             "file access" if r.is_local else "none", "YES" if r.public else "NO",
             "YES" if r.static else "NO", "NO"] for r in items]
    output.emit(a.format, ["NAME", "URL", "PROTOCOL", "AUTH TYPE", "PUBLIC", "STATIC", "GLOBAL"],
                rows, {r.name: {"addr": r.addr, "protocol": r.protocol, "public": r.public,
                                "static": r.static} for r in items})
    return 0


def cmd_add(host: Host, a: argparse.Namespace) -> int:
    host.images.remotes.add(a.name, a.url, protocol=a.protocol, public=True)
    return 0


def cmd_remove(host: Host, a: argparse.Namespace) -> int:
    host.images.remotes.remove(a.name)
    return 0


def cmd_rename(host: Host, a: argparse.Namespace) -> int:
    host.images.remotes.rename(a.old, a.new)
    return 0


def cmd_set_url(host: Host, a: argparse.Namespace) -> int:
    host.images.remotes.set_url(a.name, a.url)
    return 0


def cmd_get_default(host: Host, a: argparse.Namespace) -> int:
    print(host.images.remotes.default)
    return 0


def cmd_switch(host: Host, a: argparse.Namespace) -> int:
    host.images.remotes.switch(a.name)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("remote", help="manage image servers (simplestreams remotes)")
    s = p.add_subparsers(dest="remote_cmd", metavar="<verb>", required=True)
    x = s.add_parser("list", aliases=["ls"])
    output.add_format(x)
    x.set_defaults(func=cmd_list)
    x = s.add_parser("add", help="add a simplestreams server (https://, or http:// for a mirror)")
    x.add_argument("name")
    x.add_argument("url")
    x.add_argument("--protocol", default="simplestreams")
    x.add_argument("--public", action="store_true", help="accepted for LXD compatibility")
    x.set_defaults(func=cmd_add)
    x = s.add_parser("remove", aliases=["rm"])
    x.add_argument("name")
    x.set_defaults(func=cmd_remove)
    x = s.add_parser("rename", aliases=["mv"])
    x.add_argument("old")
    x.add_argument("new")
    x.set_defaults(func=cmd_rename)
    x = s.add_parser("set-url")
    x.add_argument("name")
    x.add_argument("url")
    x.set_defaults(func=cmd_set_url)
    x = s.add_parser("get-default")
    x.set_defaults(func=cmd_get_default)
    x = s.add_parser("switch")
    x.add_argument("name")
    x.set_defaults(func=cmd_switch)
