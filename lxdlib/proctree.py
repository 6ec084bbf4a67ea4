"""Kill a process together with everything it started: what a timed-out ``exec`` must end.

Killing only the process ``exec`` started is not enough: ``sh -c 'sleep 60; …'`` leaves the
``sleep`` running, reparented to the container's init, still holding the output pipes, so the
caller would wait for it anyway and the container would keep a stray process. The tree is first
stopped (SIGSTOP, from the top down: a stopped process cannot fork, and none of them dies, so no
child is reparented out of sight while the tree is read), then killed.

Descendants are found by each process's parent pid in ``/proc/<pid>/stat`` (kernels without
``CONFIG_PROC_CHILDREN`` have no ``children`` files). A process that left the tree before the
stop — a daemon that double-forked — is not found, as with any process-group kill.
"""

from __future__ import annotations

import contextlib
import os
import signal

from .logs import get_logger

log = get_logger(__name__)

_ROUNDS = 50  # re-reads of the tree until it stops growing (a fork racing the SIGSTOP)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process this host shows in ``/proc``."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue  # gone meanwhile
        # the command name may hold spaces and parentheses: the fields follow the last ")"
        fields = data[data.rfind(b")") + 2:].split()
        with contextlib.suppress(IndexError, ValueError):
            out[int(entry)] = int(fields[1])
    return out


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, their children…), parents before children."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    out: list[int] = []
    todo = list(children.get(pid, ()))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants, stopping the whole tree first so that none can
    fork or be reparented while it is read. ``pid`` itself is left for the caller to reap."""
    stopped: list[int] = []
    for _ in range(_ROUNDS):
        new = [p for p in [pid, *descendants(pid)] if p not in stopped]
        if not new:
            break
        for p in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGSTOP)
            stopped.append(p)
    for p in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    if len(stopped) > 1:
        log.debug("killed process %d and %d descendants", pid, len(stopped) - 1)
