"""User-namespace id maps: which host ids an unprivileged instance's ids become.

Like LXD, root's subordinate range comes from ``/etc/subuid`` and ``/etc/subgid`` (at least 65536
ids); with no entry LXD falls back to ``1000000`` + ``1000000000``. liblxc insists on ``newuidmap``
whenever it is installed (the ``uidmap`` package, which ``lxc`` recommends), and ``newuidmap``
refuses ranges not listed for root — so lxdlib registers the fallback range for root when it has to
use it, rather than failing at the first start.

Non-isolated instances share the whole range; ``security.idmap.isolated`` instances get a block of
their own (default 65536), found in the gaps between the blocks other isolated instances use.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from .errors import InvalidConfig, LxdlibError
from .state import atomic_write

FALLBACK_BASE = 1_000_000
FALLBACK_SIZE = 1_000_000_000
MIN_SIZE = 65536
SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")


@attrs.frozen
class IdRange:
    kind: str  # "u" or "g"
    nsid: int
    hostid: int
    size: int

    def lxc_value(self) -> str:
        return f"{self.kind} {self.nsid} {self.hostid} {self.size}"


@attrs.frozen
class Allocation:
    """The host range lxdlib may hand out (same base and size for uids and gids)."""

    base: int
    size: int


def read_subids(path: Path, user: str = "root") -> list[tuple[int, int]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, "0") and parts[1].isdigit() \
                and parts[2].isdigit():
            out.append((int(parts[1]), int(parts[2])))
    return out


def _largest(ranges: Iterable[tuple[int, int]]) -> tuple[int, int] | None:
    usable = [r for r in ranges if r[1] >= MIN_SIZE]
    return max(usable, key=lambda r: r[1]) if usable else None


def host_allocation(register: bool = True) -> Allocation:
    """Root's usable range; registers LXD's fallback for root where ``newuidmap`` needs it."""
    uid = _largest(read_subids(SUBUID))
    gid = _largest(read_subids(SUBGID))
    if uid and gid:
        base = max(uid[0], gid[0])
        end = min(uid[0] + uid[1], gid[0] + gid[1])
        if end - base >= MIN_SIZE:
            return Allocation(base, end - base)
    if register and shutil.which("newuidmap"):
        for path in (SUBUID, SUBGID):
            existing = path.read_text() if path.exists() else ""
            if not existing.endswith("\n") and existing:
                existing += "\n"
            atomic_write(path, f"{existing}root:{FALLBACK_BASE}:{FALLBACK_SIZE}\n".encode(),
                         mode=0o644)
    return Allocation(FALLBACK_BASE, FALLBACK_SIZE)


def parse_raw_idmap(text: str) -> list[IdRange]:
    """``raw.idmap`` lines: ``both|uid|gid <host>[-<end>] <ns>[-<end>]``."""
    out: list[IdRange] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("both", "uid", "gid"):
            raise InvalidConfig("raw.idmap", f"invalid line {line!r}")
        try:
            h = [int(x) for x in parts[1].split("-", 1)]
            n = [int(x) for x in parts[2].split("-", 1)]
        except ValueError:
            raise InvalidConfig("raw.idmap", f"invalid line {line!r}") from None
        hsize = h[1] - h[0] + 1 if len(h) == 2 else 1
        nsize = n[1] - n[0] + 1 if len(n) == 2 else 1
        if hsize != nsize or hsize < 1:
            raise InvalidConfig("raw.idmap", f"host and container ranges differ in size: {line!r}")
        kinds = ("u", "g") if parts[0] == "both" else (parts[0][0],)
        out.extend(IdRange(k, n[0], h[0], hsize) for k in kinds)
    return out


def _punch(ranges: list[IdRange], hole: IdRange) -> list[IdRange]:
    """Remove ``hole``'s container ids from ``ranges`` so raw entries can replace them."""
    out: list[IdRange] = []
    for r in ranges:
        if r.kind != hole.kind:
            out.append(r)
            continue
        lo, hi = r.nsid, r.nsid + r.size
        hlo, hhi = hole.nsid, hole.nsid + hole.size
        if hhi <= lo or hlo >= hi:
            out.append(r)
            continue
        if hlo > lo:
            out.append(IdRange(r.kind, lo, r.hostid, hlo - lo))
        if hhi < hi:
            out.append(IdRange(r.kind, hhi, r.hostid + (hhi - lo), hi - hhi))
    return out


def instance_map(base: int, size: int, raw: str = "") -> list[IdRange]:
    """The instance's map: container ids 0..size → host base..; ``raw.idmap`` entries punched in."""
    ranges = [IdRange("u", 0, base, size), IdRange("g", 0, base, size)]
    for extra in parse_raw_idmap(raw):
        ranges = _punch(ranges, extra)
        ranges.append(extra)
    return sorted(ranges, key=lambda r: (r.kind, r.nsid))


def host_root(ranges: Iterable[IdRange]) -> int:
    """The host uid that the container's root runs as (0 for an empty map: privileged)."""
    for r in ranges:
        if r.kind == "u" and r.nsid <= 0 < r.nsid + r.size:
            return r.hostid - r.nsid
    return 0


def allocate_isolated(alloc: Allocation, size: int, used: Mapping[str, tuple[int, int]]) -> int:
    """First gap of ``size`` ids above the shared first block, avoiding other isolated blocks."""
    taken = sorted(used.values())
    candidate = alloc.base + MIN_SIZE
    for start, length in taken:
        if candidate + size <= start:
            break
        candidate = max(candidate, start + length)
    if candidate + size > alloc.base + alloc.size:
        raise LxdlibError("Not enough uid/gid available for the container")
    return candidate


def shift_tree(root: Path, offset: int) -> None:
    """Add ``offset`` to every uid/gid under ``root`` (FUSE pools cannot use idmapped mounts).

    ``lchown`` clears setuid/setgid bits on regular files, so modes are put back afterwards.
    """
    if offset == 0:
        return

    def shift(path: str, st: os.stat_result) -> None:
        os.lchown(path, st.st_uid + offset, st.st_gid + offset)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(st.st_mode))

    shift(str(root), os.lstat(root))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            shift(p, os.lstat(p))
