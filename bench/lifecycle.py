"""Lifecycle speed: lxdlib's API against the floor (raw python3-lxc + btrfsutil doing the same
work), and against LXD's ``lxc`` client where LXD is installed — in one run, same pool type.

    sudo .venv/bin/python bench/lifecycle.py [--rounds 15]

Prints the median milliseconds of each operation and the ratio to the floor. Both sides use a
loop-backed btrfs pool, the same busybox image, an unprivileged idmapped rootfs, no network, and
the same liblxc security baseline (seccomp policy, pty limits, console log), so the ratio is
lxdlib's own cost: validation, records, locks, rendering, templates, crash-safety.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import btrfsutil
import lxc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lxdlib
from tests.cleanup import teardown_root

OPS = ("launch", "exec true", "stop --force", "start", "delete --force")


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


@contextlib.contextmanager
def clock(into: list[float]) -> Iterator[None]:
    t = time.perf_counter()
    yield
    into.append((time.perf_counter() - t) * 1000)


class Raw:
    """The floor: what any program must do at least, written straight against the bindings."""

    def __init__(self, pool_dir: Path, image_vol: Path, lxcpath: Path, base: int,
                 size: int, seccomp: Path) -> None:
        self.pool_dir, self.image, self.lxcpath = pool_dir, image_vol, lxcpath
        self.base, self.size, self.seccomp = base, size, seccomp

    def launch(self, name: str) -> lxc.Container:
        vol = self.pool_dir / name
        btrfsutil.create_snapshot(str(self.image), str(vol))
        btrfsutil.set_subvolume_read_only(str(vol), False)
        d = self.lxcpath / name
        d.mkdir()
        (d / "config").write_text(
            f"lxc.uts.name = {name}\nlxc.rootfs.path = dir:{vol}/rootfs\n"
            "lxc.rootfs.options = idmap=container\n"
            f"lxc.idmap = u 0 {self.base} {self.size}\nlxc.idmap = g 0 {self.base} {self.size}\n"
            "lxc.mount.auto = proc:rw sys:rw cgroup:mixed\nlxc.autodev = 1\n"
            "lxc.net.0.type = empty\n"
            # the same security baseline lxdlib writes, so both sides ask liblxc the same work
            f"lxc.seccomp.profile = {self.seccomp}\nlxc.pty.max = 1024\nlxc.tty.max = 0\n"
            f"lxc.console.logfile = {d}/console.log\nlxc.console.size = auto\n"
            "lxc.environment = PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"lxc.log.file = {d}/lxc.log\nlxc.log.level = WARN\n")
        c = lxc.Container(name, str(self.lxcpath))
        assert c.start(close_fds=True)
        return c

    @staticmethod
    def exec_true(c: lxc.Container) -> None:
        pid = c.attach(lxc.attach_run_command, ["true"], env_policy=lxc.LXC_ATTACH_CLEAR_ENV)
        os.waitpid(pid, 0)

    @staticmethod
    def stop(c: lxc.Container) -> None:
        c.stop()
        while c.state != "STOPPED":
            time.sleep(0.001)

    @staticmethod
    def start(c: lxc.Container) -> None:
        assert c.start(close_fds=True)

    def delete(self, c: lxc.Container) -> None:
        self.stop(c)
        btrfsutil.delete_subvolume(str(self.pool_dir / c.name))
        shutil.rmtree(self.lxcpath / c.name)


def run_raw(host: lxdlib.Host, rounds: int, offset: int = 0) -> dict[str, list[float]]:
    pool = host.pool("default")
    image = pool.volume_path("images", host.images.get("busybox").fingerprint)
    raw_dir = pool.volume_path("containers", "x").parent.parent / "raw-bench"
    raw_dir.mkdir(exist_ok=True)
    lxcpath = host.paths.root / "raw-lxc"
    lxcpath.mkdir(exist_ok=True)
    alloc = host.facts().idmap
    r = Raw(raw_dir, image, lxcpath, alloc.base, alloc.size, host.seccomp_policy())
    times: dict[str, list[float]] = {op: [] for op in OPS}
    for i in range(rounds):
        with clock(times["launch"]):
            c = r.launch(f"raw{offset + i}")
        with clock(times["exec true"]):
            r.exec_true(c)
        with clock(times["stop --force"]):
            r.stop(c)
        with clock(times["start"]):
            r.start(c)
        with clock(times["delete --force"]):
            r.delete(c)
    return times


def run_lxdlib(host: lxdlib.Host, rounds: int, offset: int = 0) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {op: [] for op in OPS}
    for i in range(rounds):
        with clock(times["launch"]):
            c = host.launch("busybox", f"lib{offset + i}")
        with clock(times["exec true"]):
            c.exec(["true"])
        with clock(times["stop --force"]):
            c.stop(force=True)
        with clock(times["start"]):
            c.start()
        with clock(times["delete --force"]):
            c.delete(force=True)
    return times


def run_lxd(rounds: int) -> dict[str, list[float]] | None:
    """LXD's own client, if an initialised LXD with a `busybox` image is on this machine."""
    if not shutil.which("lxc") or subprocess.run(["lxc", "image", "info", "busybox"],
                                                 capture_output=True).returncode != 0:
        return None
    times: dict[str, list[float]] = {op: [] for op in OPS}
    cmds = {"launch": ["launch", "busybox", "{n}"], "exec true": ["exec", "{n}", "--", "true"],
            "stop --force": ["stop", "--force", "{n}"], "start": ["start", "{n}"],
            "delete --force": ["delete", "--force", "{n}"]}
    for i in range(rounds):
        for op in OPS:
            argv = ["lxc"] + [a.format(n=f"lxdbench{i}") for a in cmds[op]]
            times[op].append(timed(lambda a=argv: subprocess.run(a, check=True,
                                                                  capture_output=True)))
    return times


def import_time() -> float:
    py = str(Path(sys.executable))
    base = min(timed(lambda: subprocess.run([py, "-c", "pass"], check=True)) for _ in range(5))
    lib = min(timed(lambda: subprocess.run([py, "-c", "import lxdlib"], check=True))
              for _ in range(5))
    return lib - base


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lxdlib-bench-", dir="/var/tmp"))
    tmp.chmod(0o711)  # the containers' root user must reach its rootfs
    root = tmp / "root"
    try:
        host = lxdlib.Host(root, create=True)
        host.create_pool("default", "btrfs", {"size": "2GiB"})
        host.profiles.create("default", {}, {"root": {"type": "disk", "path": "/",
                                                      "pool": "default"}})
        host.images.build_busybox("busybox")
        host.launch("busybox", "warmup").delete(force=True)  # unpack the image volume once
        raw: dict[str, list[float]] = {op: [] for op in OPS}
        lib: dict[str, list[float]] = {op: [] for op in OPS}
        for i in range(args.rounds):  # interleaved: slow phases of the machine hit both sides
            for side, fn in ((raw, run_raw), (lib, run_lxdlib)):
                for op, values in fn(host, 1, offset=i).items():
                    side[op] += values
        lxd = run_lxd(args.rounds)
        print(f"median ms over {args.rounds} rounds (busybox, btrfs loop pool, unprivileged)")
        head = f"{'operation':<16}{'raw floor':>10}{'lxdlib':>10}{'ratio':>8}"
        print(head + (f"{'LXD':>10}{'LXD/lxdlib':>12}" if lxd else ""))
        for op in OPS:
            f, m = statistics.median(raw[op]), statistics.median(lib[op])
            line = f"{op:<16}{f:>10.1f}{m:>10.1f}{m / f:>7.2f}x"
            if lxd:
                x = statistics.median(lxd[op])
                line += f"{x:>10.1f}{x / m:>11.1f}x"
            print(line)
        if not lxd:
            print("(LXD is not installed here: the LXD column is omitted; see DESIGN.md for "
                  "LXD 5.0.2's figures on this kind of machine)")
        print(f"import lxdlib: {import_time():.1f} ms")
    finally:
        teardown_root(root)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
