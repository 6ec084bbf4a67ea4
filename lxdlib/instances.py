"""What users hold: ``Instance`` and the ``host.instances`` collection.

``lxdlib.instance.InstanceCore`` is the engine (record, state, lifecycle, live config) that the
services below the façade work on. ``Instance`` adds the facets built on top of it — files,
snapshots, pipes, rename — which live in modules that themselves need the core; putting them on
the core would make it import its own users.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence

from . import journal, record
from .config import names
from .errors import TYPE_CHECKING
from .instance import InstanceCore, create
from .listing import Listing, take
from .model import Collection

if TYPE_CHECKING:
    from typing import Any, Literal

    from .context import Context
    from .files import Files
    from .instancemeta import Templates
    from .popen import Popen
    from .snapshots import Snapshots


def _register_recoverers() -> None:
    """The journal's recoverers of the operations on instances other than the core's
    (snapshots, restores, copies, renames, imports): their modules are imported when an intent
    of theirs is found (``journal.register_loader``), not by every command that opens an
    instance (~0.7 ms of its start)."""
    from . import copy, recovery, snapshots  # noqa: F401  (each registers its recoverers)


journal.register_loader(_register_recoverers)


class Instance(InstanceCore):
    """One container of a root. Cheap to make; every property is read live when asked.

    The model shape of ``lxdlib.model``: read-only properties (``state``, ``config``,
    ``devices``…), ``record()`` for one consistent read, ``update(...)`` (applied live to a
    running instance where LXD does), ``delete()``, and a table in Jupyter."""

    @property
    def files(self) -> Files:
        """Read and write files inside the instance (``inst.files.push(...)``)."""
        from .files import Files  # here: only file commands pay for its imports (start-up time)
        return Files(self)

    def popen(self, command: Sequence[str] | str, **kw: Any) -> Popen:
        """Start a command with pipes and return at once (see ``lxdlib.popen.Popen``)."""
        from .popen import Popen  # here: it imports subprocess, which other verbs do without
        return Popen(self, command, **kw)

    @property
    def snapshots(self) -> Snapshots:
        """The instance's snapshots (``inst.snapshots.create()``, ``["snap0"]``…)."""
        from .snapshots import Snapshots  # here: a verb that touches none skips its import
        return Snapshots(self)

    @property
    def templates(self) -> Templates:
        """The templates its starts render (``lxc config template``): ``.names()``,
        ``["hostname.tpl"]``, ``.create(name, text)``, ``.update``, ``.delete``."""
        from .instancemeta import Templates
        return Templates(self)

    def metadata(self) -> dict[str, Any]:
        """Its image metadata (``lxc config metadata show``): what names its templates."""
        from .instancemeta import read_metadata
        return read_metadata(self)

    def set_metadata(self, data: Mapping[str, Any]) -> None:
        """Replace its image metadata (``lxc config metadata edit``), checked first."""
        from .instancemeta import write_metadata
        write_metadata(self, data)

    def rename(self, new: str) -> Instance:
        """Rename a stopped instance with its snapshots (``lxc move old new``)."""
        from .copy import rename_instance
        return Instance(self.ctx, rename_instance(self, new).name)


class Instances(Collection[Instance]):
    """The instances of a root: ``host.instances["web"]``, ``in``, iteration, ``create``."""

    kind = "instance"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def names(self) -> builtins.list[str]:
        self.ctx.recover_leftovers()
        return record.names(self.ctx.paths)

    def _exists(self, name: str) -> bool:
        return record.exists(self.ctx.paths, name)

    def _model(self, name: str) -> Instance:
        return Instance(self.ctx, name)

    def create(self, image: str | None, name: str | None = None, *,
               profiles: Sequence[str] | None = None, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None, pool: str | None = None,
               ephemeral: bool = False, description: str = "", progress: Any = None
               ) -> Instance:
        """``lxc init``: a new, stopped instance from an image — a local alias or fingerprint,
        or ``<remote>:<alias>`` (downloaded and cached first; ``progress(done, total)``) —
        or an empty one with ``image=None``. ``name`` defaults to a random free one."""
        from .images import Images
        # what a killed process left on this name is settled by ``create`` under its lock;
        # others' leftovers are not this create's to scan for (a scan of every instance)
        if name is not None:
            names.validate_instance_name(name)
        if image is not None:
            image = Images(self.ctx).resolve(image, progress)
        made = create(self.ctx, name or self.ctx.new_name(), image, profiles=profiles,
                      config=config, devices=devices, pool=pool, ephemeral=ephemeral,
                      description=description)
        return Instance(self.ctx, made.name)

    def list_state(self, names: Iterable[str] | None = None, *,
                   network: bool | Literal["full"] = True) -> Listing:
        """Every instance (or those of ``names``) with its state, init pid and addresses, read
        in one pass (``lxc list``): ``for e in host.instances.list_state(): e.name, e.status,
        e.pid, e.ipv4, e.ipv6``. No process is started (but a fork that asks liblxc about
        the rare instance caught starting, which the kernel's view cannot settle: one whose
        monitor is stuck is then ``ERROR``): it is meant for many instances at once, where
        asking each ``Instance`` would take seconds. The addresses are those inside
        the instance, as ``inst.network_state()`` reads them; ``network="full"`` adds the rest
        of that view (MAC, MTU, counters…) in ``e.network``, ``network=False`` skips it all.
        A snapshot: take another for a newer view (see ``lxdlib.listing``)."""
        if names is None:
            self.ctx.recover_leftovers()
            # those without a record are left out as the listing reads the records
            names = record.directories(self.ctx.paths)
        return take(self.ctx.paths, names, network=network)

    def pool_of(self, name: str) -> str:
        """The pool holding an instance's root volume ("" when its record is unreadable)."""
        return self.ctx.instance_pool(name)

    def _repr_html_(self) -> str:
        from .notebook import instances_html
        return instances_html(self.list())
