"""Profile re-application: time to apply one profile edit to 100 instances that use it (half of
them running), against applying the same cgroup writes by hand with python3-lxc.

    sudo .venv/bin/python bench/profiles.py [--instances 100]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lxdlib
from lxdlib import runtime
from lxdlib.config import limits
from tests.cleanup import teardown_root


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=100)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lxdlib-bench-", dir="/var/tmp"))
    tmp.chmod(0o711)
    root = tmp / "root"
    try:
        host = lxdlib.Host(root, create=True)
        host.create_pool("default", "btrfs", {"size": "4GiB"})
        host.profiles.create("default", {}, {"root": {"type": "disk", "path": "/",
                                                      "pool": "default"}})
        host.profiles.create("web", {"limits.memory": "256MiB"}, {})
        host.images.build_busybox("busybox")
        t = time.perf_counter()
        insts = []
        for i in range(args.instances):
            inst = host.create("busybox", f"c{i}", profiles=["default", "web"])
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
    finally:
        teardown_root(root)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
