"""The btrfs send stream checker on synthetic streams: each row is a list of commands after the
stream's first ``subvol``, and the expected refusal (or ``None`` for accepted)."""

from __future__ import annotations

import io
import stat
import struct
import uuid

import pytest

from lxdlib import sendstream as ss
from lxdlib.errors import UnsafeStream

OWN = uuid.UUID(int=1)
OTHER = uuid.UUID(int=2)
PARENT = uuid.UUID(int=3)


def attr(kind: int, value: bytes | str | int) -> bytes:
    if isinstance(value, int):
        raw = struct.pack("<Q", value)
    elif isinstance(value, str):
        raw = value.encode()
    else:
        raw = value
    return struct.pack("<HH", kind, len(raw)) + raw


def cmd(kind: int, *attrs: bytes) -> bytes:
    body = b"".join(attrs)
    return struct.pack("<IHI", len(body), kind, 0) + body


def stream(*cmds: bytes, first: bytes | None = None, version: int = 1,
           end: bool = True) -> io.BytesIO:
    head = first if first is not None else cmd(ss.SUBVOL, attr(ss.A_PATH, "vol"),
                                               attr(ss.A_UUID, OWN.bytes),
                                               attr(ss.A_CTRANSID, 7))
    return io.BytesIO(ss.MAGIC + struct.pack("<I", version) + head + b"".join(cmds)
                      + (cmd(ss.END) if end else b""))


def path(p: str) -> bytes:
    return attr(ss.A_PATH, p)


#: lxdlib's fallback range: the host uids containers' ids map into.
CONTAINER_IDS = range(1000000, 1000000 + 1000000000)

CASES: dict[str, tuple[list[bytes], str | None]] = {
    "empty": ([], None),
    "files": ([cmd(ss.MKDIR, path("rootfs"), attr(ss.A_INO, 257)),
               cmd(ss.MKFILE, path("rootfs/f")),
               cmd(ss.WRITE, path("rootfs/f"), attr(ss.A_FILE_OFFSET, 0),
                   attr(ss.A_DATA, b"hello")),
               cmd(ss.SYMLINK, path("rootfs/l"), attr(ss.A_INO, 258),
                   attr(ss.A_PATH_LINK, "/etc/passwd")),
               cmd(ss.LINK, path("rootfs/h"), attr(ss.A_PATH_LINK, "rootfs/f")),
               cmd(ss.RENAME, path("o257-7-0"), attr(ss.A_PATH_TO, "rootfs/x"))], None),
    "fifo": ([cmd(ss.MKFIFO, path("rootfs/p"))], None),
    "fifo-by-mknod": ([cmd(ss.MKNOD, path("rootfs/p"), attr(ss.A_MODE, stat.S_IFIFO | 0o600),
                           attr(ss.A_RDEV, 0))], None),
    "whiteout": ([cmd(ss.MKNOD, path("rootfs/w"), attr(ss.A_MODE, stat.S_IFCHR),
                      attr(ss.A_RDEV, 0))], None),
    "char-device": ([cmd(ss.MKNOD, path("rootfs/dev/mem"),
                         attr(ss.A_MODE, stat.S_IFCHR | 0o666), attr(ss.A_RDEV, 0x101))],
                    "device node"),
    "block-device": ([cmd(ss.MKNOD, path("x"), attr(ss.A_MODE, stat.S_IFBLK | 0o666),
                          attr(ss.A_RDEV, 0))], "device node"),
    "regular-by-mknod": ([cmd(ss.MKNOD, path("x"), attr(ss.A_MODE, stat.S_IFREG),
                              attr(ss.A_RDEV, 0))], "device node"),
    "setuid-file": ([cmd(ss.CHMOD, path("rootfs/su"), attr(ss.A_MODE, 0o4755)),
                     cmd(ss.CHOWN, path("rootfs/su"), attr(ss.A_UID, 0), attr(ss.A_GID, 0))],
                    None),
    "file-caps": ([cmd(ss.SET_XATTR, path("rootfs/ping"),
                       attr(ss.A_XATTR_NAME, "security.capability"),
                       attr(ss.A_XATTR_DATA, b"\x01\x00\x00\x02\n \x00"))], None),
    "trusted-xattr": ([cmd(ss.SET_XATTR, path("rootfs/f"), attr(ss.A_XATTR_NAME,
                                                                "trusted.overlay.origin"),
                           attr(ss.A_XATTR_DATA, b"x"))], "trusted.overlay.origin"),
    "root-xattr": ([cmd(ss.SET_XATTR, path(""), attr(ss.A_XATTR_NAME,
                                                     "system.posix_acl_access"),
                        attr(ss.A_XATTR_DATA, b"x"))], "own directory"),
    "root-mode-ok": ([cmd(ss.CHMOD, path(""), attr(ss.A_MODE, 0o711))], None),
    "root-world-writable": ([cmd(ss.CHMOD, path(""), attr(ss.A_MODE, 0o777))],
                            "own directory"),
    "root-setgid": ([cmd(ss.CHMOD, path(""), attr(ss.A_MODE, 0o2711))], "own directory"),
    "root-chown": ([cmd(ss.CHOWN, path(""), attr(ss.A_UID, 1000), attr(ss.A_GID, 0))],
                   "own directory"),
    "root-chown-container-root": ([cmd(ss.CHOWN, path(""), attr(ss.A_UID, 1000000),
                                       attr(ss.A_GID, 0))], None),
    "root-chown-container-root-group": ([cmd(ss.CHOWN, path(""), attr(ss.A_UID, 1000000),
                                             attr(ss.A_GID, 1000000))], "own directory"),
    "dotdot": ([cmd(ss.MKFILE, path("rootfs/../../x"))], "leaves the volume"),
    "absolute": ([cmd(ss.MKFILE, path("/etc/x"))], "leaves the volume"),
    "rename-out": ([cmd(ss.RENAME, path("a"), attr(ss.A_PATH_TO, "../a"))],
                   "leaves the volume"),
    "link-out": ([cmd(ss.LINK, path("a"), attr(ss.A_PATH_LINK, "../../etc/shadow"))],
                 "leaves the volume"),
    "nul": ([cmd(ss.MKFILE, path("a\0b"))], "NUL"),
    "clone-own": ([cmd(ss.CLONE, path("b"), attr(ss.A_CLONE_UUID, OWN.bytes),
                       attr(ss.A_CLONE_PATH, "a"))], None),
    "clone-earlier-stream": ([cmd(ss.CLONE, path("b"), attr(ss.A_CLONE_UUID, PARENT.bytes),
                                  attr(ss.A_CLONE_PATH, "a"))], None),
    "clone-foreign": ([cmd(ss.CLONE, path("b"), attr(ss.A_CLONE_UUID, OTHER.bytes),
                           attr(ss.A_CLONE_PATH, "a"))], "not in the backup"),
    "second-subvol": ([cmd(ss.SUBVOL, path("two"), attr(ss.A_UUID, OTHER.bytes))],
                      "one subvolume"),
    "fileattr-v1": ([cmd(ss.FILEATTR, path("a"))], "unknown btrfs stream command"),
    "unknown-command": ([cmd(99, path("a"))], "unknown btrfs stream command"),
    "unknown-attribute": ([cmd(ss.MKFILE, path("a"), attr(40, b""))], "unknown"),
    "duplicate-attribute": ([cmd(ss.MKFILE, path("a"), path("b"))], "twice"),
    "missing-attribute": ([cmd(ss.CHMOD, path("a"))], "lacks"),
    "short-attribute": ([struct.pack("<IHI", 6, ss.MKFILE, 0) + struct.pack("<HH", 15, 9)
                         + b"ab"], "cut short"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_commands(case: str) -> None:
    cmds, refusal = CASES[case]
    s = stream(*cmds)
    if refusal is None:
        info = ss.check(s, {str(PARENT)}, CONTAINER_IDS)
        assert info == ss.StreamInfo("vol", str(OWN), None)
    else:
        with pytest.raises(UnsafeStream, match=refusal):
            ss.check(s, {str(PARENT)}, CONTAINER_IDS)


def _snapshot(parent: uuid.UUID, name: str = "vol") -> bytes:
    return cmd(ss.SNAPSHOT, attr(ss.A_PATH, name), attr(ss.A_UUID, OWN.bytes),
               attr(ss.A_CTRANSID, 9), attr(ss.A_CLONE_UUID, parent.bytes),
               attr(ss.A_CLONE_CTRANSID, 8))


@pytest.mark.parametrize(("first", "refusal"), [
    (_snapshot(PARENT), None),
    (_snapshot(OTHER), "not in the backup"),
    (_snapshot(PARENT, "a/b"), "bad subvolume name"),
    (_snapshot(PARENT, ".."), "leaves the volume"),
    (_snapshot(PARENT, ""), "bad subvolume name"),
    (cmd(ss.MKFILE, path("a")), "must begin with a subvolume"),
])
def test_first_command(first: bytes, refusal: str | None) -> None:
    if refusal is None:
        assert ss.check(stream(first=first), {str(PARENT)}).parent == str(PARENT)
    else:
        with pytest.raises(UnsafeStream, match=refusal):
            ss.check(stream(first=first), {str(PARENT)})


@pytest.mark.parametrize(("raw", "refusal"), [
    (b"", "truncated"),
    (b"btrfs-strea", "truncated"),
    (b"tar-stream\0\0\0" + b"\1\0\0\0", "not a btrfs send stream"),
    (stream(version=3).getvalue(), "version 3"),
    (stream(end=False).getvalue(), "truncated"),
    (stream().getvalue() + b"x", "after the end"),
    (stream().getvalue()[:-3], "truncated"),
    (ss.MAGIC + b"\1\0\0\0" + struct.pack("<IHI", ss.MAX_COMMAND + 1, ss.MKFILE, 0),
     "bytes"),
])
def test_framing(raw: bytes, refusal: str) -> None:
    with pytest.raises(UnsafeStream, match=refusal):
        ss.check(io.BytesIO(raw))


def test_v2_data_runs_to_the_end_of_its_command() -> None:
    data = b"\x0f\x00\xff\xff" * 4  # would parse as a bogus attribute under v1 rules
    write = struct.pack("<IHI", len(path("f")) + 2 + len(data), ss.WRITE, 0) + path("f") \
        + struct.pack("<H", ss.A_DATA) + data
    assert ss.check(stream(write, version=2)).name == "vol"
    with pytest.raises(UnsafeStream):
        ss.check(stream(write, version=1))


def test_v2_commands() -> None:
    enc = cmd(ss.ENCODED_WRITE, path("f"), attr(ss.A_FILE_OFFSET, 0))
    assert ss.check(stream(enc, version=2)).name == "vol"
    with pytest.raises(UnsafeStream, match="never needs"):
        ss.check(stream(cmd(ss.FILEATTR, path("a"), attr(26, 0x10)), version=2))
