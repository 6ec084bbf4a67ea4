"""The hidden halves of a copy or move between hosts: ``migrate-send`` and ``migrate-receive``
speak :mod:`lxdlib.migrate`'s protocol on stdin/stdout, run by the other side over SSH (or a
local pipe). Not for people: they have no help line in the command list."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, BinaryIO

    from ..host import Host


def _channel() -> tuple[BinaryIO, BinaryIO]:
    """The protocol's own copies of stdin and stdout; fd 1 then goes to stderr and fd 0 to
    /dev/null, so nothing printed by anyone (a tool, a warning) can corrupt the stream."""
    sys.stdout.flush()
    inp = os.fdopen(os.dup(0), "rb", buffering=1 << 20)
    out = os.fdopen(os.dup(1), "wb", buffering=1 << 20)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return inp, out


def cmd_migrate_send(host: Host, a: argparse.Namespace) -> int:
    from ..migrate import send_instance
    inp, out = _channel()
    send_instance(host.ctx, a.instance, inp, out, instance_only=a.instance_only,
                  refresh=a.refresh, move=a.move, stateless=a.stateless)
    return 0


def cmd_migrate_receive(host: Host, a: argparse.Namespace) -> int:
    from ..migrate import receive_instance
    inp, out = _channel()
    receive_instance(host.ctx, inp, out, a.name, pool=a.storage,
                     allow_root_equivalent=a.allow_root_equivalent, refresh=a.refresh,
                     move=a.move)
    out.flush()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("migrate-send", description="send an instance to the other side of a "
                       "copy or move between hosts, on stdin/stdout (run by lxdlib, not people)")
    p.add_argument("instance")
    p.add_argument("--instance-only", action="store_true")
    p.add_argument("--refresh", action="store_true")
    p.add_argument("--move", action="store_true")
    p.add_argument("--stateless", action="store_true")
    p.set_defaults(func=cmd_migrate_send)

    p = sub.add_parser("migrate-receive", description="receive an instance from the other "
                       "side of a copy or move between hosts (run by lxdlib, not people)")
    p.add_argument("name")
    p.add_argument("-s", "--storage")
    p.add_argument("--allow-root-equivalent", action="store_true")
    # what this side was asked to do: a sender asking for more is refused
    p.add_argument("--refresh", action="store_true")
    p.add_argument("--move", action="store_true")
    p.set_defaults(func=cmd_migrate_receive)
    # hidden: argparse lists a subparser only when it was given a help text
