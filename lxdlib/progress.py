"""Progress bars for the operations that report ``progress(done, total)``.

Image downloads, imports, publish and export take a ``progress=`` callback with bytes done and
bytes expected (``total`` 0 when unknown). ``tqdm_progress`` turns that into a tqdm bar — a
widget in Jupyter (with ipywidgets), text on a terminal — so a notebook cell needs one argument:

    host.images.import_file(path, aliases=["deb"], progress=tqdm_progress("import"))

``LineProgress`` is the other renderer: the one-line progress LXD's ``lxc`` draws on a terminal
(``Transferring image: 45% (3.20MB/s)``), silent when stderr is not a terminal; the command line
uses it, and ``Sampled`` feeds it for work that reports no progress of its own.
"""

from __future__ import annotations

import contextlib
import os

from .errors import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


class TqdmProgress:
    """A ``progress(done, total)`` callback drawing one tqdm bar; it closes itself at the end
    (or use it as a context manager so a failed operation closes it too)."""

    def __init__(self, desc: str = "", *, unit: str = "B", **tqdm_kw: Any) -> None:
        try:
            from tqdm.auto import tqdm  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            raise ImportError("progress bars need tqdm: pip install tqdm") from None
        self._tqdm = tqdm
        self._kw = {"desc": desc, "unit": unit, "unit_scale": unit == "B",
                    "unit_divisor": 1024 if unit == "B" else 1000, "leave": True, **tqdm_kw}
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = self._tqdm(total=total or None, **self._kw)
        bar = self.bar
        if total and bar.total != total:
            bar.total = total
            bar.refresh()
        if done > bar.n:
            bar.update(done - bar.n)
        if total and done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None and not getattr(self.bar, "disable", False):
            self.bar.close()

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tqdm_progress(desc: str = "", *, unit: str = "B", **tqdm_kw: Any) -> TqdmProgress:
    """A callback for ``progress=`` that drives a tqdm bar (``tqdm.auto``)."""
    return TqdmProgress(desc, unit=unit, **tqdm_kw)


# -- LXD's one-line progress on a terminal -----------------------------------------------

def byte_size(n: float) -> str:
    """A byte count as LXD's client writes it in progress lines: decimal units, two decimals
    (``999B``, ``12.30MB``), so a speed reads the same as ``lxc``'s."""
    if n < 1000:
        return f"{int(n)}B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        value /= 1000
        if value < 1000:
            return f"{value:.2f}{unit}"
    return f"{value / 1000:.2f}EB"


class LineProgress:
    """LXD's progress line (``Pushing a to c1/a: 45% (3.20MB/s)``, or ``12.30MB (4.10MB/s)``
    when the total is unknown) rewritten in place on stderr while it is a terminal.

    A ``progress(done, total)`` callback for the library's long operations. Piped or with
    ``quiet`` it draws nothing, so scripts and logs never get carriage returns. ``done()``
    clears the line; call it on failure too (or use it as a context manager).
    """

    def __init__(self, label: str, stream: Any = None, quiet: bool = False) -> None:
        import sys
        import time
        self._clock = time.monotonic
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = not quiet and bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = self._clock()
        self.last = 0.0
        self.width = 0

    def text(self, done: int, total: int, elapsed: float) -> str:
        """The line for ``done`` of ``total`` bytes after ``elapsed`` seconds."""
        rate = byte_size(done / max(elapsed, 1e-3))
        head = f"{min(done * 100 // total, 100)}%" if total else byte_size(done)
        return f"{self.label}: {head} ({rate}/s)"

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if now - self.last < 0.1 and done != total:
            return
        self.last = now
        line = self.text(done, total, now - self.start)
        self.stream.write("\r" + line.ljust(self.width))
        self.width = max(self.width, len(line))
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()


class Sampled:
    """Drive a ``LineProgress`` from ``sample() -> (done, total)`` polled on a thread, for
    work the library does in one call without a callback (a tar written by a child process,
    a file copied by the kernel): the line shows what has reached the disk so far.

    A context manager; nothing starts when the line is disabled (piped, quiet).
    """

    def __init__(self, bar: LineProgress, sample: Any, interval: float = 0.2) -> None:
        import threading
        self.bar = bar
        self.sample = sample
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lxdlib-progress", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                done, total = self.sample()
            except OSError:
                continue
            if done:
                self.bar(done, total)

    def __enter__(self) -> Sampled:
        if self.bar.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.bar.done()


def growing_files(directory: str | os.PathLike[str], prefix: str, suffix: str) -> int:
    """Bytes so far in the files of ``directory`` named ``prefix…suffix`` (the temporary files
    an export writes before renaming them into place): a ``Sampled`` measure of its work."""
    total = 0
    with os.scandir(directory) as it:
        for e in it:
            if e.name.startswith(prefix) and e.name.endswith(suffix):
                with contextlib.suppress(FileNotFoundError):
                    total += e.stat(follow_symlinks=False).st_size
    return total


def read_position(path: str | os.PathLike[str]) -> int:
    """How far this process or any of its children has read ``path`` (the furthest offset of
    a descriptor open on it, from ``/proc``): a ``Sampled`` measure for work that reads one
    file through child processes (``tar``, a decompressor)."""
    target = os.path.realpath(path)
    best = 0
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") != target:
                        continue
                    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                        pos = int(f.readline().split()[1])  # "pos:\t<offset>"
                    best = max(best, pos)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo += [int(x) for x in f.read().split()]
    return best
