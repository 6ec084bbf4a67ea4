"""Listing speed at scale: N running busybox instances on a managed bridge, each with a DHCP
address, listed through the API and through the ``lxdlib list`` command.

    sudo .venv/bin/python bench/listing.py [--n 100 250] [--rounds 7] [--exe .venv/bin/lxdlib]
                                           [--before /other/checkout/.venv/bin/lxdlib]

Makes its own root under /var/tmp (a loop-backed btrfs pool, a managed bridge with IPv4 and
IPv6, a default profile with a nic on it and isolated id maps), launches N instances, waits
until every one holds its DHCP lease, then prints the median milliseconds of:

- ``list_state()`` cold: ``host.instances.list_state()`` by a new Host with the process's
  caches emptied (parsed records, verified inits), with state, pid and addresses — what a new
  process pays;
- ``list_state()`` warm: a second listing by the same Host (records already parsed);
- the exact per-instance view: ``inst.state`` and ``inst.network_state()`` for each instance,
  what listings did before (one ``nsenter … ip`` process per running instance) — only up to
  ``--exact-max`` instances, it takes seconds;
- ``lxdlib list`` (the default columns: name, state, IPv4, IPv6, type, snapshots),
  ``lxdlib list --fast``, ``-c ns`` and ``-f json``, each a new process, as a user runs them
  (with Python's bytecode cache, as an installed lxdlib has it: see ``cli_env``).

Everything it made (containers, dnsmasq, bridge, nft table, mounts, loop device, files) is
removed at the end, also when it fails or is interrupted. Container names are global on a
machine: run it under the integration tests' lock (``flock /work/wt/itest.lock …``).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lxdlib
from lxdlib import livestate, record
from lxdlib.network.bridge import host_networks
from lxdlib.network.manager import pick_ipv4_subnet
from tests.cleanup import teardown_root


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def free_subnet(prefix: int) -> str:
    """A 10.x.y.1/<prefix> that overlaps nothing on the host (``auto`` gives a /24: too small
    for more than ~250 DHCP clients)."""
    return str(pick_ipv4_subnet(host_networks(), random.Random(), prefix=prefix))


def prepare(root: Path, n: int, prefix: str) -> lxdlib.Host:
    host = lxdlib.Host(root, create=True)
    host.create_pool("default", "btrfs", {"size": f"{max(2, n // 100 + 1)}GiB"})
    net = f"lb{secrets.token_hex(3)}"
    host.networks.create(net, {"ipv4.address": free_subnet(20) if n > 200 else "auto",
                               "ipv4.nat": "false", "ipv6.address": "auto",
                               "ipv6.nat": "false"})
    # isolated id maps: each instance's root is its own host uid, with its own keyring quota
    # (liblxc gives each container a keyring; the default quota is 200 per uid)
    host.profiles.create("default", {"security.idmap.isolated": "true"}, {
        "root": {"type": "disk", "path": "/", "pool": "default"},
        "eth0": {"type": "nic", "name": "eth0", "network": net}})
    host.images.build_busybox("busybox")
    t = time.perf_counter()
    host.launch_many([f"{prefix}{i:04d}" for i in range(n)], image="busybox")
    print(f"launched {n} instances in {time.perf_counter() - t:.1f} s", flush=True)
    deadline = time.monotonic() + 120 + n * 0.2
    while True:
        leased = {le["hwaddr"] for le in host.networks.leases(net)}
        if len(leased) >= n:
            break
        if time.monotonic() > deadline:
            print(f"only {len(leased)} of {n} instances got a DHCP lease: timing anyway",
                  flush=True)
            break
        time.sleep(0.5)
    deadline = time.monotonic() + 120  # the addresses applied inside, not only leased
    while sum(1 for e in host.instances.list_state() if e.ipv4) < n:
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    settle()
    return host


def idle_share(seconds: float = 1.0) -> float:
    """The share of CPU time spent idle over ``seconds`` (from /proc/stat)."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total
    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def settle(limit: float = 90) -> None:
    """Wait until the machine is mostly idle again: N instances just started keep the CPUs busy
    for a while (DHCP, router solicitations, the kernel's own work), which would be timed with
    the listing otherwise. Gives up after ``limit`` seconds, saying so."""
    t = time.monotonic()
    while (share := idle_share()) < 0.8:
        if time.monotonic() - t > limit:
            print(f"the machine is still busy ({share:.0%} idle): timing anyway", flush=True)
            return
    print(f"settled in {time.monotonic() - t:.0f} s ({share:.0%} idle)", flush=True)


def exact_view(host: lxdlib.Host, limit: int) -> None:
    for inst in host.instances.list()[:limit]:
        if inst.state in ("RUNNING", "FROZEN"):
            inst.network_state()


def cli_env(pycache: Path) -> dict[str, str]:
    """The commands run as on an installed system: Python's bytecode cache on (this machine's
    environment may turn it off, and compiling lxdlib's modules on every start costs ~200 ms
    that an installed lxdlib never pays), kept in ``pycache`` rather than beside the sources."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def cli(exe: str, root: Path, env: dict[str, str], *args: str) -> Callable[[], object]:
    argv = [exe, "--root", str(root), "list", *args]

    def run() -> object:
        return subprocess.run(argv, check=True, capture_output=True, env=env)
    run()  # writes the bytecode cache
    return run


def bench(n: int, rounds: int, exe: str, exact_max: int, before: str | None
          ) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="lxdlib-bench-list-", dir="/var/tmp"))
    tmp.chmod(0o711)  # the containers' root user must reach its rootfs
    root = tmp / "root"
    prefix = f"lb{secrets.token_hex(2)}-"
    out: dict[str, float] = {}
    try:
        host = prepare(root, n, prefix)
        listing = host.instances.list_state()
        running = [e for e in listing if e.state == "RUNNING"]
        with_v4 = [e for e in running if e.ipv4]
        print(f"N={n}: {len(running)} running, {len(with_v4)} with an IPv4 address",
              flush=True)

        def cold() -> object:
            record.clear_cache()
            livestate.clear_cache()
            return lxdlib.Host(root).instances.list_state()
        out["list_state() cold"] = median_ms(cold, rounds)
        out["list_state() warm"] = median_ms(host.instances.list_state, rounds)
        out["list_state(network=False) warm"] = median_ms(
            lambda: host.instances.list_state(network=False), rounds)
        out["list_state(network='full') warm"] = median_ms(
            lambda: host.instances.list_state(network="full"), rounds)
        k = min(n, exact_max)
        if k:
            ms = median_ms(lambda: exact_view(host, k), 1 if k > 100 else 3)
            out[f"exact per-instance view (x{n}/{k})"] = ms * n / k
        env = cli_env(tmp / "pycache")
        out["lxdlib list"] = median_ms(cli(exe, root, env), rounds)
        out["lxdlib list --fast"] = median_ms(cli(exe, root, env, "--fast"), rounds)
        out["lxdlib list -c ns"] = median_ms(cli(exe, root, env, "-c", "ns"), rounds)
        out["lxdlib list -f json"] = median_ms(cli(exe, root, env, "-f", "json"), rounds)
        if before:
            out["before: lxdlib list"] = median_ms(cli(before, root, env), min(rounds, 3))
            out["before: lxdlib list --fast"] = median_ms(cli(before, root, env, "--fast"),
                                                          min(rounds, 3))
    finally:
        t = time.perf_counter()
        teardown_root(root)
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"cleaned up in {time.perf_counter() - t:.1f} s", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[100, 250])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--exe", default=str(Path(sys.executable).parent / "lxdlib"))
    ap.add_argument("--exact-max", type=int, default=100,
                    help="time the exact per-instance view on at most this many instances "
                         "and scale it to N")
    ap.add_argument("--before", help="another lxdlib command (e.g. an older checkout's) to "
                                     "time on the same instances")
    args = ap.parse_args()
    results = {}
    for n in args.n:
        results[n] = bench(n, args.rounds, args.exe, args.exact_max, args.before)
        print("  ".join(f"{k}: {v:.1f}" for k, v in results[n].items()), flush=True)
    print(f"\nmedian ms over {args.rounds} rounds (running busybox instances, DHCP on a "
          "managed bridge)")
    print(f"{'':<40}" + "".join(f"{'N=' + str(n):>10}" for n in args.n))
    for key in results[args.n[0]]:
        label = key.split(" (x")[0]
        print(f"{label:<40}" + "".join(
            f"{next((v for k, v in results[n].items() if k.split(' (x')[0] == label), 0):>10.1f}"
            for n in args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
