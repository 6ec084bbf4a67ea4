"""The house's rules that the layers contract (``.importlinter``) does not check itself."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lxdlib"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """(module imported, name taken from it or "", line) for every import in ``path``,
    inside functions and ``TYPE_CHECKING`` blocks too; relative imports made absolute."""
    tree = ast.parse(path.read_text(), str(path))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, *([node.module] if node.module else [])])
            out += [(mod, a.name, node.lineno) for a in node.names]
    return out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_module_imports_another_modules_underscore_names(path: Path) -> None:
    bad = [f"line {line}: {name} from {mod}" for mod, name, line in _imports(path)
           if name.startswith("_") and name != "__version__"
           and mod.startswith("lxdlib") and mod != _module_name(path)]
    assert not bad, f"{_module_name(path)} imports private names: {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_only_runtime_imports_liblxc(path: Path) -> None:
    lxc = [line for mod, _, line in _imports(path)
           if mod in ("lxc", "_lxc") or mod.startswith("lxc.")]
    if _module_name(path) == "lxdlib.runtime":
        assert lxc, "runtime.py is where liblxc is imported"
    else:
        assert not lxc, f"{_module_name(path)} imports lxc (lines {lxc}): go through runtime"


def test_the_layers_contract_is_not_silenced() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(PACKAGE.parent / ".importlinter")
    contracts = [s for s in cfg.sections() if s.startswith("importlinter:contract:")]
    assert contracts, "the layers contract is missing"
    for section in contracts:
        assert cfg[section].get("type") == "layers"
        assert "ignore_imports" not in cfg[section], "the contract must hold without ignores"
        assert cfg[section].get("exclude_type_checking_imports", "false").lower() == "false"
    listed = {m.strip() for line in cfg[contracts[0]]["layers"].splitlines()
              for m in line.replace("|", ":").split(":") if m.strip()}
    top = {_module_name(p).split(".")[1] for p in MODULES if _module_name(p) != "lxdlib"}
    missing = sorted(f"lxdlib.{m}" for m in top if f"lxdlib.{m}" not in listed)
    assert not missing, f"modules outside every layer (unchecked): {missing}"
