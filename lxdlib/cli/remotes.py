"""``remote``: the image servers references like ``images:alpine/3.19`` name, and other
lxdlib hosts reached over SSH (``remote add h2 ssh://root@host2``), whose instances and images
commands then name as ``h2:c1`` (see ``lxdlib.cli.forward``).

Also the hidden ``serve --stdio``: what an SSH remote runs on the far side (``lxdlib.serve``).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import TYPE_CHECKING
from . import output

if TYPE_CHECKING:
    from typing import Any

    from ..host import Host


def cmd_list(host: Host, a: argparse.Namespace) -> int:
    remotes = host.images.remotes
    default = remotes.default
    items = remotes.list()
    rows = [[f"{r.name} (current)" if r.name == default else r.name, r.addr, r.protocol,
             _auth(r), "YES" if r.public else "NO", "YES" if r.static else "NO", "NO"]
            for r in items]
    output.emit(a.format, ["NAME", "URL", "PROTOCOL", "AUTH TYPE", "PUBLIC", "STATIC", "GLOBAL"],
                rows, {r.name: {k: v for k, v in r.to_dict().items() if k != "name"}
                       for r in items})
    return 0


def _auth(r: Any) -> str:
    if r.is_local:
        return "file access"
    return "ssh" if r.is_ssh else "none"


def cmd_show(host: Host, a: argparse.Namespace) -> int:
    print(output.dump_yaml(host.images.remotes.get(a.name).to_dict()), end="")
    return 0


def cmd_add(host: Host, a: argparse.Namespace) -> int:
    host.images.remotes.add(a.name, a.url, protocol=a.protocol, public=True,
                            command=a.remote_command or "", identity=a.identity or "",
                            ssh_config=a.ssh_config or "", ssh_options=a.ssh_option or ())
    return 0


def cmd_serve(host: Host, a: argparse.Namespace) -> int:
    if not a.stdio:
        sys.stderr.write("Error: serve speaks only on --stdio (it is run over ssh)\n")
        return 2
    from ..serve import serve_stdio
    return serve_stdio(host, keep_stderr=bool(a.debug or a.verbose))


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
    p = sub.add_parser("remote", help="manage image servers and other lxdlib hosts (ssh://)")
    s = p.add_subparsers(dest="remote_cmd", metavar="<verb>", required=True)
    x = s.add_parser("list", aliases=["ls"])
    output.add_format(x)
    x.set_defaults(func=cmd_list)
    x = s.add_parser("add", help="add a simplestreams server (https://, or http:// for a "
                     "mirror) or another lxdlib host (ssh://[user@]host[:port][/root])")
    x.add_argument("name")
    x.add_argument("url")
    x.add_argument("--protocol", default=None,
                   help="simplestreams, or lxdlib for ssh:// (default: from the URL)")
    x.add_argument("--public", action="store_true", help="accepted for LXD compatibility")
    x.add_argument("--command", dest="remote_command",  # not `command`: the top level's
                   help="ssh remotes: the lxdlib command there (default lxdlib)")
    x.add_argument("--identity", help="ssh remotes: a private key file (ssh -i)")
    x.add_argument("--ssh-config", help="ssh remotes: an ssh config file (ssh -F)")
    x.add_argument("--ssh-option", action="append", metavar="KEY=VALUE",
                   help="ssh remotes: an ssh -o option (repeatable)")
    x.set_defaults(func=cmd_add)
    x = s.add_parser("show")
    x.add_argument("name")
    x.set_defaults(func=cmd_show)
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
    # no help= : left out of the command list, as it is for the far side of ssh only
    x = sub.add_parser("serve", description="answer lxdlib's remote protocol on stdin/stdout "
                       "(what an ssh:// remote runs; not for interactive use)")
    x.add_argument("--stdio", action="store_true", help="speak on stdin/stdout")
    # a session of many requests: it needs what a long-lived process needs (state.SHORT_LIVED)
    x.set_defaults(func=cmd_serve, long_lived=True)
