"""Host memory each running instance costs beyond its own processes: the liblxc monitor and
anything else that exists only because lxdlib started it.

    sudo .venv/bin/python bench/memory.py [-n 50]

Starts N busybox instances (loop-backed btrfs pool in a fresh root under /var/tmp, default
profile with no network), then sums ``/proc/<pid>/smaps_rollup`` over the processes that belong
to the instances but are not the containers' own: each instance's monitor (``[lxc monitor] …``,
the parent of its init) and any host process whose command line names the root (proxy
forwarders, stop watchers, dnsmasq of a managed bridge …). The containers' processes (init and
its descendants, in their own pid namespaces) are summed separately, for scale only.

PSS (proportional set size: shared pages divided among their users) is what the host really
pays per instance; USS (private pages only) is what one more instance adds at least. LXD's
monitor (``lxd forkstart``) costs about 11 MB per instance for comparison.

``measure(host, names)`` is the reusable core (bench/scale.py can call it on its own instances);
``main`` owns its root and removes everything it made, on failure too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from roots import busybox_root

import lxdlib

_ROLLUP_KEYS = ("Rss", "Pss", "Private_Clean", "Private_Dirty")


def rollup(pid: int) -> dict[str, int] | None:
    """A process's ``smaps_rollup`` totals in kB (Rss, Pss, Private_*); None once it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in _ROLLUP_KEYS:
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return out


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line with spaces) of every process the host shows."""
    out: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        out[int(entry)] = (ppid, cmdline)
    return out


def _descendants(roots: Iterable[int], procs: dict[int, tuple[int, str]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += children.get(pid, [])
    return seen


def _ancestors(pid: int, procs: dict[int, tuple[int, str]]) -> set[int]:
    out: set[int] = set()
    while pid > 1 and pid not in out:
        out.add(pid)
        pid = procs.get(pid, (0, ""))[0]
    return out


def _exe(pid: int) -> str:
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return "?"


def _sum(pids: Iterable[int]) -> dict[str, float]:
    total = {"pss": 0, "uss": 0, "rss": 0}
    for pid in pids:
        r = rollup(pid)
        if r is None:
            continue
        total["pss"] += r.get("Pss", 0)
        total["uss"] += r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)
        total["rss"] += r.get("Rss", 0)
    return {k: v / 1024 for k, v in total.items()}  # MB


def measure(host: lxdlib.Host, names: Sequence[str]) -> dict[str, object]:
    """Memory of the named running instances' overhead processes, in MB per instance.

    Keys: ``instances``; ``monitor_pss``/``monitor_uss``/``monitor_rss`` (the liblxc monitors);
    ``other_pss``/``other_uss`` (other host processes whose command line names the root, this
    process and its ancestors excepted); ``pss``/``uss`` (both together: the overhead per
    instance); ``container_pss`` (the containers' own processes, not overhead); ``processes``
    (how many overhead processes in all) and ``monitor_exe`` (what the monitors run, e.g.
    ``lxc-start``; ``python3…`` when they are forks of a Python caller).
    """
    procs = _processes()
    monitors: set[int] = set()
    inits: set[int] = set()
    for name in names:
        pid = host.instances.get(name).pid
        if pid <= 0 or pid not in procs:
            raise RuntimeError(f"instance {name!r} is not running")
        inits.add(pid)
        monitors.add(procs[pid][0])
    contained = _descendants(inits, procs)
    mine = _ancestors(os.getpid(), procs)
    root = str(host.paths.root)
    others = {pid for pid, (_, cmd) in procs.items()
              if root in cmd and pid not in monitors and pid not in contained
              and pid not in mine}
    # anything else a monitor runs on the host side (a hook caught running) is overhead too
    others |= _descendants(monitors, procs) - monitors - contained - mine
    n = max(1, len(names))
    mon, oth, cont = _sum(monitors), _sum(others), _sum(contained)
    return {
        "instances": len(names),
        "processes": len(monitors) + len(others),
        "monitor_exe": sorted({_exe(pid) for pid in monitors}),
        "monitor_pss": mon["pss"] / n, "monitor_uss": mon["uss"] / n,
        "monitor_rss": mon["rss"] / n,
        "other_pss": oth["pss"] / n, "other_uss": oth["uss"] / n,
        "pss": (mon["pss"] + oth["pss"]) / n, "uss": (mon["uss"] + oth["uss"]) / n,
        "container_pss": cont["pss"] / n,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=50, help="instances to start (default 50)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    with busybox_root("lxdlib-membench-", "2GiB") as host:
        host.launch("busybox", "mb-warmup").delete(force=True)  # unpack the image volume once
        names = [f"mb{i}" for i in range(args.n)]
        t = time.perf_counter()
        for name in names:
            host.launch("busybox", name)
        took = time.perf_counter() - t
        time.sleep(1)  # let the inits settle
        m = measure(host, names)
        print(f"{args.n} running busybox instances (launched in {took:.1f} s); "
              f"monitors run {', '.join(m['monitor_exe'])}")  # type: ignore[arg-type]
        print(f"overhead per instance: PSS {m['pss']:.2f} MB, USS {m['uss']:.2f} MB "
              f"({m['processes']} processes)")
        print(f"  monitor: PSS {m['monitor_pss']:.2f} MB, USS {m['monitor_uss']:.2f} MB, "
              f"RSS {m['monitor_rss']:.2f} MB")
        print(f"  other:   PSS {m['other_pss']:.2f} MB, USS {m['other_uss']:.2f} MB")
        print(f"container's own processes: PSS {m['container_pss']:.2f} MB per instance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
