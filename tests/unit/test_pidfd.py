"""lxdlib.pidfd: a process held by a pidfd is the one signalled and waited for, and an ended one
is signalled no more (its pid may be another process's by then)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from lxdlib import pidfd


def test_held_process_is_signalled_and_waited_for() -> None:
    p = subprocess.Popen(["sleep", "60"])
    try:
        with pidfd.held(p.pid) as fd:
            assert fd is not None
            assert not pidfd.exited(fd, 0)
            pidfd.send(fd, signal.SIGTERM)
            assert pidfd.exited(fd, 10)
            assert p.wait(timeout=10) == -signal.SIGTERM
            pidfd.send(fd, signal.SIGKILL)  # ended and reaped: reaches no one, raises nothing
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_no_process_no_pidfd() -> None:
    beyond = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    with pidfd.held(beyond) as fd:
        assert fd is None
