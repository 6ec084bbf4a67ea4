"""What a finished command left: one shape for a command run here (``runtime``) and one run on
another host (``sshhost``), so that code written against one works against the other.

Its own pure module because ``runtime`` imports liblxc's binding, which a caller holding only a
remote host's results has no use for.
"""

from __future__ import annotations

from .errors import ExecError
from .values import Value, assign


class ExecResult(Value, frozen=True):
    """A command's exit code (LXD's: 128+N for signal N) and its output. (A ``Value``, not an
    attrs class: a listing imports ``runtime``, which returns these; see ``lxdlib.values``.)"""

    _fields = ("returncode", "stdout", "stderr")
    __slots__ = _fields

    returncode: int
    stdout: bytes
    stderr: bytes

    def __init__(self, returncode: int, stdout: bytes, stderr: bytes) -> None:
        assign(self, "returncode", returncode)
        assign(self, "stdout", stdout)
        assign(self, "stderr", stderr)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> ExecResult:
        """Raise ``ExecError`` unless the command succeeded (as ``check_returncode`` does)."""
        if self.returncode != 0:
            raise ExecError(self)
        return self

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")
