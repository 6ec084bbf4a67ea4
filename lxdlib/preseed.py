"""``init --preseed``: LXD's preseed document (``config``, ``storage_pools``, ``networks``,
``profiles``) applied all or nothing.

LXD reads the preseed into typed structs, so a document of the wrong shape is refused before
anything is made, and it reverts what it made when a later step fails. Here likewise: the whole
document's shape and every item's config are checked first, with the validators the single
verbs use (a typo in the last profile makes no pool and no bridge), and what can only fail
while being made (a pool's mkfs, a subnet already in use, a profile device naming a pool that
does not exist) undoes everything made before it, newest first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

from .config import names, schema
from .config.text import check_description, scalar_text, text_map
from .errors import TYPE_CHECKING, InvalidArgument
from .logs import get_logger

if TYPE_CHECKING:
    from typing import Any

    from .context import Context

log = get_logger(__name__)

KNOWN = frozenset({"config", "storage_pools", "networks", "profiles", "cluster", "projects"})


def _text(item: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = item.get(key)
    return default if value is None else scalar_text(value, f"{where} {key}")


def _items(preseed: Mapping[str, Any], section: str) -> list[Mapping[str, Any]]:
    """A section's list of items, each a mapping with a name."""
    items = preseed.get(section)
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidArgument(f"preseed {section} must be a list, not {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidArgument(f"preseed {section}[{i}] must be a mapping, not "
                                  f"{type(item).__name__}")
        if not isinstance(item.get("name"), str) or not item["name"]:
            raise InvalidArgument(f"preseed {section}[{i}] needs a name")
    return items


class _Plan:
    """The checked document: what to make, in the order it is made."""

    def __init__(self) -> None:
        self.config: dict[str, str] = {}
        self.pools: list[tuple[str, str, dict[str, str], str]] = []
        self.networks: list[tuple[str, dict[str, str], str]] = []
        self.profiles: list[tuple[str, dict[str, str], dict[str, dict[str, str]], str]] = []


def check(ctx: Context, preseed: Any) -> _Plan:
    """Every item of the document checked, nothing made; what it would make."""
    from .network.manager import validate_config as validate_network_config
    from .network.manager import validate_name as validate_network_name
    from .profiles import check_pools, check_raw_lxc, validate_profile
    from .storage import check_pool
    if not isinstance(preseed, Mapping):
        raise InvalidArgument("the preseed must be a YAML mapping")
    unknown = set(preseed) - KNOWN
    if unknown:
        raise InvalidArgument(f"unknown preseed keys: {', '.join(sorted(map(str, unknown)))}")
    plan = _Plan()
    plan.config = text_map(preseed.get("config"), "preseed config")
    schema.validate_server_config({**ctx.config, **plan.config})
    pools = set(ctx.pool_names())
    for item in _items(preseed, "storage_pools"):
        name = item["name"]
        cfg = text_map(item.get("config"), f"storage pool {name} config")
        driver = _text(item, "driver", f"storage pool {name}", "btrfs")
        description = _text(item, "description", f"storage pool {name}")
        if name not in pools:
            check_pool(name, driver, cfg, description)
            plan.pools.append((name, driver, cfg, description))
    existing = {str(n["name"]) for n in ctx.networks.list()}
    for item in _items(preseed, "networks"):
        name = item["name"]
        ntype = _text(item, "type", f"network {name}", "bridge")
        if ntype != "bridge":
            raise InvalidArgument(f"network type {ntype!r} is not supported")
        cfg = text_map(item.get("config"), f"network {name} config")
        description = _text(item, "description", f"network {name}")
        if name not in existing:
            check_description(description, f"network {name}")
            validate_network_name(name)
            validate_network_config(cfg)
            ctx.default_network_name(name)  # an interface the host has already is refused
            plan.networks.append((name, cfg, description))
    for item in _items(preseed, "profiles"):
        name = item["name"]
        names.validate_profile_name(name)
        cfg = text_map(item.get("config"), f"profile {name} config")
        raw_devices = item.get("devices")
        if raw_devices is not None and not isinstance(raw_devices, Mapping):
            raise InvalidArgument(f"profile {name} devices must be a mapping")
        devices = {scalar_text(d, f"profile {name} device name"):
                   text_map(v, f"profile {name} device {d}")
                   for d, v in (raw_devices or {}).items()}
        description = _text(item, "description", f"profile {name}")
        check_description(description, f"profile {name}")
        cfg, devices = validate_profile(cfg, devices)
        check_pools(ctx.paths, devices, planned=[p[0] for p in plan.pools])
        check_raw_lxc(ctx.paths.lxcpath, cfg)
        plan.profiles.append((name, cfg, devices, description))
    return plan


def apply(ctx: Context, preseed: Any) -> None:
    """Check the whole document, then make it; if a step fails, undo the ones before."""
    from .profile_apply import update_profile
    from .views import delete_pool
    plan = check(ctx, preseed)
    undo: list[tuple[str, Callable[[], object]]] = []
    try:
        if plan.config:
            old = ctx.config
            for key, value in plan.config.items():
                undo.append((f"server config {key}",
                             partial(ctx.set_config, key, old.get(key))))
                ctx.set_config(key, value)
        for name, driver, cfg, description in plan.pools:
            ctx.create_pool(name, driver, cfg, description)
            undo.append((f"storage pool {name}", partial(delete_pool, ctx, name)))
        for name, cfg, description in plan.networks:
            ctx.networks.create(name, cfg, description)
            undo.append((f"network {name}", partial(ctx.networks.delete, name)))
        for name, cfg, devices, description in plan.profiles:
            if ctx.profiles.exists(name):  # re-applied to the instances using it
                was = ctx.profiles.read(name)
                update_profile(ctx, name, config=cfg, devices=devices, description=description)
                undo.append((f"profile {name}", partial(
                    update_profile, ctx, name, config=was.config, devices=was.devices,
                    description=was.description)))
            else:
                ctx.profiles.create(name, cfg, devices, description)
                undo.append((f"profile {name}", partial(ctx.profiles.delete, name)))
    except BaseException:
        for what, step in reversed(undo):
            try:
                step()
            except Exception:  # the first error is the one to report; this one is logged
                log.warning("init --preseed: undoing %s failed", what, exc_info=True)
        raise
