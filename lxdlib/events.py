"""Lifecycle events, shared by every process that uses a root.

With no daemon there is no socket to subscribe to: each event is one JSON line appended to
``<root>/events.log`` (``O_APPEND`` writes of a line are atomic), and a watcher follows the file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
from collections.abc import Iterable, Iterator

from .errors import TYPE_CHECKING
from .logs import get_logger
from .state import Paths

if TYPE_CHECKING:
    from typing import BinaryIO

log = get_logger(__name__)

MAX_SIZE = 4 << 20


class Events:
    def __init__(self, paths: Paths) -> None:
        self.path = paths.root / "events.log"

    def emit(self, action: str, source: str, **metadata: str) -> None:
        """Append the event. It tells of an operation that has already happened (its record
        committed), so a log that cannot take it (a full disk, a path that is no file) is
        logged and never fails that operation: the caller would report a failure and maybe
        undo what did happen."""
        line = json.dumps({"type": "lifecycle", "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                           "metadata": {"action": action, "source": source, **metadata}})
        try:
            self._append((line + "\n").encode())
        except OSError as e:
            log.warning("event %s of %s not written to %s: %s", action, source, self.path, e)

    def _append(self, data: bytes) -> None:
        # O_NOFOLLOW: only root writes under the root, but a link there is no log of ours
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path, flags, 0o600)
        if os.fstat(fd).st_size > MAX_SIZE:
            try:
                self._rotate(fd)
            finally:
                os.close(fd)
            fd = os.open(self.path, flags, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def _rotate(self, fd: int) -> None:
        """Move the full log (open at ``fd``) to ``events.log.1``, unless another writer did
        first. Two writers that found it full both renamed: the second moved the first one's
        new log, one event long, over the old log's 4 MiB, lost. The writers take the full
        file's lock in turn, and only one that finds the path still naming it renames it."""
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            held = os.fstat(fd)
            try:
                st = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                return
            if (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
                os.replace(self.path, self.path.with_suffix(".log.1"))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def __call__(self, types: Iterable[str] | None = None, *, from_start: bool = False,
                 timeout: float | None = None) -> Iterator[dict[str, object]]:
        """``host.events()``: follow events of the given types (all by default) written by any
        process on this root, from the moment of the call (not of the first ``next``); ends
        after ``timeout`` seconds if one is given."""
        wanted = set(types) if types is not None else None
        events = self.follow(from_start=from_start, timeout=timeout)
        return (ev for ev in events if wanted is None or ev.get("type") in wanted)

    __iter__ = __call__

    def follow(self, poll: float = 0.1, from_start: bool = False,
               timeout: float | None = None) -> Iterator[dict[str, object]]:
        """Yield events as they are written (from now on, unless ``from_start``)."""
        f: BinaryIO | None
        try:  # opened now: the place is in this file, whatever a rotation does before ``next``
            f = open(self.path, "rb")  # noqa: SIM115 (the generator closes it)
        except FileNotFoundError:
            f = None
        else:
            if not from_start:
                f.seek(0, os.SEEK_END)
        return self._follow(f, poll, timeout)

    def _follow(self, f: BinaryIO | None, poll: float, timeout: float | None
                ) -> Iterator[dict[str, object]]:
        """Read the file held open to its end; at the end, if the path names another file
        now (a writer rotated it), go on at that one's start. The place is never carried
        from one file to another: a reader left behind a rotation, whose new file had grown
        past the old place, read from the middle of a line, and the JSON error ended it."""
        buf = b""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                if f is None:
                    with contextlib.suppress(FileNotFoundError):
                        f = open(self.path, "rb")  # noqa: SIM115
                data = f.read() if f is not None else b""
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    ev = _event(line)
                    if ev is not None:
                        yield ev
                if data:
                    continue
                if f is not None and self._moved_on(f):
                    f.close()
                    f, buf = None, b""  # a torn last line of the old file is no event
                    continue
                if deadline is not None and time.monotonic() >= deadline:
                    return
                time.sleep(poll)
        finally:
            if f is not None:
                f.close()

    def _moved_on(self, f: BinaryIO) -> bool:
        """Whether the path names a file other than ``f`` (rotated), or ``f`` was cut short
        (then it is read again from its start)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # rotated, the next file not made yet: the old one is read out
        held = os.fstat(f.fileno())
        if (st.st_dev, st.st_ino) != (held.st_dev, held.st_ino):
            return True
        if held.st_size < f.tell():
            f.seek(0)
        return False


def _event(line: bytes) -> dict[str, object] | None:
    """One line's event; None for a blank one, or one that is no event (a line a full disk
    cut short, with the next one glued on): passed over, not the end of every follower."""
    if not line.strip():
        return None
    try:
        ev = json.loads(line)
    except ValueError:
        log.warning("an event line that is not JSON was passed over: %.80r", line)
        return None
    return ev if isinstance(ev, dict) else None
