"""Images from remote servers: download once, cache, expire, auto-update — LXD's daemon rules,
run by whoever calls (``launch``, ``image copy``, ``image refresh``, ``lxdlib housekeeping``).

The rules (LXD's ``ImageDownload``, ``pruneExpiredImages``, ``autoUpdateImages``):

* an instance created from a remote image caches it: ``cached=true``, ``last_used_at`` set and
  bumped by every later instance; ``auto_update`` as ``images.auto_update_cached`` says;
* when an image is asked for by alias (not fingerprint) and ``images.auto_update_interval`` is
  not 0, a cached image fetched earlier by that same server+alias is used even if the server
  has a newer one (auto-update is trusted to refresh it; creation never waits for a check);
* only images fetched by alias remember where they came from (``update_source``) and can
  auto-update; an explicit copy of a cached image clears ``cached``;
* a cached image unused for ``images.remote_cache_expiry`` days is deleted (nothing else is);
* an auto-update that finds a new fingerprint downloads it, hands over ``cached``, the old
  ``last_used_at`` and every alias, and deletes the old image.

Downloads hold the lock ``image-download.<fp>``: a second process asking for the same image waits
and then finds it in the store instead of downloading it again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta

from ..config.schema import SERVER_DEFAULTS
from ..errors import TYPE_CHECKING, InvalidArgument, LxdlibError, NotFound
from ..imagestore.remotes import SIMPLESTREAMS, Remote
from ..imagestore.simplestreams import Client, RemoteImage
from ..imagestore.store import ImageRecord
from ..state import lock, read_record, write_record

if TYPE_CHECKING:
    from typing import Any

    from ..context import Context

Progress = Callable[[int, int], None]

#: How long one download may make a second asker of the same image wait.
DOWNLOAD_LOCK_TIMEOUT = 6 * 3600.0
_CHECKS_FILE = "image-update-checks.yaml"


def _now() -> datetime:
    return datetime.now(UTC)


def setting(ctx: Context, key: str) -> str:
    return ctx.config.get(key) or SERVER_DEFAULTS[key]


def setting_int(ctx: Context, key: str) -> int:
    try:
        return int(setting(ctx, key))
    except ValueError:
        return int(SERVER_DEFAULTS[key])


def setting_bool(ctx: Context, key: str) -> bool:
    return setting(ctx, key).lower() in ("true", "1", "yes", "on")


def _source(client: Client, alias: str) -> dict[str, str]:
    return {"server": client.url, "protocol": SIMPLESTREAMS, "alias": alias,
            "image_type": "container", "certificate": ""}


def cached_by_source(ctx: Context, server: str, alias: str) -> ImageRecord | None:
    """A cached image fetched earlier from ``server`` by ``alias`` for an architecture this host
    runs (the newest if several)."""
    from ..imagestore.simplestreams import PERSONALITIES, native_architecture
    native = native_architecture()
    archs = (native, *PERSONALITIES.get(native, ()))
    found = [r for r in ctx.images.list()
             if r.cached and r.update_source is not None and r.architecture in archs
             and r.update_source.get("server") == server.rstrip("/")
             and r.update_source.get("alias") == alias
             and r.update_source.get("protocol") == SIMPLESTREAMS]
    return max(found, key=lambda r: r.uploaded_at) if found else None


def download(ctx: Context, client: Client, image: RemoteImage, alias: str | None, *,
             cached: bool, auto_update: bool, public: bool, user_requested: bool,
             progress: Progress | None = None) -> ImageRecord:
    """The image in the local store: downloaded (verified, committed) unless already there."""
    store = ctx.images
    fp = image.fingerprint
    with lock(ctx.paths, "image-download", fp, timeout=DOWNLOAD_LOCK_TIMEOUT):
        if store.exists(fp):
            rec = store.get(fp)
            changes: dict[str, Any] = {}
            if user_requested and rec.cached:
                changes["cached"] = False
            if auto_update and alias and not rec.auto_update:
                changes["auto_update"] = True
            if public and not rec.public:
                changes["public"] = True
            return store.update(fp, **changes) if changes else rec
        store.cleanup_leftovers()
        temps = store.temp_paths(2 if image.rootfs is not None else 1)
        try:
            client.download(image, temps, progress)
            rec = store.adopt(
                temps, fp, filename=image.filename, properties=image.properties,
                architecture=image.architecture, created_at=image.created_at,
                expires_at=image.expires_at, public=public, cached=cached,
                auto_update=bool(auto_update and alias),
                update_source=_source(client, alias) if alias else None)
        finally:
            for t in temps:
                t.unlink(missing_ok=True)
    _mark_checked(ctx, fp)
    ctx.events.emit("image-downloaded", fp)
    return rec


def set_aliases(ctx: Context, names: Iterable[str], fingerprint: str) -> None:
    """Point each alias at the image, replacing an alias of that name (``ensureImageAliases``)."""
    store = ctx.images
    table = store.aliases()
    for name in dict.fromkeys(names):
        if name in table:
            if table[name]["target"] != fingerprint:
                store.alias_update(name, target=fingerprint)
        else:
            store.alias_create(name, fingerprint)


def copy(ctx: Context, remote: Remote, ref: str, *, aliases: Iterable[str] = (),
         copy_aliases: bool = False, auto_update: bool = False, public: bool = False,
         progress: Progress | None = None) -> ImageRecord:
    """``image copy <remote>:<ref> local:``: an explicit copy (never marked cached)."""
    from ..imagestore.store import validate_alias_name
    names = [aliases] if isinstance(aliases, str) else list(aliases)
    for name in names:
        validate_alias_name(name)
    if remote.is_local:
        raise InvalidArgument("The source and target servers must be different")
    if names or copy_aliases:
        # an alias table that cannot be read cannot be written either (a write would drop
        # the aliases it cannot read): refused before the download, not after it
        ctx.images.aliases()
    client = ctx.client(remote.addr)
    image, alias = client.resolve(ref or "default")
    rec = download(ctx, client, image, alias, cached=False, auto_update=auto_update,
                   public=public, user_requested=True, progress=progress)
    if copy_aliases:
        for name in image.aliases:
            with contextlib.suppress(InvalidArgument):  # a server's name we cannot hold
                validate_alias_name(name)
                if name not in names:
                    names.append(name)
    if names:
        set_aliases(ctx, names, rec.fingerprint)
        rec = ctx.images.get(rec.fingerprint)
    return rec


def for_instance(ctx: Context, remote: Remote, ref: str,
                 progress: Progress | None = None) -> ImageRecord:
    """The local image an instance made from ``<remote>:<ref>`` uses (cached, maybe stale)."""
    client = ctx.client(remote.addr)
    image, alias = client.resolve(ref or "default")
    if alias and setting_int(ctx, "images.auto_update_interval") > 0:
        found = cached_by_source(ctx, client.url, alias)
        if found is not None:
            return found
    return download(ctx, client, image, alias, cached=True,
                    auto_update=setting_bool(ctx, "images.auto_update_cached"), public=False,
                    user_requested=False, progress=progress)


# -- expiry ---------------------------------------------------------------------------------------

def prune_expired(ctx: Context, now: datetime | None = None) -> list[str]:
    """Delete cached images unused for ``images.remote_cache_expiry`` days; their fingerprints."""
    days = setting_int(ctx, "images.remote_cache_expiry")
    if days <= 0:
        return []
    now = now or _now()
    pruned = []
    for rec in ctx.images.list():
        if not rec.cached:
            continue
        if (rec.last_used_at or rec.uploaded_at) + timedelta(days=days) > now:
            continue
        with contextlib.suppress(NotFound):  # someone else pruned or deleted it
            ctx.delete_image(rec.fingerprint)
            pruned.append(rec.fingerprint)
    return pruned


# -- auto-update ----------------------------------------------------------------------------------

def _checks_path(ctx: Context) -> Any:
    return ctx.paths.root / "cache" / _CHECKS_FILE


def _read_checks(ctx: Context) -> dict[str, datetime]:
    try:
        data = read_record(_checks_path(ctx)) or {}
    except (FileNotFoundError, LxdlibError):
        return {}
    out = {}
    for fp, when in data.items() if isinstance(data, Mapping) else ():
        with contextlib.suppress(TypeError, ValueError):
            t = datetime.fromisoformat(str(when))
            out[str(fp)] = t if t.tzinfo else t.replace(tzinfo=UTC)
    return out


def _mark_checked(ctx: Context, fingerprint: str, when: datetime | None = None) -> None:
    """Remember when an image was last compared with its server (the interval counts from it)."""
    path = _checks_path(ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock(ctx.paths, "images", "update-checks"):
        checks = _read_checks(ctx)
        checks[fingerprint] = when or _now()
        known = set(ctx.images._fingerprints())
        write_record(path, {fp: t.isoformat() for fp, t in sorted(checks.items()) if fp in known},
                   durable=False)


def refresh(ctx: Context, ref: str, *, progress: Progress | None = None,
            fresh: bool = True) -> tuple[ImageRecord, bool]:
    """Compare one image with the server it came from and move to a newer one if there is one.

    Returns the current image and whether it changed. An image with no ``update_source``
    (imported, published, fetched by fingerprint) is returned unchanged. ``fresh`` bypasses the
    one-hour catalogue cache (``image refresh`` asks the server now).
    """
    store = ctx.images
    old = store.get(ref)
    src = old.update_source
    if not src or src.get("protocol") != SIMPLESTREAMS or not src.get("alias"):
        return old, False
    client = ctx.client(src["server"], fresh=fresh)
    image, alias = client.resolve(src["alias"])
    if image.fingerprint == old.fingerprint:
        _mark_checked(ctx, old.fingerprint)
        return old, False
    new = download(ctx, client, image, alias, cached=old.cached, auto_update=True,
                   public=old.public, user_requested=False, progress=progress)
    new = store.update(new.fingerprint, cached=old.cached, auto_update=True,
                       last_used_at=old.last_used_at)
    for entry in old.aliases:
        with contextlib.suppress(NotFound):
            store.alias_update(entry["name"], target=new.fingerprint)
    with contextlib.suppress(NotFound):
        ctx.delete_image(old.fingerprint)
    ctx.events.emit("image-refreshed", f"{old.fingerprint} {new.fingerprint}")
    return store.get(new.fingerprint), True


def auto_update(ctx: Context, now: datetime | None = None,
                progress: Progress | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Refresh every ``auto_update`` image not checked for ``images.auto_update_interval``
    hours. Returns ``({old: new}, {fingerprint: error})``; one failure does not stop the rest."""
    hours = setting_int(ctx, "images.auto_update_interval")
    if hours <= 0:
        return {}, {}
    now = now or _now()
    checks = _read_checks(ctx)
    updated: dict[str, str] = {}
    errors: dict[str, str] = {}
    for rec in ctx.images.list():
        if not rec.auto_update or not rec.update_source:
            continue
        last = checks.get(rec.fingerprint, rec.uploaded_at)
        if now - last < timedelta(hours=hours):
            continue
        try:
            new, changed = refresh(ctx, rec.fingerprint, progress=progress, fresh=False)
        except LxdlibError as e:
            errors[rec.fingerprint] = str(e)
            continue
        if changed:
            updated[rec.fingerprint] = new.fingerprint
    return updated, errors


def housekeeping(ctx: Context, now: datetime | None = None) -> dict[str, Any]:
    """What LXD's daemon does on its timers: prune expired cached images, then auto-update.
    Idempotent; safe to run from cron or a systemd timer while other processes work."""
    pruned = prune_expired(ctx, now)
    updated, errors = auto_update(ctx, now)
    return {"pruned": pruned, "updated": updated, "errors": errors}
