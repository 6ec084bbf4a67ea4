"""Kill a process together with everything it started: what a timed-out ``exec`` must end.

Killing only the process ``exec`` started is not enough: ``sh -c 'sleep 60; …'`` leaves the
``sleep`` running, reparented to the container's init, still holding the output pipes, so the
caller would wait for it anyway and the container would keep a stray process. The tree is first
stopped (SIGSTOP, from the top down: a stopped process cannot fork, and none of them dies, so no
child is reparented out of sight while the tree is read), then killed.

Descendants are found by each process's parent pid in ``/proc/<pid>/stat`` (kernels without
``CONFIG_PROC_CHILDREN`` have no ``children`` files). A process that left the tree before the
stop — a daemon that double-forked — is not found, as with any process-group kill.

A pid read from ``/proc`` may belong to another process by the time it is signalled: the
process that had it ended (a command in a container can end its own processes at will) and the
kernel gave the pid to a new one, on the host too, once pids wrap around. So each process is
signalled through a pidfd, and only after its parent, read once the pidfd holds it, is seen to
be the root or a process already stopped in the tree: a reused pid is never signalled.
"""

from __future__ import annotations

import os

from . import pidfd
from .livestate import parent_of
from .logs import get_logger

log = get_logger(__name__)

_ROUNDS = 50  # re-reads of the tree until it stops growing (a fork racing the SIGSTOP)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process this host shows in ``/proc``."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        parent = parent_of(int(entry))
        if parent >= 0:  # else gone meanwhile
            out[int(entry)] = parent
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


def _hold(pid: int, tree: dict[int, int], root: int) -> int | None:
    """A pidfd on ``pid`` if it is still a child of ``root`` or of a process of ``tree`` (the
    stopped ones); None otherwise (gone, or the pid is another process's now)."""
    fd = pidfd.opened(pid)
    if fd is None:
        return None
    # read after the pidfd holds a process: if that is the pid's new owner, its parent is
    # outside the tree (the check reads the pid again: were it reused once more meanwhile, the
    # pidfd's process is dead and a signal through it reaches no one)
    parent = parent_of(pid)
    if parent == root or parent in tree:
        return fd
    os.close(fd)
    return None


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and all its descendants, stopping the whole tree first so that none can
    fork or be reparented while it is read. ``pid`` itself is left for the caller to reap (so
    its pid cannot be reused meanwhile); the others are signalled through pidfds (see the
    module's docstring)."""
    import signal  # here: ``runtime`` imports this module, and most verbs kill no tree
    stopped: dict[int, int] = {}  # pid -> pidfd, parents before children
    passed: set[int] = set()  # pids read as descendants but not held: gone, or not ours
    with pidfd.held(pid) as root:
        if root is None:
            return
        try:
            pidfd.send(root, signal.SIGSTOP)
            for _ in range(_ROUNDS):
                new = [p for p in descendants(pid) if p not in stopped and p not in passed]
                if not new:
                    break
                for p in new:  # parents before children: a child's parent is checked first
                    fd = _hold(p, stopped, pid)
                    if fd is None:
                        passed.add(p)
                        continue
                    pidfd.send(fd, signal.SIGSTOP)
                    stopped[p] = fd
            pidfd.send(root, signal.SIGKILL)
            for fd in stopped.values():
                pidfd.send(fd, signal.SIGKILL)
        finally:
            for fd in stopped.values():
                os.close(fd)
    if stopped:
        log.debug("killed process %d and %d descendants", pid, len(stopped))
