"""Storage pools: the drivers (dir, btrfs, zfs) and the records that say which pools exist."""

from __future__ import annotations

from .base import PoolDriver, PoolUsage
from .btrfs import BtrfsPool
from .dir import DirPool
from .pools import (
    DRIVERS,
    create_pool,
    delete_pool,
    list_pools,
    load_pool,
    pool_info,
    validate_pool_name,
)
from .zfs import ZfsPool, ensure_zfs_daemon, stop_zfs_daemon

__all__ = [
    "DRIVERS",
    "BtrfsPool",
    "DirPool",
    "PoolDriver",
    "PoolUsage",
    "ZfsPool",
    "create_pool",
    "delete_pool",
    "ensure_zfs_daemon",
    "list_pools",
    "load_pool",
    "pool_info",
    "stop_zfs_daemon",
    "validate_pool_name",
]
