"""Storage pools: the drivers (dir, btrfs, zfs) and the records that say which pools exist.

The names below load on first use: a module that needs only ``storage.base`` (what a pool
driver is) or one driver does not import the others nor the pool records, and a command that
touches no pool imports none of them (see ``tests/unit/test_cli_imports.py``).
"""

from __future__ import annotations

from ..errors import TYPE_CHECKING
from ..lazyexports import exports

if TYPE_CHECKING:
    from .base import PoolDriver, PoolUsage
    from .btrfs import BtrfsPool
    from .dir import DirPool
    from .pools import (
        DRIVERS,
        check_pool,
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
    "check_pool",
    "create_pool",
    "delete_pool",
    "ensure_zfs_daemon",
    "list_pools",
    "load_pool",
    "pool_info",
    "stop_zfs_daemon",
    "validate_pool_name",
]

# each public name, by the submodule that defines it
_WHERE = {
    "PoolDriver": "base", "PoolUsage": "base", "BtrfsPool": "btrfs", "DirPool": "dir",
    "ZfsPool": "zfs", "ensure_zfs_daemon": "zfs", "stop_zfs_daemon": "zfs",
    "DRIVERS": "pools", "check_pool": "pools", "create_pool": "pools", "delete_pool": "pools",
    "list_pools": "pools",
    "load_pool": "pools", "pool_info": "pools", "validate_pool_name": "pools",
}

__getattr__, __dir__ = exports(__name__, _WHERE, globals())
