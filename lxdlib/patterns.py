"""Regular expressions compiled when first used, not when their module is imported.

Every command imports the modules of the whole instance path, and each compiled pattern at the
top of one cost its start-up 0.05 to 0.6 ms (``re`` compiles in Python): ~2.5 ms of ``lxdlib
info``'s start went to patterns that only other commands use (hostnames, cpusets, snapshot
expiry, mount options, YAML escapes…). A ``Pattern`` keeps the source and compiles it on its
first match; after that it costs one attribute test more than a compiled pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator


class Pattern:
    """``re.compile(source, flags)``, compiled on first use; the methods lxdlib uses."""

    __slots__ = ("_compiled", "flags", "source")

    def __init__(self, source: str, flags: int = 0) -> None:
        self.source = source
        self.flags = flags
        self._compiled: re.Pattern[str] | None = None

    @property
    def compiled(self) -> re.Pattern[str]:
        c = self._compiled
        if c is None:
            c = self._compiled = re.compile(self.source, self.flags)
        return c

    def fullmatch(self, text: str, pos: int = 0) -> re.Match[str] | None:
        return self.compiled.fullmatch(text, pos)

    def match(self, text: str, pos: int = 0) -> re.Match[str] | None:
        return self.compiled.match(text, pos)

    def search(self, text: str, pos: int = 0) -> re.Match[str] | None:
        return self.compiled.search(text, pos)

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        return self.compiled.finditer(text)

    def sub(self, repl: str | Callable[[re.Match[str]], str], text: str, count: int = 0) -> str:
        return self.compiled.sub(repl, text, count)

    def __repr__(self) -> str:
        return f"Pattern({self.source!r})"
