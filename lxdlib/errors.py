"""Every failure lxdlib reports, as one tree: callers catch as broadly or narrowly as they like.

No call returns ``False`` for failure: each raises one of these, with a message that says what,
which object and why. Classes also derive from the matching builtin (``LookupError``,
``ValueError``, ``FileExistsError``, ``OSError``) so plain ``except ValueError`` works.

::

    LxdlibError
    ├── NotFound(LookupError)               an instance, image, profile, pool… that does not exist
    ├── AlreadyExists(FileExistsError)      a name collision
    ├── InvalidArgument(ValueError)         bad input, refused before anything changes
    │   ├── InvalidName                     a name that breaks LXD's naming rules
    │   └── InvalidConfig                   a config key/value (carries .key and .reason)
    ├── InUse                               deleting what something else still uses
    ├── ProfileApplyError                   a saved profile change some instances could not take
    ├── WrongState                          start a running instance, delete without --force…
    ├── Busy                                another process holds the object's lock too long
    ├── HostLimit                           a kernel limit the launch would cross (sysctl, value)
    ├── BulkError                           some items of a bulk operation failed (which, why)
    ├── StorageError(OSError)               a pool driver failed
    │   └── QuotaExceeded                   the volume or pool ran out of space
    │       └── DiskFull                        a write failed with ENOSPC/EDQUOT (carries .path)
    ├── ImageError                          an image could not be read or stored
    │   ├── UnsafeImage                     a hostile tarball (traversal, links out, devices…)
    │   │   ├── UnsafeMemberName            a member name with ".." (tar refuses it)
    │   │   ├── UnsafeLink                  a hard link tar refused (outside or through links)
    │   │   ├── DeviceNode                  a device node where no unpack may make one
    │   │   └── UnsafeStream                a btrfs send stream doing more than an unpack may
    │   ├── CorruptArchive                  a truncated or corrupt archive
    │   ├── UnsupportedBackup(ValueError)   a backup this host cannot import (optimized zfs)
    │   └── TemplateError                   a template's source or target is not a regular file…
    ├── NetworkError                        bridges, DHCP, NAT
    ├── LXCError                            liblxc refused; carries the tail of the instance's log
    │   └── ExecError                       ``exec(..., check=True)``: the command exited non-zero
    ├── Timeout(TimeoutError)               an operation ran past the time it was given
    │   └── ExecTimeout                     ``exec(..., timeout=…)``: the command was killed
    ├── ToolMissing                         a host program lxdlib needs is absent (criu, zfs…)
    └── CorruptRecord                       a record on disk that cannot be read back
"""

from __future__ import annotations

from collections.abc import Sequence

#: ``typing.TYPE_CHECKING`` without importing ``typing`` (~3 ms of every command's start-up;
#: mypy treats any name ``TYPE_CHECKING`` as true).
TYPE_CHECKING = False


class LxdlibError(Exception):
    """Root of every lxdlib error."""


class NotFound(LxdlibError, LookupError):
    """The named object does not exist.

    ``repair``: ``detail`` says what LXD's sentence would hide — how to get out of a state LXD
    cannot reach (an instance that names a deleted profile), which entry of a tree vanished
    while it was copied — and the command then prints it as it is, not LXD's sentence."""

    repair: bool = False  # a class default: ``lxdlib.wire`` rebuilds errors without __init__

    def __init__(self, kind: str, name: str, detail: str = "", *, repair: bool = False) -> None:
        self.kind = kind
        self.name = name
        self.repair = repair
        msg = f"{kind} {name!r} not found"
        super().__init__(f"{msg}: {detail}" if detail else msg)

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return str(self.args[0])


class AlreadyExists(LxdlibError, FileExistsError):
    """A name that is already taken."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} already exists")

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidArgument(LxdlibError, ValueError):
    """Bad input; nothing was changed."""


class InvalidName(InvalidArgument):
    """A name that breaks the naming rules for its kind of object."""

    def __init__(self, kind: str, name: str, reason: str) -> None:
        self.kind = kind
        self.name = name
        self.reason = reason
        super().__init__(f"invalid {kind} name {name!r}: {reason}")


class InvalidConfig(InvalidArgument):
    """A configuration key or value that is refused, with the key and the reason."""

    def __init__(self, key: str, reason: str, value: str | None = None) -> None:
        self.key = key
        self.reason = reason
        self.value = value
        super().__init__(f"invalid value for {key!r}: {reason}" if value is not None
                         else f"invalid key {key!r}: {reason}")


class InUse(LxdlibError):
    """The object is still used by others and cannot be removed or changed that way."""


class ProfileApplyError(LxdlibError):
    """A profile change was saved, but these instances could not apply it (name -> reason)."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = failures
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(failures.items()))
        super().__init__("The following instances failed updating (profile change still "
                         f"saved): {detail}")


class WrongState(LxdlibError):
    """The operation does not fit the object's current state.

    ``state``, when the refusal is about an instance's run state, is that state
    (``"RUNNING"``, ``"STOPPED"``, ``"FROZEN"``), so that a caller can tell "already running"
    from "not running" without reading the message (the CLI words them as LXD does)."""

    state: str = ""  # a class default: ``lxdlib.wire`` rebuilds errors without __init__

    def __init__(self, message: str, *, state: str = "") -> None:
        self.state = state
        super().__init__(message)


class Busy(LxdlibError):
    """Another process holds the object's lock and did not release it in time."""


class HostLimit(LxdlibError):
    """Starting these instances would cross a host-wide kernel limit, so nothing was started.

    ``limit`` names it (a sysctl such as ``kernel.pty.max``, or a bridge's ports),
    ``value`` is the limit now, ``in_use`` what is taken, ``needed`` what the launch would add
    and ``fix`` what to change; ``others`` holds further limits the same launch would cross."""

    def __init__(self, limit: str, value: int, in_use: int, needed: int, fix: str, *,
                 others: Sequence[HostLimit] = ()) -> None:
        self.limit = limit
        self.value = value
        self.in_use = in_use
        self.needed = needed
        self.fix = fix
        self.others = list(others)
        msg = "; ".join(f"{e.limit} is {e.value}, {e.in_use} in use, this needs {e.needed} "
                        f"more: {e.fix}" for e in [self, *self.others])
        super().__init__(f"host limit reached: {msg}")


class BulkError(LxdlibError):
    """Some items of a bulk operation (``Host.launch_many``) failed; the others succeeded.

    ``failures`` maps each failed item's name to why, ``done`` holds what succeeded (for a
    launch, the instances, running). Failed items left nothing behind."""

    def __init__(self, what: str, failures: dict[str, str], done: Sequence[object]) -> None:
        self.failures = failures
        self.done = list(done)
        detail = "; ".join(f"{k}: {v}" for k, v in failures.items())
        super().__init__(f"{what}: {len(failures)} failed, {len(self.done)} succeeded: "
                         f"{detail}")


class StorageError(LxdlibError, OSError):
    """A storage pool driver failed."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "storage error"


class QuotaExceeded(StorageError):
    """A volume or a pool is out of space."""


class ImageError(LxdlibError):
    """An image could not be read, verified or stored."""


class TemplateError(ImageError):
    """An image template could not be applied: its source in the image or its target in the
    rootfs is not a regular file (a FIFO would block the start forever), or it does not parse.
    The operation that triggered it (a start, a copy…) fails, as in LXD."""


class UnsafeImage(ImageError):
    """A tarball tried to write outside its volume or carried forbidden members."""


class UnsafeMemberName(UnsafeImage):
    """A member whose name climbs out with ``..``."""


class UnsafeLink(UnsafeImage):
    """A hard link that points outside the archive's volume (or through a symlink)."""


class DeviceNode(UnsafeImage):
    """A device node where an unprivileged unpack may not make one."""


class UnsafeStream(UnsafeImage):
    """A btrfs send stream that does more than an unprivileged unpack may (device nodes,
    ``trusted.*`` xattrs, the volume's own directory given away, other subvolumes)."""


class CorruptArchive(ImageError):
    """An archive that is truncated or not readable to its end."""


class UnsupportedBackup(ImageError, ValueError):
    """A backup this host does not import (an optimized zfs backup: its streams could set
    host-side dataset properties)."""


class NetworkError(LxdlibError):
    """A bridge, DHCP server or NAT rule could not be set up or removed."""


class LXCError(LxdlibError):
    """liblxc refused an operation. ``log_tail`` holds the last lines of the instance's log."""

    log_tail: str = ""  # a class default: ``lxdlib.wire`` rebuilds errors without __init__

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        super().__init__(f"{message}\n--- liblxc log ---\n{log_tail}" if log_tail else message)


if TYPE_CHECKING:  # a type for annotations only
    from typing import Protocol

    class ExecOutcome(Protocol):
        """What a finished command left (``lxdlib.ExecResult`` has this shape)."""

        @property
        def returncode(self) -> int: ...

        @property
        def stdout(self) -> bytes: ...

        @property
        def stderr(self) -> bytes: ...


def _command_text(command: Sequence[str] | str) -> str:
    import shlex
    return command if isinstance(command, str) else shlex.join(command)


class ExecError(LXCError):
    """A command run by ``exec(..., check=True)`` exited non-zero.

    ``result`` holds its exit code and output; ``instance`` and ``command`` say what ran where,
    so a failure in a loop over many instances says which one failed. The message ends with the
    tail of the command's stderr."""

    def __init__(self, result: ExecOutcome, instance: str = "",
                 command: Sequence[str] | str = ()) -> None:
        self.result = result
        self.instance = instance
        self.command = command if isinstance(command, str) else list(command)
        what = f"command {_command_text(command)!r}" if command else "command"
        where = f" in instance {instance!r}" if instance else ""
        tail = result.stderr.decode(errors="replace")[-2000:].rstrip()
        msg = f"{what}{where} exited with status {result.returncode}"
        super().__init__(f"{msg}: {tail}" if tail else msg)


class Timeout(LxdlibError, TimeoutError):
    """An operation ran past the time it was given; what it had started was stopped first.

    Also a builtin ``TimeoutError``, so ``except TimeoutError`` catches it."""

    def __str__(self) -> str:  # OSError would otherwise print its args tuple for several args
        return str(self.args[0]) if self.args else "timed out"


class ExecTimeout(Timeout):
    """``exec(..., timeout=…)``: the command ran longer than ``timeout`` seconds and was killed
    (SIGKILL) before this was raised. ``result`` holds the output it wrote until then."""

    def __init__(self, result: ExecOutcome, instance: str, command: Sequence[str] | str,
                 timeout: float) -> None:
        self.result = result
        self.instance = instance
        self.command = command if isinstance(command, str) else list(command)
        self.timeout = timeout
        super().__init__(f"command {_command_text(command)!r} in instance {instance!r} ran "
                         f"longer than {timeout:g}s and was killed")


class IdmapNotAllowed(LxdlibError):
    """The host's ``/etc/subuid``/``/etc/subgid`` do not give root the ids an instance maps to,
    so ``newuidmap`` would refuse to start it. The message says which ids and what to run."""


class ToolMissing(LxdlibError):
    """A host program that this operation needs is not installed."""


class CorruptRecord(LxdlibError):
    """A record file on disk that cannot be parsed (hand-edited, truncated by a full disk…).

    Listings show the object as ``ERROR`` with this message instead of failing as a whole."""

    def __init__(self, kind: str, name: str, path: object, reason: str) -> None:
        self.kind = kind
        self.name = name
        self.path = path
        self.reason = reason
        super().__init__(f"the record of {kind} {name!r} ({path}) is unreadable: {reason}")


class DiskFull(QuotaExceeded):
    """A write failed because the filesystem (or a quota) is full; nothing half-written is kept.

    ``path`` is the file that could not be written, so the message says which disk to free."""

    def __init__(self, path: object, what: str = "") -> None:
        self.path = path
        super().__init__(f"no space left on the device holding {path}"
                         + (f" ({what})" if what else "") + ": free some space and retry")

    @staticmethod
    def is_full(e: OSError) -> bool:
        """Whether ``e`` is the kernel saying the disk or a quota is full."""
        import errno
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
