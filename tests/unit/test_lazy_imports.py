"""The names that load on first use (``lxdlib.storage``, ``lxdlib.imagestore``, the context's
stores, ``host.images``) are the same objects as before, and opening a root still clears what
killed image imports left although it no longer loads the image store to look."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lxdlib
from lxdlib.rootdir import IMAGE_IMPORTS


@pytest.mark.parametrize("package", ["lxdlib.storage", "lxdlib.imagestore"])
def test_every_public_name_resolves_to_its_definition(package: str) -> None:
    mod = importlib.import_module(package)
    for name in mod.__all__:
        value = getattr(mod, name)
        defined_in = getattr(value, "__module__", None)
        if defined_in is not None:  # a class or function: the submodule's own object
            assert getattr(importlib.import_module(defined_in), name) is value
        assert name in dir(mod)
    with pytest.raises(AttributeError):
        mod.no_such_name  # noqa: B018
    exec(f"from {package} import *", {})  # star-import follows __all__


def test_submodules_still_import_as_names() -> None:
    from lxdlib.imagestore import compression
    from lxdlib.storage import base
    assert compression.__name__ == "lxdlib.imagestore.compression"
    assert base.__name__ == "lxdlib.storage.base"


def test_stores_are_made_once(tmp_path: Path) -> None:
    host = lxdlib.Host(tmp_path)
    assert host.images is host.images
    assert host.ctx.images is host.ctx.images
    assert host.ctx.remotes is host.ctx.remotes
    assert len(host.images) == 0


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_opening_a_root_clears_killed_imports(tmp_path: Path) -> None:
    """A killed import's temp file (its pid gone) is removed by the next ``Host``; one of a
    process still running stays. Run in a fresh interpreter, where the image store is not yet
    loaded: the context loads it only when the directory holds something."""
    lxdlib.Host(tmp_path)  # the layout
    imports = tmp_path / "run" / IMAGE_IMPORTS
    imports.mkdir(parents=True, exist_ok=True)
    dead = imports / f"{_dead_pid()}-import.tmp"
    dead.write_text("x")
    alive = imports / f"{os.getpid()}-import.tmp"
    alive.write_text("x")
    code = ("import sys, lxdlib; lxdlib.Host(sys.argv[1]); "
            "print('lxdlib.imagestore.store' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "True"
    assert not dead.exists()
    assert alive.exists()
    alive.unlink()
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "False"  # nothing to clear: the store stays unloaded
