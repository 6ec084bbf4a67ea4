"""``Instance.popen``: a command in the instance that runs while the caller talks to it.

``exec`` collects the output and returns when the command is done; some jobs need to feed a
process, read its output as it comes or run several at once. This mirrors ``subprocess.Popen``
(pipes, ``poll``/``wait``/``communicate``, signals) on top of ``runtime.spawn``: the process runs
in the container, but it is a child of this process, so waiting and signalling act on its host
process (through a pidfd, ``runtime.Attached``). Exit codes are LXD's (128+N for signal N).

Stopping the instance (stop, restart, ``delete --force``, a snapshot restore) kills the
process as it kills every process of the instance, and its pipes then read EOF; its code
(137, killed) stays for ``wait``. Only this process can reap it, and the instance's init
cannot finish dying before it is reaped: a stop from this process does that itself
(``runtime.Attached``), but a stop from another process (the command line) waits until this
one calls ``poll``, ``wait`` or ``communicate`` (or exits).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

from . import runtime
from .errors import TYPE_CHECKING, InvalidArgument
from .logs import get_logger

if TYPE_CHECKING:
    from typing import IO, Any

    from .instance import InstanceCore

    Stream = int | IO[Any] | None

log = get_logger(__name__)

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT


class Popen:
    """A running command: ``stdin``/``stdout``/``stderr`` are binary file objects for
    ``PIPE`` streams (None otherwise), ``returncode`` is None until it has been waited for."""

    def __init__(self, inst: InstanceCore, command: Sequence[str] | str, *, stdin: Stream = PIPE,
                 stdout: Stream = PIPE, stderr: Stream = PIPE,
                 env: Mapping[str, str] | None = None, cwd: str | None = None, user: int = 0,
                 group: int = 0, bufsize: int = -1) -> None:
        self.args = ["sh", "-c", command] if isinstance(command, str) else list(command)
        if not self.args:
            raise InvalidArgument("empty command")
        self.returncode: int | None = None
        self.stdin: IO[bytes] | None = None
        self.stdout: IO[bytes] | None = None
        self.stderr: IO[bytes] | None = None
        child: list[int] = []  # our copies of the child's ends, closed once it has them
        ours: list[int] = []

        def fd_of(s: Stream, default: int, child_reads: bool) -> tuple[int, int | None]:
            """(fd for the child, our end if a pipe)"""
            if s == PIPE:
                r, w = os.pipe()
                theirs, mine = (r, w) if child_reads else (w, r)
                child.append(theirs)
                ours.append(mine)
                return theirs, mine
            if s == DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                child.append(fd)
                return fd, None
            if s is None:
                return default, None
            if isinstance(s, int):
                if s < 0:
                    raise InvalidArgument(f"invalid stream {s}")
                return s, None
            return s.fileno(), None

        try:
            in_fd, in_mine = fd_of(stdin, 0, True)
            out_fd, out_mine = fd_of(stdout, 1, False)
            if stderr == STDOUT:
                err_fd, err_mine = out_fd, None
            else:
                err_fd, err_mine = fd_of(stderr, 2, False)
            self._child = runtime.spawn(
                inst.handle(), self.args, env=inst._exec_env(env, user),
                cwd=cwd if cwd is not None else ("/root" if user == 0 else "/"), uid=user,
                gid=group, stdin=in_fd, stdout=out_fd, stderr=err_fd)
            self.pid = self._child.pid
        except BaseException:
            for fd in child + ours:
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise
        log.debug("popen in %s: %s (host pid %d, uid %d, gid %d)", inst.name, self.args,
                  self.pid, user, group)
        for fd in child:
            os.close(fd)
        if in_mine is not None:
            self.stdin = open(in_mine, "wb", buffering=bufsize)  # noqa: SIM115 - kept open
        if out_mine is not None:
            self.stdout = open(out_mine, "rb", buffering=bufsize)  # noqa: SIM115
        if err_mine is not None:
            self.stderr = open(err_mine, "rb", buffering=bufsize)  # noqa: SIM115

    def __repr__(self) -> str:
        return f"<Popen {self.args!r} pid={self.pid} returncode={self.returncode}>"

    # -- waiting -------------------------------------------------------------------------------
    def _reap(self, timeout: float) -> int | None:
        """Through ``runtime.Attached``, which a stop of the instance in this process may have
        reaped already (its init cannot die before that), keeping the code for us."""
        if self.returncode is None:
            self.returncode = self._child.wait(timeout)
        return self.returncode

    def poll(self) -> int | None:
        return self._reap(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._reap(-1 if timeout is None else max(0.0, timeout))
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def communicate(self, input: bytes | None = None, timeout: float | None = None
                    ) -> tuple[bytes | None, bytes | None]:
        """Send ``input``, close stdin, read stdout/stderr to the end, wait."""
        sel = selectors.DefaultSelector()
        out: dict[int, list[bytes]] = {}
        pending = memoryview(input or b"")
        if self.stdin is not None:
            self.stdin.flush()
            if pending:
                os.set_blocking(self.stdin.fileno(), False)
                sel.register(self.stdin.fileno(), selectors.EVENT_WRITE)
            else:
                self.stdin.close()
        for f in (self.stdout, self.stderr):
            if f is not None:
                out[f.fileno()] = []
                sel.register(f.fileno(), selectors.EVENT_READ)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while sel.get_map():
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                for key, _ in sel.select(wait):
                    fd = int(key.fd)
                    if fd in out:
                        data = os.read(fd, 65536)
                        if data:
                            out[fd].append(data)
                        else:
                            sel.unregister(fd)
                    else:
                        try:
                            n = os.write(fd, pending[:65536])
                        except BrokenPipeError:
                            n = len(pending)
                        pending = pending[n:]
                        if not pending:
                            sel.unregister(fd)
                            assert self.stdin is not None
                            with contextlib.suppress(BrokenPipeError):
                                self.stdin.close()
        finally:
            sel.close()
        result = tuple(b"".join(out[f.fileno()]) if f is not None else None
                       for f in (self.stdout, self.stderr))
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return result[0], result[1]

    # -- signals -------------------------------------------------------------------------------
    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            self._child.signal(sig)  # by pidfd: never a pid that may have been reused
            log.debug("popen pid %d: sent signal %d", self.pid, sig)


    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self) -> Popen:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        if self.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.stdin.close()
        self.wait()
