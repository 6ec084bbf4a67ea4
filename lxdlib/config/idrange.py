"""One line of an id map (``lxc.idmap``): pure data, shared by the renderer and ``lxdlib.idmap``
(which reads the host's subordinate ids and shifts files — effects the renderer must not import).
"""

from __future__ import annotations

import attrs


@attrs.frozen
class IdRange:
    """``size`` ids from ``nsid`` inside the container onto ``hostid`` on the host."""

    kind: str  # "u" or "g"
    nsid: int
    hostid: int
    size: int

    def lxc_value(self) -> str:
        return f"{self.kind} {self.nsid} {self.hostid} {self.size}"
