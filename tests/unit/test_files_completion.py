"""Bash completion: the generated script completes commands, subcommands, options and instance
names (read from the root's containers/ directory), run in a real bash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lxdlib.cli.completion import bash_script, spec
from lxdlib.cli.main import build_parser

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "lxdlib.bash"
    path.write_text(bash_script(build_parser()))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for name in ("web1", "web2", "db"):
        d = tmp_path / "containers" / name
        d.mkdir(parents=True)
        (d / "instance.yaml").write_text("name: " + name)
    (tmp_path / "containers" / "half-made").mkdir()  # no record: not an instance
    return tmp_path


def complete(script: Path, line: str, env_root: Path | None = None) -> list[str]:
    """COMPREPLY for the cursor at the end of ``line`` (a trailing space starts a new word)."""
    words = line.split()
    if line.endswith(" "):
        words.append("")
    prog = f"""
source {script}
COMP_WORDS=({' '.join(repr(w) if w else "''" for w in words)})
COMP_CWORD={len(words) - 1}
_lxdlib
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {"PATH": "/usr/bin:/bin"}
    if env_root is not None:
        env["LXDLIB_ROOT"] = str(env_root)
    r = subprocess.run(["bash", "--norc", "-c", prog], capture_output=True, text=True, env=env,
                       check=True)
    return sorted(x for x in r.stdout.splitlines() if x)


@pytest.mark.parametrize(("line", "expected"), [
    ("lxdlib la", ["launch"]),
    ("lxdlib fi", ["file"]),
    ("lxdlib file p", ["pull", "push"]),
    ("lxdlib file push -", None),  # options: checked below
    ("lxdlib completion ", ["bash"]),
])
def test_commands_and_subcommands(script: Path, line: str, expected: list[str] | None) -> None:
    got = complete(script, line)
    if expected is None:
        assert {"-r", "-p", "--uid", "--gid", "--mode"} <= set(got)
    else:
        assert got == expected


@pytest.mark.parametrize(("line", "expected"), [
    ("lxdlib start w", ["web1", "web2"]),
    ("lxdlib stop --force ", ["db", "web1", "web2"]),
    ("lxdlib exec d", ["db"]),
    ("lxdlib console ", ["db", "web1", "web2"]),
    ("lxdlib config show w", ["web1", "web2"]),
    ("lxdlib config set db ", []),  # the key is not an instance
    ("lxdlib file pull we", ["web1/", "web2/"]),
])
def test_instance_names(script: Path, root: Path, line: str, expected: list[str]) -> None:
    assert complete(script, line.replace("lxdlib ", f"lxdlib --root {root} ", 1)) == expected
    assert complete(script, line, env_root=root) == expected


def test_spec_marks_instance_paths() -> None:
    s = spec(build_parser())
    assert s["_ file push"]["pos"] == "f* p"
    assert s["_ file pull"]["pos"] == "p* f"
    assert "--uid" in s["_ file push"]["valued"].split()
