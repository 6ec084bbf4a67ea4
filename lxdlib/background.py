"""Work done beside a storage call that waits in the kernel without Python's GIL.

A btrfs snapshot is a transaction commit: 1.2-2 ms in which the calling thread has nothing to
do. A copy, a snapshot or a create has work that must not take effect before the new volume
exists, but can be done before: render and check the liblxc config, encode the record that
names the volume and write it (fsync'd) where it has no name yet (``state.PreparedWrite``).
``beside`` runs that preparation on a thread while the caller's thread makes the storage call;
the caller then takes the prepared result and commits it.

The storage call stays in the caller's thread, and the thread is started without waiting for
it to run (``_thread.start_new_thread``): on this project's VM a new thread runs 0.16 ms after
its start (median, up to 0.9 ms when the other vCPU is idle), and ``threading.Thread.start``
waits for that, so a storage call handed to a thread began up to 3 ms late (measured in
``bench/lifecycle.py``). Prepared beside it instead, the preparation has the whole commit to
start and finish in. ``threading`` itself is not imported (~0.5 ms of a command's start).

It pays only where the call releases the GIL (the btrfs driver's snapshots through
``storage.btrfssnap``, in a long-lived process); elsewhere the caller asks for no thread and the
preparation runs when its result is taken, after the storage call, as a plain sequence.
"""

from __future__ import annotations

import _thread
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Generic, TypeVar

    T = TypeVar("T")
else:
    from .model import Generic  # its subscription only, without importing ``typing``

    T = None


class Beside(Generic[T]):
    """The preparation's outcome, taken by ``result`` (which waits for it)."""

    __slots__ = ("_done", "_error", "_fn", "_has_value", "_value")

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._done: _thread.LockType | None = None  # held while the thread runs
        self._error: BaseException | None = None
        self._has_value = False

    def _run(self) -> None:
        try:
            self._run_here()
        finally:
            assert self._done is not None
            self._done.release()

    def start(self) -> None:
        self._done = _thread.allocate_lock()
        self._done.acquire()
        _thread.start_new_thread(self._run, ())

    def wait(self) -> None:
        if self._done is not None:
            with self._done:
                pass
            self._done = None

    def result(self) -> T:
        """The preparation's value (run now if no thread was asked for); its exception
        raised here instead."""
        self.wait()
        if not self._has_value and self._error is None:
            self._run_here()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._value

    def _run_here(self) -> None:
        try:
            self._value = self._fn()
            self._has_value = True
        except BaseException as e:  # handed to the caller by ``result``
            self._error = e


@contextmanager
def beside(fn: Callable[[], T], threaded: bool,
           undo: Callable[[T], object] | None = None) -> Iterator[Beside[T]]:
    """Run ``fn`` on a thread (``threaded``) while the block makes its storage call; take
    ``result()`` after the block. Unthreaded, ``fn`` runs when ``result()`` is asked.

    Leaving the block waits for ``fn``. When the block raises, that exception goes on and
    what ``fn`` prepared is handed to ``undo`` (its failure, if any, is dropped): the storage
    call failed, and nothing prepared for it may stay."""
    side: Beside[T] = Beside(fn)
    if threaded:
        side.start()
    try:
        yield side
    except BaseException:
        side.wait()
        if side._has_value and undo is not None:
            undo(side._value)
        raise
    side.wait()
