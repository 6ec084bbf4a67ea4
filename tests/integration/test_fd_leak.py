"""A long-lived process that drives instances must keep a flat file-descriptor count.

Issue 10 case 11: every ``exec`` left a pidfd on the container's init behind (liblxc's attach
never closes the one it fetches in the caller), and every liblxc container object kept its
``lxc.log`` open until the cyclic garbage collector ran. The loops run with the collector
disabled: freeing must not depend on it.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections import Counter
from collections.abc import Iterator

import pytest

import lxdlib
from lxdlib.popen import PIPE

pytestmark = pytest.mark.root

MAX_GROWTH = 5
#: Rounds of each loop, and how often the rarer paths run: a leak of one fd per call of any path
#: (the rarer ones run EXEC_ROUNDS // RARE_EVERY = 12 times) grows the count past MAX_GROWTH.
EXEC_ROUNDS, RARE_EVERY = 300, 25
CYCLES = 60


def _fds() -> Counter[str]:
    """This process's open fds, by what they point at (for a readable failure)."""
    out: Counter[str] = Counter()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out[os.readlink(f"/proc/self/fd/{name}")] += 1
    return out


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _assert_flat(before: Counter[str], after: Counter[str]) -> None:
    growth = sum(after.values()) - sum(before.values())
    assert growth <= MAX_GROWTH, f"{growth} more fds: {(after - before).most_common(5)}"


def test_exec_keeps_fd_count_flat(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "fd1")
    assert c.exec(["true"]).ok  # warm up: first-use caches (logging, imports)
    with _no_gc():
        before = _fds()
        for i in range(EXEC_ROUNDS):
            if i % RARE_EVERY == 0:  # the other paths that open container objects or attach
                assert c.state == "RUNNING"
                with c.popen(["cat"], stdin=PIPE, stdout=PIPE, stderr=PIPE) as p:
                    assert p.communicate(b"x")[0] == b"x"
                with pytest.raises(lxdlib.Timeout):
                    c.exec(["sleep", "5"], timeout=0.01)
            assert c.exec(["true"]).returncode == 0
            if i % 100 == 99:  # fail early: a leak would otherwise pile up hundreds of fds
                _assert_flat(before, _fds())
        after = _fds()
    _assert_flat(before, after)


def test_launch_delete_cycles_keep_fd_count_flat(host: lxdlib.Host) -> None:
    c = host.launch("busybox", "fd2")
    c.delete(force=True)
    with _no_gc():
        before = _fds()
        for i in range(CYCLES):
            c = host.launch("busybox", "fd2")
            assert c.exec(["true"]).returncode == 0
            c.delete(force=True)
            if i % 20 == 19:
                _assert_flat(before, _fds())
        after = _fds()
    _assert_flat(before, after)
