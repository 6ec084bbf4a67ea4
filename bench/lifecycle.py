"""Lifecycle speed: lxdlib's API against the floor (raw python3-lxc + btrfsutil doing the same
work), and against LXD's ``lxc`` client where LXD is installed — in one run, same pool type.

    sudo .venv/bin/python bench/lifecycle.py [--rounds 15] [--population N] [--no-lxd]
                                             [--profile OP ...]

Prints the median milliseconds of each operation, the ratio to the floor, and whether the ratio
meets the goal (at most 1.5x) or at least the limit (2x). Both sides use a loop-backed btrfs
pool, the same busybox image, an unprivileged idmapped rootfs, no network, and the same liblxc
security baseline (seccomp policy, pty limits, console log), so the ratio is lxdlib's own cost:
validation, records, locks, rendering, templates, crash-safety.

The floor keeps no state of its own. lxdlib's snapshot, restore and copy end by writing the
instance's record durably (the file and its directory fsync'd: their commit point, which a
power loss must not undo), after an intent record and under a lock file; a copy also makes
those files for its new instance. On the ext4 under the loop pool that is about 0.4 ms of each
of those operations (0.2 ms per fsync when the machine is quiet, more when it is busy), which
the floor does not pay.

One round, on each side in turn (the sides interleave, so a slow phase of the machine hits both):

=================  ===========================================================================
launch             floor: writable btrfs snapshot of the image volume, a liblxc config written,
                   ``start``. lxdlib: ``host.launch``.
exec true          floor: ``attach_run_command(["true"])`` and wait. lxdlib: ``inst.exec``.
snapshot           of the running instance. floor: read-only btrfs snapshot of its volume.
                   lxdlib: ``inst.snapshots.create("snap0")`` (volume and record).
info               of the running instance. floor: liblxc's state and init pid, the memory, CPU
                   and process counters of its cgroup, its addresses (``get_ips``). lxdlib:
                   ``inst.info()`` (which also gives disk usage and the id-map check).
stop --force       floor: ``stop`` and wait for STOPPED. lxdlib: ``inst.stop(force=True)``.
                   Both sides let the instance run ``SETTLE`` seconds first (untimed), as
                   before ``delete --force``: liblxc's stop takes longer once init has
                   started its services, so the sides must stop instances of one age.
restore            of the stopped instance. floor: a writable btrfs snapshot of the snapshot,
                   swapped with the live volume by two renames, the old volume deleted.
                   lxdlib: ``inst.snapshots.restore("snap0")`` (volume, record, liblxc config).
copy               of the stopped instance, without its snapshots. floor: a writable btrfs
                   snapshot of its volume and a copy of its liblxc config with the names
                   changed. lxdlib: ``host.copy(name, new, instance_only=True)`` (fresh
                   identity, record, config). The copy is deleted afterwards, untimed.
start              floor: ``start``. lxdlib: ``inst.start()``.
delete --force     of the running instance (with its snapshot). floor: ``stop``, delete the
                   snapshot and the volume, remove the liblxc directory. lxdlib:
                   ``inst.delete(force=True)``.
=================  ===========================================================================

``--population N`` first creates N stopped instances (untimed), so that the per-operation cost
at N instances can be compared with the cost at none: no operation should grow with N.
``--profile OP`` (repeatable) runs lxdlib's side of OP under cProfile and prints the profile
after the table (``--profile-sort tottime``: by each function's own time); ``--no-lxd`` leaves
LXD's client out where it is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import secrets
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

#: Seconds an instance runs before it is killed (untimed, on both sides): how long liblxc's stop
#: takes depends on what init has started by then, so both sides stop instances of one age.
SETTLE = 0.25
OPS = ("launch", "exec true", "snapshot", "info", "stop --force", "restore", "copy", "start",
       "delete --force")
GOAL, LIMIT = 1.5, 2.0


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


#: ``--profile OP``: the lxdlib side's operations profiled with cProfile (one profile each,
#: over every round), printed after the table; the clock still runs, so their times rise.
PROFILES: dict[str, cProfile.Profile] = {}


@contextlib.contextmanager
def clock(into: list[float], profile: str | None = None) -> Iterator[None]:
    prof = PROFILES.get(profile) if profile is not None else None
    if prof is not None:
        prof.enable()
    t = time.perf_counter()
    yield
    into.append((time.perf_counter() - t) * 1000)
    if prof is not None:
        prof.disable()


class Raw:
    """The floor: what any program must do at least, written straight against the bindings.
    ``bridge``: each container gets a veth on it (as instances with a nic do); none without.
    bench/scale.py measures the same floor."""

    def __init__(self, pool_dir: Path, image_vol: Path, lxcpath: Path, base: int,
                 size: int, seccomp: Path, bridge: str | None = None) -> None:
        self.pool_dir, self.image, self.lxcpath = pool_dir, image_vol, lxcpath
        self.base, self.size, self.seccomp, self.bridge = base, size, seccomp, bridge
        self.snaps = pool_dir / "snapshots"
        self.snaps.mkdir(exist_ok=True)

    def _net(self) -> str:
        if self.bridge is None:
            return "lxc.net.0.type = empty\n"
        mac = "00:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        return (f"lxc.net.0.type = veth\nlxc.net.0.link = {self.bridge}\nlxc.net.0.flags = up\n"
                f"lxc.net.0.name = eth0\nlxc.net.0.hwaddr = {mac}\n")

    def config(self, name: str) -> str:
        d = self.lxcpath / name
        return (
            f"lxc.uts.name = {name}\nlxc.rootfs.path = dir:{self.pool_dir / name}/rootfs\n"
            "lxc.rootfs.options = idmap=container\n"
            f"lxc.idmap = u 0 {self.base} {self.size}\nlxc.idmap = g 0 {self.base} {self.size}\n"
            "lxc.mount.auto = proc:rw sys:rw cgroup:mixed\nlxc.autodev = 1\n"
            f"{self._net()}"
            # the same security baseline lxdlib writes, so both sides ask liblxc the same work
            f"lxc.seccomp.profile = {self.seccomp}\nlxc.pty.max = 1024\nlxc.tty.max = 0\n"
            f"lxc.console.logfile = {d}/console.log\nlxc.console.size = auto\n"
            "lxc.environment = PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"lxc.log.file = {d}/lxc.log\nlxc.log.level = WARN\n")

    def launch(self, name: str) -> lxc.Container:
        vol = self.pool_dir / name
        btrfsutil.create_snapshot(str(self.image), str(vol))
        btrfsutil.set_subvolume_read_only(str(vol), False)
        d = self.lxcpath / name
        d.mkdir()
        (d / "config").write_text(self.config(name))
        c = lxc.Container(name, str(self.lxcpath))
        assert c.start(close_fds=True)
        return c

    @staticmethod
    def exec_true(c: lxc.Container) -> None:
        pid = c.attach(lxc.attach_run_command, ["true"], env_policy=lxc.LXC_ATTACH_CLEAR_ENV)
        os.waitpid(pid, 0)

    def snapshot(self, c: lxc.Container) -> None:
        (self.snaps / c.name).mkdir()
        btrfsutil.create_snapshot(str(self.pool_dir / c.name), str(self.snaps / c.name / "snap0"),
                                  read_only=True)

    @staticmethod
    def info(c: lxc.Container) -> dict[str, object]:
        def item(key: str) -> str | None:
            try:
                return str(c.get_cgroup_item(key))
            except KeyError:  # not running, or no such controller file
                return None
        v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        return {"state": c.state, "pid": c.init_pid,
                "memory": item("memory.current" if v2 else "memory.usage_in_bytes"),
                "cpu": item("cpu.stat" if v2 else "cpuacct.usage"),
                "processes": item("pids.current"), "ips": c.get_ips()}

    @staticmethod
    def stop(c: lxc.Container) -> None:
        c.stop()
        while c.state != "STOPPED":
            time.sleep(0.001)

    def restore(self, c: lxc.Container) -> None:
        vol = self.pool_dir / c.name
        new, aside = self.pool_dir / f".new-{c.name}", self.pool_dir / f".old-{c.name}"
        btrfsutil.create_snapshot(str(self.snaps / c.name / "snap0"), str(new))
        os.rename(vol, aside)
        os.rename(new, vol)
        btrfsutil.delete_subvolume(str(aside))

    def copy(self, c: lxc.Container, new: str) -> None:
        btrfsutil.create_snapshot(str(self.pool_dir / c.name), str(self.pool_dir / new))
        d = self.lxcpath / new
        d.mkdir()
        (d / "config").write_text(self.config(new))

    def drop(self, name: str) -> None:
        btrfsutil.delete_subvolume(str(self.pool_dir / name))
        shutil.rmtree(self.lxcpath / name)
        # a monitor forked from python-lxc leaves its (empty) cgroups behind on cgroup v1
        for d in Path("/sys/fs/cgroup").glob(f"*/lxc.monitor.{name}"):
            with contextlib.suppress(OSError):
                d.rmdir()

    @staticmethod
    def start(c: lxc.Container) -> None:
        assert c.start(close_fds=True)

    def delete(self, c: lxc.Container) -> None:
        self.stop(c)
        btrfsutil.delete_subvolume(str(self.snaps / c.name / "snap0"))
        os.rmdir(self.snaps / c.name)
        self.drop(c.name)


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
        name = f"raw{offset + i}"
        with clock(times["launch"]):
            c = r.launch(name)
        with clock(times["exec true"]):
            r.exec_true(c)
        with clock(times["snapshot"]):
            r.snapshot(c)
        with clock(times["info"]):
            r.info(c)
        time.sleep(SETTLE)
        with clock(times["stop --force"]):
            r.stop(c)
        with clock(times["restore"]):
            r.restore(c)
        with clock(times["copy"]):
            r.copy(c, f"{name}-copy")
        r.drop(f"{name}-copy")
        with clock(times["start"]):
            r.start(c)
        time.sleep(SETTLE)
        with clock(times["delete --force"]):
            r.delete(c)
    return times


def run_lxdlib(host: lxdlib.Host, rounds: int, offset: int = 0) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {op: [] for op in OPS}
    for i in range(rounds):
        name = f"lib{offset + i}"
        with clock(times["launch"], "launch"):
            c = host.launch("busybox", name)
        with clock(times["exec true"], "exec true"):
            c.exec(["true"])
        with clock(times["snapshot"], "snapshot"):
            c.snapshots.create("snap0")
        with clock(times["info"], "info"):
            c.info()
        time.sleep(SETTLE)
        with clock(times["stop --force"], "stop --force"):
            c.stop(force=True)
        with clock(times["restore"], "restore"):
            c.snapshots.restore("snap0")
        with clock(times["copy"], "copy"):
            copied = host.copy(name, f"{name}-copy", instance_only=True)
        copied.delete()
        with clock(times["start"], "start"):
            c.start()
        time.sleep(SETTLE)
        with clock(times["delete --force"], "delete --force"):
            c.delete(force=True)
    return times


def run_lxd(rounds: int) -> dict[str, list[float]] | None:
    """LXD's own client, if an initialised LXD with a `busybox` image is on this machine."""
    if not shutil.which("lxc") or subprocess.run(["lxc", "image", "info", "busybox"],
                                                 capture_output=True).returncode != 0:
        return None
    times: dict[str, list[float]] = {op: [] for op in OPS}
    cmds = {"launch": ["launch", "busybox", "{n}"], "exec true": ["exec", "{n}", "--", "true"],
            "snapshot": ["snapshot", "{n}", "snap0"], "info": ["info", "{n}"],
            "stop --force": ["stop", "--force", "{n}"], "restore": ["restore", "{n}", "snap0"],
            "copy": ["copy", "{n}", "{n}-copy", "--instance-only"], "start": ["start", "{n}"],
            "delete --force": ["delete", "--force", "{n}"]}
    def lxc(argv: list[str]) -> None:
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:  # LXD's own words, not only its exit status
            raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")

    for i in range(rounds):
        name = f"lxdbench{i}"
        try:
            for op in OPS:
                argv = ["lxc"] + [a.format(n=name) for a in cmds[op]]
                times[op].append(timed(lambda a=argv: lxc(a)))
                if op == "copy":
                    lxc(["lxc", "delete", f"{name}-copy"])
        finally:  # a failed round leaves none of its instances in LXD
            for leftover in (f"{name}-copy", name):
                subprocess.run(["lxc", "delete", "--force", leftover], capture_output=True)
    return times


def import_time() -> float:
    py = str(Path(sys.executable))
    base = min(timed(lambda: subprocess.run([py, "-c", "pass"], check=True)) for _ in range(5))
    lib = min(timed(lambda: subprocess.run([py, "-c", "import lxdlib"], check=True))
              for _ in range(5))
    return lib - base


def stop_raw(lxcpath: Path) -> None:
    """Stop what the floor left running (a round that failed half-way)."""
    if not lxcpath.is_dir():
        return
    for name in lxc.list_containers(active=True, defined=False, config_path=str(lxcpath)):
        c = lxc.Container(name, str(lxcpath))
        with contextlib.suppress(Exception):
            Raw.stop(c)


def verdict(ratio: float) -> str:
    return "ok" if ratio <= GOAL else "limit" if ratio <= LIMIT else "SLOW"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--population", type=int, default=0,
                    help="stopped instances made first (untimed), to see the cost at scale")
    ap.add_argument("--no-lxd", action="store_true", help="leave LXD out even where installed")
    ap.add_argument("--profile", action="append", default=[], choices=OPS, metavar="OP",
                    help="profile lxdlib's side of OP (repeatable): cProfile after the table")
    ap.add_argument("--profile-sort", default="cumulative", choices=("cumulative", "tottime"),
                    help="the profile's order: time under each function, or in it alone")
    args = ap.parse_args()
    PROFILES.update({op: cProfile.Profile() for op in args.profile})
    tmp = Path(tempfile.mkdtemp(prefix="lxdlib-bench-", dir="/var/tmp"))
    tmp.chmod(0o711)  # the containers' root user must reach its rootfs
    root = tmp / "root"
    try:
        host = lxdlib.Host(root, create=True)
        host.create_pool("default", "btrfs", {"size": "4GiB" if args.population else "2GiB"})
        host.profiles.create("default", {}, {"root": {"type": "disk", "path": "/",
                                                      "pool": "default"}})
        host.images.build_busybox("busybox")
        host.launch("busybox", "warmup").delete(force=True)  # unpack the image volume once
        for i in range(args.population):
            host.create("busybox", f"idle{i}")
        raw: dict[str, list[float]] = {op: [] for op in OPS}
        lib: dict[str, list[float]] = {op: [] for op in OPS}
        for i in range(args.rounds):  # interleaved: slow phases of the machine hit both sides
            for side, fn in ((raw, run_raw), (lib, run_lxdlib)):
                for op, values in fn(host, 1, offset=i).items():
                    side[op] += values
        lxd = None if args.no_lxd else run_lxd(args.rounds)
        print(f"median ms over {args.rounds} rounds (busybox, btrfs loop pool, unprivileged"
              f"{f', {args.population} other instances' if args.population else ''})")
        head = f"{'operation':<16}{'raw floor':>10}{'lxdlib':>10}{'ratio':>8}  {'':<6}"
        print(head + (f"{'LXD':>10}{'LXD/lxdlib':>12}" if lxd else ""))
        worst = 0.0
        for op in OPS:
            f, m = statistics.median(raw[op]), statistics.median(lib[op])
            worst = max(worst, m / f)
            line = f"{op:<16}{f:>10.1f}{m:>10.1f}{m / f:>7.2f}x  {verdict(m / f):<6}"
            if lxd:
                x = statistics.median(lxd[op])
                line += f"{x:>10.1f}{x / m:>11.1f}x"
            print(line)
        ok = [op for op in OPS if statistics.median(lib[op]) / statistics.median(raw[op]) <= GOAL]
        print(f"within {GOAL}x of the floor: {len(ok)}/{len(OPS)}; "
              f"within {LIMIT}x: {'all' if worst <= LIMIT else 'not all'} (worst {worst:.2f}x)")
        if not lxd and not args.no_lxd:
            print("(LXD is not installed here: the LXD column is omitted; see DESIGN.md for "
                  "LXD 5.0.2's figures on this kind of machine)")
        print(f"import lxdlib: {import_time():.1f} ms")
        for op, prof in PROFILES.items():
            print(f"--- profile of lxdlib's {op} ({args.rounds} rounds)")
            pstats.Stats(prof, stream=sys.stdout).sort_stats(args.profile_sort).print_stats(40)
    finally:
        stop_raw(root / "raw-lxc")  # the floor's containers live outside the root's lxcpath
        teardown_root(root)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
