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

from .logs import get_logger
from .state import Paths

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
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):  # another process rotated it first
                os.replace(self.path, self.path.with_suffix(".log.1"))
            fd = os.open(self.path, flags, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

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
        pos = 0 if from_start else (self.path.stat().st_size if self.path.exists() else 0)
        return self._follow(pos, poll, timeout)

    def _follow(self, pos: int, poll: float, timeout: float | None
                ) -> Iterator[dict[str, object]]:
        buf = b""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                with open(self.path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size < pos:
                        pos = 0  # rotated
                    f.seek(pos)
                    data = f.read()
                    pos += len(data)
            except FileNotFoundError:
                data = b""
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
            if not data:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                time.sleep(poll)
