"""Host-level helpers the pool drivers share: loop files, mounts, running tools, renames, and the
temporary names that make every create all-or-nothing.

Nothing here knows about pools; it wraps the kernel and the util-linux tools so that each failure
becomes a :class:`~lxdlib.errors.StorageError` (or :class:`~lxdlib.errors.ToolMissing`) that says
which command failed and what it printed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import TYPE_CHECKING, StorageError, ToolMissing
from ..logs import get_logger
from ..state import rename_exchange as rename_exchange
from ..state import rename_noreplace as rename_noreplace

if TYPE_CHECKING:
    import subprocess

log = get_logger(__name__)

# -- running host tools ---------------------------------------------------------------------------


def run(cmd: Sequence[str], *, timeout: float = 300.0,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a host tool and capture its output; a failure raises ``StorageError`` with stderr.
    ``subprocess`` is imported here: every verb that opens a loop-backed pool imports this
    module, and most run no tool (start-up time)."""
    import subprocess
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise ToolMissing(f"{cmd[0]!r} is not installed (needed for: {' '.join(cmd)})") from None
    except subprocess.TimeoutExpired:
        raise StorageError(f"{' '.join(cmd)} did not finish within {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        tail = "; ".join(detail[-4:]) if detail else f"exit status {proc.returncode}"
        raise StorageError(f"{' '.join(cmd)} failed: {tail}")
    return proc


# -- mounts ---------------------------------------------------------------------------------------


def _unescape_mountinfo(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo`` octal escapes."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[tuple[str, str, str]]:
    """``(mount point, filesystem type, source)`` for every mount this process sees."""
    result: list[tuple[str, str, str]] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, sep, right = line.partition(" - ")
            if not sep:
                continue
            fields = left.split(" ")
            rest = right.split(" ")
            if len(fields) < 5 or len(rest) < 2:
                continue
            result.append((_unescape_mountinfo(fields[4]), rest[0], _unescape_mountinfo(rest[1])))
    return result


def mount_options(path: str | os.PathLike[str]) -> set[str]:
    """Per-mount options (``rw``/``ro``, ``nosuid``…) of the mount exactly on ``path``; empty
    when nothing is mounted there."""
    target = os.path.realpath(path)
    found: set[str] = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 5 and _unescape_mountinfo(fields[4]) == target:
                found = set(fields[5].split(","))  # the last mount on top wins
    return found


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether something is mounted exactly on ``path`` (read from /proc/self/mountinfo)."""
    target = os.path.realpath(path)
    return any(mp == target for mp, _, _ in mounts())


def fs_type(path: str | os.PathLike[str]) -> str:
    """Filesystem type of the mount holding ``path`` (the longest mount point above it)."""
    target = os.path.realpath(path)
    best, best_type = "", ""
    for mp, fstype, _ in mounts():
        inside = target == mp or target.startswith(mp.rstrip("/") + "/")
        if inside and len(mp) >= len(best):
            best, best_type = mp, fstype
    return best_type


def mount(source: str, target: str | os.PathLike[str], fstype: str, options: str = "") -> None:
    cmd = ["mount", "-t", fstype]
    if options:
        cmd += ["-o", options]
    run([*cmd, source, os.fspath(target)])
    log.debug("mounted %s on %s (%s, options %r)", source, target, fstype, options)


def unmount(target: str | os.PathLike[str]) -> None:
    """Unmount ``target`` if mounted (idempotent); a busy mount raises ``StorageError``."""
    while is_mounted(target):
        run(["umount", os.fspath(target)])
        log.debug("unmounted %s", target)


# -- loop files -----------------------------------------------------------------------------------


def create_sparse_file(path: str | os.PathLike[str], size: int) -> None:
    """Make a new sparse file of ``size`` bytes, readable by root only (a world-readable pool
    image would expose every instance's data)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    os.close(fd)
    log.debug("created sparse file %s of %d bytes", path, size)


def find_loops(path: str | os.PathLike[str]) -> list[str]:
    """Loop devices backed by ``path`` (nothing about them is stored: this asks the kernel)."""
    if not os.path.exists(path):
        return []
    proc = run(["losetup", "--list", "--noheadings", "--output", "NAME", "-j", os.fspath(path)])
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def attach_loop(path: str | os.PathLike[str]) -> str:
    """Attach ``path`` to a free loop device (or reuse the one it already has) and name it."""
    existing = find_loops(path)
    if existing:
        return existing[0]
    dev = run(["losetup", "--find", "--show", os.fspath(path)]).stdout.strip()
    log.debug("attached %s to loop device %s", path, dev)
    return dev


def detach_loops(path: str | os.PathLike[str]) -> None:
    """Detach every loop device backed by ``path`` (idempotent)."""
    for dev in find_loops(path):
        proc = run(["losetup", "-d", dev], check=False)
        if proc.returncode != 0 and dev in find_loops(path):
            raise StorageError(f"cannot detach {dev} from {path}: {proc.stderr.strip()}")
        log.debug("detached loop device %s from %s", dev, path)


# -- renames --------------------------------------------------------------------------------------

# ``renameat2`` (``rename_noreplace``, ``rename_exchange``) lives with the records in
# ``lxdlib.state``, which swap files with it too; the pool drivers take it from here as before.


# -- temporary names ------------------------------------------------------------------------------
#
# A volume being built, removed or set aside carries ``.<prefix>-<pid>-<random>-<name>``: the
# final name never exists half-made, and ``cleanup_leftovers`` can tell a dead process's debris
# (``/proc/<pid>`` is gone) from work still under way.

TMP = "tmp"
ASIDE = "aside"


def temp_name(prefix: str, name: str) -> str:
    # os.urandom is what secrets.token_hex reads; importing secrets would load OpenSSL (~2-3 ms)
    # in every snapshot, restore, copy and delete
    return f".{prefix}-{os.getpid()}-{os.urandom(4).hex()}-{name}"


def parse_temp_name(entry: str) -> tuple[str, int, str] | None:
    """``(prefix, pid, name)`` of a temporary name, or None for an ordinary one."""
    if not entry.startswith("."):
        return None
    parts = entry[1:].split("-", 3)
    if len(parts) != 4 or parts[0] not in (TMP, ASIDE) or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[3]


def pid_alive(pid: int) -> bool:
    return pid == os.getpid() or os.path.exists(f"/proc/{pid}")


def stale_entries(directory: Path) -> Iterator[tuple[Path, str, str]]:
    """``(path, prefix, final name)`` of temporary entries in ``directory`` whose process died."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for entry in names:
        parsed = parse_temp_name(entry)
        if parsed is not None and not pid_alive(parsed[1]):
            yield directory / entry, parsed[0], parsed[2]


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn a plain ``OSError`` into ``StorageError`` naming the operation, errno kept."""
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        err = StorageError(f"{what}: {e.strerror or e}")
        err.errno = e.errno
        raise err from e
