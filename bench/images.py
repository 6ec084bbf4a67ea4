"""Image unpack speed: plain ``tar -xzf`` against lxdlib's import + safe unpack.

Builds a ~200 MB test image (half random, half compressible files, gzip) in a temporary
directory, then times, as the median of 3 runs each:

* ``tar -xzf image -C dir`` (the floor: what GNU tar alone needs), and
* ``ImageStore.import_file`` (copy + sha256 + metadata check) and ``ImageStore.unpack``
  (GNU tar with dropped capabilities + post-checks).

Run as root: ``.venv/bin/python bench/images.py [--size-mb 200] [--dir /var/tmp]``.
Everything it makes is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lxdlib.imagestore import ImageStore
from lxdlib.state import Paths

RUNS = 3


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children: steadier than wall time on
    a shared machine, and it counts tar, gzip and our Python work alike."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


def build_image(work: Path, size_mb: int) -> Path:
    """Half random bytes in 2 MiB files, half compressible text in 64 KiB files, as a rootfs."""
    stage = work / "stage"
    rootfs = stage / "rootfs"
    (rootfs / "random").mkdir(parents=True)
    (rootfs / "text").mkdir()
    (rootfs / "tmp").mkdir(mode=0o1777)
    os.chmod(rootfs / "tmp", 0o1777)
    (stage / "metadata.yaml").write_text(
        "architecture: x86_64\ncreation_date: 1700000000\nproperties: {os: bench}\n")
    half = size_mb * 1024 * 1024 // 2
    for i in range(max(1, half // (2 << 20))):
        (rootfs / "random" / f"r{i:04d}").write_bytes(os.urandom(2 << 20))
    line = b"the quick brown fox jumps over the lazy dog %08d\n"
    text_size = 64 * 1024
    for i in range(max(1, half // text_size)):
        sub = rootfs / "text" / f"d{i // 256:03d}"
        sub.mkdir(exist_ok=True)
        body = b"".join(line % (i * 2000 + n) for n in range(text_size // len(line % 0)))
        (sub / f"t{i:05d}.txt").write_bytes(body)
    image = work / "bench.tar.gz"
    subprocess.run(["tar", "-czf", str(image), "-C", str(stage), "metadata.yaml", "rootfs"],
                   check=True)
    shutil.rmtree(stage)
    return image


def time_tar(image: Path, work: Path) -> tuple[float, float]:
    """(wall, cpu) seconds of one ``tar -xzf``."""
    dest = work / "tar-dest"
    dest.mkdir()
    try:
        os.sync()
        c, t = cpu_seconds(), time.perf_counter()
        subprocess.run(["tar", "-xzf", str(image), "-C", str(dest)], check=True)
        return time.perf_counter() - t, cpu_seconds() - c
    finally:
        shutil.rmtree(dest)


def time_lxdlib(image: Path, work: Path) -> tuple[float, float, float]:
    """(import wall, unpack wall, import + unpack cpu) seconds."""
    root = work / "lxdlib-root"
    dest = work / "lxdlib-dest"
    dest.mkdir()
    try:
        store = ImageStore(Paths.at(root))
        os.sync()
        c, t0 = cpu_seconds(), time.perf_counter()
        rec = store.import_file(image)
        t1 = time.perf_counter()
        store.unpack(rec.fingerprint, dest)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, cpu_seconds() - c
    finally:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--dir", default="/var/tmp", help="where the temporary files go")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (unpack restores ownership)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="lxdlib-bench-images-", dir=args.dir))
    try:
        t = time.perf_counter()
        image = build_image(work, args.size_mb)
        print(f"test image: {image.stat().st_size / 1e6:.0f} MB gzip "
              f"({args.size_mb} MB unpacked), built in {time.perf_counter() - t:.1f} s")
        tar_times, tar_cpu, import_times, unpack_times, lxd_cpu = [], [], [], [], []
        for _ in range(RUNS):
            wall, cpu = time_tar(image, work)
            tar_times.append(wall)
            tar_cpu.append(cpu)
            imp, unp, cpu = time_lxdlib(image, work)
            import_times.append(imp)
            unpack_times.append(unp)
            lxd_cpu.append(cpu)
        tar = statistics.median(tar_times)
        imp = statistics.median(import_times)
        unp = statistics.median(unpack_times)
        both = statistics.median(i + u for i, u in zip(import_times, unpack_times, strict=True))
        print(f"tar -xzf                 {tar * 1000:8.0f} ms")
        print(f"ImageStore.import_file   {imp * 1000:8.0f} ms  (copy + sha256 + fsync + metadata)")
        print(f"ImageStore.unpack        {unp * 1000:8.0f} ms  ({unp / tar:.2f}x tar)")
        print(f"import + unpack          {both * 1000:8.0f} ms  ({both / tar:.2f}x tar)")
        tc, lc = statistics.median(tar_cpu), statistics.median(lxd_cpu)
        print(f"CPU time: tar {tc * 1000:.0f} ms, import + unpack {lc * 1000:.0f} ms "
              f"({lc / tc:.2f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
