"""Mount a host file or directory into a running container, and take it out again.

liblxc only mounts at start (``lxc.mount.entry``), and its child does so with the container
root's credentials, so it cannot even reach a source under a 0700 directory. Here the host side
does the work with the new mount API, in a forked child:

1. ``open_tree(OPEN_TREE_CLONE)`` makes a detached copy of the source while still host root (so
   any source the host can reach works), and ``mount_setattr`` makes it read-only and, when the
   caller asks for a shift (a custom volume, or a disk with ``shift=true``) in an unprivileged
   container, idmapped through the container's user namespace (host root's files show as the
   container's root). Unshifted, host ids stay as they are: ids outside the container's map
   show as nobody inside, and what the container writes lands as its mapped host ids;
2. ``setns`` into the container's mount namespace and then its user namespace (becoming the
   container's root), so the mount point is created and resolved exactly as the container's own
   root would: symlinks cannot lead out of the container and nothing is created with host rights;
3. ``move_mount`` attaches the detached tree there.

A read-only mount in an unprivileged container must stay read-only: its root holds
``CAP_SYS_ADMIN`` over its own mount namespace, and a mount flag is only out of its reach when
the kernel has *locked* it, which it does to the mounts it copies from a more privileged mount
namespace into a less privileged one (``lock_mnt_tree``). Without that, ``mount -o
remount,bind,rw`` inside made a ``readonly=true`` disk writable (with ``shift=true``, as host
root). So a read-only tree is first passed through such a copy (:func:`_locked`) and the locked
clone is what the container gets. So is a recursive one: the same copy locks the mounts below
its top in place (``MNT_LOCKED``), where the container's root could otherwise unmount one and
read what the host had covered with it; and a flat one whose source has mounts below it, each
covered first by an empty read-only mount (a flat bind would show what they cover).

The detached copy is made private (or a slave, when asked) before anything else: a copy of a
shared mount is its peer, and would pass what the container's root mounts below it to the host.

The child is forked because ``setns`` into a user namespace needs a single-threaded process and
must not change the caller. Errors come back through a pipe as text.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path

from ..errors import TYPE_CHECKING, StorageError
from ..logs import DEBUG, get_logger

if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)

_SYS_OPEN_TREE = 428  # the new mount API has one syscall number on every architecture
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442

OPEN_TREE_CLONE = 0x1
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_IDMAP = 0x00100000
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000

PROPAGATION = {"private": 1 << 18, "slave": 1 << 19, "shared": 1 << 20, "unbindable": 1 << 17}

@functools.cache
def _libc() -> Any:
    """libc, for the mount API's syscalls (``os`` has none of them). Loaded at the first call:
    ctypes costs a command ~2.5 ms to import, and rendering a disk device imports this module
    without mounting anything (``config set``, ``start``)."""
    import ctypes
    lib = ctypes.CDLL(None, use_errno=True)
    lib.syscall.restype = ctypes.c_long
    return lib


def in_start_hook() -> bool:
    """Whether this process is liblxc's start-host hook (liblxc sets ``LXC_HOOK_TYPE``): then
    liblxc has just made the config's mounts and nics, and a driver's ``start`` only adds what
    the config could not; on a live add, ``start`` must do everything itself."""
    return os.environ.get("LXC_HOOK_TYPE") == "start-host"


def _check(ret: int, what: str, path: str = "") -> int:
    if ret < 0:
        import ctypes
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path or None)
    return ret


def open_tree(path: str, recursive: bool) -> int:
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return _check(int(_libc().syscall(_SYS_OPEN_TREE, AT_FDCWD, os.fsencode(path), flags)),
                  "open_tree", path)


def mount_setattr(dirfd: int, path: str, flags: int, *, attr_set: int = 0,
                  propagation: int = 0, userns_fd: int = 0) -> None:
    attr = struct.pack("QQQQ", attr_set, 0, propagation, userns_fd)
    import ctypes
    buf = ctypes.create_string_buffer(attr, len(attr))
    _check(int(_libc().syscall(_SYS_MOUNT_SETATTR, dirfd, os.fsencode(path), flags, buf,
                             len(attr))), "mount_setattr", path)


def move_mount(fd: int, target: str) -> None:
    _check(int(_libc().syscall(_SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, os.fsencode(target),
                             MOVE_MOUNT_F_EMPTY_PATH)), "move_mount", target)


def _setns(fd: int, nstype: int) -> None:
    _check(int(_libc().setns(fd, nstype)), "setns")


def _unshare(flags: int) -> None:
    _check(int(_libc().unshare(flags)), "unshare")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(int(_libc().mount(os.fsencode(source), os.fsencode(target),
                             None if fstype is None else os.fsencode(fstype), flags,
                             os.fsencode(data) if data else None)), "mount", target)


MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000


def _open_beneath(dirfd: int, rel: str) -> int:
    """An ``O_PATH`` handle on ``rel`` below ``dirfd``, through no symlink and no other mount
    (``confined.openat2``): a host user who owns a directory on the way cannot lead it
    elsewhere."""
    from .. import confined  # here: only a flat bind of a tree with mounts below it covers
    return confined.openat2(dirfd, rel, os.O_PATH, resolve=confined.RESOLVE_BENEATH |
                            confined.RESOLVE_NO_SYMLINKS | confined.RESOLVE_NO_MAGICLINKS |
                            confined.RESOLVE_NO_XDEV)


def _cover(pfd: int, empty_file: str) -> None:
    """Mount an empty read-only directory (or file: ``empty_file``, on a read-only mount whose
    flag its bind takes along) over what ``pfd`` names."""
    target = f"/proc/self/fd/{pfd}"
    if stat.S_ISDIR(os.fstat(pfd).st_mode):
        _mount("lxdlib-cover", target, "tmpfs", MS_RDONLY, "size=4k,mode=0555")
    else:
        _mount(empty_file, target, None, MS_BIND)


def _locked(fd: int, is_dir: bool, recursive: bool, covers: tuple[str, ...] = ()) -> int:
    """A clone of the detached tree ``fd`` whose flags (read-only above all) the container's
    root cannot change: the kernel locks the flags of every mount it copies into a mount
    namespace of a less privileged user namespace, and locks the mounts below the top in place.
    A grandchild attaches the tree in a private mount namespace of its own (on a tmpfs only it
    sees: no path a host user controls is looked up), covers each of ``covers`` (paths relative
    to the tree's top) with an empty read-only mount, copies that namespace into a fresh user
    namespace, clones the locked copy and hands it back. Runs in ``_in_child``'s child (one
    thread)."""
    import socket
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the grandchild
        code = 1
        try:
            ours.close()
            _unshare(CLONE_NEWNS)
            _mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing below reaches the host's
            _mount("lxdlib", "/dev", "tmpfs", 0, "mode=0711,size=16k")
            point, empty = "/dev/m", "/dev/empty"
            if is_dir:
                os.mkdir(point, 0o700)
            else:
                os.close(os.open(point, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.close(os.open(empty, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444))
            _mount("none", "/dev", None, MS_REMOUNT | MS_BIND | MS_RDONLY)
            move_mount(fd, point)
            if covers:
                top = os.open(point, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                for rel in covers:
                    pfd = _open_beneath(top, rel)
                    _cover(pfd, empty)
                    os.close(pfd)
            _unshare(CLONE_NEWUSER | CLONE_NEWNS)  # the copy: every mount's flags locked
            clone = open_tree(point, recursive or bool(covers))
            socket.send_fds(theirs, [b"R"], [clone])
            code = 0
        except BaseException as e:
            with contextlib.suppress(OSError):
                theirs.sendall(b"E" + str(e).encode(errors="replace")[:4000])
        os._exit(code)
    theirs.close()
    try:
        msg, fds, _flags, _addr = socket.recv_fds(ours, 4096, 1)
    finally:
        ours.close()
        os.waitpid(pid, 0)
    if not fds or not msg.startswith(b"R"):
        for extra in fds:
            os.close(extra)
        raise OSError(errno.EPERM, "cannot lock the mount: " +
                      (msg[1:].decode(errors="replace") or "the helper died"))
    os.close(fd)
    return fds[0]


def _umount(target: str) -> None:
    _check(int(_libc().umount2(os.fsencode(target), MNT_DETACH | UMOUNT_NOFOLLOW)), "umount",
           target)


def _in_child(work: Callable[[], str]) -> str:
    """Run ``work`` in a forked child and return its result; its exception (as text) is raised
    here. ``work`` must not log: the child may run in the container's mount namespace, where a
    handler that opens its file late would open the container's."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(r)
            out = b"R" + work().encode()
        except BaseException as e:
            code = 1
            out = b"E" + str(e).encode(errors="replace")[:4000]
        with contextlib.suppress(OSError):
            os.write(w, out)
        os._exit(code)
    os.close(w)
    try:
        chunks = []
        while chunk := os.read(r, 4096):
            chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    reply = b"".join(chunks)
    if os.waitstatus_to_exitcode(status) != 0 or not reply.startswith(b"R"):
        raise StorageError(reply[1:].decode(errors="replace") or
                          f"mount helper died with status {status}")
    return reply[1:].decode()


def _enter(pid: int, as_container_root: bool) -> None:
    """Join the container's mount namespace (root and cwd become its root), then, for an
    unprivileged container, its user namespace as its root."""
    mnt = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    user = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC) \
        if as_container_root else -1
    _setns(mnt, CLONE_NEWNS)
    os.chdir("/")
    if user >= 0:
        _setns(user, CLONE_NEWUSER)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)


def _make_mountpoint(target: str, is_dir: bool) -> bool:
    """Create what ``target`` needs to be mounted on; True if this call created it."""
    parent = os.path.dirname(target)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    if is_dir:
        try:
            os.mkdir(target, 0o755)
            return True
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(target).st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory",
                                         target) from None
            return False
    try:
        fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_CREAT | os.O_EXCL,
                     0o000)
        os.close(fd)
        return True
    except FileExistsError:
        pass
    # What is already there is only looked at (O_PATH), never opened: the container's root
    # chooses it, and opening a FIFO for writing blocked the hot-plug (and the start hook, with
    # the instance's lock and liblxc's monitor held) until something read it; a device node's
    # open can act (a watchdog arms), and in a privileged container this process is host root
    # outside the instance's devices cgroup.
    fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "a directory is in the way of a file mount", target)
    if stat.S_ISLNK(mode):
        raise OSError(errno.ELOOP, "a symbolic link is in the way of a file mount", target)
    return False


def _submount_points(src: str) -> tuple[str, ...]:
    """The outermost mount points strictly below ``src``, relative to it."""
    top = os.path.realpath(src).rstrip("/") + "/"
    found: list[str] = []
    for point, _fstype in mounts():
        if not point.startswith(top):
            continue
        rel = point[len(top):]
        if rel and not any(rel == f or rel.startswith(f + "/") for f in found):
            found = [f for f in found if not f.startswith(rel + "/")] + [rel]
    return tuple(found)


def _userns_of(pid: int) -> bool:
    """Whether the process runs in a user namespace other than the host's."""
    return os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")


def attach(pid: int, source: Path | str, target: str, *, idmap: bool, readonly: bool = False,
           recursive: bool = False, propagation: str = "", point_optional: bool = False) -> bool:
    """Mount host ``source`` at ``target`` (absolute, inside the container whose init is
    ``pid``), creating the mount point like ``create=dir|file``. All or nothing; True if the
    mount point was created here (so that ``detach(remove=True)`` may delete it later). With
    ``point_optional``, a mount point that cannot be made (a file a kernel filesystem lacks)
    mounts nothing, as liblxc's ``optional``."""
    src = os.fspath(source)
    is_dir = os.path.isdir(src)
    unpriv = _userns_of(pid)

    kind = propagation.removeprefix("r")
    # A bind that is not recursive leaves the source's submounts behind, and with them would go
    # what they cover on the host (the kernel refuses such a bind to a user namespace for that
    # reason): each outermost one is covered by an empty read-only mount instead.
    covers = () if recursive or not is_dir or not unpriv else _submount_points(src)

    def work() -> str:
        fd = open_tree(src, recursive)
        # The clone is a peer of the source's mount when that is shared (systemd makes every
        # mount shared), and a peer passes on what is mounted below it: a tmpfs the container's
        # root mounted below its disk appeared on the host, over the host's files. So it is
        # private, or a slave when the device asks for one (the host's mounts still come in).
        mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE,
                      propagation=PROPAGATION["slave" if kind == "slave" else "private"])
        attrs = MOUNT_ATTR_RDONLY if readonly else 0
        userns = -1
        if idmap and unpriv:
            attrs |= MOUNT_ATTR_IDMAP
            userns = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        if attrs:
            mount_setattr(fd, "", AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0),
                          attr_set=attrs, userns_fd=max(userns, 0))
        if unpriv and (readonly or recursive or covers):
            fd = _locked(fd, is_dir, recursive, covers)
        _enter(pid, unpriv)
        try:
            created = _make_mountpoint(target, is_dir)
        except OSError as e:
            if point_optional and e.errno in (errno.ENOENT, errno.EACCES, errno.EPERM,
                                              errno.EROFS):
                return "skipped"
            raise
        try:
            move_mount(fd, target)
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    (os.rmdir if is_dir else os.unlink)(target)
            raise
        if propagation:
            try:
                mount_setattr(AT_FDCWD, target, AT_SYMLINK_NOFOLLOW |
                              (AT_RECURSIVE if propagation.startswith("r") else 0),
                              propagation=PROPAGATION[kind])
            except BaseException:
                with contextlib.suppress(OSError):
                    _umount(target)
                raise
        return "created" if created else ""

    try:
        outcome = _in_child(work)
    except StorageError as e:
        raise StorageError(f"cannot mount {src} at {target} in the instance: {e}") from None
    if outcome == "skipped":
        log.debug("%s not mounted at %s in the instance of pid %d: the mount point cannot be "
                  "made there (optional)", src, target, pid)
        return False
    created = outcome == "created"
    if log.isEnabledFor(DEBUG):
        how = ["idmapped" if idmap and unpriv else "not shifted"]
        ro = "read-only (locked)" if unpriv else "read-only"
        how += [word for on, word in ((readonly, ro), (recursive, "recursive"),
                                      (bool(propagation), propagation),
                                      (created, "mount point created")) if on]
        log.debug("mounted %s at %s in the instance of pid %d (%s)", src, target, pid,
                  ", ".join(how))
    return created


def detach(pid: int, target: str, *, remove: bool = False) -> None:
    """Unmount ``target`` inside the container (lazily, as a busy mount must still go); with
    ``remove``, delete the mount point (only say so when ``attach`` created it). A target that
    is not mounted is fine."""
    unpriv = _userns_of(pid)

    def work() -> str:
        _enter(pid, unpriv)
        try:
            _umount(target)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):
                raise
        if remove:
            try:
                if not os.path.ismount(target):
                    os.unlink(target)
            except (FileNotFoundError, IsADirectoryError):
                pass
        return ""

    _in_child(work)
    log.debug("unmounted %s in the instance of pid %d%s", target, pid,
              " (mount point removed)" if remove else "")


def mounts(pid: int | str = "self") -> list[tuple[str, str]]:
    """(mount point, filesystem type) of a process's mount namespace, in mount order."""
    out = []
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                point = left.split(" ")[4]
                point = (point.replace("\\040", " ").replace("\\011", "\t")
                         .replace("\\012", "\n").replace("\\134", "\\"))
                out.append((point, right.split(" ", 1)[0]))
    except FileNotFoundError:
        pass
    return out
