"""``console`` (an instance's console, or its log) and ``monitor`` (the event stream)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from ..errors import TYPE_CHECKING, InvalidArgument, ToolMissing, WrongState

if TYPE_CHECKING:
    from typing import Any

    from ..host import Host


def console_log(host: Host, name: str) -> bytes:
    """What the instance wrote to its console (liblxc keeps it in ``console.log``)."""
    host.instances.get(name)  # NotFound for an unknown instance
    path = host.paths.instance_dir(name) / "console.log"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    with os.fdopen(fd, "rb") as f:
        return f.read()


def cmd_console(host: Host, a: argparse.Namespace) -> int:
    if a.show_log:
        out = sys.stdout.buffer
        out.write(console_log(host, a.name))
        out.flush()
        return 0
    inst = host.instances.get(a.name)
    if inst.state not in ("RUNNING", "FROZEN"):
        raise WrongState(f"instance {a.name!r} is not running")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise InvalidArgument("the console needs a terminal (use --show-log to read its log)")
    tool = shutil.which("lxc-console")
    if tool is None:
        raise ToolMissing("lxc-console (Debian package lxc) is needed for the console")
    print("To detach from the console, press: <ctrl>+a q", flush=True)
    return subprocess.call([tool, "-P", str(host.paths.lxcpath), "-n", a.name, "-t", "0"])


def format_event(ev: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(ev)
    if fmt == "pretty":
        meta = ev.get("metadata") or {}
        extra = " ".join(f"{k}={v}" for k, v in meta.items() if k not in ("action", "source"))
        return f"{ev.get('timestamp')} {ev.get('type')} {meta.get('action')} " \
               f"{meta.get('source')}{' ' + extra if extra else ''}"
    import yaml
    return yaml.safe_dump(ev, sort_keys=False, default_flow_style=False) + "\n"


def cmd_monitor(host: Host, a: argparse.Namespace) -> int:
    out = sys.stdout
    for ev in host.events(a.type or None, from_start=a.all):
        text = format_event(ev, "pretty" if a.pretty else a.format)
        out.write(text if text.endswith("\n") else text + "\n")
        out.flush()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("console", help="attach to an instance's console, or show its log")
    p.add_argument("name", metavar="<instance>")
    p.add_argument("--show-log", action="store_true", help="print the console log and exit")
    p.set_defaults(func=cmd_console)

    p = sub.add_parser("monitor", help="follow lifecycle events of every process on this root")
    p.add_argument("--type", action="append", default=[], help="event type (e.g. lifecycle)")
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")
    p.add_argument("--pretty", action="store_true", help="one readable line per event")
    p.add_argument("--all", action="store_true", help="start with the events already logged")
    p.set_defaults(func=cmd_monitor)
