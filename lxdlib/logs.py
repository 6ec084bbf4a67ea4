"""lxdlib's loggers: stdlib ``logging`` under ``lxdlib``, imported only when a record can go
somewhere.

Importing :mod:`logging` costs ~2.5 ms, a tenth of what a quick command such as ``lxdlib list``
spends on start-up, and most commands never emit a record anyone sees. While nothing in the
process has imported ``logging``, nothing can have configured it either: the root logger's
level is WARNING and it has no handlers, so a DEBUG or INFO record would be dropped. A
``Logger`` here drops those itself without importing anything, and hands everything else —
WARNING and above always, every level once ``logging`` is imported by anyone (an application,
pytest, ``lxdlib --debug``) — to ``logging.getLogger(name)``, so records, levels, handlers and
``caplog`` behave exactly as with the stdlib logger. Hand-written rather than a library: what
it does is this one check, and none of the logging libraries defers its own import.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # ``typing``'s (see ``errors.TYPE_CHECKING``)
if TYPE_CHECKING:
    import logging
    from typing import Any

DEBUG = 10
INFO = 20
WARNING = 30
ERROR = 40


class Logger:
    """The methods of ``logging.Logger`` that lxdlib calls, on the logger of ``name``."""

    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def _real(self) -> logging.Logger:
        if self._logger is None:
            import logging
            self._logger = logging.getLogger(self.name)
        return self._logger

    def isEnabledFor(self, level: int) -> bool:
        if level < WARNING and "logging" not in sys.modules:
            return False
        return self._real().isEnabledFor(level)

    def _emit(self, level: int, msg: object, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> None:
        """The one check, then the stdlib's ``log``; the record names the caller of the public
        method (two frames up from here), as the stdlib logger's own would."""
        if level < WARNING and "logging" not in sys.modules:
            return
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 2
        self._real().log(level, msg, *args, **kwargs)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(level, msg, args, kwargs)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(DEBUG, msg, args, kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(INFO, msg, args, kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(WARNING, msg, args, kwargs)

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self._emit(ERROR, msg, args, kwargs)

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        self._emit(ERROR, msg, args, {**kwargs, "exc_info": exc_info})


def get_logger(name: str) -> Logger:
    """The logger of ``name`` (``__name__`` of an lxdlib module, or ``lxdlib``)."""
    return Logger(name)
