"""The ``lxdlib`` command that ``setup.sh`` writes: Python started without ``site`` (whose walk
of the site-packages and their .pth hooks cost 3-9 ms of every command), the venv's import path
put in place by the script itself. What it must not lose is any module a verb may import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "lxdlib"

#: Everything outside the standard library that some verb imports: the system's python3-lxc and
#: python3-btrfsutil, the venv's packages, and lxdlib itself (through the editable install).
NEEDED = ("_lxc", "btrfsutil", "yaml", "attrs", "pyroute2", "jinja2", "shtab", "lxdlib.host")


def launcher() -> list[str]:
    if not SCRIPT.is_file() or " -S" not in SCRIPT.read_text().splitlines()[0]:
        pytest.skip("no launcher of setup.sh's here (the venv was not made by setup.sh)")
    return SCRIPT.read_text().splitlines()


def test_the_command_starts_python_without_site_and_finds_every_module_a_verb_needs() -> None:
    lines = launcher()
    shebang = lines[0][2:].split()
    assert Path(shebang[0]).resolve() == Path(sys.executable).resolve()
    # the script's own lines up to the import of the CLI, then the modules, in a Python
    # started the same way
    prologue = "\n".join(line for line in lines[1:] if line.startswith(("import sys",
                                                                        "sys.path")))
    code = prologue + "\nimport importlib, sys\n" + \
        "".join(f"importlib.import_module({m!r})\n" for m in NEEDED) + \
        "print(sys.flags.no_site, 'site' in sys.modules)\n"
    r = subprocess.run([*shebang, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "False"]


def test_the_command_runs() -> None:
    launcher()
    r = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "0.1.0\n", "")
