"""The seed article's commands (tests/seed_steps.py) run with ``lxdlib``, each output compared in
shape with what LXD 5.0.2's ``lxc`` printed for the same line (tests/data/lxd/seed/
recording.json, made by tests/data/lxd/record.py).

Known differences are listed with a reason in tests/data/lxd/seed/known-differences.json: the test
fails on a difference that is not listed (a regression, or a new gap) and on a listed one that no
longer occurs (fixed: take it off the list, which is the to-do).
"""

from __future__ import annotations

import json
import secrets
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import lxdlib
from tests.output_shape import differences, shape
from tests.seed_steps import STEPS

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]

DATA = Path(__file__).resolve().parents[1] / "data" / "lxd" / "seed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bridged(host: lxdlib.Host) -> Any:
    """The recording LXD's set-up on this root: a managed bridge with IPv4 only, as eth0 in the
    default profile, which has a description as ``lxdlib init`` gives it."""
    name = f"lxt{secrets.token_hex(3)}"
    host.networks.create(name, {"ipv4.address": "auto", "ipv4.nat": "false",
                                "ipv6.address": "none"})
    p = host.profiles.get("default")
    host.update_profile("default", description="Default lxdlib profile", devices={
        **p.devices, "eth0": {"type": "nic", "name": "eth0", "network": name}})
    try:
        yield host
    finally:
        # Through the CLI, as the steps changed the profile through it.
        for inst in host.instances.list():
            inst.delete(force=True)
        cli(host, "profile", "device", "remove", "default", "eth0")
        cli(host, "network", "delete", name)


def cli(host: lxdlib.Host, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root", str(host.paths.root),
                    *args], check=True, capture_output=True, timeout=120)


def wait_for_addresses(host: lxdlib.Host, timeout: float = 30) -> None:
    """Until every running instance has its DHCP lease, as it had in LXD's recording (which
    shows them in ``list`` and ``info``): the comparison is about shape, not DHCP's speed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(e.ipv4 for e in host.instances.list_state() if e.status == "Running"):
            return
        time.sleep(0.2)


def run_steps(host: lxdlib.Host, cwd: Path) -> dict[str, dict[str, Any]]:
    values = {"port": str(free_port()), "fp12": host.images["busybox"].fingerprint[:12]}
    results: dict[str, dict[str, Any]] = {}
    for step in STEPS:
        if step.before is not None:
            step.before(cwd)
        if step.id in ("list", "info"):
            wait_for_addresses(host)
        line = step.line.format(**values)
        stdin = step.stdin(results) if callable(step.stdin) else step.stdin
        argv = shlex.split(line)
        r = subprocess.run([sys.executable, "-m", "lxdlib.cli.main", "--root",
                            str(host.paths.root), *argv[1:]], capture_output=True, text=True,
                           input=stdin, cwd=cwd, timeout=180)
        results[step.id] = {"line": line, "exit_code": r.returncode, "stdout": r.stdout,
                            "stderr": r.stderr, "port": values["port"]}
    return results


def test_seed_outputs_have_lxds_shape(bridged: lxdlib.Host, tmp_path: Path) -> None:
    recording = json.loads((DATA / "recording.json").read_text())
    known: dict[str, list[dict[str, str]]] = json.loads(
        (DATA / "known-differences.json").read_text())["differences"]
    anywhere = {d["difference"] for d in known.get("*", [])}
    lxd_steps = {s["id"]: s for s in recording["steps"]}
    assert set(lxd_steps) == {s.id for s in STEPS}, "re-record: tests/data/lxd/record.py"
    work = tmp_path / "cwd"
    work.mkdir()
    ours = run_steps(bridged, work)

    new: list[str] = []
    gone: list[str] = []
    found: dict[str, list[str]] = {}
    for step in STEPS:
        lxd_shape = shape(lxd_steps[step.id], step.fmt, {recording["values"]["port"]: "<port>"})
        our_shape = shape(ours[step.id], step.fmt, {ours[step.id]["port"]: "<port>"})
        diffs = differences(lxd_shape, our_shape)
        found[step.id] = diffs
        listed = {d["difference"] for d in known.get(step.id, [])}
        new += [f"{step.id} ({ours[step.id]['line']}): {d}" for d in diffs
                if d not in listed | anywhere]
        gone += [f"{step.id}: {d}" for d in sorted(listed - set(diffs))]
    seen = {d for diffs in found.values() for d in diffs}
    gone += [f"*: {d}" for d in sorted(anywhere - seen)]
    report = json.dumps(found, indent=1)
    assert not new, ("differences from LXD not in known-differences.json:\n" + "\n".join(new)
                     + "\n\nall differences found:\n" + report)
    assert not gone, ("listed differences that no longer occur (remove them from "
                      "known-differences.json):\n" + "\n".join(gone))
