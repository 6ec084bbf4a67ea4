"""Profile re-application: time to apply one profile edit to 100 instances that use it (half of
them running), against applying the same cgroup writes by hand with python3-lxc.

    sudo .venv/bin/python bench/profiles.py [--instances 100]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roots import busybox_root

from lxdlib import runtime
from lxdlib.config import limits


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=100)
    args = ap.parse_args()
    # liblxc's names are global on a machine (its cgroups): this run's own
    prefix = f"bp{secrets.token_hex(2)}"
    with busybox_root("lxdlib-bench-", "4GiB") as host:
        host.profiles.create("web", {"limits.memory": "256MiB"}, {})
        t = time.perf_counter()
        insts = []
        for i in range(args.instances):
            inst = host.create("busybox", f"{prefix}{i}", profiles=["default", "web"])
            if i % 2 == 0:
                inst.start()
            insts.append(inst)
        setup = time.perf_counter() - t
        running = [i for i in insts if i.state == "RUNNING"]

        t = time.perf_counter()
        host.update_profile("web", config={"limits.memory": "192MiB", "limits.processes": "500"})
        lib = (time.perf_counter() - t) * 1000

        facts = host.facts()
        new = {"limits.memory": "128MiB", "limits.processes": "400"}
        writes = limits.live_settings(new, set(new), cgroup_version=facts.cgroup_version,
                                      host_cpus=facts.cpus, mem_total=facts.mem_total,
                                      swap_accounting=facts.swap_accounting)
        t = time.perf_counter()
        for inst in running:
            c = runtime.open_container(host.paths.lxcpath, inst.name)
            for key, value in writes:
                c.set_cgroup_item(key, value)
        raw = (time.perf_counter() - t) * 1000
        print(f"{args.instances} instances ({len(running)} running), set up in {setup:.1f} s")
        print(f"profile edit applied by lxdlib (validate, save, re-render every config, live "
              f"cgroup writes): {lib:.0f} ms ({lib / args.instances:.2f} ms per instance)")
        print(f"the same cgroup writes by hand on the running half only: {raw:.0f} ms "
              f"({raw / max(1, len(running)):.2f} ms per running instance)")
        print(f"ratio: {lib / raw:.2f}x")
        for inst in insts:
            inst.delete(force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
