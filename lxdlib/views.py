"""Collection views over objects that live elsewhere: storage pools.

Pools are loaded one by one through ``Host.pool(name)`` (drivers are cached per Host); this
gives them the same collection face as instances and images — ``host.pools["default"]``,
``in``, iteration, a notebook table and key completion.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .errors import NotFound

if TYPE_CHECKING:
    from .context import Context
    from .storage.base import PoolDriver


class Pools:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def names(self) -> list[str]:
        return self.ctx.pool_names()

    def get(self, name: str) -> PoolDriver:
        if name not in self.names():
            raise NotFound("storage pool", name)
        return self.ctx.pool(name)

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[PoolDriver]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.names())

    def list(self) -> list[PoolDriver]:
        return [self.ctx.pool(n) for n in self.names()]

    def _ipython_key_completions_(self) -> builtins.list[str]:
        return self.names()

    def _repr_html_(self) -> str:
        from .notebook import pools_html
        return pools_html(self.ctx)

    def __repr__(self) -> str:
        return f"<Pools {self.names()}>"
