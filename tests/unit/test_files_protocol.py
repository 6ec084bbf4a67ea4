"""The file helper's protocol and operations, without containers: the server runs in a thread on
one end of a socketpair, on absolute paths under a temporary directory, and the client side is
``lxdlib.files.Session``'s request code."""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lxdlib import filehelper
from lxdlib.cli.console import format_event
from lxdlib.cli.files import parse_mode, split_target
from lxdlib.errors import AlreadyExists, InvalidArgument, LXCError, LxdlibError, NotFound
from lxdlib.filehelper import (
    ABORT,
    CHUNK,
    Aborted,
    Channel,
    DirChain,
    Moved,
    ProtocolError,
    Server,
)
from lxdlib.files import Session, _norm, pull_tree
from lxdlib.fstree import remove_any_depth
from lxdlib.notebook import size, table


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    a, b = socket.socketpair()
    server = Server(Channel(b), 0)
    t = threading.Thread(target=server.serve, daemon=True)
    t.start()
    s = object.__new__(Session)  # the request side only: no helper process, no instance
    s.inst, s.label, s._proc, s._sock = None, "t", None, a
    s.chan = Channel(a)
    try:
        yield s
    finally:
        a.close()
        t.join(5)
        b.close()


def test_channel_frames_and_limits() -> None:
    a, b = socket.socketpair()
    ca, cb = Channel(a), Channel(b)
    ca.send({"op": "x", "path": "/é"})
    assert cb.recv() == {"op": "x", "path": "/é"}
    ca.send_chunk(b"abc")
    ca.send_chunk(b"")  # empty chunks are not sent: they would end the stream
    ca.end()
    assert [bytes(c) for c in cb.chunks()] == [b"abc"]
    ca.abort()
    with pytest.raises(Aborted):
        cb.recv_chunk()
    a.sendall((CHUNK + 1).to_bytes(4, "big"))
    with pytest.raises(ProtocolError):
        cb.recv_chunk()
    a.sendall((ABORT - 1).to_bytes(4, "big"))
    with pytest.raises(ProtocolError):
        cb.recv()
    a.close()
    b.close()


def test_put_get_and_stat(session: Session, tmp_path: Path) -> None:
    p = str(tmp_path / "f")
    data = os.urandom(CHUNK * 2 + 17)
    assert session.put(p, data) == p
    out = bytearray()
    st = session.get_into(p, out.extend)
    assert bytes(out) == data and st.size == len(data) and st.mode == 0o644
    assert session.stat(p).type == "file"
    assert session.stat(str(tmp_path)).type == "directory"


@pytest.mark.parametrize(("existing_mode", "given", "expected"), [
    (None, None, 0o644),      # new file: default mode
    (None, 0o600, 0o600),     # new file: given mode
    (0o700, None, 0o700),     # replaced file keeps its mode
    (0o700, 0o640, 0o640),    # unless one is given
])
def test_put_modes(session: Session, tmp_path: Path, existing_mode: int | None,
                   given: int | None, expected: int) -> None:
    p = tmp_path / "m"
    if existing_mode is not None:
        p.write_bytes(b"old")
        p.chmod(existing_mode)
    session.put(str(p), b"new", mode=given)
    assert p.read_bytes() == b"new" and stat.S_IMODE(p.stat().st_mode) == expected
    assert [x.name for x in tmp_path.iterdir()] == ["m"]  # no temporary file left


def test_put_through_symlink_and_hardlink_in_place(session: Session, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"old")
    (tmp_path / "link").symlink_to("target")
    session.put(str(tmp_path / "link"), b"via link")
    assert (tmp_path / "link").is_symlink() and target.read_bytes() == b"via link"
    os.link(target, tmp_path / "hard")
    session.put(str(tmp_path / "hard"), b"via hardlink")
    assert target.read_bytes() == b"via hardlink"
    (tmp_path / "dangling").symlink_to("created")
    session.put(str(tmp_path / "dangling"), b"made")
    assert (tmp_path / "created").read_bytes() == b"made"


def test_put_into_directory_and_parents(session: Session, tmp_path: Path) -> None:
    assert session.put(str(tmp_path), b"x", into="name") == str(tmp_path / "name")
    deep = tmp_path / "a" / "b" / "c"
    session.put(str(deep), b"d", parents=True)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o750
    with pytest.raises(NotFound):
        session.put(str(tmp_path / "no" / "such"), b"x")
    with pytest.raises(InvalidArgument):
        session.put(str(tmp_path / "a"), b"x")  # a directory


def test_aborted_put_keeps_the_old_file(session: Session, tmp_path: Path) -> None:
    p = tmp_path / "keep"
    p.write_bytes(b"old")

    class Broken:
        calls = 0

        def read(self, n: int) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError(errno.EIO, "source broke")
            return b"x" * 1000

    with pytest.raises(OSError, match="source broke"):
        session.put(str(p), Broken())  # type: ignore[arg-type]
    assert p.read_bytes() == b"old" and sorted(x.name for x in tmp_path.iterdir()) == ["keep"]
    session.put(str(p), b"next")  # the channel is still in step
    assert p.read_bytes() == b"next"


def test_errors_map_to_the_error_tree(session: Session, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="file 't/"):
        session.stat(str(tmp_path / "missing"))
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InvalidArgument, match="not a regular file"):
        session.get_into(str(tmp_path / "fifo"), lambda c: None)
    session.mkdir(str(tmp_path / "d"))
    with pytest.raises(AlreadyExists):
        session.mkdir(str(tmp_path / "d"))
    (tmp_path / "d" / "f").write_text("x")
    with pytest.raises(InvalidArgument):
        session.delete(str(tmp_path / "d"))
    session.delete(str(tmp_path / "d"), recursive=True)
    with pytest.raises(InvalidArgument):
        session.stat("relative/path")
    session.chan.send({"op": "bogus", "path": "/"})
    with pytest.raises(LxdlibError):
        session._recv("/")


def test_walk_order_and_content(session: Session, tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "b").mkdir(parents=True)
    (root / "a.txt").write_text("A")
    (root / "b" / "c.txt").write_text("C")
    (root / "l").symlink_to("/nowhere")
    os.mkfifo(root / "p")
    seen = []
    for rel, st, chunks in session.walk(str(root)):
        data = b"".join(bytes(c) for c in chunks) if chunks is not None else None
        seen.append((rel, st.type, data, st.target))
    assert seen == [("", "directory", None, None), ("a.txt", "file", b"A", None),
                    ("b", "directory", None, None), ("b/c.txt", "file", b"C", None),
                    ("l", "symlink", None, "/nowhere"), ("p", "other", None, None)]


@pytest.mark.parametrize(("ref", "expected"), [
    ("c1/etc/hosts", ("c1", "/etc/hosts")),
    ("local:c1/etc/hosts", ("c1", "/etc/hosts")),
    ("c1/", ("c1", "/")),
    ("c1//root", ("c1", "//root")),
])
def test_split_target(ref: str, expected: tuple[str, str]) -> None:
    assert split_target(ref) == expected


@pytest.mark.parametrize("ref", ["c1", "/etc/hosts", ""])
def test_split_target_refuses(ref: str) -> None:
    with pytest.raises(InvalidArgument):
        split_target(ref)


@pytest.mark.parametrize(("text", "mode"), [("0644", 0o644), ("755", 0o755), ("4755", 0o4755),
                                            (None, None)])
def test_parse_mode(text: str | None, mode: int | None) -> None:
    assert parse_mode(text) == mode


@pytest.mark.parametrize("text", ["rw", "9", "77777", "-1"])
def test_parse_mode_refuses(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_mode(text)


@pytest.mark.parametrize(("path", "expected"), [("etc/hosts", "/etc/hosts"), ("/x", "/x")])
def test_norm(path: str, expected: str) -> None:
    assert _norm(path) == expected


def test_norm_refuses_nul() -> None:
    with pytest.raises(InvalidArgument):
        _norm("/a\0b")


def test_event_formats() -> None:
    ev = {"type": "lifecycle", "timestamp": "T",
          "metadata": {"action": "instance-started", "source": "c1", "path": "/x"}}
    assert format_event(ev, "json").startswith('{"type": "lifecycle"')
    assert format_event(ev, "pretty") == "T lifecycle instance-started c1 path=/x"
    assert format_event(ev, "yaml").startswith("type: lifecycle\n") and \
        format_event(ev, "yaml").endswith("\n\n")


def test_notebook_tables_escape() -> None:
    html = table(["a<b"], [["<script>"]], "c&d")
    assert "<script>" not in html and "&lt;script&gt;" in html and "c&amp;d" in html
    assert [size(n) for n in (None, 5, 2048, 3 << 30)] == ["", "5B", "2.00KiB", "3.00GiB"]


def test_the_helper_loads_alone_by_its_path() -> None:
    """The helper runs by its path inside the instance, outside any package: it must load
    with the standard library alone (an import of lxdlib's, even ``lxdlib.errors``, would
    fail there). Run so, without arguments, it gets as far as its own error message."""
    import subprocess
    import sys

    import lxdlib.filehelper
    r = subprocess.run([sys.executable, "-I", lxdlib.filehelper.__file__], cwd="/",
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.startswith("lxdlib file helper: "), r.stderr


def _deep(root: Path, depth: int) -> None:
    """``depth`` directories ``d`` below ``root``, each level with a file after its directory
    (``z``, holding the level), the bottom with ``f``; made by fds, as paths would pass
    PATH_MAX."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            z = os.open("z", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(z, f"{level}\n".encode())
            os.close(z)
            down = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = down
        f = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(f, b"bottom\n")
        os.close(f)
    finally:
        os.close(fd)


def test_walk_and_pull_any_depth_with_few_fds(session: Session, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Deeper than Python's recursion limit and with 4 directories open at most on each side:
    every level's file comes after its directory, so both walks go back up through every
    level (``..``, checked)."""
    monkeypatch.setattr(filehelper, "MAX_OPEN_DIRS", 4)
    try:
        _check_deep_walk(session, tmp_path, monkeypatch)
    finally:  # pytest's own removal of tmp_path recurses per level: RecursionError
        for made in (tmp_path / "src", tmp_path / "dest"):
            if os.path.lexists(made):
                remove_any_depth(made)


def _check_deep_walk(session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    depth = 1500
    _deep(tmp_path / "src", depth)
    fds = len(os.listdir("/proc/self/fd"))
    peak = [0]

    def counting(*a: object, **kw: object) -> int:
        peak[0] = max(peak[0], len(os.listdir("/proc/self/fd")) - fds)
        return real(*a, **kw)  # type: ignore[arg-type]

    real = filehelper.DirChain.enter
    monkeypatch.setattr(filehelper.DirChain, "enter", counting)
    count = pull_tree(session, str(tmp_path / "src"), tmp_path / "dest")
    assert count == 1 + 2 * depth + 1
    assert peak[0] < 16  # both ends' chains (4 + root each) and a file or two, not 2 x depth
    fd = os.open(tmp_path / "dest", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            with open(os.open("z", os.O_RDONLY, dir_fd=fd)) as z:
                assert z.read() == f"{level}\n"
            down = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = down
        with open(os.open("f", os.O_RDONLY, dir_fd=fd)) as f:
            assert f.read() == "bottom\n"
    finally:
        os.close(fd)


def test_dir_chain_follows_renames_and_refuses_a_replaced_directory(tmp_path: Path) -> None:
    (tmp_path / "a/b/c/d").mkdir(parents=True)
    chain = DirChain(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), keep=1)
    try:
        for name in ("a", "b", "c", "d"):
            chain.enter(name)
        os.rename(tmp_path / "a/b/c", tmp_path / "a/b/c2")  # renamed in place: still found
        chain.leave()
        assert chain.depth == 3 and os.path.samefile(f"/proc/self/fd/{chain.fd}",
                                                     tmp_path / "a/b/c2")
        # c moved out of b and b replaced by another directory: b is gone, never the new one
        os.rename(tmp_path / "a/b/c2", tmp_path / "a/c3")
        os.rename(tmp_path / "a/b", tmp_path / "old-b")
        (tmp_path / "a/b").mkdir()
        os.rename(tmp_path / "old-b", tmp_path / "a/b/inner")  # not b's place any more
        with pytest.raises(Moved) as e:
            chain.leave()
        assert (e.value.depth, e.value.filename) == (2, "b")
    finally:
        chain.close()


def _fake_walk(session: Session, *msgs: dict[str, object] | bytes) -> Iterator[object]:
    """Play a helper's side of a walk (messages, or raw bytes for chunks) on the session's
    socket, and consume the walk."""
    a, b = socket.socketpair()
    session.chan = Channel(a)
    helper = Channel(b)
    for m in msgs:
        if isinstance(m, bytes):
            b.sendall(m)
        else:
            helper.send(m)
    try:
        for rel, st, chunks in session.walk("/root/x"):
            if chunks is not None:
                for _ in chunks:
                    pass
            yield rel, st.type
    finally:
        a.close()
        b.close()


DIR = {"type": "directory", "mode": 0o755, "uid": 0, "gid": 0, "size": 0, "mtime": 0}
FILE = {**DIR, "type": "file"}


def test_walk_errors_name_the_entry_that_vanished(session: Session) -> None:
    gone = {"end": True, "ok": False, "errno": errno.ENOENT, "msg": "gone"}
    with pytest.raises(NotFound, match=r"^file 't/root/x/a/b' not found: it was removed or "
                                       r"renamed while the tree was copied$"):
        list(_fake_walk(session, {"ok": True, "stat": DIR},
                        {"depth": 1, "name": "a", "stat": DIR}, {**gone, "depth": 2,
                                                                 "name": "b"}))
    # a directory gone when the walk came back up to it: named by its depth alone
    with pytest.raises(NotFound, match=r"^file 't/root/x/a' not found"):
        list(_fake_walk(session, {"ok": True, "stat": DIR},
                        {"depth": 1, "name": "a", "stat": DIR},
                        {"depth": 2, "name": "c", "stat": DIR}, {**gone, "depth": 1,
                                                                 "name": ""}))
    # the root itself: LXD's words stay (the CLI prints "Not Found")
    with pytest.raises(NotFound, match=r"^file 't/root/x' not found$"):
        list(_fake_walk(session, {"ok": True, "stat": DIR}, {**gone, "depth": 0, "name": ""}))
    # an entry deeper than the directories walked, or a name with a slash: refused
    with pytest.raises(LXCError, match="outside the directories walked"):
        list(_fake_walk(session, {"ok": True, "stat": DIR},
                        {"depth": 2, "name": "a", "stat": FILE}))
    with pytest.raises(LxdlibError, match="refusing file name"):
        list(_fake_walk(session, {"ok": True, "stat": DIR},
                        {"depth": 1, "name": "../a", "stat": FILE}))


def test_walk_read_error_aborts_the_file_and_says_why(session: Session) -> None:
    """A file that fails to read mid-way: the helper aborts its stream, then says why (the
    reply was read as file data before, and the channel hung out of step)."""
    with pytest.raises(LxdlibError, match=r"^t/root/x/a: Input/output error$"):
        list(_fake_walk(session, {"ok": True, "stat": DIR},
                        {"depth": 1, "name": "a", "stat": FILE},
                        (3).to_bytes(4, "big") + b"abc", ABORT.to_bytes(4, "big"),
                        {"end": True, "ok": False, "errno": errno.EIO,
                         "msg": "Input/output error", "depth": 1, "name": "a"}))


def test_pull_keeps_a_directorys_sticky_bit(session: Session, tmp_path: Path) -> None:
    """A container's /tmp (1777) pulled was a 0777 directory of root's on the host: any host
    user could remove or swap the files root wrote in it, during the pull and after. Its sticky
    bit stays; setuid and setgid still go, from directories as from files."""
    (tmp_path / "src/tmp").mkdir(parents=True)
    (tmp_path / "src/tmp/f").write_text("x")
    os.chmod(tmp_path / "src/tmp", 0o3777)
    os.chmod(tmp_path / "src/tmp/f", 0o4755)
    assert pull_tree(session, str(tmp_path / "src"), tmp_path / "dest") == 3
    assert stat.S_IMODE(os.stat(tmp_path / "dest/tmp").st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(tmp_path / "dest/tmp/f").st_mode) == 0o755


# the in-process helper is still sending when the pull gives up: its read then meets a reset
# (the real helper's main() takes that as the end)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_pull_names_the_host_directory_moved_away(session: Session, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A host user who can write in the destination (a world-writable directory pulled) moves
    directories away while root's pull is below them: the pull neither follows them nor writes
    elsewhere, and its error names the directory it lost (it named the destination)."""
    monkeypatch.setattr(filehelper, "MAX_OPEN_DIRS", 1)
    (tmp_path / "src/w/a/b/c").mkdir(parents=True)
    (tmp_path / "src/w/a/b/c/f").write_text("f")
    (tmp_path / "src/w/a/z").write_text("z")  # after b: the pull comes back up to a
    dest = tmp_path / "dest"
    walk = session.walk

    def moving(path: str) -> Iterator[object]:
        for rel, st, chunks in walk(path):
            yield rel, st, chunks
            if rel == "w/a/b/c/f":  # a user's renames, as root's pull is in c
                os.rename(dest / "w/a/b", tmp_path / "b")
                os.rename(dest / "w/a", tmp_path / "a")
                (dest / "w/a").mkdir()

    monkeypatch.setattr(session, "walk", moving)
    with pytest.raises(LxdlibError, match=rf"^{dest}/w/a changed while it was copied"):
        pull_tree(session, str(tmp_path / "src"), dest)
    assert os.listdir(dest / "w/a") == [] and sorted(os.listdir(tmp_path / "a")) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_pull_into_a_file_is_a_typed_error(session: Session, tmp_path: Path) -> None:
    """A destination whose parent is a file (a mistyped path): the error names it, where an
    ``OSError`` came out of the pull (the command printed a traceback)."""
    (tmp_path / "src/w").mkdir(parents=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(LxdlibError, match=rf"^cannot write {tmp_path}/file/dest on the host: "
                                          "Not a directory$"):
        pull_tree(session, str(tmp_path / "src"), tmp_path / "file/dest")
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_pull_meeting_a_symlink_swapped_in_is_a_typed_error(
        session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host user who can write in the destination swaps the directory root just made for a
    symlink before root enters it: the pull refuses to follow it (O_NOFOLLOW) and names the
    path, and nothing is written where the symlink points."""
    (tmp_path / "src/w/a").mkdir(parents=True)
    (tmp_path / "src/w/a/f").write_text("f")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest = tmp_path / "dest"
    enter = filehelper.DirChain.enter

    def swapped(self: filehelper.DirChain, name: str) -> int:
        if name == "a":
            os.rmdir(name, dir_fd=self.fd)
            os.symlink(elsewhere, name, dir_fd=self.fd)
        return enter(self, name)
    monkeypatch.setattr(filehelper.DirChain, "enter", swapped)
    with pytest.raises(LxdlibError, match=rf"^cannot write {dest}/w/a on the host: "):
        pull_tree(session, str(tmp_path / "src"), dest)
    assert os.listdir(elsewhere) == []
