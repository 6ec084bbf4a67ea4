"""What ``lxc info`` shows of an instance's interfaces: addresses and byte counters.

Counters come from ``/proc/<init pid>/net/dev`` (that file shows the namespace of the process it
belongs to, so no namespace switch is needed); addresses from liblxc, which looks inside.
"""

from __future__ import annotations

from typing import Any

from . import runtime


def counters(pid: int) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except FileNotFoundError:
        return out
    for line in lines:
        name, _, rest = line.partition(":")
        v = [int(x) for x in rest.split()]
        if len(v) >= 16:
            out[name.strip()] = {"bytes_received": v[0], "packets_received": v[1],
                                 "bytes_sent": v[8], "packets_sent": v[9]}
    return out


def interfaces_of(c: Any) -> dict[str, Any]:
    stats = counters(c.init_pid)
    out: dict[str, Any] = {}
    for name in sorted(set(runtime.interfaces(c)) | set(stats)):
        addrs = [{"family": "inet", "address": a, "scope": "global"}
                 for a in runtime.ips(c, interface=name, family="inet")]
        addrs += [{"family": "inet6", "address": a, "scope": "global"}
                  for a in runtime.ips(c, interface=name, family="inet6")]
        if name == "lo":
            for a in addrs:
                a["scope"] = "local"
        out[name] = {"addresses": addrs, "counters": stats.get(name, {})}
    return out
