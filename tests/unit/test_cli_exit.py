"""How the ``lxdlib`` command ends: at once after its verb (Python's own shutdown of a process
that imported liblxc and the Host took ~15 ms of an ``exec``), yet with everything it printed
delivered and the exit status Python itself would have given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lxdlib.cli.main import exit_status


def entry(tmp_path: Path, *argv: str, stdout_closed: bool = False
          ) -> subprocess.CompletedProcess[str]:
    """The command as installed, in a Python that would leave a mark if it shut down normally
    (an atexit handler), with stdout a pipe, so that nothing arrives unless it was flushed."""
    mark = tmp_path / "python-shut-down"
    code = ("import atexit, pathlib, sys\n"
            f"atexit.register(pathlib.Path({str(mark)!r}).touch)\n"
            f"sys.argv = ['lxdlib', *{list(argv)!r}]\n"
            "from lxdlib.cli.main import entry\n"
            "entry()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60,
                          preexec_fn=(lambda: os.close(1)) if stdout_closed else None)


def test_a_verb_ends_the_process_without_pythons_shutdown_and_its_output_arrives(
        tmp_path: Path) -> None:
    r = entry(tmp_path, "completion", "bash")
    assert r.returncode == 0, r.stderr
    assert "lxdlib" in r.stdout and r.stdout.count("\n") > 50  # all of it, not a first buffer
    assert not (tmp_path / "python-shut-down").exists()


@pytest.mark.parametrize(("argv", "status", "stream", "text"), [
    (["--version"], 0, "stdout", "0.1.0\n"),  # as lxc: the number alone
    (["--help"], 0, "stdout", "usage: lxdlib"),
    # usage errors end with lxc's status 1 and its words (LXD 5.0.2's lxc, read off it)
    (["list", "--no-such-flag"], 1, "stderr", "Error: unknown flag: --no-such-flag\n"),
    (["list", "-z"], 1, "stderr", "Error: unknown shorthand flag: 'z' in -z\n"),
    (["lauch"], 1, "stderr", 'unknown command "lauch"'),
    # a global option's value missing at the end: a usage error, not an IndexError
    (["--root"], 1, "stderr", "Error: flag needs an argument: --root"),
])
def test_argparse_exits_keep_their_status_and_words(
        tmp_path: Path, argv: list[str], status: int, stream: str, text: str) -> None:
    r = entry(tmp_path, *argv)
    assert r.returncode == status, r.stderr
    assert text in getattr(r, stream)
    assert not (tmp_path / "python-shut-down").exists()


@pytest.mark.parametrize(("code", "status", "printed"), [
    (None, 0, ""), (0, 0, ""), (2, 2, ""), (256 + 3, 3, ""), ("bad input", 1, "bad input\n"),
])
def test_exit_status_as_python_gives_it(
        capsys: pytest.CaptureFixture[str], code: object, status: int, printed: str) -> None:
    assert exit_status(code) == status
    assert capsys.readouterr().err == printed


@pytest.mark.parametrize("argv", [["--version"], ["completion", "bash"], ["--help"]])
def test_a_closed_stdout_loses_the_output_quietly(tmp_path: Path, argv: list[str]) -> None:
    """Started with stdout closed (``>&-``), Python has no ``sys.stdout``: the output goes
    nowhere, as to /dev/null, and the command ends as it would have (it crashed on the flush)."""
    r = entry(tmp_path, *argv, stdout_closed=True)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
