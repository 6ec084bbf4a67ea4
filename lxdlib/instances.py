"""What users hold: ``Instance`` and the ``host.instances`` collection.

``lxdlib.instance.InstanceCore`` is the engine (record, state, lifecycle, live config) that the
services below the façade work on. ``Instance`` adds the facets built on top of it — files,
snapshots, pipes, rename — which live in modules that themselves need the core; putting them on
the core would make it import its own users.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import record
from .copy import rename_instance
from .errors import NotFound
from .files import Files
from .instance import InstanceCore
from .popen import Popen
from .snapshots import Snapshots

if TYPE_CHECKING:
    from .context import Context


class Instance(InstanceCore):
    """One container of a root. Cheap to make; every property is read live when asked."""

    @property
    def files(self) -> Files:
        """Read and write files inside the instance (``inst.files.push(...)``)."""
        return Files(self)

    def popen(self, command: Sequence[str] | str, **kw: Any) -> Popen:
        """Start a command with pipes and return at once (see ``lxdlib.popen.Popen``)."""
        return Popen(self, command, **kw)

    @property
    def snapshots(self) -> Snapshots:
        """The instance's snapshots (``inst.snapshots.create()``, ``["snap0"]``…)."""
        return Snapshots(self)

    def rename(self, new: str) -> Instance:
        """Rename a stopped instance with its snapshots (``lxc move old new``)."""
        return Instance(self.ctx, rename_instance(self, new).name)


class Instances:
    """The instances of a root: ``host.instances["web"]``, ``in``, iteration, ``get``."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def names(self) -> list[str]:
        self.ctx.recover_leftovers()
        return record.names(self.ctx.paths)

    def get(self, name: str) -> Instance:
        """The instance called ``name``; ``NotFound`` if there is none."""
        if not record.exists(self.ctx.paths, name):
            raise NotFound("instance", name)
        return Instance(self.ctx, name)

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and record.exists(self.ctx.paths, name)

    def pool_of(self, name: str) -> str:
        """The pool holding an instance's root volume ("" when its record is unreadable)."""
        return self.ctx.instance_pool(name)

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.names())

    def list(self) -> builtins.list[Instance]:
        return [Instance(self.ctx, n) for n in self.names()]

    def _ipython_key_completions_(self) -> builtins.list[str]:
        return self.names()

    def _repr_html_(self) -> str:
        from .notebook import instances_html
        return instances_html(self.list())

    def __repr__(self) -> str:
        return f"<Instances {self.names()}>"
