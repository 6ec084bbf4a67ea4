"""The one shape of lxdlib's collections and models, learnt once for all of them.

Every collection a ``Host`` hands out — ``host.instances``, ``host.images``, ``host.profiles``,
``host.networks``, ``host.pools``, ``host.volumes`` (and ``pool.volumes``), ``inst.snapshots`` —
answers the same questions the same way::

    host.profiles["web"]            # the model; NotFound (a LookupError) when there is none
    host.profiles.get("web")        # the same
    "web" in host.profiles          # never raises: False for a missing or invalid name
    for p in host.profiles: ...     # the models, in name order
    len(host.profiles), host.profiles.names(), host.profiles.list()
    host.profiles.create("web", ...)

and every model (``Instance``, ``Image``, ``Profile``, ``Network``, ``Pool``, ``Volume``,
``Snapshot``) is a name plus where it lives: its attributes are read-only properties read from disk
each time they are asked for, so nothing goes stale between two calls or two processes.
``record()`` reads everything once, as a consistent snapshot; ``update(...)`` changes it (applied
live where LXD applies live) and ``delete()`` removes it. Both show as tables in Jupyter.

This module holds only the shared behaviour; each model lives with the layer that can do its work.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator

from .errors import TYPE_CHECKING, InvalidArgument, NotFound

if TYPE_CHECKING:
    from typing import Any, ClassVar, Generic, Protocol, TypeVar

    M = TypeVar("M")

    class Rooted(Protocol):
        """What a root-wide model needs of its context: where the root is (its identity)."""

        @property
        def paths(self) -> Any: ...

    C = TypeVar("C", bound=Rooted)
else:
    class Generic:
        """``typing.Generic`` at run time, where only its subscription is used (the base
        ``Collection[Instance]``, ``RootModel[Context]``): lxdlib's modules do not import
        ``typing`` but for the type checker (``errors.TYPE_CHECKING``), and that saves every
        command ~3 ms of its start."""

        def __class_getitem__(cls, _params: object) -> type:
            return cls

    M = C = None  # the type variables, for the type checker only


class Model:
    """Base of the models: identity is the kind, the root and the name, never the content."""

    kind: ClassVar[str] = "object"

    def _identity(self) -> tuple[Any, ...]:
        """What makes two model objects the same object (the root and the name)."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Model) and other.kind == self.kind
                and other._identity() == self._identity())

    def __hash__(self) -> int:
        return hash((self.kind, self._identity()))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class RootModel(Model, Generic[C]):
    """A model that is one name in a root (a profile, a network, a pool, an image): the context
    it was looked up in and the name are all it holds."""

    def __init__(self, ctx: C, name: str) -> None:
        self._ctx = ctx
        self._name = name

    def _identity(self) -> tuple[Any, ...]:
        return (self._ctx.paths.root, self._name)

    @property
    def name(self) -> str:
        return self._name


class Collection(Generic[M]):
    """Base of the collections. A subclass says which names exist (``names``), whether one
    exists (``_exists``) and how to make the model for a name (``_model``)."""

    kind: ClassVar[str] = "object"

    def names(self) -> builtins.list[str]:
        """The names (keys) of what exists now: sorted, unless the collection has an order of
        its own (snapshots as taken, images as uploaded)."""
        raise NotImplementedError

    def _model(self, name: str) -> M:
        raise NotImplementedError

    def _exists(self, name: str) -> bool:
        return name in self.names()

    def _not_found(self, name: str) -> NotFound:
        return NotFound(self.kind, name)

    def get(self, name: str) -> M:
        """The model for ``name``; ``NotFound`` when there is none."""
        if not isinstance(name, str) or not self._exists(name):
            raise self._not_found(str(name))
        return self._model(name)

    def __getitem__(self, name: str) -> M:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            return self._exists(name)
        except (NotFound, InvalidArgument):  # an invalid name names nothing
            return False

    def list(self) -> builtins.list[M]:
        """The models of everything that exists now, in name order."""
        return [self._model(n) for n in self.names()]

    def __iter__(self) -> Iterator[M]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.names())

    def _ipython_key_completions_(self) -> builtins.list[str]:
        return self.names()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.names()}>"
