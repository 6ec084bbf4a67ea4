"""Shell completion: the scripts shtab makes from the parser complete commands, verbs,
options and the root's names (read from its directories by the shell, no Python), run in a
real bash (and zsh when it is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lxdlib.cli.completion import script
from lxdlib.cli.main import build_parser, main

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture(scope="module")
def bash_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "lxdlib.bash"
    path.write_text(script("bash", build_parser("*")))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for name in ("web1", "web2", "db"):
        d = tmp_path / "containers" / name
        d.mkdir(parents=True)
        (d / "instance.yaml").write_text("name: " + name)
    (tmp_path / "containers" / "half-made").mkdir()  # no record: not an instance
    (tmp_path / "profiles").mkdir()
    for name in ("default", "small"):
        (tmp_path / "profiles" / f"{name}.yaml").write_text(f"name: {name}\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "aliases.yaml").write_text(
        "busybox:\n  target: abc\n  description: ''\n'alpine/3.19':\n  target: def\n")
    (tmp_path / "remotes.yaml").write_text(
        "default-remote: local\nremotes:\n  mirror:\n    addr: https://m.example\n")
    return tmp_path


def complete(script_file: Path, line: str, env_root: Path | None = None) -> list[str]:
    """COMPREPLY for the cursor at the end of ``line`` (a trailing space starts a new word),
    as bash's programmable completion calls the function."""
    words = line.split()
    if line.endswith(" "):
        words.append("")
    quoted = " ".join(f"'{w}'" for w in words)
    prog = f"""
source {script_file}
COMP_WORDS=({quoted})
COMP_CWORD={len(words) - 1}
COMP_LINE={line!r}
COMP_POINT=${{#COMP_LINE}}
_shtab_lxdlib lxdlib '{words[-1]}' '{words[-2]}'
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {"PATH": "/usr/bin:/bin"}
    if env_root is not None:
        env["LXDLIB_ROOT"] = str(env_root)
    r = subprocess.run(["bash", "--norc", "-c", prog], capture_output=True, text=True, env=env,
                       check=True)
    return sorted(x for x in r.stdout.splitlines() if x)


@needs_bash
@pytest.mark.parametrize(("line", "expected"), [
    ("lxdlib lau", ["launch"]),
    ("lxdlib fi", ["file"]),
    ("lxdlib file p", ["pull", "push"]),
    ("lxdlib image de", ["delete"]),
    ("lxdlib completion ", ["bash", "zsh"]),
])
def test_commands_and_verbs(bash_file: Path, line: str, expected: list[str]) -> None:
    assert complete(bash_file, line) == expected


@needs_bash
def test_options(bash_file: Path) -> None:
    assert {"-r", "-p", "--uid", "--gid", "--mode"} <= set(complete(bash_file,
                                                                    "lxdlib file push -"))


@needs_bash
@pytest.mark.parametrize(("line", "expected"), [
    ("lxdlib start w", ["web1", "web2"]),
    ("lxdlib stop --force ", ["db", "web1", "web2"]),
    ("lxdlib exec d", ["db"]),
    ("lxdlib console ", ["db", "web1", "web2"]),
    ("lxdlib config show w", ["web1", "web2"]),
    ("lxdlib file pull we", ["web1/", "web2/"]),
    ("lxdlib launch b", ["busybox"]),
    ("lxdlib launch a", ["alpine/3.19"]),
    ("lxdlib launch m", ["mirror:"]),
    ("lxdlib image delete bu", ["busybox"]),
    ("lxdlib launch busybox c1 -p s", ["small"]),
    ("lxdlib profile show ", ["default", "small"]),
    ("lxdlib remote switch mi", ["mirror"]),
    ("lxdlib config set db limits.m", ["limits.memory", "limits.memory.enforce",
                                       "limits.memory.swap", "limits.memory.swap.priority"]),
    ("lxdlib config set db limits.memory ", []),  # the value: nothing to offer
    ("lxdlib config set db limits.cpu=1 limits.cpu.a", ["limits.cpu.allowance"]),
    ("lxdlib config set images.remote_", ["images.remote_cache_expiry"]),
])
def test_root_names(bash_file: Path, root: Path, line: str, expected: list[str]) -> None:
    """Names come from the root named by --root, else $LXDLIB_ROOT."""
    assert complete(bash_file, line.replace("lxdlib ", f"lxdlib --root {root} ", 1)) == expected
    assert complete(bash_file, line, env_root=root) == expected


@needs_bash
def test_names_from_records_as_lxdlib_writes_them(bash_file: Path, tmp_path: Path) -> None:
    """aliases.yaml and remotes.yaml as lxdlib itself writes them (indented JSON records):
    the aliases and the added remotes complete, a default remote kept in the file once."""
    from lxdlib.state import write_record
    (tmp_path / "images").mkdir()
    write_record(tmp_path / "images" / "aliases.yaml",
                 {"alpine/3.19": {"target": "def", "description": ""},
                  "busybox": {"target": "abc", "description": "bb"}})
    write_record(tmp_path / "remotes.yaml", {
        "default-remote": "local",
        "remotes": {"images": {"addr": "https://i.example", "protocol": "simplestreams"},
                    "mirror": {"addr": "https://m.example", "protocol": "simplestreams"}},
        "mirrors": {"ubuntu": "http://u.example"}})
    assert complete(bash_file, "lxdlib launch ", tmp_path) == \
        ["alpine/3.19", "busybox", "images:", "mirror:", "ubuntu-daily:", "ubuntu:"]
    assert complete(bash_file, "lxdlib remote switch ", tmp_path) == \
        ["images", "local", "mirror", "ubuntu", "ubuntu-daily"]


def test_completion_command_prints_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    assert "complete -o bashdefault -F _shtab_lxdlib lxdlib" in capsys.readouterr().out
    assert main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out.startswith("#compdef lxdlib")


needs_zsh = pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh")

# An interactive zsh in a pseudo-terminal (zsh/zpty) with compinit and the script on $fpath,
# as a user has it; `compadd` is wrapped to write the matches it adds to a file; the line is
# typed with a TAB after it.
_ZPTY = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1='%% '; fpath=($1 \$fpath); autoload -Uz compinit; compinit -u -D; \
compadd() { builtin compadd -O __m \"\$@\"; print -l -- \$__m >> $2; builtin compadd \"\$@\"; }"
zpty -w z "print READY"
zpty -r z line '*READY*'
zpty -r z line '*READY*'
zpty -n -w z "$3"$'\t'
for i in {1..50}; do [[ -s $2 ]] && break; sleep 0.1; done
sleep 0.3
zpty -d z
"""


@pytest.fixture(scope="module")
def zsh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("zsh")
    (d / "_lxdlib").write_text(script("zsh", build_parser("*")))
    (d / "run.zsh").write_text(_ZPTY)
    return d


@needs_zsh
def test_zsh_script_parses(zsh_dir: Path) -> None:
    r = subprocess.run(["zsh", "-n", str(zsh_dir / "_lxdlib")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@needs_zsh
@pytest.mark.parametrize(("line", "expected"), [
    ("lxdlib lau", ["launch"]),
    ("lxdlib start web1 w", ["web1", "web2"]),  # every word of a nargs="+" positional
    ("lxdlib file pull we", ["web1", "web2"]),  # added with a / suffix
    ("lxdlib profile show ", ["default", "small"]),
    ("lxdlib config set db limits.m", ["limits.memory", "limits.memory.enforce",
                                       "limits.memory.swap", "limits.memory.swap.priority"]),
])
def test_zsh_completes(zsh_dir: Path, root: Path, tmp_path: Path, line: str,
                       expected: list[str]) -> None:
    out = tmp_path / "matches"
    subprocess.run(["zsh", "-f", str(zsh_dir / "run.zsh"), str(zsh_dir), str(out), line],
                   capture_output=True, timeout=60, check=True,
                   env={"PATH": "/usr/bin:/bin", "LXDLIB_ROOT": str(root)})
    assert sorted(set(out.read_text().split())) == expected
