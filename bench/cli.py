"""The ``lxdlib`` command, verb by verb, against ``python3 -c pass`` and LXD's ``lxc`` client.

    sudo .venv/bin/python bench/cli.py [--rounds 11] [--exe .venv/bin/lxdlib] [--no-lxd]
                                       [--before /other/checkout/.venv/bin/lxdlib]

Each figure is a whole command as a user runs it: a new process, from its start to its exit,
with Python's bytecode cache on (as an installed lxdlib has it: ``setup.sh`` compiles it; this
machine's environment may set ``PYTHONDONTWRITEBYTECODE``, which the commands here do not get).
What is timed, the median of ``--rounds`` rounds, every verb once per round, lxdlib's and
``lxc``'s run in turn (interleaved, so that a machine's drift hits both):

- ``python3 -c "import argparse, json, pathlib"``: the imports any verb that opens a root
  needs, with nothing of lxdlib (the floor of a Python command, printed in the header);
- ``--version``, ``--help``, ``list`` of an empty root (lxc: a name filter matching nothing);
- ``list`` of 3 running instances (both: a name filter matching those 3);
- on one more instance: ``launch``, ``exec -- true``, ``info``, ``config set limits.memory``,
  ``snapshot``, ``restore``, ``copy --instance-only`` (the copy is deleted, untimed),
  ``stop --force``, ``start``, ``delete --force``.

The lxdlib side makes its own roots under /var/tmp (a loop-backed btrfs pool, the busybox
image built offline, a default profile with only a root disk). The lxc side runs when ``lxc`` is
installed and ``lxc image info busybox`` works, on LXD's ``default`` pool with no profile
(``--no-profiles -s default``: a root disk, no NIC, as on the lxdlib side). ``--before`` adds
a column for another lxdlib command (an older checkout's), run in turn with the others, on
instances of its own in the same root. Everything made is removed at the end, also on
failure. Container names are global on a machine: run it under the integration tests' lock
(``flock /work/wt/itest.lock …``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lxdlib
from tests.cleanup import teardown_root

FEW = 3
FLOOR = "import argparse, json, pathlib"


def env() -> dict[str, str]:
    """The commands' environment: bytecode cache on, the rest as this process has it."""
    e = dict(os.environ)
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    return e


def timed(argv: list[str], environ: dict[str, str]) -> float:
    """Milliseconds of one run of ``argv``; a failed run stops the benchmark."""
    t = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, env=environ)
    ms = (time.perf_counter() - t) * 1000
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.decode()[-500:]}")
    return ms


def lxd_ready() -> bool:
    return bool(shutil.which("lxc")) and subprocess.run(
        ["lxc", "image", "info", "busybox"], capture_output=True).returncode == 0


def make_root(path: Path, populated: bool) -> lxdlib.Host:
    host = lxdlib.Host(path, create=True)
    if populated:
        host.create_pool("default", "btrfs", {"size": "1GiB"})
        host.profiles.create("default", {}, {"root": {"type": "disk", "path": "/",
                                                      "pool": "default"}})
        host.images.build_busybox("busybox")
    return host


def verbs(n: str) -> list[tuple[str, list[str]]]:
    """The instance verbs of one round, in order, on instance ``n`` (words after the
    command; ``{lxd}`` marks where lxc takes its extra launch options)."""
    return [
        ("launch", ["launch", "busybox", n, "{lxd}"]),
        ("exec -- true", ["exec", n, "--", "true"]),
        ("info", ["info", n]),
        ("config set", ["config", "set", n, "limits.memory", "128MiB"]),
        ("snapshot", ["snapshot", n, "snap0"]),
        ("restore", ["restore", n, "snap0"]),
        ("copy", ["copy", n, f"{n}-copy", "--instance-only"]),
        ("stop --force", ["stop", "--force", n]),
        ("start", ["start", n]),
        ("delete --force", ["delete", "--force", n]),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--exe", default=str(Path(sys.executable).parent / "lxdlib"))
    ap.add_argument("--no-lxd", action="store_true", help="lxdlib's column only")
    ap.add_argument("--before", help="another lxdlib command to time beside --exe")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: lxdlib manages containers, loop devices and mounts")
    environ = env()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(lxdlib.__file__).parent)],
                   check=True, capture_output=True, env=environ)
    lxd = not a.no_lxd and lxd_ready()
    tag = secrets.token_hex(3)
    prefix = f"clib{tag}"
    tmp = Path(tempfile.mkdtemp(prefix="lxdlib-bench-cli-", dir="/var/tmp"))
    tmp.chmod(0o711)  # unprivileged containers below it must reach their rootfs
    empty, full = tmp / "empty", tmp / "full"
    lx = [a.exe]
    py = [sys.executable, "-c", "pass"]
    # what a verb that opens a root cannot do without in Python: the parser, the records'
    # format and paths (their imports alone, with ``re``, ``enum`` and ``gettext``)
    py_floor = [sys.executable, "-c", "import argparse, json, pathlib"]
    times: dict[str, dict[str, list[float]]] = {}
    lxd_made: list[str] = []

    def both(label: str, ours: list[str], theirs: list[str] | None,
             old: list[str] | None = None) -> None:
        """One run of each side; ``old``: the ``--before`` command's words (by default
        ``ours``'s), on its own instance where the verb changes one."""
        row = times.setdefault(label, {"lxdlib": [], "lxc": [], "before": []})
        if a.before:
            row["before"].append(timed([a.before, *(old or ours)], environ))
        row["lxdlib"].append(timed([*lx, *ours], environ))
        if lxd and theirs is not None:
            row["lxc"].append(timed(theirs, environ))

    try:
        make_root(empty, populated=False)
        host = make_root(full, populated=True)
        for i in range(FEW):
            host.launch("busybox", f"{prefix}f{i}")
        if lxd:
            for i in range(FEW):
                lxd_made.append(f"{prefix}f{i}")
                subprocess.run(["lxc", "launch", "busybox", f"{prefix}f{i}", "--no-profiles",
                                "-s", "default"], check=True, capture_output=True)
        for r in range(a.rounds):
            base_row = times.setdefault("python3 -c pass", {"lxdlib": [], "lxc": [], "before": []})
            base_row["lxdlib"].append(timed(py, environ))
            floor_row = times.setdefault(FLOOR, {"lxdlib": [], "lxc": [], "before": []})
            floor_row["lxdlib"].append(timed(py_floor, environ))
            both("--version", ["--version"], ["lxc", "--version"])
            both("--help", ["--help"], ["lxc", "--help"])
            both("list (empty)", ["--root", str(empty), "list", prefix],
                 ["lxc", "list", f"{prefix}none"])
            both(f"list ({FEW} running)", ["--root", str(full), "list", f"{prefix}f"],
                 ["lxc", "list", f"{prefix}f"])
            n = f"{prefix}r{r}"
            lxd_made += [n, f"{n}-copy"]
            for (label, words), (_, old) in zip(verbs(n), verbs(f"{n}b"), strict=True):
                theirs = ["lxc", *[w for w in words if w != "{lxd}"]]
                if "{lxd}" in words:
                    theirs += ["--no-profiles", "-s", "default"]
                both(label, ["--root", str(full), *[w for w in words if w != "{lxd}"]], theirs,
                     ["--root", str(full), *[w for w in old if w != "{lxd}"]])
                if label == "copy":
                    for name in ([n, f"{n}b"] if a.before else [n]):
                        timed([*lx, "--root", str(full), "delete", f"{name}-copy"], environ)
                    if lxd:
                        timed(["lxc", "delete", f"{n}-copy"], environ)
    finally:
        teardown_root(full)
        teardown_root(empty)
        shutil.rmtree(tmp, ignore_errors=True)
        for name in lxd_made if lxd else []:
            subprocess.run(["lxc", "delete", "--force", name], capture_output=True)

    base = statistics.median(times["python3 -c pass"]["lxdlib"])
    print(f"median ms of {a.rounds} interleaved rounds; bytecode cached; "
          f"`python3 -c pass` ({sys.executable}): {base:.1f} ms; "
          f"`python3 -c \"{FLOOR}\"`: {statistics.median(times[FLOOR]['lxdlib']):.1f} ms")
    head = f"{'verb':<20}" + (f"{'before':>9}" if a.before else "") + f"{'lxdlib':>9}{'/pass':>7}"
    print(head + (f"{'lxc':>9}{'lxdlib/lxc':>12}" if lxd else ""))
    for label, row in times.items():
        if label in ("python3 -c pass", FLOOR):
            continue
        ours = statistics.median(row["lxdlib"])
        line = f"{label:<20}"
        if a.before:
            line += f"{statistics.median(row['before']):>9.1f}"
        line += f"{ours:>9.1f}{ours / base:>6.1f}x"
        if lxd and row["lxc"]:
            lxc_ms = statistics.median(row["lxc"])
            line += f"{lxc_ms:>9.1f}{ours / lxc_ms:>11.2f}x"
        print(line)
    if not lxd:
        print("(no `lxc` with a busybox image here: LXD's column is left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
