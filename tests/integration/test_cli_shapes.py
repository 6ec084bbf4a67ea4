"""Everyday command lines (tests/cli_steps.py) run with ``lxdlib``, each compared with what LXD
5.0.2's ``lxc`` printed for the same line (tests/data/lxd/cli/recording.json, made by
``tests/data/lxd/record.py --suite cli``): the output's shape as test_seed_shapes.py compares it,
and more strictly, the error line word for word and the key order of YAML output (scripts match
LXD's error texts; people read the YAML in LXD's order).

Known differences are listed with a reason in tests/data/lxd/cli/known-differences.json: the test
fails on a difference that is not listed and on a listed one that no longer occurs.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import lxdlib
from tests.cli_steps import STEPS
from tests.output_shape import YAML, differences, normalise, shape

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]

DATA = Path(__file__).resolve().parents[1] / "data" / "lxd" / "cli"


def key_order(text: str) -> list[str]:
    """Each mapping's keys in the order the YAML writes them, one line per mapping (its path,
    then its keys), for the mappings whose keys are fixed fields (a ``config`` map's keys are
    Go's sorted keys on both sides, and compared as a shape already)."""
    out: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            if path.rsplit(".", 1)[-1] not in ("config", "used by"):
                out.append(f"{path or '(top)'}: {', '.join(map(str, value))}")
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, list) and value:  # a list's items: the first one's
            walk(value[0], f"{path}[]")
    try:
        walk(yaml.safe_load(text), "")
    except yaml.YAMLError:
        return ["(not YAML)"]
    return out


def run_steps(host: lxdlib.Host, cwd: Path) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for step in STEPS:
        argv = shlex.split(step.line)
        stdin = step.stdin if isinstance(step.stdin, str) else None
        r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                            str(host.paths.root), *argv[1:]], capture_output=True, text=True,
                           input=stdin if stdin is not None else "", cwd=cwd, timeout=180)
        results[step.id] = {"line": step.line, "exit_code": r.returncode, "stdout": r.stdout,
                            "stderr": r.stderr}
    return results


def step_differences(lxd: dict[str, Any], ours: dict[str, Any], fmt: str) -> list[str]:
    diffs = differences(shape(lxd, fmt), shape(ours, fmt))
    errors = [normalise(str(x["stderr"])).replace("lxdlib", "lxc").strip() for x in (lxd, ours)]
    if errors[0] != errors[1]:
        diffs.append(f"stderr: LXD {errors[0]!r}, lxdlib {errors[1]!r}")
    if fmt == YAML and lxd["exit_code"] == ours["exit_code"] == 0:
        a, b = key_order(str(lxd["stdout"])), key_order(str(ours["stdout"]))
        if a != b:
            diffs.append(f"key order: LXD {a}, lxdlib {b}")
    return diffs


def test_cli_outputs_are_lxds(host: lxdlib.Host, tmp_path: Path) -> None:
    recording = json.loads((DATA / "recording.json").read_text())
    known: dict[str, list[dict[str, str]]] = json.loads(
        (DATA / "known-differences.json").read_text())["differences"]
    lxd_steps = {s["id"]: s for s in recording["steps"]}
    assert set(lxd_steps) == {s.id for s in STEPS}, "re-record: record.py --suite cli"
    ours = run_steps(host, tmp_path)
    new: list[str] = []
    gone: list[str] = []
    found: dict[str, list[str]] = {}
    for step in STEPS:
        diffs = step_differences(lxd_steps[step.id], ours[step.id], step.fmt)
        found[step.id] = diffs
        listed = {d["difference"] for d in known.get(step.id, [])}
        new += [f"{step.id} ({step.line}): {d}" for d in diffs if d not in listed]
        gone += [f"{step.id}: {d}" for d in sorted(listed - set(diffs))]
    report = json.dumps({k: v for k, v in found.items() if v}, indent=1)
    assert not new, ("differences from LXD not in known-differences.json:\n" + "\n".join(new)
                     + "\n\nall differences found:\n" + report)
    assert not gone, ("listed differences that no longer occur (remove them from "
                      "known-differences.json):\n" + "\n".join(gone))
