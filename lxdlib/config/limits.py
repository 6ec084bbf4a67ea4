"""Translate an expanded instance config into cgroup file writes and prlimits, without I/O.

This is LXD's ``initLXC`` (start) and ``Update`` (live) limit logic: the same arithmetic
(allowance percent of the max shares, priority subtraction, 90 % soft limit on cgroup v1, swap as
``memory.swap.max`` or ``memsw = limit + swap``, ``(MemTotal/100)*pct``), producing
``{cgroup file: value}`` in the order the writes must happen. The caller writes them as
``lxc.cgroup.<file>`` / ``lxc.cgroup2.<file>`` before start, or with ``set_cgroup_item`` on a
running container. Host facts (CPU count, MemTotal in bytes, per-CPU usage) are passed in.

Two deliberate differences from LXD: a computed CPU weight of 0 is raised to the kernel minimum
(cgroup2 refuses ``cpu.weight=0``), and unsetting ``limits.memory`` live resets the v1 soft limit to
``-1`` (LXD writes 0 there).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from ..errors import InvalidArgument, InvalidConfig
from ..patterns import Pattern
from .units import is_false, parse_size, quoted

MAX_CPUS = 8192  # the kernel's NR_CPUS ceiling; anything above is a typo, not a CPU

HUGEPAGE_SIZES = ("64KB", "1MB", "2MB", "1GB")

PRLIMIT_RESOURCES = frozenset({
    "as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile",
    "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
})
RLIM_MAX = 2**64 - 2  # RLIM_INFINITY is 2**64-1 and is spelled "unlimited"

_CPUSET_RE = Pattern(r"^(?:[0-9]+(?:[,-][0-9]+)?)(?:,[0-9]+(?:[,-][0-9]+)*)?$")

# ------------------------------------------------------------------------------------------------
# CPU sets


def parse_cpuset(s: str, *, key: str = "limits.cpu") -> list[int]:
    """``'0-2,5'`` -> ``[0, 1, 2, 5]``. LXD's ``IsValidCPUSet`` syntax; a CPU given twice, a
    descending range or a CPU number above 8191 is refused."""
    if not _CPUSET_RE.fullmatch(s):
        raise InvalidConfig(key, "Invalid CPU limit syntax", s)
    cpus: list[int] = []
    seen: set[int] = set()
    for chunk in s.split(","):
        low_s, dash, high_s = chunk.partition("-")
        low = int(low_s)
        high = int(high_s) if dash else low
        if high < low:
            raise InvalidConfig(key, f"Invalid CPU range {chunk!r}: end is below start", s)
        if high >= MAX_CPUS:
            raise InvalidConfig(key, f"CPU number {high} is out of range", s)
        for cpu in range(low, high + 1):
            if cpu in seen:
                raise InvalidConfig(key, "Cannot define CPU multiple times", s)
            seen.add(cpu)
            cpus.append(cpu)
    return sorted(cpus)


def format_cpuset(cpus: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``'0-2,5'`` (the kernel's own form)."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def cpu_limit(value: str) -> int | list[int]:
    """``limits.cpu`` as LXD reads it: a plain integer is a CPU *count* to load-balance,
    anything else (``0-3``, ``1,3``, ``1-1``) is a pinned set."""
    if value.isascii() and value.isdigit():
        n = int(value)
        if n > MAX_CPUS:
            raise InvalidConfig("limits.cpu", f"CPU count {n} is out of range", value)
        return n
    return parse_cpuset(value)


def pick_cpus(count: int, host_cpus: int, usage: Mapping[int, int]) -> list[int]:
    """LXD's balancer: the ``count`` least-used host CPUs (ties to the lowest number).

    ``usage`` maps CPU number to how many running instances are already placed on it; CPUs not
    in it count as unused. A count above the host's CPUs gives all of them.
    """
    if count < 0:
        raise InvalidArgument(f"CPU count must not be negative, got {count}")
    if host_cpus < 1:
        raise InvalidArgument(f"host CPU count must be positive, got {host_cpus}")
    ranked = sorted(range(host_cpus), key=lambda cpu: (usage.get(cpu, 0), cpu))
    return sorted(ranked[: min(count, host_cpus)])


def _cpuset_for(value: str, host_cpus: int, chosen: Sequence[int] | None) -> str | None:
    limit = cpu_limit(value)
    if isinstance(limit, int):
        want = min(limit, host_cpus)
        if want == 0:
            return None  # LXD balances "0" CPUs onto nothing and leaves the cpuset alone
        cpus = list(chosen) if chosen is not None else pick_cpus(want, host_cpus, {})
        if len(set(cpus)) != want:
            raise InvalidArgument(
                f"chosen_cpus {list(cpus)} does not hold {want} distinct CPUs "
                f"for limits.cpu={value}"
            )
    else:
        cpus = limit
    bad = [c for c in cpus if not 0 <= c < host_cpus]
    if bad:
        raise InvalidConfig(
            "limits.cpu",
            f"CPU {bad[0]} does not exist on this host (CPUs 0-{host_cpus - 1})",
            value,
        )
    return format_cpuset(cpus)


# ------------------------------------------------------------------------------------------------
# Memory and CPU arithmetic


def memory_limit_bytes(value: str, mem_total: int) -> int:
    """``limits.memory`` in bytes: ``N%`` of ``mem_total`` as ``(total/100)*N``, or a size."""
    if value.endswith("%"):
        pct = value[:-1]
        if not re.fullmatch(r"[0-9]+", pct) or int(pct) == 0:
            raise InvalidConfig("limits.memory", "Memory limit cannot be 0%", value)
        if mem_total <= 0:
            raise InvalidArgument(f"host MemTotal must be positive, got {mem_total}")
        return (mem_total // 100) * int(pct)
    try:
        n = parse_size(value)
    except InvalidArgument as e:
        raise InvalidConfig("limits.memory", str(e), value) from e
    if n < 1024 * 1024:
        raise InvalidConfig("limits.memory", "Memory limit is too low (minimum 1MiB)", value)
    return n


def _atoi(value: str, key: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise InvalidConfig(key, f"Invalid value for an integer {quoted(value)}", value)
    return int(value)


def parse_cpu_allowance(allowance: str) -> tuple[int | None, tuple[int, int] | None]:
    """``'50%'`` -> ``(50, None)``; ``'25ms/100ms'`` -> ``(None, (25, 100))`` (milliseconds)."""
    key = "limits.cpu.allowance"
    if allowance.endswith("%"):
        pct = _atoi(allowance[:-1], key)
        if pct <= 0:
            raise InvalidConfig(key, "CPU allowance percentage must be positive", allowance)
        return pct, None
    quota_s, slash, period_s = allowance.partition("/")
    if not slash:
        raise InvalidConfig(key, f"Invalid allowance: {allowance}", allowance)
    quota = _atoi(quota_s.removesuffix("ms"), key)
    period = _atoi(period_s.removesuffix("ms"), key)
    if quota < 1:
        raise InvalidConfig(key, "CPU quota must be at least 1ms", allowance)
    if not 1 <= period <= 1000:
        raise InvalidConfig(key, "CPU period must be between 1ms and 1000ms", allowance)
    return None, (quota, period)


def cpu_shares(allowance: str, priority: str, cgroup_version: int) -> tuple[int, int, int]:
    """LXD's ``ParseCPU``: ``(shares, cfs_quota_us, cfs_period_us)``; -1 means "not set".

    Shares are out of 1024 on v1 and 100 on v2 (written to ``cpu.weight``).
    """
    max_shares = 100 if cgroup_version == 2 else 1024
    prio = 10 if priority == "" else _atoi(priority, "limits.cpu.priority")
    shares = -(10 - prio)
    quota = -1
    period = -1 if cgroup_version == 2 else 100000
    if allowance:
        pct, hard = parse_cpu_allowance(allowance)
        if pct is not None:
            shares += int(max_shares / 100 * pct)
        else:
            assert hard is not None
            quota, period = hard[0] * 1000, hard[1] * 1000
            shares += max_shares
    else:
        shares += max_shares
    return max(shares, 0), quota, period


def _weight(shares: int, cgroup_version: int) -> str:
    # cgroup2's cpu.weight is 1..10000 and refuses 0; v1 clamps cpu.shares to 2 itself.
    return str(max(shares, 1) if cgroup_version == 2 else max(shares, 2))


def disk_weight(priority: str) -> int:
    """``limits.disk.priority`` (0..10, default 5) -> blkio/io weight prio*100, with 0 -> 10."""
    prio = 5 if priority == "" else _atoi(priority, "limits.disk.priority")
    return prio * 100 or 10


# ------------------------------------------------------------------------------------------------
# Start-time settings


def _check_version(cgroup_version: int) -> None:
    if cgroup_version not in (1, 2):
        raise InvalidArgument(f"cgroup_version must be 1 or 2, got {cgroup_version}")


def _memory_writes(
    config: Mapping[str, str], cgroup_version: int, mem_total: int, swap_accounting: bool
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    v2 = cgroup_version == 2
    memory = config.get("limits.memory", "")
    swap = config.get("limits.memory.swap")
    if memory:
        value = memory_limit_bytes(memory, mem_total)
        if config.get("limits.memory.enforce", "") == "soft":
            out.append(("memory.high" if v2 else "memory.soft_limit_in_bytes", str(value)))
        else:
            out.append(("memory.max" if v2 else "memory.limit_in_bytes", str(value)))
            if swap_accounting:
                swap_bytes = 0 if is_false(swap) else value
                if v2:
                    out.append(("memory.swap.max", str(swap_bytes)))
                else:  # memsw counts memory plus swap
                    out.append(("memory.memsw.limit_in_bytes", str(value + swap_bytes)))
            if not v2:
                out.append(("memory.soft_limit_in_bytes", str(int(value * 0.9))))
    if not v2:
        if is_false(swap):
            out.append(("memory.swappiness", "0"))
        elif config.get("limits.memory.swap.priority", ""):
            prio = _atoi(config["limits.memory.swap.priority"], "limits.memory.swap.priority")
            out.append(("memory.swappiness", str(70 - prio)))
    return out


def _cpu_writes(
    config: Mapping[str, str], cgroup_version: int, *, always: bool
) -> list[tuple[str, str]]:
    allowance = config.get("limits.cpu.allowance", "")
    priority = config.get("limits.cpu.priority", "")
    if not always and not allowance and not priority:
        return []
    shares, quota, period = cpu_shares(allowance, priority, cgroup_version)
    v2 = cgroup_version == 2
    out: list[tuple[str, str]] = []
    if always or shares != 1024:
        out.append(("cpu.weight" if v2 else "cpu.shares", _weight(shares, cgroup_version)))
    if v2:
        if quota != -1 and period != -1:
            out.append(("cpu.max", f"{quota} {period}"))
        elif always:
            out.append(("cpu.max", "max"))
    elif (quota != -1 and period != -1) or always:
        out.append(("cpu.cfs_quota_us", str(quota)))
        out.append(("cpu.cfs_period_us", str(period)))
    return out


def _hugepage_file(size: str, cgroup_version: int) -> str:
    return f"hugetlb.{size}.max" if cgroup_version == 2 else f"hugetlb.{size}.limit_in_bytes"


def cgroup_settings(
    config: Mapping[str, str],
    *,
    cgroup_version: int,
    host_cpus: int,
    mem_total: int,
    chosen_cpus: Sequence[int] | None = None,
    swap_accounting: bool = True,
) -> dict[str, str]:
    """The cgroup writes that put ``config``'s limits on an instance at start, in write order.

    ``mem_total`` is the host's MemTotal in bytes; ``chosen_cpus`` is the balancer's pick for a
    ``limits.cpu`` count (see :func:`pick_cpus`; without it the lowest CPUs are used);
    ``swap_accounting`` says whether the memory controller has swap files (v1 ``memsw``,
    v2 ``memory.swap.max``). Unset keys produce no writes: the container inherits.
    """
    _check_version(cgroup_version)
    writes: list[tuple[str, str]] = []
    writes += _memory_writes(config, cgroup_version, mem_total, swap_accounting)
    writes += _cpu_writes(config, cgroup_version, always=False)
    if config.get("limits.cpu", ""):
        cpuset = _cpuset_for(config["limits.cpu"], host_cpus, chosen_cpus)
        if cpuset is not None:
            writes.append(("cpuset.cpus", cpuset))
    if config.get("limits.disk.priority", ""):
        weight = disk_weight(config["limits.disk.priority"])
        writes.append(("io.weight" if cgroup_version == 2 else "blkio.weight", str(weight)))
    if config.get("limits.processes", ""):
        n = _atoi(config["limits.processes"], "limits.processes")
        if n <= 0:
            raise InvalidConfig("limits.processes", "Must be a positive integer", str(n))
        writes.append(("pids.max", str(n)))
    for size in HUGEPAGE_SIZES:
        value = config.get(f"limits.hugepages.{size}", "")
        if value:
            try:
                writes.append((_hugepage_file(size, cgroup_version), str(parse_size(value))))
            except InvalidArgument as e:
                raise InvalidConfig(f"limits.hugepages.{size}", str(e), value) from e
    return dict(writes)


# ------------------------------------------------------------------------------------------------
# Live changes

_MEMORY_KEYS = ("limits.memory", "limits.memory.enforce", "limits.memory.swap",
                "limits.memory.swap.priority")
_CPU_KEYS = ("limits.cpu.allowance", "limits.cpu.priority")


def _memory_reset(cgroup_version: int, swap_accounting: bool) -> list[tuple[str, str]]:
    if cgroup_version == 2:
        out = [("memory.swap.max", "max")] if swap_accounting else []
        return [*out, ("memory.max", "max"), ("memory.high", "max")]
    out = [("memory.memsw.limit_in_bytes", "-1")] if swap_accounting else []
    return [*out, ("memory.limit_in_bytes", "-1"), ("memory.soft_limit_in_bytes", "-1")]


_FILE_UNSET: dict[str, tuple[str, str]] = {
    # cgroup file -> (v1 value, v2 value) that lifts the limit
    "memory.memsw.limit_in_bytes": ("-1", "max"),
    "memory.limit_in_bytes": ("-1", "max"),
    "memory.soft_limit_in_bytes": ("-1", "max"),
    "memory.swappiness": ("60", "60"),
    "memory.swap.max": ("-1", "max"),
    "memory.max": ("-1", "max"),
    "memory.high": ("-1", "max"),
    "cpu.shares": ("1024", "1024"),
    "cpu.weight": ("100", "100"),
    "cpu.cfs_quota_us": ("-1", "-1"),
    "cpu.cfs_period_us": ("100000", "100000"),
    "cpu.max": ("max", "max"),
    "pids.max": ("max", "max"),
    "blkio.weight": ("500", "500"),
    "io.weight": ("500", "500"),
}
# Order that keeps the kernel happy while lifting: swap (memsw >= limit) before the limit.
_FILE_ORDER = (*_FILE_UNSET, "cpuset.cpus")


def _unset_file(name: str, cgroup_version: int, host_cpus: int | None) -> str:
    if name == "cpuset.cpus":
        if host_cpus is None or host_cpus < 1:
            raise InvalidArgument("lifting a cpuset (limits.cpu) needs host_cpus")
        return format_cpuset(range(host_cpus))
    if name in _FILE_UNSET:
        return _FILE_UNSET[name][cgroup_version - 1]
    m = re.fullmatch(r"hugetlb\.([0-9A-Za-z]+)\.(limit_in_bytes|max)", name)
    if m is not None:
        return "max" if cgroup_version == 2 else "-1"
    raise InvalidArgument(f"Unknown cgroup file or limit key {name!r}")


def unset_values(
    keys: Iterable[str],
    cgroup_version: int,
    *,
    host_cpus: int | None = None,
    swap_accounting: bool = True,
) -> dict[str, str]:
    """What to write to lift limits from a running instance, in write order.

    ``keys`` may be config keys (``limits.memory``) or the cgroup files :func:`cgroup_settings`
    returned (``memory.limit_in_bytes``); a mix is fine. Memory resets swap first (v1 ``memsw``
    must stay >= the limit). Lifting ``limits.cpu``/``cpuset.cpus`` spreads the instance over
    every host CPU, so it needs ``host_cpus``. Unknown names raise InvalidArgument.
    """
    _check_version(cgroup_version)
    v2 = cgroup_version == 2
    wanted = set(keys)
    writes: list[tuple[str, str]] = []
    if wanted & {"limits.memory", "limits.memory.enforce", "limits.memory.swap"}:
        writes += _memory_reset(cgroup_version, swap_accounting)
    if not v2 and wanted & {"limits.memory.swap", "limits.memory.swap.priority"}:
        writes.append(("memory.swappiness", "60"))
    if wanted & set(_CPU_KEYS):
        writes += _cpu_writes({}, cgroup_version, always=True)
    if "limits.cpu" in wanted:
        writes.append(("cpuset.cpus", _unset_file("cpuset.cpus", cgroup_version, host_cpus)))
    if "limits.disk.priority" in wanted:
        writes.append(("io.weight" if v2 else "blkio.weight", str(disk_weight(""))))
    if "limits.processes" in wanted:
        writes.append(("pids.max", "max"))
    for size in HUGEPAGE_SIZES:
        if f"limits.hugepages.{size}" in wanted:
            writes.append((_hugepage_file(size, cgroup_version), "max" if v2 else "-1"))
    files = sorted(
        (k for k in wanted if not k.startswith("limits.")),
        key=lambda f: (_FILE_ORDER.index(f) if f in _FILE_ORDER else len(_FILE_ORDER), f),
    )
    writes += [(f, _unset_file(f, cgroup_version, host_cpus)) for f in files]
    known_keys = {*_MEMORY_KEYS, *_CPU_KEYS, "limits.cpu", "limits.disk.priority",
                  "limits.processes", *(f"limits.hugepages.{s}" for s in HUGEPAGE_SIZES)}
    unknown = sorted(k for k in wanted if k.startswith("limits.") and k not in known_keys)
    if unknown:
        raise InvalidArgument(f"No cgroup limit for {unknown[0]!r}")
    return dict(writes)


def live_settings(
    config: Mapping[str, str],
    changed: Iterable[str],
    *,
    cgroup_version: int,
    host_cpus: int,
    mem_total: int,
    chosen_cpus: Sequence[int] | None = None,
    swap_accounting: bool = True,
) -> list[tuple[str, str]]:
    """Ordered writes that move a running instance to ``config`` after ``changed`` keys changed.

    Like LXD's ``Update``: a memory change resets all memory limits and then sets the new ones;
    a CPU allowance/priority change rewrites shares and quota; a removed key lifts its limit.
    Keys without a cgroup effect are ignored. A file may appear twice (reset, then set).
    """
    _check_version(cgroup_version)
    v2 = cgroup_version == 2
    keys = set(changed)
    writes: list[tuple[str, str]] = []
    if keys & set(_MEMORY_KEYS):
        writes += _memory_reset(cgroup_version, swap_accounting)
        mem_only = {k: v for k, v in config.items() if k in _MEMORY_KEYS}
        new = [w for w in _memory_writes(mem_only, cgroup_version, mem_total, swap_accounting)
               if w[0] != "memory.swappiness"]
        writes += new
        if not v2 and keys & {"limits.memory.swap", "limits.memory.swap.priority"}:
            if is_false(config.get("limits.memory.swap")):
                writes.append(("memory.swappiness", "0"))
            else:
                prio_s = config.get("limits.memory.swap.priority", "") or "10"
                writes.append(("memory.swappiness",
                               str(70 - _atoi(prio_s, "limits.memory.swap.priority"))))
    if keys & set(_CPU_KEYS):
        writes += _cpu_writes(config, cgroup_version, always=True)
    if "limits.cpu" in keys:
        cpuset = (_cpuset_for(config["limits.cpu"], host_cpus, chosen_cpus)
                  if config.get("limits.cpu", "") else None)
        writes.append(("cpuset.cpus", cpuset or format_cpuset(range(host_cpus))))
    if "limits.disk.priority" in keys:
        weight = disk_weight(config.get("limits.disk.priority", ""))
        writes.append(("io.weight" if v2 else "blkio.weight", str(weight)))
    if "limits.processes" in keys:
        value = config.get("limits.processes", "")
        writes.append(("pids.max", str(_atoi(value, "limits.processes")) if value else "max"))
    for size in HUGEPAGE_SIZES:
        key = f"limits.hugepages.{size}"
        if key in keys:
            value = config.get(key, "")
            writes.append((_hugepage_file(size, cgroup_version),
                           str(parse_size(value)) if value else ("max" if v2 else "-1")))
    return writes


# ------------------------------------------------------------------------------------------------
# Kernel resource limits


def _limit_number(s: str, key: str, raw: str) -> int | None:
    if s == "unlimited":
        return None
    if not re.fullmatch(r"[0-9]+", s):
        raise InvalidConfig(key, f"Invalid limit {s!r}: expected a number or 'unlimited'", raw)
    n = int(s)
    if n > RLIM_MAX:
        raise InvalidConfig(key, f"Limit {s} is out of range", raw)
    return n


def parse_prlimit_value(value: str, *, key: str = "limits.kernel") -> tuple[int | None, int | None]:
    """``'N'``, ``'unlimited'`` or ``'soft:hard'`` -> ``(soft, hard)`` with None = unlimited.

    A single value sets both. The soft limit may not exceed the hard one (setrlimit would fail
    at start).
    """
    soft_s, colon, hard_s = value.partition(":")
    soft = _limit_number(soft_s.strip(), key, value)
    hard = _limit_number(hard_s.strip(), key, value) if colon else soft
    if hard is not None and (soft is None or soft > hard):
        raise InvalidConfig(key, "The soft limit cannot be above the hard limit", value)
    return soft, hard


def validate_prlimit(key: str, value: str) -> None:
    """Check one ``limits.kernel.<resource>`` key and value."""
    resource = key.removeprefix("limits.kernel.")
    if resource not in PRLIMIT_RESOURCES:
        raise InvalidConfig(
            key,
            f"Unknown kernel resource {resource!r} (one of {', '.join(sorted(PRLIMIT_RESOURCES))})",
            value,
        )
    parse_prlimit_value(value, key=key)


def prlimits(config: Mapping[str, str]) -> dict[str, str]:
    """``limits.kernel.<res>`` keys -> ``{res: value}`` for ``lxc.prlimit.<res>``, validated."""
    out: dict[str, str] = {}
    for key in sorted(config):
        if key.startswith("limits.kernel.") and config[key] != "":
            validate_prlimit(key, config[key])
            out[key.removeprefix("limits.kernel.")] = config[key]
    return out
