"""User-namespace id maps: which host ids an unprivileged instance's ids become.

Like LXD, root's subordinate range comes from ``/etc/subuid`` and ``/etc/subgid`` (at least 65536
ids); with no entry LXD falls back to ``1000000`` + ``1000000000``. liblxc insists on ``newuidmap``
whenever it is installed (the ``uidmap`` package, which ``lxc`` recommends), and ``newuidmap``
refuses ranges not listed for root — so lxdlib registers the fallback range for root when it has to
use it, rather than failing at the first start.

The host can change under existing instances: an instance made while root had no entry (and no
``newuidmap``) keeps LXD's fallback range after ``uidmap`` is installed and root is given some
other range (installing LXD or podman does that). Before each start ``check_newuidmap`` makes
sure ``newuidmap`` will accept the instance's map: it registers the fallback for root again when
the missing ids are lxdlib's fallback and no other user was given any of them, and otherwise
refuses with an error naming the ids and the lines to add.

Non-isolated instances share the whole range; ``security.idmap.isolated`` instances get a block of
their own (default 65536), found in the gaps between the blocks other isolated instances use.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from .config.idrange import IdRange as IdRange
from .errors import IdmapNotAllowed, InvalidConfig, LxdlibError
from .fstree import walk_lstat
from .logs import get_logger
from .state import atomic_write
from .values import Value, assign

log = get_logger("lxdlib")

FALLBACK_BASE = 1_000_000
FALLBACK_SIZE = 1_000_000_000
MIN_SIZE = 65536
SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
# Serialises lxdlib's own edits of /etc/subuid and /etc/subgid across processes and roots.
SUBID_LOCK = Path("/run/lock/lxdlib-subid.lock")


class Allocation(Value, frozen=True):
    """The host range lxdlib may hand out (same base and size for uids and gids)."""

    _fields = ("base", "size")
    __slots__ = _fields

    base: int
    size: int

    def __init__(self, base: int, size: int) -> None:
        assign(self, "base", base)
        assign(self, "size", size)


def subid_entries(path: Path) -> list[tuple[str, int, int]]:
    """Every ``owner:start:count`` line of a subordinate-id file (malformed lines skipped)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def read_subids(path: Path, user: str = "root") -> list[tuple[int, int]]:
    return [(start, count) for owner, start, count in subid_entries(path)
            if owner in (user, "0")]


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
    if register and _shadow_tools():
        with _subid_lock():
            # never give root ids another user has (their containers' files would be ours);
            # a start then explains what to do (check_newuidmap)
            if not any(_others_in_fallback(p) for p in (SUBUID, SUBGID)):
                for path in (SUBUID, SUBGID):
                    _register_fallback(path)
    return Allocation(FALLBACK_BASE, FALLBACK_SIZE)


def _others_in_fallback(path: Path) -> list[str]:
    """Entries of users other than root that overlap lxdlib's fallback range."""
    return [f"{owner}:{s}:{n} in {path}" for owner, s, n in subid_entries(path)
            if owner not in ("root", "0")
            and s < FALLBACK_BASE + FALLBACK_SIZE and s + n > FALLBACK_BASE]


def _shadow_tools() -> bool:
    """Whether liblxc will hand the map to ``newuidmap``/``newgidmap`` (it does when both are
    installed) instead of writing it itself."""
    from .programs import which  # not shutil's, which loads bz2 and lzma: lxdlib.programs
    return bool(which("newuidmap") and which("newgidmap"))


@contextlib.contextmanager
def _subid_lock() -> Iterator[None]:
    SUBID_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(SUBID_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _register_fallback(path: Path) -> bool:
    """Add ``root:<fallback>`` to ``path`` unless it is there (under ``_subid_lock``)."""
    if (FALLBACK_BASE, FALLBACK_SIZE) in read_subids(path):
        return False
    existing = path.read_text() if path.exists() else ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    atomic_write(path, f"{existing}root:{FALLBACK_BASE}:{FALLBACK_SIZE}\n".encode(), mode=0o644)
    log.warning("registered root:%d:%d in %s so that newuidmap accepts lxdlib's id range",
                FALLBACK_BASE, FALLBACK_SIZE, path)
    return True


def covered(ranges: Iterable[tuple[int, int]], start: int, count: int) -> bool:
    """Whether ``start``..``start+count`` lies in the union of ``ranges`` (as newuidmap checks
    it: adjacent entries may together cover one map line)."""
    ranges = list(ranges)
    end = start + count
    while start < end:
        reach = max((s + n for s, n in ranges if s <= start < s + n), default=None)
        if reach is None:
            return False
        start = reach
    return True


def parse_lxc_idmap(config_text: str) -> list[IdRange]:
    """The ``lxc.idmap`` lines of a rendered liblxc config: exactly what liblxc will map."""
    out = []
    for line in config_text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or key.strip() != "lxc.idmap":
            continue
        parts = value.split()
        if len(parts) == 4 and parts[0] in ("u", "g") and all(p.isdigit() for p in parts[1:]):
            out.append(IdRange(parts[0], int(parts[1]), int(parts[2]), int(parts[3])))
    return out


def _files(kind: str) -> Path:
    return SUBUID if kind == "u" else SUBGID


def _missing(ranges: Sequence[IdRange]) -> list[IdRange]:
    return [r for r in ranges if not covered(read_subids(_files(r.kind)), r.hostid, r.size)]


def check_newuidmap(name: str, ranges: Sequence[IdRange]) -> None:
    """Make sure ``newuidmap``/``newgidmap`` will accept instance ``name``'s map, before start.

    Nothing to do when liblxc writes the map itself: no shadow tools installed, or the map
    includes host uid 0 (liblxc then writes it directly). Ids missing from root's entries are
    registered for root when they are all lxdlib's fallback range and no other user was given
    any of it (the host changed after the instance was made). Otherwise ``IdmapNotAllowed``
    says which ids are missing and what to add.
    """
    if not ranges:
        return
    if any(r.kind == "u" and r.hostid <= 0 < r.hostid + r.size for r in ranges):
        return
    # the tools are looked for last: ``shutil`` costs a start ~1.5 ms to import, and the usual
    # map is registered already
    if not _missing(ranges) or not _shadow_tools():
        return
    fallback = (FALLBACK_BASE, FALLBACK_SIZE)
    others: list[str] = []
    with _subid_lock():
        missing = _missing(ranges)  # again, inside the lock
        if missing and all(covered([fallback], r.hostid, r.size) for r in missing):
            for path in sorted({_files(r.kind) for r in missing}):
                others += _others_in_fallback(path)
            if not others:
                for path in sorted({_files(r.kind) for r in missing}):
                    _register_fallback(path)
                missing = _missing(ranges)
    if not missing:
        return
    lines = sorted({f"root:{r.hostid}:{r.size} >> {_files(r.kind)}" for r in missing})
    ids = ", ".join(f"host {'uids' if r.kind == 'u' else 'gids'} {r.hostid}-"
                    f"{r.hostid + r.size - 1}" for r in missing)
    why = (f"; lxdlib did not add them for root because other users were given some of them "
           f"({', '.join(others)}): move those first" if others else "")
    raise IdmapNotAllowed(
        f"instance {name!r} maps its ids to {ids}, which /etc/subuid or /etc/subgid do not "
        f"give to root, so newuidmap (package uidmap) refuses to start it{why}. To allow them, "
        f"run: {'; '.join('echo ' + ln for ln in lines)}")


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


#: Where ``shift_tree_step`` parks ids between their old map and their new one: above the
#: maps lxdlib makes (the host's subordinate ranges, from 1000000, and the isolated blocks
#: inside them), and low enough that a parked id of a map of a billion ids stays below ZFS's
#: largest (2**31 - 1: above it, chown fails with EINVAL)
SHIFT_PARK = 1 << 30


def shift_tree_step(root: Path, old: int, new: int, step: int) -> None:
    """One of the two steps of moving the ids under ``root`` from the map at host id ``old``
    to the one at ``new``, each of which may be run again after a kill: step 1 parks every id
    below ``SHIFT_PARK`` (``id - old + SHIFT_PARK``), step 2 moves every parked id to ``new``.
    An id tells by itself which side of a step it is on, so a step run again leaves what it
    moved alone, where ``shift_tree`` run again would move it twice (the maps overlap: the
    host's range holds the isolated blocks)."""
    if step == 1:
        def moved(i: int) -> int:
            return i if i >= SHIFT_PARK else i - old + SHIFT_PARK
    else:
        def moved(i: int) -> int:
            return i - SHIFT_PARK + new if i >= SHIFT_PARK else i
    _shift_ids(root, moved)


def shift_tree(root: Path, offset: int) -> None:
    """Add ``offset`` to every uid/gid under ``root`` (FUSE pools cannot use idmapped mounts).

    ``lchown`` clears setuid/setgid bits on regular files, so modes are put back afterwards.
    A file with several hard links is shifted once: each link is one more path to the same
    inode, and shifting it per path would move its owner by ``offset`` times the links (a
    container's root can make as many links as it likes in a volume it has attached).
    """
    if offset == 0:
        return
    _shift_ids(root, lambda i: i + offset)


def _shift_ids(root: Path, moved: Callable[[int], int]) -> None:
    """Give every file under ``root`` the uid and gid ``moved`` makes of its own. ``lchown``
    clears setuid/setgid bits on regular files, so modes are put back afterwards. A file
    with several hard links is moved once (see ``shift_tree``)."""
    seen: set[tuple[int, int]] = set()

    def shift(path: str, st: os.stat_result) -> None:
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
        uid, gid = moved(st.st_uid), moved(st.st_gid)
        if (uid, gid) == (st.st_uid, st.st_gid):
            return
        os.lchown(path, uid, gid)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(st.st_mode))

    for path, st in walk_lstat(root):  # any depth the container's root made
        shift(path, st)
