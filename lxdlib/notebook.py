"""Compact HTML for Jupyter: what a model or collection shows when it is the cell's last line."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .host import Host
    from .imagestore.store import ImageRecord
    from .instance import Instance
    from .profiles import Profile

_STATE_COLOUR = {"Running": "#2e7d32", "Stopped": "#757575", "Frozen": "#1565c0"}


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else html.escape(str(c))}</td>"
                         for c in row) + "</tr>" for row in rows)
    cap = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Raw(str):
    """Already-escaped HTML."""


def _state(status: str) -> _Raw:
    colour = _STATE_COLOUR.get(status, "#c62828")
    return _Raw(f"<span style='color:{colour}'>&#9679;</span> {html.escape(status)}")


def _row(inst: Instance) -> list[Any]:
    try:
        status = inst.status
        ips = ", ".join(inst.addresses()) if status == "Running" else ""
        rec = inst.record()
        return [inst.name, _state(status), ips, ", ".join(rec.profiles), len(rec.snapshots),
                rec.created_at.strftime("%Y-%m-%d %H:%M")]
    except Exception as e:  # a notebook repr must never raise
        return [inst.name, _state("Error"), str(e), "", "", ""]


def instances_html(instances: Sequence[Instance]) -> str:
    return table(["name", "state", "IPv4", "profiles", "snapshots", "created"],
                 (_row(i) for i in instances), f"{len(instances)} instances")


def instance_html(inst: Instance) -> str:
    return instances_html([inst])


def images_html(images: Sequence[ImageRecord]) -> str:
    rows = ([", ".join(a["name"] for a in img.aliases), img.fingerprint[:12],
             img.properties.get("description", ""), img.architecture,
             f"{img.size / 1e6:.2f}MB", img.uploaded_at.strftime("%Y-%m-%d %H:%M")]
            for img in images)
    return table(["alias", "fingerprint", "description", "arch", "size", "uploaded"], rows,
                 f"{len(images)} images")


def profile_html(p: Profile) -> str:
    rows: list[list[Any]] = [[k, v] for k, v in sorted(p.config.items())]
    rows += [[f"device {n}", ", ".join(f"{k}={v}" for k, v in sorted(d.items()))]
             for n, d in sorted(p.devices.items())]
    return table(["key", "value"], rows, f"profile {p.name} (used by {len(p.used_by)})")


def host_html(host: Host) -> str:
    insts = host.instances.list()
    running = sum(1 for i in insts if i.status == "Running")
    rows: list[list[Any]] = [
        ["root", str(host.paths.root)], ["instances", f"{len(insts)} ({running} running)"],
        ["images", len(host.images.list())], ["profiles", ", ".join(host.profiles.names())],
        ["storage pools", ", ".join(host.pool_names())]]
    return table(["", ""], rows, "lxdlib host")
