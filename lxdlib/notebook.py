"""Compact HTML for Jupyter: what a model or collection shows when it is the cell's last line.

Each table carries the state and the key figures (addresses, sizes, usage); nothing here may
raise — a broken object shows its error in the table instead of breaking the notebook.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Iterable, Mapping, Sequence

from .errors import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

# The renderers take the models duck-typed (``Any``): this module sits at the bottom of the house
# so that every layer's models can use it for ``_repr_html_`` without it importing them.

_STATE_COLOUR = {"Running": "#2e7d32", "Stopped": "#757575", "Frozen": "#1565c0"}
_STYLE = "border-collapse:collapse;font-size:0.9em"


class _Raw(str):
    """Already-escaped HTML."""


def _cell(c: Any) -> str:
    if isinstance(c, _Raw):
        return c
    if c is None:
        return ""
    return html.escape(str(c))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(h)}</th>"
                   for h in headers)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left;padding:2px 8px'>"
                                    f"{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    cap = (f"<caption style='text-align:left;font-weight:bold'>{html.escape(caption)}</caption>"
           if caption else "")
    return (f"<table class='lxdlib' style='{_STYLE}'>{cap}<thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def _safe(fn: Callable[[], Any], default: Any = "") -> Any:
    try:
        return fn()
    except Exception:  # a notebook repr must never raise
        return default


def _status(inst: Any) -> str:
    try:
        return str(inst.status)
    except Exception:
        return "Error"


def _state(status: str) -> _Raw:
    colour = _STATE_COLOUR.get(status, "#c62828")
    return _Raw(f"<span style='color:{colour}'>&#9679;</span> {html.escape(status)}")


def size(n: int | float | None) -> str:
    """Bytes as LXD prints them (binary units)."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.2f}{unit}"
        value /= 1024
    return str(n)


def _kv(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(d.items()))


# -- instances ---------------------------------------------------------------------------------
def _row(inst: Any) -> list[Any]:
    try:
        status = inst.status
        running = status in ("Running", "Frozen")
        rec = inst.record()
        mem = ""
        if running:
            usage = _safe(lambda: inst.info().get("resources", {}), {})
            mem = size(usage.get("memory_usage")) if usage else ""
        return [inst.name, _state(status), ", ".join(inst.addresses()) if running else "",
                mem, ", ".join(rec.profiles), len(rec.snapshots),
                rec.created_at.strftime("%Y-%m-%d %H:%M")]
    except Exception as e:  # a notebook repr must never raise
        return [inst.name, _state("Error"), str(e), "", "", "", ""]


def instances_html(instances: Sequence[Any]) -> str:
    running = sum(1 for i in instances if _status(i) == "Running")
    return table(["name", "state", "IPv4", "memory", "profiles", "snapshots", "created"],
                 (_row(i) for i in instances),
                 f"{len(instances)} instances ({running} running)")


def instance_html(inst: Any) -> str:
    """One instance: its state and key figures, then its local config and devices."""
    try:
        info = inst.info()
        rec = inst.record()
    except Exception as e:
        return table(["name", "error"], [[inst.name, str(e)]])
    res = info.get("resources") or {}
    rows: list[list[Any]] = [
        ["state", _state(info["status"])], ["type", info["type"]],
        ["pid", info.get("pid", "")],
        ["IPv4", ", ".join(_safe(inst.addresses, []))],
        ["memory", size(res.get("memory_usage"))],
        ["processes", res.get("processes", "")],
        ["disk", size((info.get("disk") or {}).get("root", {}).get("usage"))],
        ["profiles", ", ".join(rec.profiles)],
        ["image", rec.config.get("image.description", rec.config.get("volatile.base_image",
                                                                      ""))],
        ["snapshots", ", ".join(s.name for s in rec.snapshots)],
        ["created", rec.created_at.strftime("%Y-%m-%d %H:%M")]]
    rows += [[k, v] for k, v in sorted(rec.config.items())
             if not k.startswith(("volatile.", "image."))]
    rows += [[f"device {n}", _kv(d)] for n, d in sorted(rec.devices.items())]
    return table(["", ""], rows, f"instance {inst.name}")


def snapshots_html(owner: str, snaps: Sequence[Any]) -> str:
    rows = ([s.name, s.created_at.strftime("%Y-%m-%d %H:%M"),
             s.expires_at.strftime("%Y-%m-%d %H:%M") if s.expires_at else "",
             "yes" if s.stateful else "no", s.description] for s in snaps)
    return table(["name", "taken at", "expires at", "stateful", "description"], rows,
                 f"{len(snaps)} snapshots of {owner}")


# -- images, profiles, pools, networks ---------------------------------------------------------
def images_html(images: Sequence[Any]) -> str:
    rows = ([", ".join(a["name"] for a in img.aliases), img.fingerprint[:12],
             img.properties.get("description", ""), img.architecture, size(img.size),
             img.uploaded_at.strftime("%Y-%m-%d %H:%M")] for img in images)
    total = sum(img.size for img in images)
    return table(["alias", "fingerprint", "description", "arch", "size", "uploaded"], rows,
                 f"{len(images)} images ({size(total)})")


def profile_html(p: Any) -> str:
    rows: list[list[Any]] = [[k, v] for k, v in sorted(p.config.items())]
    rows += [[f"device {n}", _kv(d)] for n, d in sorted(p.devices.items())]
    return table(["key", "value"], rows, f"profile {p.name} (used by {len(p.used_by)})")


def profiles_html(profiles: Sequence[Any]) -> str:
    rows = ([p.name, p.description, _kv(p.config), ", ".join(sorted(p.devices)),
             ", ".join(p.used_by)] for p in profiles)
    return table(["name", "description", "config", "devices", "used by"], rows,
                 f"{len(profiles)} profiles")


def _pool_row(name: str, pool: Callable[[], Any]) -> list[Any]:
    try:
        drv = pool()
        usage = _safe(drv.usage, None)
        used = size(usage.used) if usage else ""
        total = size(usage.total) if usage else ""
        return [name, drv.driver, drv.config.get("source", ""), used, total]
    except Exception as e:
        return [name, "", str(e), "", ""]


def pools_html(host: Any, names: Sequence[str] | None = None) -> str:
    """``host`` has ``pool_names()`` and ``pool(name)`` (a driver); ``names`` narrows it."""
    names = list(names) if names is not None else _safe(host.pool_names, [])
    return table(["name", "driver", "source", "used", "total"],
                 (_pool_row(n, functools.partial(host.pool, n)) for n in names),
                 f"{len(names)} storage pools")


def volumes_html(volumes: Sequence[Mapping[str, Any]]) -> str:
    """Custom volumes in ``storage volume show``'s dict shape."""
    rows = ([v.get("pool", ""), v.get("name", ""), (v.get("config") or {}).get("size", ""),
             v.get("description", ""), len(v.get("used_by") or [])] for v in volumes)
    return table(["pool", "name", "size", "description", "used by"], rows,
                 f"{len(volumes)} storage volumes")


def networks_html(networks: Sequence[Any]) -> str:
    """Networks as dicts (or anything with a dict's ``get``)."""
    rows = ([n.get("name"), n.get("type", "bridge"),
             (n.get("config") or {}).get("ipv4.address", ""),
             (n.get("config") or {}).get("ipv6.address", ""), n.get("description", "")]
            for n in networks)
    return table(["name", "type", "IPv4", "IPv6", "description"], rows,
                 f"{len(networks)} networks")


def host_html(host: Any) -> str:
    insts = _safe(host.instances.list, [])
    running = sum(1 for i in insts if _status(i) == "Running")
    images = _safe(host.images.list, [])
    pools = _safe(host.pool_names, [])
    rows: list[list[Any]] = [
        ["root", str(host.paths.root)], ["instances", f"{len(insts)} ({running} running)"],
        ["images", f"{len(images)} ({size(sum(i.size for i in images))})"],
        ["profiles", ", ".join(_safe(host.profiles.names, []))],
        ["storage pools", ", ".join(pools)],
        ["networks", ", ".join(n.get("name", "") for n in _safe(host.networks.list, []))]]
    return table(["", ""], rows, "lxdlib host")
