"""Pool records: ``<root>/storage-pools/<name>.yaml`` says which driver holds a pool and how.

The record is the commit point: ``create_pool`` makes the pool on the host first and writes the
record last (undoing the driver's work if anything fails), and ``delete_pool`` removes the pool's
data before the record, so a pool without a record is debris and a record always names a pool
that was complete.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

from ..config.text import check_description, has_control
from ..errors import (
    TYPE_CHECKING,
    AlreadyExists,
    Busy,
    CorruptRecord,
    InUse,
    InvalidConfig,
    InvalidName,
    LxdlibError,
    NotFound,
    StorageError,
)
from ..journal import crashpoint
from ..logs import get_logger
from ..state import (
    Paths,
    RecordSyntaxError,
    lock,
    read_record,
    remove_stale_tmp,
    write_record,
)
from .base import PoolDriver

if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)

# each driver's module and class, imported when a pool of that driver is opened or made: a
# command on a btrfs pool loads neither the zfs nor (for a dir pool) the btrfs driver
_DRIVER_CLASSES = {"dir": ("dir", "DirPool"), "btrfs": ("btrfs", "BtrfsPool"),
                   "zfs": ("zfs", "ZfsPool")}


def __getattr__(name: str) -> Any:
    """``DRIVERS``, {driver name: class}, with every driver imported."""
    if name == "DRIVERS":
        return {driver: _driver_class(driver) for driver in _DRIVER_CLASSES}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

POOL_NAME_MAX = 63


def validate_pool_name(name: str) -> None:
    """LXD's pool name rules: non-empty, no ``/`` or whitespace, not ``.``/``..``, no leading
    ``.`` or ``-``, at most 63 characters."""
    if not isinstance(name, str) or name == "":
        raise InvalidName("storage pool", str(name), "name must not be empty")
    if "/" in name:
        raise InvalidName("storage pool", name, "name must not contain '/'")
    if any(ch.isspace() for ch in name) or has_control(name):
        raise InvalidName("storage pool", name, "name must not contain whitespace or controls")
    if name in (".", ".."):
        raise InvalidName("storage pool", name, "name must not be '.' or '..'")
    if name.startswith((".", "-")):
        raise InvalidName("storage pool", name, "name must not start with '.' or '-'")
    if len(name) > POOL_NAME_MAX:
        raise InvalidName("storage pool", name, f"name must be at most {POOL_NAME_MAX} characters")


def _record_path(paths: Paths, name: str) -> os.PathLike[str]:
    return paths.pools / f"{name}.yaml"


def _intent_path(paths: Paths, name: str) -> os.PathLike[str]:
    """Where ``update_pool_config`` keeps the config it is making the host take, until the
    record says it (a name ``list_pools`` skips)."""
    return paths.pools / f".{name}.reconfigure"


def _drop_intent(paths: Paths, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_intent_path(paths, name))


def settle_pool(paths: Paths, name: str) -> bool:
    """Finish what an ``update_pool_config`` killed before its record left: its intent names
    the config it was making the host take; the driver's steps are idempotent, so they are
    taken again and the record written (a remount cannot take back every option: btrfs
    keeps some until the next mount, so forward is the way that ends where it says). True
    if there was one. Skipped while a live process holds the pool (its change is under
    way). ``lxdlib recover`` calls it; the same ``storage set`` again finishes it too, and
    another one makes its own intent in its place (a grown loop file stays, as ever)."""
    if not os.path.lexists(_intent_path(paths, name)):
        return False
    try:
        with lock(paths, "storage-pool", name, timeout=0):
            return _settle_locked(paths, name)
    except Busy:
        return False


def _settle_locked(paths: Paths, name: str) -> bool:
    try:
        intent = read_record(_intent_path(paths, name))
    except FileNotFoundError:
        return False
    except RecordSyntaxError:  # cut short: written before the host was changed
        intent = None
    if isinstance(intent, dict) and isinstance(intent.get("config"), dict):
        record = _read_record(paths, name)
        cls = _driver_class(str(record.get("driver")))
        old = {str(k): str(v) for k, v in (record.get("config") or {}).items()}
        new = {str(k): str(v) for k, v in intent["config"].items()}
        if new != old:
            try:
                cls(paths, name, dict(old)).reconfigure(cls.validate_config(new), frozenset())
            except LxdlibError as e:  # as a failed change: the record stays as it was
                log.warning("storage pool %s: an interrupted config change cannot be "
                            "finished (%s); the record keeps the old config", name, e)
            else:
                record["config"] = new
                write_record(_record_path(paths, name), record)
                log.info("storage pool %s: an interrupted config change finished", name)
    _drop_intent(paths, name)
    return True


def _driver_class(driver: str) -> type[PoolDriver]:
    where = _DRIVER_CLASSES.get(driver)
    if where is None:
        raise InvalidConfig(
            "driver", f"unknown storage driver (known: {', '.join(_DRIVER_CLASSES)})", driver)
    import importlib
    cls: type[PoolDriver] = getattr(importlib.import_module(f".{where[0]}", __package__),
                                    where[1])
    return cls


def check_pool(name: str, driver: str, config: Mapping[str, str] | None = None,
               description: str = "") -> dict[str, str]:
    """Everything about a new pool that can be judged without making it (name, driver, keys,
    values, description): its checked config. ``create_pool`` starts with it, and a caller
    making several things (``init --preseed``) runs it for all of them before making any."""
    validate_pool_name(name)
    if not isinstance(driver, str):
        raise InvalidConfig("driver", "must be a string", repr(driver))
    cls = _driver_class(driver)
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise InvalidConfig("config", "must be a mapping of keys to strings", repr(config))
    checked: dict[str, str] = {}
    for key, value in config.items():
        # an int or a bool as its text, as an instance's config takes them (``size: 2**30``)
        text = ("true" if value else "false") if isinstance(value, bool) else \
            str(value) if isinstance(value, int) else value
        if not isinstance(key, str) or not isinstance(text, str):
            raise InvalidConfig(str(key), "pool keys and values must be strings", repr(value))
        checked[key] = text
    check_description(description)
    return cls.validate_config(checked)


def create_pool(paths: Paths, name: str, driver: str, config: Mapping[str, str] | None = None,
                description: str = "") -> PoolDriver:
    """Make a pool on the host and record it; on any failure nothing is left."""
    checked = check_pool(name, driver, config, description)
    cls = _driver_class(driver)
    paths.pools.mkdir(parents=True, exist_ok=True)
    with lock(paths, "storage-pool", name):
        if os.path.lexists(_record_path(paths, name)):
            raise AlreadyExists("storage pool", name)
        _drop_intent(paths, name)  # of a pool of that name whose record was removed by hand
        pool = cls(paths, name, checked)
        pool.create()
        try:
            write_record(_record_path(paths, name), {
                "name": name, "driver": driver, "description": description,
                "config": dict(pool.config),
            })
        except BaseException:
            try:
                pool.delete()
            except Exception:
                log.warning("storage pool %s: undoing its creation failed; what is left "
                            "is debris", name, exc_info=True)
            raise
    log.info("storage pool %s created (driver %s, config %s)", name, driver, pool.config)
    return pool


def _read_record(paths: Paths, name: str) -> dict[str, Any]:
    validate_pool_name(name)
    path = _record_path(paths, name)
    try:
        record = read_record(path)
    except FileNotFoundError:
        raise NotFound("storage pool", name) from None
    except RecordSyntaxError as e:  # hand-edited, cut short: this pool alone
        raise CorruptRecord("storage pool", name, path, e.reason) from None
    if not isinstance(record, dict) or not isinstance(record.get("config", {}), dict):
        raise CorruptRecord("storage pool", name, path, "not a mapping with a config mapping")
    return record


def pool_record(paths: Paths, name: str) -> dict[str, Any]:
    """The pool's record as stored: name, driver, description, config (no mount)."""
    return _read_record(paths, name)


def set_pool_description(paths: Paths, name: str, description: str) -> None:
    """Change the description, the one part of a pool's record that may change after it is
    made (its driver keys say where and how its data is kept)."""
    check_description(description)
    with lock(paths, "storage-pool", name):
        record = _read_record(paths, name)
        record["description"] = description
        write_record(_record_path(paths, name), record)


def update_pool_config(paths: Paths, name: str,
                       changes: Mapping[str, str | None]) -> dict[str, str]:
    """Set keys of a pool's config (``None``: unset) and make the pool what they say; the new
    config. Under the pool's lock: the keys are checked as ``create`` checks them (unset ones
    must be keys of the driver), then the driver changes what it can change on the host
    (``reconfigure``: it refuses the rest before changing anything), and the record is
    written last, so a failure or a kill leaves the record as it was (see the driver for
    what its host side may keep). ``source`` never changes, as in LXD."""
    with lock(paths, "storage-pool", name):
        record = _read_record(paths, name)
        cls = _driver_class(str(record.get("driver")))
        old = {str(k): str(v) for k, v in (record.get("config") or {}).items()}
        wanted = dict(old)
        unset: set[str] = set()
        for key, value in changes.items():
            if not isinstance(key, str):
                raise InvalidConfig(repr(key), "pool keys must be strings")
            if value is None:
                if key == "source":
                    raise InvalidConfig("source", "cannot be unset once the storage pool is "
                                        "made")
                if key not in cls.KEYS:
                    cls.validate_config({**old, key: ""})  # the driver's refusal of the key
                    raise InvalidConfig(key, f"unknown key for the {cls.driver} driver")
                wanted.pop(key, None)
                unset.add(key)
            else:
                wanted[key] = ("true" if value else "false") if isinstance(value, bool) else \
                    str(value) if isinstance(value, int) else value
        if wanted.get("source", "") != old.get("source", ""):
            raise InvalidConfig("source", "cannot be changed once the storage pool is made",
                                wanted.get("source", ""))
        new = cls.validate_config(wanted)
        if new == old:
            return old
        pool = cls(paths, name, dict(old))
        # the intent: a kill from here to the record leaves the host changed and the record
        # not; the next call (settle_pool) finishes the change
        write_record(_intent_path(paths, name), {"config": new})
        try:
            pool.reconfigure(new, frozenset(unset))
        except BaseException:
            _drop_intent(paths, name)  # the driver put back what it changed
            raise
        crashpoint("pool.reconfigured")  # the host changed, the record not yet
        record["config"] = new
        try:
            write_record(_record_path(paths, name), record)
        except BaseException:
            # the mount's options back; a grown loop file stays (btrfs already uses it)
            back = {**old, "size": new["size"]} if "size" in new else old
            try:
                cls(paths, name, dict(new)).reconfigure(back, frozenset())
            except Exception:
                log.warning("storage pool %s: cannot undo the change of its config on the "
                            "host", name, exc_info=True)
            _drop_intent(paths, name)
            raise
        _drop_intent(paths, name)
    log.info("storage pool %s config changed to %s", name, new)
    return new


def load_pool(paths: Paths, name: str) -> PoolDriver:
    """The recorded pool, mounted (a no-op when it already is, e.g. not after a reboot)."""
    pool = _make(paths, name)
    pool.mount()
    return pool


def list_pools(paths: Paths) -> list[str]:
    try:
        entries = os.listdir(paths.pools)
    except FileNotFoundError:
        return []
    return sorted(e[:-5] for e in entries if e.endswith(".yaml") and not e.startswith("."))


def _volume_counts(pool: PoolDriver) -> dict[str, int]:
    lister = getattr(pool, "list_volumes", None)
    if lister is None:
        return {}
    counts = {kind: len(lister(kind)) for kind in ("images", "containers", "custom")}
    counts["snapshots"] = sum(len(pool.list_snapshots(n)) for n in lister("containers"))
    return counts


def _make(paths: Paths, name: str) -> PoolDriver:
    record = _read_record(paths, name)
    cls = _driver_class(str(record.get("driver")))
    config = {str(k): str(v) for k, v in (record.get("config") or {}).items()}
    return cls(paths, name, config)


def delete_pool(paths: Paths, name: str, *, force: bool = False) -> None:
    """Remove a pool. Refused with ``InUse`` while instance or custom volumes exist on it;
    image volumes (caches of the image store) go with the pool, as in LXD.

    A pool that cannot be mounted any more (its loop file or device is gone) is refused with
    the mount error unless ``force`` is given; then its record and what is left are removed.
    """
    with lock(paths, "storage-pool", name):
        pool = _make(paths, name)
        try:
            pool.mount()
            counts = _volume_counts(pool)
        except StorageError as e:
            if not force:
                raise
            log.warning("storage pool %s cannot be mounted (%s): forced delete of what is "
                        "left", name, e)
            counts = {}

        if counts.get("containers") or counts.get("custom"):
            raise InUse(
                f"storage pool {name!r} is in use: {counts.get('containers', 0)} instance and "
                f"{counts.get('custom', 0)} custom volume(s) remain on it")
        pool.delete()
        os.unlink(_record_path(paths, name))
        _drop_intent(paths, name)
        remove_stale_tmp(paths.pools)
    log.info("storage pool %s deleted", name)


def pool_info(paths: Paths, name: str) -> dict[str, Any]:
    """What ``lxc storage info`` shows: driver, config, space and how many volumes of each kind."""
    record = _read_record(paths, name)
    pool = load_pool(paths, name)
    usage = pool.usage()
    return {
        "name": name,
        "driver": pool.driver,
        "description": record.get("description", ""),
        "config": dict(pool.config),
        "used": usage.used,
        "total": usage.total,
        "volumes": _volume_counts(pool),
    }
