"""File transfer speed: ``inst.files`` put/get of one big file, running and stopped instance.

    sudo .venv/bin/python bench/files.py [--size-mib 512]

Prints MB/s for each direction. The data streams through the helper inside the instance in
1 MiB chunks (never whole in memory); the peak RSS of this process is printed to show it.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lxdlib
from lxdlib.imagestore.busybox import build_busybox_image
from tests.cleanup import teardown_root


def measure(inst: lxdlib.Instance, src: Path, out: Path, size: int) -> dict[str, float]:
    result = {}
    t = time.perf_counter()
    with open(src, "rb") as f:
        inst.files.put("/root/big", f)
    result["push"] = size / (time.perf_counter() - t) / 1e6
    t = time.perf_counter()
    with open(out, "wb") as f:
        inst.files.get_to("/root/big", f)
    result["pull"] = size / (time.perf_counter() - t) / 1e6
    if out.stat().st_size != size:
        raise SystemExit(f"pulled {out.stat().st_size} bytes, expected {size}")
    inst.files.delete("/root/big")
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    args = ap.parse_args()
    size = args.size_mib << 20
    base = Path(tempfile.mkdtemp(prefix="lxdlib-bench-", dir="/var/tmp"))
    base.chmod(0o711)
    root = base / "root"
    root.mkdir()
    try:
        host = lxdlib.Host(root, create=True)
        pool_gib = max(2, 3 * args.size_mib // 1024 + 1)
        host.create_pool("default", "btrfs", {"size": f"{pool_gib}GiB"})
        host.profiles.create("default", {}, {"root": {"type": "disk", "path": "/",
                                                      "pool": "default"}})
        host.images.import_file(build_busybox_image(base / "busybox.tar.gz"), aliases=["bb"])
        inst = host.launch("bb", "bench")
        src = base / "src"
        with open(src, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(args.size_mib):
                f.write(block)
        for state in ("running", "stopped"):
            if state == "stopped":
                inst.stop(force=True)
            r = measure(inst, src, base / "out", size)
            print(f"{state:8} push {r['push']:7.0f} MB/s   pull {r['pull']:7.0f} MB/s")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {rss:.0f} MiB for a {args.size_mib} MiB file")
    finally:
        teardown_root(root)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
