"""Image unpack speed: plain ``tar -xzf`` against lxdlib's import + safe unpack.

Builds a ~200 MB test image (half random, half compressible files, gzip) in a temporary
directory, then times, as the median of 3 runs each:

* ``tar -xzf image -C dir`` (the floor: what GNU tar alone needs), and
* ``ImageStore.import_file`` (copy + sha256 + metadata check) and ``ImageStore.unpack``
  (GNU tar with dropped capabilities + post-checks).

With ``--launch`` it also builds a Debian image with debootstrap (needs the Debian mirror) and
compares, against the busybox image, the first launch (image unpacked into the pool) with later
launches (a snapshot of the cached image volume): time for ``launch()`` to return, and time until
the system is up (busybox: ``exec`` works; Debian: ``systemctl is-system-running --wait``).

Run as root: ``.venv/bin/python bench/images.py [--size-mb 200] [--dir /var/tmp] [--launch]``.
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

import lxdlib
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


LAUNCHES = 3


def _booted(inst: lxdlib.Instance, systemd: bool) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if systemd:
            r = inst.exec(["timeout", "60", "systemctl", "is-system-running", "--wait"])
            if r.stdout.strip() in (b"running", b"degraded"):
                return
        elif inst.exec(["true"]).returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{inst.name} did not come up")


def bench_launch(directory: str, cache_dir: str | None) -> None:
    """First and later launches of the debootstrap image against the busybox image."""
    from lxdlib.imagestore.busybox import build_busybox_image
    from lxdlib.imagestore.debootstrap import build_debian_image
    from tests.cleanup import teardown_root
    base = Path(tempfile.mkdtemp(prefix="lxdlib-bench-launch-", dir=directory))
    base.chmod(0o711)  # the containers' root user must reach its rootfs
    root = base / "root"
    try:
        t = time.perf_counter()
        debian = build_debian_image(base / "debian.tar.xz", compression="xz",
                                    cache_dir=cache_dir)
        print(f"\ndebian image: {debian.stat().st_size / 1e6:.0f} MB xz, built "
              f"({'cached ' if cache_dir else ''}debootstrap + pack) in "
              f"{time.perf_counter() - t:.1f} s")
        busybox = build_busybox_image(base / "busybox.tar.gz")
        root.mkdir()
        _launches(root, busybox, debian)
    finally:
        if root.exists():
            teardown_root(root)
        shutil.rmtree(base, ignore_errors=True)


def _launches(root: Path, busybox: Path, debian: Path) -> None:
    host = lxdlib.Host(root, create=True)
    host.create_pool("default", "btrfs", {"size": "3GiB"})
    host.profiles.create("default", {}, {"root": {"type": "disk", "path": "/",
                                                  "pool": "default"}})
    host.images.import_file(busybox, aliases=["busybox"])
    host.images.import_file(debian, aliases=["debian"])
    print(f"{'image':8} {'launch':>20} {'launch() s':>10} {'up s':>8}")
    for alias in ("busybox", "debian"):
        for n in range(1 + LAUNCHES):
            t0 = time.perf_counter()
            inst = host.launch(alias, f"{alias}{n}")
            t1 = time.perf_counter()
            _booted(inst, systemd=alias == "debian")
            t2 = time.perf_counter()
            kind = "first (unpack)" if n == 0 else f"later #{n} (snapshot)"
            print(f"{alias:8} {kind:>20} {t1 - t0:10.2f} {t2 - t0:8.2f}")
            inst.delete(force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--dir", default="/var/tmp", help="where the temporary files go")
    parser.add_argument("--launch", action="store_true",
                        help="also time launches of a debootstrap image against busybox")
    parser.add_argument("--cache-dir", help="keep/reuse the debootstrap output here")
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
        if args.launch:
            bench_launch(args.dir, args.cache_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
