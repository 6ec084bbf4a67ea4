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

from lxdlib.cli.console import format_event
from lxdlib.cli.files import parse_mode, split_target
from lxdlib.errors import AlreadyExists, InvalidArgument, LxdlibError, NotFound
from lxdlib.filehelper import ABORT, CHUNK, Aborted, Channel, ProtocolError, Server
from lxdlib.files import Session, _norm
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
