"""CI runs the README's test command and nothing else (the project's rule): ``.ci/run`` does
nothing but go to the checkout's top and run the command the README gives for the whole
suite, word for word."""

from __future__ import annotations

import re
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]


def readme_test_command() -> str:
    found = re.findall(r"^# (\./setup\.sh test)\b", (TOP / "README.md").read_text(), re.M)
    assert len(found) == 1, found  # one test command, in the set-up block
    return found[0]


def test_ci_runs_the_readmes_test_command_alone() -> None:
    lines = [ln.strip() for ln in (TOP / ".ci" / "run").read_text().splitlines()]
    commands = [ln for ln in lines if ln and not ln.startswith("#")]
    assert commands == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', readme_test_command()]
