"""Scale: what each operation costs with many instances running, up to 1,000 by default.

    sudo .venv/bin/python bench/scale.py [--max 1000] [--steps 10,100,250,500,1000]
                                         [--workers N] [--extra 5] [--batch 20]
                                         [--raise-limits]

One root of its own under /var/tmp: a loop-backed btrfs pool, a managed bridge on a /20 (room
for 4,000 addresses), the busybox image, a default profile with a root disk and eth0 on that
bridge. At each step the instances are filled up to N with ``launch_many`` (the fill's rate);
once each holds its DHCP lease and dnsmasq has gone idle (the fill's last addresses and
their IPv6 names take a core for tens of seconds at 1,000, which is not the cost of N running:
``settle_dnsmasq``), a few extra instances measure, one at a time in
this process, the median latency of launch, exec, info, snapshot, stop, restore, copy (without
snapshots, on every side), start and delete — beside the raw floor (python3-lxc + btrfsutil
doing the same work, as bench/lifecycle.py) on the same bridge. Then the listing (API with state
and IPv4, ``lxdlib list``, ``lxdlib list --fast``) and the memory: MemAvailable's drop per
instance, and the PSS of what runs on the host for each instance (the liblxc monitor and the
like, bench/memory.py's ``measure``) beside the container's own.

``--raise-limits`` raises, for the run only, the host settings ``lxdlib.hostlimits.advice``
names for N instances (keyrings, ptys, inotify, neighbour table), and restores them at the end.
Without it a step the host cannot take stops with the ``HostLimit`` that says what to set.

Everything is deleted at the end — also after a failure or Ctrl-C — and MemAvailable is compared
with its value before the run once the kernel has freed what the containers held, which it does
for a minute or more after they are gone (``memory_back``: up to 5 minutes). A markdown table
for the README closes the output.

The launch rate, one at a time against ``launch_many``, is also measured like for like at the
end of each step (``--batch`` instances each way, twice, alternating which goes first, each
batch deleted after): the fill's rate divides launches made while dnsmasq serves the leases of
hundreds launched just before, where the median single launch is taken once they are served.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lxdlib
from bench.lifecycle import Raw, clock
from bench.memory import measure as measure_memory
from lxdlib import hostlimits
from lxdlib.network.bridge import host_networks
from lxdlib.network.manager import pick_ipv4_subnet
from tests.cleanup import teardown_root

OPS = ("launch", "exec", "info", "snapshot", "stop", "restore", "copy", "start", "delete")


def meminfo(key: str = "MemAvailable") -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def mem_available() -> int:
    return meminfo("MemAvailable")


def memory_cgroups() -> int:
    """Memory cgroups alive, dying ones included (they hold memory until reclaimed)."""
    with open("/proc/cgroups") as f:
        for line in f:
            if line.startswith("memory\t"):
                return int(line.split()[2])
    return 0


def processes(comm: str) -> list[str]:
    """The ``/proc/<pid>`` directories of the processes named ``comm``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(entry.path, "comm").read_text().strip() == comm:
                    found.append(entry.path)
    return found


def daemon_rss(comm: str = "lxd") -> int | None:
    """Resident bytes of the processes named ``comm`` (LXD's daemon), None when none runs: the
    MemAvailable compared after the cleanup counts what the daemon kept of the run."""
    total, found = 0, False
    for proc in processes(comm):
        with contextlib.suppress(OSError):
            for line in Path(proc, "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    found = True
    return total if found else None


def settle_memory() -> int:
    """MemAvailable once the page cache has been asked to drop what it can (so files read by
    the run do not count as memory the instances took)."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    time.sleep(0.5)
    return mem_available()


def own_rss() -> int:
    """This process's resident anonymous memory: what the bench itself holds (the library,
    its records and the rows) counts in MemAvailable but is no instance's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def memory_back(mem0: int, limit_s: float = 300.0, step_s: float = 5.0) -> tuple[int, float]:
    """MemAvailable (caches dropped) once it is back within 16 MiB of ``mem0`` or has stopped
    rising for 30 s, at most ``limit_s`` after the cleanup; and the seconds waited.

    The kernel frees what the containers held well after they are gone: measured on this VM
    after a teardown of 200 and of 300 instances, MemAvailable came back by 15-20 MiB a second
    for 45 and 90 s (~2.5 MiB per instance), in memory no field of /proc/meminfo counts
    meanwhile (MemFree alone moves), then was within 16 MiB of where it started. A bench that
    compares sooner reports that as memory lost."""
    t0 = time.perf_counter()
    best, since = settle_memory(), t0
    while best < mem0 - 16 * 2**20 and time.perf_counter() - t0 < limit_s:
        time.sleep(step_s)
        now = settle_memory()
        if now > best + 4 * 2**20:
            best, since = now, time.perf_counter()
        elif time.perf_counter() - since >= 30:
            break
    return best, time.perf_counter() - t0


def measure_raw(raw: Raw, names: list[str]) -> dict[str, list[float]]:
    t: dict[str, list[float]] = {op: [] for op in OPS}
    for name in names:
        with clock(t["launch"]):
            c = raw.launch(name)
        quiet_after_launch()
        with clock(t["exec"]):
            raw.exec_true(c)
        with clock(t["info"]):
            raw.info(c)
        with clock(t["snapshot"]):
            raw.snapshot(c)
        with clock(t["stop"]):
            raw.stop(c)
        with clock(t["restore"]):
            raw.restore(c)
        with clock(t["copy"]):
            raw.copy(c, f"{name}c")
        with clock(t["start"]):
            raw.start(c)
        with clock(t["delete"]):
            raw.delete(c)
        raw.drop(f"{name}c")
    return t


def measure_lxdlib(host: lxdlib.Host, names: list[str]) -> dict[str, list[float]]:
    t: dict[str, list[float]] = {op: [] for op in OPS}
    for name in names:
        with clock(t["launch"]):
            inst = host.launch("busybox", name)
        quiet_after_launch()
        with clock(t["exec"]):
            inst.exec(["true"])
        with clock(t["info"]):
            inst.info()
        with clock(t["snapshot"]):
            inst.snapshots.create("s0")
        with clock(t["stop"]):
            inst.stop(force=True)
        with clock(t["restore"]):
            inst.snapshots.restore("s0")
        with clock(t["copy"]):
            copy = host.copy(name, name + "c", instance_only=True)  # as the floor: no snapshots
        with clock(t["start"]):
            inst.start()
        with clock(t["delete"]):
            inst.delete(force=True)
        copy.delete(force=True)
    return t


def launch_rates(host: lxdlib.Host, step: int, k: int, workers: int | None,
                 rounds: int = 2) -> tuple[float, float]:
    """Launches/s one at a time and with ``launch_many``, like for like: ``k`` instances each
    way at N running, in the same conditions (each batch deleted before the next, the order
    alternating, a pause for the batch's DHCP between). The fill's rate is not that: a fill
    to 1,000 launches while dnsmasq serves the leases of the hundreds launched just before."""
    one: list[float] = []
    many: list[float] = []
    for r in range(rounds):
        for kind in ("one", "many") if r % 2 == 0 else ("many", "one"):
            names = [f"l{step}{kind}{r}n{i}" for i in range(k)]
            t = time.perf_counter()
            if kind == "one":
                for name in names:
                    host.launch("busybox", name)
            else:
                host.launch_many(names, image="busybox", workers=workers)
            (one if kind == "one" else many).append(k / (time.perf_counter() - t))
            time.sleep(1)
            for name in names:
                host.instances.get(name).delete(force=True)
            time.sleep(1)
    return statistics.median(one), statistics.median(many)


def cli(root: Path) -> list[str]:
    script = Path(sys.executable).parent / "lxdlib"
    if script.exists():
        return [str(script), "--root", str(root)]
    return [sys.executable, "-m", "lxdlib", "--root", str(root)]


def run_ms(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return (time.perf_counter() - t) * 1000


def list_api(host: lxdlib.Host) -> int:
    """The one-pass listing (``host.instances.list_state()``): state, pid and addresses of
    every instance; returns how many have an IPv4 address."""
    rows = [(e.name, e.state, e.ipv4) for e in host.instances.list_state()]
    return sum(1 for r in rows if r[2])


_FRESH_LISTING = """
import sys, time
import lxdlib
host = lxdlib.Host(sys.argv[1])
t = time.perf_counter()
rows = [(e.name, e.state, e.ipv4) for e in host.instances.list_state()]
print((time.perf_counter() - t) * 1000, sum(1 for r in rows if r[2]))
"""


def list_api_fresh(root: Path, rounds: int = 7) -> float:
    """The same listing as ``list_api``, each time the first of a new process (a script, a
    notebook's first call): the median of ``rounds`` ms, the listing only (not the interpreter
    nor the imports). The bench's own process is an odd place for a first listing: it has
    just launched, timed and deleted instances, and a listing of hundreds forks it
    (``listing.take``), so a bigger heap costs the fork more."""
    times = []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", _FRESH_LISTING, str(root)], check=True,
                             capture_output=True, text=True).stdout.split()
        times.append(float(out[0]))
    return statistics.median(times)


def settle_leases(host: lxdlib.Host, net: str, want: int, timeout: float = 180.0) -> float:
    """Wait until ``want`` instances hold a DHCP lease on ``net`` (dnsmasq's lease file: no
    record is read), at most ``timeout`` s; returns the seconds waited. The operations and the
    listing are then measured with N running, not while the last batch still asks dnsmasq for
    its addresses (which takes a core for tens of seconds at 1,000)."""
    t = time.perf_counter()
    while time.perf_counter() - t < timeout and len(host.networks.leases(net)) < want:
        time.sleep(1)
    return time.perf_counter() - t


def dnsmasq_cpu_ms() -> float:
    """CPU time (user + system) of every dnsmasq on the host so far, in ms (``/proc/<pid>/stat``),
    LXD's included: any of them busy takes a core from what is measured."""
    total = 0
    for proc in processes("dnsmasq"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(proc, "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total * 1000 / os.sysconf("SC_CLK_TCK")


def settle_dnsmasq(timeout: float = 180.0, window: float = 1.0) -> tuple[float, float]:
    """Wait until dnsmasq is idle: under 5% of a CPU in each of two ``window`` s in a row, at
    most ``timeout`` s. Returns the seconds waited and the CPU ms it spent meanwhile.

    Holding every lease need not be the end of dnsmasq's work after a fill: with ``ra-names``
    each instance's SLAAC address, once it answers dnsmasq's ping, makes dnsmasq redo every
    lease's DNS names (docs/scale.md; 0-0.5 s of its CPU after the fill to 1,000 in two runs).
    Operations timed meanwhile would share the machine with that; "at N running" means once
    it is done. Likewise after each measured launch (``quiet_after_launch``): a new instance's
    DHCP entry, lease and IPv6 name cost dnsmasq up to ~0.1 s of CPU at 1,000, which the
    operations timed next on that instance would otherwise share the machine with."""
    t = time.perf_counter()
    start = last = dnsmasq_cpu_ms()
    quiet = 0
    while quiet < 2 and time.perf_counter() - t < timeout:
        time.sleep(window)
        now = dnsmasq_cpu_ms()
        quiet = quiet + 1 if now - last < 50 * window else 0
        last = now
    return time.perf_counter() - t, last - start


def quiet_after_launch() -> None:
    """Untimed, on both sides alike, between a measured launch and the next operation."""
    settle_dnsmasq(timeout=10.0, window=0.25)


def lxd_available() -> bool:
    return bool(shutil.which("lxc")) and subprocess.run(
        ["lxc", "info"], capture_output=True).returncode == 0


class Lxd:
    """LXD's CLI on the same image, filled to the same N (steps up to ``LXD_MAX`` only: its
    launches are slow). Its instances are named ``lxdscale-…`` and all deleted at the end."""

    IMAGE = "lxdscale-busybox"

    def __init__(self, tmp: Path) -> None:
        from lxdlib.imagestore.busybox import build_busybox_image
        tarball = build_busybox_image(tmp / "busybox-lxd.tar.gz")
        # the busybox image is built reproducibly: LXD may hold it already (under another
        # alias), and then refuses the import; the bench names it with an alias of its own
        fingerprint = hashlib.sha256(tarball.read_bytes()).hexdigest()
        known = subprocess.run(["lxc", "image", "info", fingerprint],
                               capture_output=True).returncode == 0
        if known:
            subprocess.run(["lxc", "image", "alias", "delete", self.IMAGE], capture_output=True)
            self.lxc("image", "alias", "create", self.IMAGE, fingerprint)
        else:
            self.lxc("image", "import", str(tarball), "--alias", self.IMAGE)
        self.count = 0

    @staticmethod
    def lxc(*argv: str) -> None:
        subprocess.run(["lxc", *argv], check=True, capture_output=True)

    def fill(self, n: int) -> None:
        while self.count < n:
            self.count += 1
            self.lxc("launch", self.IMAGE, f"lxdscale-{self.count}")

    def measure(self, names: list[str]) -> dict[str, list[float]]:
        t: dict[str, list[float]] = {op: [] for op in OPS}
        steps = [("launch", ("launch", self.IMAGE, "{n}")), ("exec", ("exec", "{n}", "--", "true")),
                 ("info", ("info", "{n}")), ("snapshot", ("snapshot", "{n}", "s0")),
                 ("stop", ("stop", "--force", "{n}")), ("restore", ("restore", "{n}", "s0")),
                 ("copy", ("copy", "{n}", "{n}c", "--instance-only")),
                 ("start", ("start", "{n}")),
                 ("delete", ("delete", "--force", "{n}"))]
        for name in names:
            for op, argv in steps:
                with clock(t[op]):
                    self.lxc(*(a.format(n=name) for a in argv))
                if op == "launch":
                    quiet_after_launch()  # as on the other sides
            self.lxc("delete", "--force", f"{name}c")
        return t

    def cleanup(self) -> None:
        r = subprocess.run(["lxc", "list", "--format", "csv", "-c", "n"], capture_output=True,
                           text=True)
        for name in r.stdout.split():
            if name.startswith("lxdscale-"):
                subprocess.run(["lxc", "delete", "--force", name], capture_output=True)
        subprocess.run(["lxc", "image", "alias", "delete", self.IMAGE], capture_output=True)
        subprocess.run(["lxc", "image", "delete", self.IMAGE], capture_output=True)


LXD_MAX = 250


def raise_limits(n: int) -> dict[str, str]:
    """Apply ``hostlimits.advice(n)`` for this run; the old values, to restore."""
    old: dict[str, str] = {}
    for a in hostlimits.advice(n):
        path = Path("/proc/sys") / a.sysctl.replace(".", "/")
        old[a.sysctl] = path.read_text().strip()
        path.write_text(f"{a.suggested}\n")
        print(f"  {a.sysctl}: {old[a.sysctl]} -> {a.suggested} for this run ({a.why})")
    return old


def restore_limits(old: dict[str, str]) -> None:
    for key, value in old.items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / key.replace(".", "/")).write_text(value + "\n")
    if old:
        print(f"host settings restored: {', '.join(f'{k}={v}' for k, v in old.items())}")


def make_network(host: lxdlib.Host) -> str:
    """A /20 bridge (4,093 addresses) on a free 10.x.y.0/20, no NAT: traffic stays on it."""
    name = f"lxs{secrets.token_hex(3)}"
    subnet = pick_ipv4_subnet(host_networks(), random.Random(), prefix=20)
    host.networks.create(name, {"ipv4.address": str(subnet), "ipv4.nat": "false",
                                "ipv6.address": "none"})
    return name


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def fmt(ms: float) -> str:
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max", type=int, default=1000)
    ap.add_argument("--steps", default="10,100,250,500,1000")
    ap.add_argument("--workers", type=int, default=None,
                    help="launch_many's workers (default: its own choice, 2 per CPU)")
    ap.add_argument("--extra", type=int, default=5,
                    help="instances that measure each operation at each step")
    ap.add_argument("--batch", type=int, default=20,
                    help="instances launched each way (one at a time, launch_many) at each "
                    "step for the like-for-like launch rate (fewer where the bridge is full)")
    ap.add_argument("--pool-size", default="8GiB")
    ap.add_argument("--raise-limits", action="store_true")
    ap.add_argument("--no-raw", action="store_true")
    args = ap.parse_args()
    steps = sorted({int(s) for s in args.steps.split(",") if 0 < int(s) <= args.max})
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    # SIGTERM ends the run like Ctrl-C: the cleanup below runs either way
    signal.signal(signal.SIGTERM, interrupted)
    print(f"scale benchmark: steps {steps}, {args.workers or 'default'} launch workers, "
          f"{os.cpu_count()} CPUs, {settle_memory() / 2**30:.1f} GiB available")
    advice = hostlimits.advice(steps[-1] + 2 * args.extra)
    old_limits: dict[str, str] = {}
    if advice and args.raise_limits:
        print("raising host settings for the run:")
        old_limits = raise_limits(steps[-1] + 2 * args.extra)
    elif advice:
        print("host settings below what this many instances need (--raise-limits sets them "
              "for the run):")
        for a in advice:
            print(f"  {a.sysctl} = {a.current}, suggested {a.suggested}: {a.why}")
    mem0, slab0, cg0 = settle_memory(), meminfo("SUnreclaim"), memory_cgroups()
    own0 = own_rss()
    lxd_rss0 = daemon_rss()
    tmp = Path(tempfile.mkdtemp(prefix="lxdlib-scale-", dir="/var/tmp"))
    tmp.chmod(0o711)
    root = tmp / "root"
    rows: list[dict[str, Any]] = []
    lxd: Lxd | None = None
    t_start = time.perf_counter()
    filled_s = 0.0
    try:
        host = lxdlib.Host(root, create=True)
        host.create_pool("default", "btrfs", {"size": args.pool_size})
        net = make_network(host)
        host.profiles.create("default", {}, {
            "root": {"type": "disk", "path": "/", "pool": "default"},
            "eth0": {"type": "nic", "name": "eth0", "network": net}})
        host.images.build_busybox("busybox")
        host.launch("busybox", "warmup").delete(force=True)  # the image volume, unpacked once
        pool = host.pool("default")
        image_vol = pool.volume_path("images", host.images.get("busybox").fingerprint)
        raw_dir = pool.volume_path("containers", "x").parent.parent / "raw-bench"
        raw_dir.mkdir(exist_ok=True)
        raw_lxc = root / "raw-lxc"
        raw_lxc.mkdir(exist_ok=True)
        alloc = host.facts().idmap
        raw = Raw(raw_dir, image_vol, raw_lxc, alloc.base, alloc.size, host.seccomp_policy(),
                  net)
        count = 0
        lxd = Lxd(tmp) if lxd_available() else None
        mem_filled0 = settle_memory()
        for step in steps:
            add = step - count
            t = time.perf_counter()
            try:
                host.launch_many([f"s{i:04d}" for i in range(count + 1, step + 1)],
                                 image="busybox", workers=args.workers)
            except lxdlib.HostLimit as e:
                print(f"\nstep {step}: refused before launching anything: {e}")
                break
            except lxdlib.BulkError as e:
                print(f"\nstep {step}: {len(e.failures)} launches failed")
                by_reason: dict[str, list[str]] = {}
                for name, reason in sorted(e.failures.items()):
                    # the same failure of different instances: names and addresses differ
                    kind = re.sub(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}|s[0-9]{4}", "…", str(reason))
                    by_reason.setdefault(kind, []).append(name)
                for kind, names in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
                    print(f"  {len(names)} x {kind} ({', '.join(names[:4])}"
                          f"{', …' if len(names) > 4 else ''}; e.g. {e.failures[names[0]]})")
                break
            fill = time.perf_counter() - t
            filled_s += fill
            count = step
            par_rate = add / fill
            settled = settle_leases(host, net, count)
            idle_s, idle_cpu = settle_dnsmasq()
            extra = [f"x{step}n{i}" for i in range(args.extra)]
            lib = measure_lxdlib(host, extra)
            rawt = None if args.no_raw else measure_raw(raw, [f"r{step}n{i}"
                                                              for i in range(args.extra)])
            ser_rate = 1000 / statistics.median(lib["launch"])
            time.sleep(2)  # DHCP for the last ones of the batch
            t = time.perf_counter()
            with_ip = list_api(host)  # parses the records this process has not read yet
            t_api = (time.perf_counter() - t) * 1000
            warm = []
            for _ in range(5):  # again: as a long-lived process (a notebook, a tool) lists
                t = time.perf_counter()
                list_api(host)
                warm.append((time.perf_counter() - t) * 1000)
            t_warm = statistics.median(warm)
            t_fresh = list_api_fresh(root)
            t_cli = run_ms([*cli(root), "list", "--format", "csv"])
            t_fast = run_ms([*cli(root), "list", "--fast", "--format", "csv"])
            mem = settle_memory()
            per_inst = (mem_filled0 - mem) / count
            over = measure_memory(host, [f"s{i:04d}" for i in range(1, count + 1)])
            row = {"n": step, "fill_s": fill, "par_rate": par_rate, "ser_rate": ser_rate,
                   "ops": {op: statistics.median(v) for op, v in lib.items()},
                   "raw": {op: statistics.median(v) for op, v in rawt.items()} if rawt else {},
                   "list_api": t_api, "list_fresh": t_fresh, "list_warm": t_warm,
                   "list_cli": t_cli, "list_fast": t_fast,
                   "with_ip": with_ip, "mem_per": per_inst, "memory": over}
            rows.append(row)
            print(f"\n== N = {step} running (filled {add} in {fill:.1f} s with launch_many, "
                  f"{args.workers or 'default'} workers; {filled_s:.1f} s in all so far; "
                  f"every lease taken {settled:.0f} s later, dnsmasq idle {idle_s:.0f} s after "
                  f"that ({idle_cpu / 1000:.1f} s of its CPU meanwhile), then measured)")
            print(f"launch rate: serial {ser_rate:.1f}/s, parallel {par_rate:.1f}/s "
                  f"({par_rate / ser_rate:.2f}x serial; goal 0.8 x {os.cpu_count()} CPUs = "
                  f"{0.8 * (os.cpu_count() or 1):.1f}x)")
            print(f"{'operation':<10}{'lxdlib ms':>11}{'raw ms':>9}{'ratio':>8}")
            for op in OPS:
                m = row["ops"][op]
                f = row["raw"].get(op)
                print(f"{op:<10}{fmt(m):>11}" + (f"{fmt(f):>9}{m / f:>7.2f}x" if f else ""))
            print(f"list: API (state + IPv4) {fmt(t_api)} ms, first in a new process "
                  f"{fmt(t_fresh)} ms (median of 7), again {fmt(t_warm)} ms (median of 5) "
                  f"({with_ip}/{step + 1} with an IPv4), CLI {fmt(t_cli)} ms, "
                  f"CLI --fast {fmt(t_fast)} ms")
            exe = ", ".join(map(str, over["monitor_exe"]))  # type: ignore[call-overload]
            print(f"memory per instance: {per_inst / 2**20:.2f} MiB of MemAvailable; "
                  f"overhead PSS {over['pss']:.2f} MB (liblxc monitor "
                  f"{over['monitor_pss']:.2f} MB, "
                  f"monitors run {exe}; other host processes "
                  f"{over['other_pss']:.2f} MB); the container's own processes "
                  f"{over['container_pss']:.2f} MB")
            if step <= LXD_MAX and lxd is not None:
                lxd.fill(step)
                lt = lxd.measure([f"lxdscale-x{step}n{i}" for i in range(args.extra)])
                row["lxd"] = {op: statistics.median(v) for op, v in lt.items()}
                print(f"LXD at N = {step} (ms): " + ", ".join(
                    f"{op} {fmt(row['lxd'][op])}" for op in OPS))
                # the two listings side by side, interleaved: `lxdlib list` (every default
                # column) against LXD's quickest, `lxc list --fast`, with N running on each
                ours, theirs = [], []
                for _ in range(5):
                    ours.append(run_ms([*cli(root), "list", "--format", "csv"]))
                    theirs.append(run_ms(["lxc", "list", "--fast", "--format", "csv"]))
                row["list_vs"] = (statistics.median(ours), statistics.median(theirs))
                print(f"listing at N = {step}, interleaved: `lxdlib list` "
                      f"{fmt(row['list_vs'][0])} ms, LXD `lxc list --fast` "
                      f"{fmt(row['list_vs'][1])} ms")
            elif step <= LXD_MAX:
                print("LXD: not installed on this machine: its figures are skipped")
            # last in the step (it launches and deletes): a bridge takes 1,023 ports, so the
            # batch is made to fit beside the N running
            batch = min(args.batch, hostlimits.BRIDGE_PORTS_MAX - step - 1)
            if batch >= 4:
                # the fill's workers (its default for a large batch: two per CPU), which a
                # batch this small would otherwise not be given (launcher.worker_count)
                workers = args.workers or 2 * (os.cpu_count() or 1)
                like = launch_rates(host, step, batch, workers)
                row["like"] = like
                print(f"launch rate like for like ({batch} each way, twice, alternating; "
                      f"{workers} workers): one at a time {like[0]:.1f}/s, launch_many "
                      f"{like[1]:.1f}/s ({like[1] / like[0]:.2f}x)")
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up")
    finally:
        t_clean = time.perf_counter()
        if lxd is not None:
            lxd.cleanup()
        teardown_root(root)
        shutil.rmtree(tmp, ignore_errors=True)
        restore_limits(old_limits)
        clean_s = time.perf_counter() - t_clean
        mem1, waited = memory_back(mem0)
        own = own_rss() - own0
        print(f"\ncleanup: {clean_s:.1f} s; MemAvailable {mem0 / 2**20:.0f} MiB before the "
              f"run, {mem1 / 2**20:.0f} MiB {waited:.0f} s after the cleanup "
              f"({(mem1 - mem0) / 2**20:+.0f} MiB, of which this process's own growth "
              f"{-own / 2**20:+.0f} MiB; unreclaimable slab "
              f"{(meminfo('SUnreclaim') - slab0) / 2**20:+.0f} MiB, "
              f"memory cgroups {memory_cgroups() - cg0:+d}); "
              f"whole run {time.perf_counter() - t_start:.0f} s")
        lxd_rss1 = daemon_rss()
        if lxd_rss0 is not None and lxd_rss1 is not None:
            print(f"LXD's daemon, running beside: {lxd_rss0 / 2**20:.0f} MiB resident before "
                  f"the run, {lxd_rss1 / 2**20:.0f} MiB after (counted in MemAvailable; it "
                  f"returns when LXD stops)")
    if rows:
        print_table(rows, args.workers)
    return 0


def print_table(rows: list[dict[str, Any]], workers: int | None) -> None:
    """The markdown table the README quotes."""
    print("\n| N running | " + " | ".join(str(r["n"]) for r in rows) + " |")
    print("|---|" + "---|" * len(rows))

    def line(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        print(f"| {label} | " + " | ".join(cell(r) for r in rows) + " |")
    for op in OPS:
        line(f"{op} ms (raw)", lambda r, op=op: fmt(r["ops"][op]) + (
            f" ({fmt(r['raw'][op])})" if r["raw"].get(op) else ""))
    if any("lxd" in r for r in rows):
        for op in OPS:
            line(f"{op} ms, LXD", lambda r, op=op: fmt(r["lxd"][op]) if "lxd" in r else "")
    line("list: API `list_state()`, state + IPv4, first in the process, ms",
         lambda r: fmt(r["list_api"]))
    line("list: API `list_state()`, first in a new process (median of 7), ms",
         lambda r: fmt(r["list_fresh"]))
    line("list: API `list_state()` again (records unchanged), ms",
         lambda r: fmt(r["list_warm"]))
    line("list: `lxdlib list` ms", lambda r: fmt(r["list_cli"]))
    line("list: `lxdlib list --fast` ms", lambda r: fmt(r["list_fast"]))
    if any("list_vs" in r for r in rows):
        line("list, interleaved: `lxdlib list` ms / LXD `lxc list --fast` ms",
             lambda r: (f"{fmt(r['list_vs'][0])} / {fmt(r['list_vs'][1])}"
                        if "list_vs" in r else ""))
    line("launch/s serial", lambda r: f"{r['ser_rate']:.0f}")
    line(f"launch/s `launch_many` ({workers or 'default'} workers)",
         lambda r: f"{r['par_rate']:.0f}")
    line(f"launch/s like for like (one at a time / `launch_many` with "
         f"{workers or 2 * (os.cpu_count() or 1)} workers, ratio)",
         lambda r: (f"{r['like'][0]:.0f} / {r['like'][1]:.0f}, "
                    f"{r['like'][1] / r['like'][0]:.2f}x" if r.get("like") else ""))
    line("memory per instance: MemAvailable drop MiB", lambda r: f"{r['mem_per'] / 2**20:.2f}")
    line("memory per instance: monitor + host-side PSS MB",
         lambda r: f"{r['memory']['pss']:.2f}")
    line("memory per instance: container's processes PSS MB",
         lambda r: f"{r['memory']['container_pss']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
