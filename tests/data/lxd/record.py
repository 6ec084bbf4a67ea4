#!/usr/bin/env python3
"""Record LXD's output for every step of the seed script (tests/seed_steps.py) into
tests/data/lxd/seed/recording.json: stdout, stderr and exit code of each ``lxc`` line; with
``--suite cli``, of the everyday lines of tests/cli_steps.py into tests/data/lxd/cli/ (compared
by tests/integration/test_cli_shapes.py).

Needs a running LXD 5.0 initialised with tests/data/lxd/preseed.yaml and the busybox image
imported under the alias ``busybox`` (docs/testing.md says how). Not run in CI: the recording is
committed, and tests/integration/test_seed_shapes.py compares lxdlib's output with it.

    .venv/bin/python tests/data/lxd/record.py [--suite seed|cli] [--out PATH]

It deletes every LXD instance and the script's profiles and images before and after the run (the
LXD it talks to is the recording one, nothing else lives there) and restores the default profile;
the ``cli`` suite deletes only what its script names (instances, volumes, networks, pools).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

SUITE = importlib.import_module("tests.seed_steps")  # the script recorded (``--suite``)


def lxc(*argv: str, input: str | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["lxc", *argv], capture_output=True, text=True, input=input, cwd=cwd,
                          timeout=300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_addresses(timeout: float = 30) -> None:
    """Until every running instance has its DHCP lease, so that ``list`` and ``info`` show the
    addresses (the shape test waits the same way on lxdlib's side)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = json.loads(lxc("list", "--format", "json").stdout or "[]")
        if all(any(a["family"] == "inet" and a["scope"] == "global"
                   for nic in (i["state"]["network"] or {}).values() for a in nic["addresses"])
               for i in listed if i["status"] == "Running"):
            return
        time.sleep(0.2)


def clear(default_profile: str | None) -> None:
    """Remove what a run of the script leaves in LXD (also a half-finished earlier run)."""
    names = json.loads(lxc("list", "--format", "json").stdout or "[]")
    only = getattr(SUITE, "INSTANCES", None) if SUITE.__name__ != "tests.seed_steps" else None
    for inst in names:
        if only is None or inst["name"] in only:
            lxc("delete", "--force", inst["name"])
    for alias in SUITE.IMAGES:
        lxc("image", "delete", alias)
    for profile in SUITE.PROFILES:
        lxc("profile", "delete", profile)
    for volume in getattr(SUITE, "VOLUMES", ()):
        lxc("storage", "volume", "delete", "default", volume)
    for network in getattr(SUITE, "NETWORKS", ()):
        lxc("network", "delete", network)
    for pool in getattr(SUITE, "POOLS", ()):
        lxc("storage", "delete", pool)
    if default_profile is not None:
        lxc("profile", "edit", "default", input=default_profile)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", choices=("seed", "cli"), default="seed")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    global SUITE
    SUITE = importlib.import_module(f"tests.{args.suite}_steps")
    out_path = args.out or Path(__file__).parent / args.suite / "recording.json"
    version = lxc("version").stdout
    info = lxc("image", "info", "busybox")
    if info.returncode != 0:
        sys.exit("the busybox image is not in LXD (docs/testing.md: recording LXD's outputs)")
    fingerprint = json.loads(lxc("query", "/1.0/images/aliases/busybox").stdout)["target"]
    default_profile = lxc("profile", "show", "default").stdout
    clear(None)
    port = free_port()
    values = {"port": str(port), "fp12": fingerprint[:12]}
    results: dict[str, dict[str, object]] = {}
    out: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="lxdrec-") as tmp:
        cwd = Path(tmp)
        try:
            for step in SUITE.STEPS:
                if step.before is not None:
                    step.before(cwd)
                if step.id in ("list", "info"):
                    wait_for_addresses()
                line = step.line.format(**values)
                stdin = step.stdin(results) if callable(step.stdin) else step.stdin
                argv = shlex.split(line)
                r = lxc(*argv[1:], input=stdin, cwd=cwd)
                rec: dict[str, object] = {"id": step.id, "article": step.article, "line": line,
                                          "exit_code": r.returncode, "stdout": r.stdout,
                                          "stderr": r.stderr}
                results[step.id] = rec
                out.append(rec)
                print(f"{r.returncode:3d} {line}", file=sys.stderr)
        finally:
            clear(default_profile)
    doc = {"lxd_version": version.strip(), "fingerprint": fingerprint, "values": values,
           "not_recorded": SUITE.NOT_RECORDED, "steps": out}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
