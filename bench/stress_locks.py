"""Lock stress: several ``lxdlib`` processes at once on one root, each running random verbs
that take several locks (copy a→b beside b→a, move, profile edits beside starts and profile
adds, volume attach beside restore, isolated creates, snapshots), some killed by ``kill -9``
mid-way. Afterwards nothing may hang, every record must match the pools and the live state
(``tests/integration/invariants``), no two isolated instances may share an id block, and every
running instance must run with its profiles' content.

    sudo .venv/bin/python bench/stress_locks.py [--workers 6] [--seconds 120] [--kill 0.25]

A verb still running after ``--hang`` seconds is reported with its Python stack (``py-spy
dump`` when installed) and counts as a failure: a deadlock shows as the two lock orders in
the stacks. Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roots import busybox_root

import lxdlib
from lxdlib import runtime
from tests.integration import invariants

LXDLIB = str(Path(sys.executable).parent / "lxdlib")


def verbs(names: list[str], w: int, k: int, rnd: random.Random) -> list[str]:
    a, b = rnd.sample(names, 2)
    vol = rnd.choice(["sv0", "sv1"])
    return rnd.choice([
        ["copy", a, b], ["copy", b, a], ["move", a, b], ["delete", "-f", b],
        ["launch", "busybox", b], ["init", "busybox", b, "-c", "security.idmap.isolated=true"],
        ["start", a], ["stop", "-f", a], ["restart", "-f", a],
        ["snapshot", a, f"s{w}-{k}"], ["restore", a, f"s{w}-{k - 1}"],
        ["config", "set", a, f"user.w{w}", str(k)],
        ["profile", "add", a, "sp"], ["profile", "remove", a, "sp"],
        ["profile", "set", "sp", "limits.processes", str(100 + k)],
        ["profile", "device", "add", "sp", f"d{w}", "none"],
        ["profile", "device", "remove", "sp", f"d{w}"],
        ["storage", "volume", "attach", "default", vol, a, f"/mnt/{vol}"],
        ["storage", "volume", "detach", "default", vol, a],
        ["storage", "volume", "snapshot", "default", vol, f"s{w}-{k}"],
        ["storage", "volume", "restore", "default", vol, f"s{w}-{k - 1}"],
        ["storage", "volume", "set", "default", vol, f"user.w{w}", str(k)],
    ])


def worker(job: tuple[str, list[str], int, float, float, float]) -> dict[str, object]:
    root, names, w, seconds, kill, hang = job
    env = {**os.environ, "LXDLIB_ROOT": root}
    rnd = random.Random(w * 7919 + time.time_ns())
    end = time.monotonic() + seconds
    out: dict[str, object] = {"runs": 0, "kills": 0, "hangs": [], "untyped": []}
    k = 0
    while time.monotonic() < end:
        k += 1
        argv = verbs(names, w, k, rnd)
        p = subprocess.Popen([LXDLIB, *argv], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        if rnd.random() < kill:
            time.sleep(rnd.uniform(0.05, 1.0))
            if p.poll() is None:
                p.kill()
                out["kills"] = int(str(out["kills"])) + 1
        try:
            _, err = p.communicate(timeout=hang)
        except subprocess.TimeoutExpired:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            stack = (subprocess.run([spy, "dump", "--pid", str(p.pid)], capture_output=True,
                                    text=True).stdout if os.path.exists(spy) else "")
            p.kill()
            p.communicate()
            out["hangs"].append({"argv": argv, "stack": stack})  # type: ignore[attr-defined]
            continue
        out["runs"] = int(str(out["runs"])) + 1
        if p.returncode > 0 and "Traceback" in err:
            out["untyped"].append({"argv": argv, "err": err[-1500:]})  # type: ignore[attr-defined]
    return out


def check(host: lxdlib.Host) -> list[str]:
    """What must hold after the run, as messages of what did not."""
    failures = []
    for name, fn in (("records", invariants.check), ("live", invariants.check_live)):
        try:
            fn(host)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    blocks: dict[str, list[str]] = {}
    for inst in host.instances.list():
        cfg = inst.config
        if cfg.get("security.idmap.isolated") == "true":
            blocks.setdefault(cfg["volatile.idmap.base"], []).append(inst.name)
        if inst.state == "RUNNING" and "sp" in inst.profiles:
            want = inst.expanded_config.get("limits.processes", "max")
            live = runtime.cgroup_get(inst.handle(), "pids.max").strip()
            if live != want:
                failures.append(f"{inst.name}: pids.max {live}, its profiles say {want}")
    failures += [f"id block {b} shared by {n}" for b, n in blocks.items() if len(n) > 1]
    return failures


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--kill", type=float, default=0.25, help="share of verbs killed mid-way")
    ap.add_argument("--hang", type=float, default=30, help="seconds that count as a hang")
    ap.add_argument("--prefix", default="st", help="of the instance names (liblxc's names are "
                    "global on a machine)")
    args = ap.parse_args()
    with busybox_root("lxdlib-stress-", "4GiB") as host:
        root = host.paths.root
        host.profiles.create("sp")
        for v in ("sv0", "sv1"):
            host.volumes.create(f"default/{v}")
        names = [f"{args.prefix}{i}" for i in range(5)]
        for n in names[:3]:
            host.launch("busybox", n, profiles=["default", "sp"])
        with Pool(args.workers) as pool:
            results = pool.map(worker, [(str(root), names, w, args.seconds, args.kill, args.hang)
                                        for w in range(args.workers)])
        fresh = lxdlib.Host(root)
        failures = check(fresh)
        for r in results:
            failures += [f"hang: {h['argv']}\n{h['stack']}" for h in r["hangs"]]  # type: ignore[attr-defined]
            failures += [f"untyped error: {u['argv']}\n{u['err']}" for u in r["untyped"]]  # type: ignore[attr-defined]
        print(json.dumps({"verbs": sum(int(str(r["runs"])) for r in results),
                          "killed": sum(int(str(r["kills"])) for r in results),
                          "failures": len(failures)}))
        for f in failures:
            print(f)
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
