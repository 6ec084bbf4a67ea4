"""The hook lines lxdlib writes into liblxc configs are shell text (liblxc runs each as
``/bin/sh -c "exec <value>"``): a root path chosen by the user must stay one word, whatever it
holds, and the stop marker must be written only for a stop, not for a reboot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lxdlib import hooklog, render
from lxdlib.errors import InvalidConfig

NASTY = ["plain", "my root", "it's", "a;touch pwned;b", "$(touch pwned)", "`touch pwned`",
         "'; touch pwned; '", 'q"uote', "back\\slash", "#hash", "  spaced  ", "*", "-x"]


def _as_parsed(value: str) -> str:
    """What liblxc 5.0's config parser keeps of a value: outer spaces and, when it starts and
    ends with the same quote, that pair go (``parse_line``)."""
    value = value.strip(" \t")
    if len(value) > 1 and value[0] in "'\"" and value[-1] == value[0]:
        value = value[1:-1]
    return value


def _run_as_liblxc(value: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[bytes]:
    """What liblxc 5.0 does with a hook value (``run_script_argv``: ``exec <value>`` to sh -c)."""
    return subprocess.run(["/bin/sh", "-c", f"exec {_as_parsed(value)}"], cwd=cwd,
                          capture_output=True, env={"PATH": os.environ["PATH"], **env},
                          check=False)


def _words(value: str, cwd: Path) -> list[str]:
    """The words a shell makes of a hook value as liblxc keeps it."""
    out = subprocess.run(["/bin/sh", "-c", f'set -- {_as_parsed(value)}; printf "%s\\n" "$@"'],
                         capture_output=True, check=True, cwd=cwd).stdout.decode()
    return out.split("\n")[:-1]


@pytest.mark.parametrize("word", NASTY)
def test_the_stop_marker_is_written_where_told_and_nothing_else_runs(tmp_path: Path,
                                                                    word: str) -> None:
    d = tmp_path / word
    d.mkdir()
    marker = d / "stopped-inside"
    value = hooklog.stop_marker_command(marker)
    render.to_text([("lxc.hook.post-stop", value)])  # a single config line
    r = _run_as_liblxc(value, tmp_path, LXC_TARGET="reboot", LXC_PID="42")
    assert r.returncode == 0 and not marker.exists()
    r = _run_as_liblxc(value, tmp_path, LXC_TARGET="stop", LXC_PID="42")
    assert r.returncode == 0, r.stderr
    assert marker.read_text() == "42\n"
    marker.unlink()
    r = _run_as_liblxc(value, tmp_path, LXC_PID="7")  # no target said: a stop
    assert marker.read_text() == "7\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted([word, "stopped-inside"])


def test_the_marker_hook_never_fails_the_stop(tmp_path: Path) -> None:
    """A failing post-stop hook would turn liblxc's reboot into a stop: a missing directory
    (the instance deleted meanwhile) is no failure."""
    value = hooklog.stop_marker_command(tmp_path / "gone" / "stopped-inside")
    assert _run_as_liblxc(value, tmp_path, LXC_TARGET="stop").returncode == 0


@pytest.mark.parametrize("word", NASTY)
def test_the_python_hook_command_keeps_the_root_one_word(tmp_path: Path, word: str) -> None:
    value = hooklog.command(Path("/r") / word)
    assert _words(value, tmp_path) == [sys.executable, "-m", "lxdlib.hooks", f"/r/{word}"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("word", NASTY)
def test_a_quoted_first_and_last_word_survive_liblxc_stripping_quotes(tmp_path: Path,
                                                                     word: str) -> None:
    """Both ends quoted would make liblxc strip the outer pair and join the words."""
    value = " ".join([hooklog.shell_quote(f"/my venv/{word}", leading=True), "-m",
                      hooklog.shell_quote(f"/r/{word}")])
    assert _words(value, tmp_path) == [f"/my venv/{word}", "-m", f"/r/{word}"]
    assert list(tmp_path.iterdir()) == []


def test_a_newline_in_the_root_is_refused_in_the_config_line(tmp_path: Path) -> None:
    value = hooklog.stop_marker_command(tmp_path / "a\nlxc.hook.pre-start = /bin/evil" / "m")
    with pytest.raises(InvalidConfig):
        render.to_text([("lxc.hook.post-stop", value)])
