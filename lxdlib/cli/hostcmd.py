"""Host-wide verbs with no LXD client twin: ``autostart`` (what LXD's daemon does at boot)."""

from __future__ import annotations

import argparse

from ..errors import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

    from ..host import Host


def cmd_autostart(host: Host, a: argparse.Namespace) -> int:
    result = host.autostart()
    failed = 0
    for name, outcome in result.items():
        if not a.quiet or outcome != "started":
            print(f"{name}: {outcome}")
        failed += outcome != "started"
    return 1 if failed else 0


def register(sub: Any) -> None:
    p = sub.add_parser("autostart", help="start the instances LXD would start at boot")
    p.set_defaults(func=cmd_autostart)
