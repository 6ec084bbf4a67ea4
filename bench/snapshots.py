"""Snapshot, restore and copy speed: lxdlib's API against the raw driver work (btrfsutil calls,
``zfs`` commands) on btrfs and ZFS, and on a 500 MB rootfs against busybox's (copy-on-write
makes them cost the same).

    sudo .venv/bin/python bench/snapshots.py [--rounds 15] [--big-mb 500] [--no-zfs]

Prints the median milliseconds of each operation and the ratio to the raw floor (the driver
work plus one durable record write, which any tool that remembers its snapshots needs). The
instance is stopped (a restore of a running one adds a stop and a start: see
bench/lifecycle.py).
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
from collections.abc import Callable
from pathlib import Path

import btrfsutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lxdlib
from lxdlib.state import atomic_write
from lxdlib.storage import ensure_zfs_daemon, stop_zfs_daemon
from lxdlib.storage.loop import rename_exchange
from tests.cleanup import teardown_root


def median_ms(fn: Callable[[int], object], rounds: int) -> float:
    times = []
    for i in range(rounds):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def note(work: Path) -> None:
    """What any tool must add to the driver work: one durable record of what it did."""
    atomic_write(work / "record.yaml", b"name: c\nsnapshots: [s0]\n")


def raw_btrfs(pool_base: Path, live: Path, rounds: int) -> dict[str, float]:
    """The least work: a read-only snapshot; a restore by clone + exchange + delete; a copy by
    a writable snapshot; each followed by one durable record write."""
    work = pool_base / "raw"
    work.mkdir()
    snaps = work / "snaps"
    snaps.mkdir()

    def snapshot(i: int) -> None:
        btrfsutil.create_snapshot(live, snaps / f"s{i}", read_only=True)
        note(work)

    out = {"snapshot": median_ms(snapshot, rounds)}
    raw_live = work / "live"
    btrfsutil.create_snapshot(live, raw_live)

    def restore(i: int) -> None:
        tmp = work / f"tmp{i}"
        btrfsutil.create_snapshot(snaps / "s0", tmp)
        rename_exchange(tmp, raw_live)
        btrfsutil.delete_subvolume(tmp)
        note(work)

    out["restore"] = median_ms(restore, rounds)

    def copy(i: int) -> None:
        btrfsutil.create_snapshot(live, work / f"c{i}")
        note(work)

    out["copy"] = median_ms(copy, rounds)
    return out


def raw_zfs(dataset: str, work: Path, rounds: int) -> dict[str, float]:
    def zfs(*args: str) -> None:
        subprocess.run(["zfs", *args], check=True, capture_output=True)
        note(work)

    out = {"snapshot": median_ms(lambda i: zfs("snapshot", f"{dataset}@raw{i}"), rounds)}
    out["restore"] = median_ms(lambda i: zfs("rollback", "-r", f"{dataset}@raw0"), rounds)

    def copy(i: int) -> None:
        """A live dataset is sent from a snapshot: make one, send it, drop it on both sides."""
        subprocess.run(["zfs", "snapshot", f"{dataset}@rawcopy"], check=True)
        with subprocess.Popen(["zfs", "send", f"{dataset}@rawcopy"],
                              stdout=subprocess.PIPE) as send:
            subprocess.run(["zfs", "receive", f"{dataset}-raw{i}"], stdin=send.stdout,
                           check=True, capture_output=True)
        for ds in (dataset, f"{dataset}-raw{i}"):
            subprocess.run(["zfs", "destroy", f"{ds}@rawcopy"], check=True)
        note(work)

    out["copy"] = median_ms(copy, rounds)
    return out


def ours(host: lxdlib.Host, name: str, rounds: int, tag: str) -> dict[str, float]:
    inst = host.instances[name]
    out = {"snapshot": median_ms(lambda i: inst.snapshots.create(f"{tag}{i}"), rounds)}
    out["restore"] = median_ms(lambda i: inst.snapshots.restore(f"{tag}{rounds - 1}"), rounds)
    out["copy"] = median_ms(lambda i: host.copy(name, f"{name}-{tag}{i}", instance_only=True),
                            rounds)
    for i in range(rounds):
        host.instances[f"{name}-{tag}{i}"].delete()
    return out


def report(title: str, mine: dict[str, float], floor: dict[str, float]) -> None:
    print(f"\n{title}")
    print(f"  {'operation':<10} {'lxdlib ms':>10} {'floor ms':>10} {'ratio':>7}")
    for op, ms in mine.items():
        print(f"  {op:<10} {ms:>10.1f} {floor[op]:>10.1f} {ms / floor[op]:>7.2f}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--big-mb", type=int, default=500)
    ap.add_argument("--no-zfs", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="lxdlib-bench-", dir="/var/tmp"))
    base.chmod(0o711)
    root = base / "root"
    root.mkdir()
    zfs_pid = None
    try:
        from lxdlib.imagestore.busybox import build_busybox_image
        host = lxdlib.Host(root, create=True)
        host.create_pool("default", "btrfs", {"size": f"{args.big_mb * 3 + 1024}MiB"})
        host.profiles.create("default", {}, {"root": {"type": "disk", "path": "/",
                                                      "pool": "default"}})
        host.images.import_file(build_busybox_image(base / "busybox.tar.gz"),
                                aliases=["busybox"])
        host.create("busybox", "small")
        pool = host.pool("default")
        live = pool.volume_path("containers", "small")
        report("btrfs, busybox rootfs", ours(host, "small", args.rounds, "s"),
               raw_btrfs(pool.base, live, args.rounds))  # type: ignore[attr-defined]
        big = host.create("busybox", "big")
        with open(pool.volume_path("containers", "big") / "rootfs" / "big.bin", "wb") as f:
            for _ in range(args.big_mb):
                f.write(os.urandom(1 << 20))
        small = ours(host, "small", args.rounds, "t")
        report(f"btrfs, {args.big_mb} MB rootfs (floor: the busybox rootfs)",
               ours(host, big.name, args.rounds, "b"), small)
        if not args.no_zfs and shutil.which("zfs-fuse"):
            zfs_pid = ensure_zfs_daemon(host.paths)
            zp = host.create_pool("zp", "zfs", {"size": "1GiB", "zfs.pool_name":
                                                f"lxbench{secrets.token_hex(3)}"})
            host.create("busybox", "z", pool="zp")
            host.create("busybox", "zraw", pool="zp")
            ds = zp.dataset("containers", "zraw")  # type: ignore[attr-defined]
            report("zfs (zfs-fuse), busybox rootfs", ours(host, "z", args.rounds, "z"),
                   raw_zfs(ds, base, args.rounds))
    finally:
        h = lxdlib.Host(root, create=True)
        for inst in h.instances.list():
            try:
                inst.delete(force=True)
            except lxdlib.LxdlibError as e:
                print(f"cleanup: {e}", file=sys.stderr)
        teardown_root(root)
        shutil.rmtree(base, ignore_errors=True)
        stop_zfs_daemon(zfs_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
