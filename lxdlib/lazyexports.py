"""A package's public names loaded from their submodules when first asked for (PEP 562).

``storage`` and ``imagestore`` list their public names in ``__init__`` for the users of the
library, but importing one of their submodules — which every command does for some — must not
import all the others: the image store's modules bring ``tarfile`` and the compressors, the
pool records every driver. ``exports`` gives such a package the module ``__getattr__`` and
``__dir__`` that import a name's submodule on first use; type checkers read the names from the
package's ``if TYPE_CHECKING:`` imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from .errors import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


def exports(package: str, where: Mapping[str, str], namespace: dict[str, Any]
            ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose public name ``n`` is defined by
    its submodule ``where[n]``; ``namespace`` is the package's ``globals()``, where a name is
    kept once loaded (so it is looked up once)."""

    def getattr_(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(where))

    return getattr_, dir_
