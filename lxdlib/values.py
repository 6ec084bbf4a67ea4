"""Value classes: what lxdlib uses where a dataclass or an attrs class would do.

Every command pays for what its value classes cost to import and build, and attrs costs most
of that: it imports ``inspect`` (with ``ast``, ``dis``, ``tokenize``) and compiles each
class's methods when the class is made. Measured on this 2-core VM, A/B with the same root:
``lxdlib info`` 87 -> 62 ms and ``lxdlib exec`` 84 -> 62 ms once no module on their way
imported attrs (the listing's classes went first: ``lxdlib list`` of 250 running instances
105 -> 86 ms). So no lxdlib module imports attrs (``tests/unit/test_cli_imports.py``) — the
design card named it; it stays a dependency of the tests only. ``dataclasses`` would bring
``inspect`` back.

A ``Value`` subclass declares ``_fields`` (its ``__init__``'s arguments, in order), its
``__slots__`` (the fields, and any it computes), the annotations of its fields and a typed
``__init__`` (a frozen one sets its fields with ``assign``; a default that must be a fresh
list or dict is ``None`` in the signature, made in the body). ``Value`` gives what attrs gave:
equality and ``repr`` over the fields, a hash and immutability when ``frozen=True``, equality
and hash by identity with ``eq=False`` (an object that holds caches of its own),
``evolve`` (a copy with some fields changed, made through ``__init__`` as ``attrs.evolve``
does) and pickling.
"""

from __future__ import annotations

from .errors import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, NoReturn, Self


#: Set a field of a value, also of a frozen one: for its ``__init__`` (as fast as the
#: ``__init__`` attrs generates; a listing makes two values per instance).
assign = object.__setattr__


class FrozenError(AttributeError):
    """A field of a frozen value was assigned or deleted (attrs' ``FrozenInstanceError``)."""


class Value:
    """Equality, ``repr``, hash (when frozen), ``evolve`` and pickling over ``_fields``: the
    arguments of ``__init__``, which every subclass names."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __init_subclass__(cls, *, frozen: bool = False, eq: bool = True,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_fields" not in cls.__dict__:  # else equal would compare nothing
            raise TypeError(f"{cls.__qualname__} names no _fields")
        if frozen:
            cls.__setattr__ = _refuse  # type: ignore[method-assign,assignment]
            cls.__delattr__ = _refuse  # type: ignore[method-assign,assignment]
        if not eq:  # equal only to itself, hashed by identity (as attrs' eq=False)
            cls.__eq__ = object.__eq__  # type: ignore[method-assign,assignment]
            cls.__hash__ = object.__hash__  # type: ignore[method-assign,assignment]
        elif frozen:
            cls.__hash__ = Value._hash  # type: ignore[method-assign,assignment]
        else:  # mutable: equal values may stop being equal, so no hash (as attrs.define)
            cls.__hash__ = None  # type: ignore[assignment]

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined, no-any-return]

    def _hash(self) -> int:
        return hash((self.__class__.__qualname__, *self._values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{self.__class__.__qualname__}({inner})"

    def evolve(self, **changes: Any) -> Self:
        """A new value made by ``__init__`` from this one's fields and ``changes``."""
        unknown = set(changes) - set(self._fields)
        if unknown:
            raise TypeError(f"{self.__class__.__qualname__} has no field {sorted(unknown)[0]!r}")
        return self.__class__(**{f: changes.get(f, getattr(self, f)) for f in self._fields})

    def __getstate__(self) -> dict[str, Any]:
        slots: tuple[str, ...] = self.__class__.__slots__  # type: ignore[assignment]
        return {s: getattr(self, s) for s in slots if hasattr(self, s)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            assign(self, name, value)


def _refuse(self: Value, name: str, *value: Any) -> NoReturn:
    raise FrozenError(f"{self.__class__.__qualname__} is frozen: cannot change {name!r}")


def fields(cls: type[Value]) -> tuple[str, ...]:
    """The names of ``cls``'s fields, in ``__init__``'s order (``attrs.fields`` for a
    ``Value``)."""
    return cls._fields
