"""A job run in a forked copy of this process, its result marshalled back through a pipe.

Two users: a listing of hundreds of instances forks to read namespaces with a GIL of its own
(``listing``, ``network.netstate``), and an image's templates that need Jinja2 render in a fork
with hard limits (``jinjasandbox.render_bounded``), so a hostile template can neither exhaust
the memory of the process starting the instance nor hang it. A fork costs a few milliseconds
where a fresh interpreter costs ~70 ms before it has imported anything.

A fork copies only the thread that forks: a lock another thread held at that moment stays taken
in the child. So a job must neither log nor import (logging's locks, the import machinery),
and whoever waits for it with a ``deadline`` turns any hang of the child into a failure instead
of a hang of its own.
"""

from __future__ import annotations

import contextlib
import gc
import marshal
import os
import time
from collections.abc import Callable

from .errors import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


def _fork(body: Callable[[int], None]) -> tuple[int, int, bool]:
    """Fork a child that runs ``body(wfd)`` — the pipe's write end — and exits (status 0, or 1
    if ``body`` raised); return its pid, the pipe's read end, and whether the garbage
    collector was on (off now, in both processes: see `ForkedJob`, and `_reap` turns it back
    on). The child gets the default action for every signal the caller handles (a SIGTERM
    handler may clean up what the caller made): a signal ends a fork, as it should."""
    import signal  # here, before the fork: the child imports nothing
    rfd, wfd = os.pipe()
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        pid = os.fork()
    except OSError:
        os.close(rfd)
        os.close(wfd)
        if gc_was_on:
            gc.enable()
        raise
    if pid == 0:  # the child: no logging, no import, no return
        code = 1
        try:
            for sig in signal.valid_signals():
                if callable(signal.getsignal(sig)):
                    signal.signal(sig, signal.SIG_DFL)
            os.close(rfd)
            body(wfd)
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    return pid, rfd, gc_was_on


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _reap(pid: int, kill: bool, gc_was_on: bool) -> int | None:
    """Wait for the child (killed first if ``kill``); its wait status, None if a SIGCHLD
    handler reaped it. The garbage collector goes back on as it was before `_fork`."""
    if kill:
        import signal
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    status = None
    with contextlib.suppress(ChildProcessError):  # reaped by a SIGCHLD handler
        status = os.waitpid(pid, 0)[1]
    if gc_was_on:
        gc.enable()
    return status


class ForkedJob:
    """``job()`` run in a forked child (a copy of this process, which runs no program); its
    result comes back marshalled through a pipe. ``job`` must neither log nor import, and
    return what ``marshal`` takes: its own data, made by this very code, so nothing a
    container wrote is unmarshalled but as strings and bytes. ``OSError`` if the fork fails.
    A job that raises ends the child with status 1 and no result.

    Python's cyclic garbage collector is off from the fork until `result`, in both processes:
    a collection walks every object of the heap and writes to each one's header, which makes
    the kernel copy every page the two processes still share. Measured with 346 MiB of
    objects in the caller, a first listing of 1,000 took 446-818 ms with it on, 335-365 ms
    with it off (the first listing there also pays a collection of those objects: 306-338 ms
    when only the namespaces were read in the fork). What the two allocate meanwhile is
    collected after."""

    def __init__(self, job: Callable[[], Any], *, close_fds: bool = False) -> None:
        """``close_fds``: the child closes every descriptor of the caller but 0-2 before
        ``job``, so it holds none of the caller's ``flock`` locks (the instance's, during a
        start) once the caller is gone, should it outlive it."""
        #: how the child ended (``os.waitpid``'s status), once `result` has waited for it
        self.status: int | None = None
        #: whether `result` killed it at its deadline
        self.timed_out = False

        def body(wfd: int) -> None:
            if close_fds:
                os.closerange(3, wfd)
                os.closerange(wfd + 1, 1 << 20)
            _write_all(wfd, marshal.dumps(job()))

        self.pid, self.rfd, self.gc_was_on = _fork(body)
        self.started = time.monotonic()

    def result(self, failures: list[tuple[int, OSError]], deadline: float | None = None
               ) -> Any:
        """Its result once it ends (None if it could not give one: the caller does that work
        itself, or reports it). The child is waited for, or killed on the way out of an
        error. With a ``deadline`` (seconds from the fork), a child that has not ended by
        then is killed (`timed_out`) and None returned."""
        chunks: list[bytes] = []
        done = False
        try:
            if deadline is not None:
                import select  # here: only a wait with a deadline polls
                poller = select.poll()
                poller.register(self.rfd, select.POLLIN)
            while True:
                if deadline is not None:
                    left = self.started + deadline - time.monotonic()
                    if left <= 0 or not poller.poll(left * 1000):
                        self.timed_out = True
                        failures.append((self.pid, OSError(
                            f"the forked job did not end within {deadline} s")))
                        return None
                chunk = os.read(self.rfd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
            done = True
        finally:
            os.close(self.rfd)
            self.status = _reap(self.pid, not done, self.gc_was_on)
        try:
            return marshal.loads(b"".join(chunks))
        except (EOFError, ValueError, TypeError) as e:
            failures.append((0, OSError(f"the forked job gave no result: {e}")))
            return None


def each_within(count: int, ask: Callable[[int], Any], timeout: float) -> dict[int, Any]:
    """``ask(0)``, ``ask(1)`` … ``ask(count - 1)`` in a forked child, each answer sent back as
    soon as it is made: {index: answer} of those that answered. An ask that has not answered
    within ``timeout`` seconds of the previous answer (or of the fork) is given up — the
    child is killed and the asks after it are made in a new fork — and so is one that ended
    the child (an ask that raises); their indices are missing from the result.

    For calls that can block for ever in C with the GIL held, where a thread with a timeout
    would freeze the whole process: a liblxc command to a container's monitor that does not
    answer (one stuck in a hook). One fork for all the asks while they answer, one more only
    after each that does not. ``ask`` follows `ForkedJob`'s rules (no logging, no import) and
    returns what ``marshal`` takes."""
    import select
    out: dict[int, Any] = {}
    start = 0
    while start < count:
        def body(wfd: int, first: int = start) -> None:
            for i in range(first, count):
                data = marshal.dumps((i, ask(i)))
                _write_all(wfd, len(data).to_bytes(4, "little") + data)

        pid, rfd, gc_was_on = _fork(body)
        expect = start  # the ask under way: the first not answered yet
        ended = False
        try:
            poller = select.poll()
            poller.register(rfd, select.POLLIN)
            buf = b""
            deadline = time.monotonic() + timeout
            while expect < count:
                left = deadline - time.monotonic()
                if left <= 0 or not poller.poll(left * 1000):
                    break  # ask(expect) does not answer
                chunk = os.read(rfd, 1 << 16)
                if not chunk:
                    ended = True
                    break  # the child ended: done, or ask(expect) ended it
                buf += chunk
                while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "little"):
                    size = int.from_bytes(buf[:4], "little")
                    i, value = marshal.loads(buf[4:4 + size])
                    buf = buf[4 + size:]
                    out[i] = value
                    expect = i + 1
                    deadline = time.monotonic() + timeout
        finally:
            os.close(rfd)
            _reap(pid, not ended, gc_was_on)
        start = expect + 1
    return out
