"""One line of an id map (``lxc.idmap``): pure data, shared by the renderer and ``lxdlib.idmap``
(which reads the host's subordinate ids and shifts files — effects the renderer must not import).
"""

from __future__ import annotations

from ..values import Value, assign


class IdRange(Value, frozen=True):
    """``size`` ids from ``nsid`` inside the container onto ``hostid`` on the host."""

    _fields = ("kind", "nsid", "hostid", "size")
    __slots__ = _fields

    kind: str  # "u" or "g"
    nsid: int
    hostid: int
    size: int

    def __init__(self, kind: str, nsid: int, hostid: int, size: int) -> None:
        assign(self, "kind", kind)
        assign(self, "nsid", nsid)
        assign(self, "hostid", hostid)
        assign(self, "size", size)

    def lxc_value(self) -> str:
        return f"{self.kind} {self.nsid} {self.hostid} {self.size}"
