"""The migration channel's framing (lxdlib.migrate): messages, volume parts, errors carried
across as the same lxdlib types, and a connection cut anywhere read as ``ChannelClosed``."""

from __future__ import annotations

import io

import pytest

from lxdlib import migrate
from lxdlib.errors import AlreadyExists, LxdlibError, UnsafeStream, WrongState


def _pair() -> tuple[migrate.Channel, io.BytesIO]:
    out = io.BytesIO()
    return migrate.Channel(io.BytesIO(), out), out  # type: ignore[arg-type]


def _reader(data: bytes) -> migrate.Channel:
    return migrate.Channel(io.BufferedReader(io.BytesIO(data)), io.BytesIO())  # type: ignore


def test_messages_and_parts_round_trip() -> None:
    w, out = _pair()
    w.send({"a": 1})
    w.data(b"x" * 10)
    w.data(b"")
    w.data(b"yz")
    w.end_part()
    w.send({"done": True})
    assert w.sent == len(out.getvalue())
    r = _reader(out.getvalue())
    assert r.receive() == {"a": 1}
    assert io.BufferedReader(r.part()).read() == b"x" * 10 + b"yz"
    assert r.receive() == {"done": True}


def test_errors_keep_their_type() -> None:
    for err in (WrongState("running"), UnsafeStream("device node"),
                AlreadyExists("instance", "c1")):
        w, out = _pair()
        w.send({"error": migrate.error_doc(err)})
        with pytest.raises(type(err)) as got:
            _reader(out.getvalue()).receive()
        assert str(got.value) == str(err)


def test_an_error_instead_of_data() -> None:
    w, out = _pair()
    w.data(b"abc")
    w.send({"error": {"type": "LxdlibError", "message": "btrfs send failed"}})
    with pytest.raises(LxdlibError, match="btrfs send failed"):
        io.BufferedReader(_reader(out.getvalue()).part()).read()


@pytest.mark.parametrize("cut", [0, 3, 6, 12])
def test_a_cut_connection_is_channel_closed(cut: int) -> None:
    w, out = _pair()
    w.send({"a": 1})
    w.data(b"x" * 100)
    data = out.getvalue()
    r = _reader(data[:cut] if cut < 12 else data[:len(data) - 50])
    with pytest.raises(migrate.ChannelClosed):
        r.receive()
        io.BufferedReader(r.part()).read()


def test_wrong_frames_are_refused() -> None:
    with pytest.raises(UnsafeStream):
        _reader(b"Q\x00\x00\x00\x00").receive()
    with pytest.raises(UnsafeStream):
        _reader(b"J\x00\x00\x00\x02[]").receive()


def test_copy_from_a_pipe_into_a_buffer() -> None:
    """Where the channel is no file descriptor, the bytes are copied (else spliced)."""
    import os
    r, w = os.pipe()
    os.write(w, b"btrfs-stream\0" * 100)
    os.close(w)
    ch, out = _pair()
    try:
        ch.copy_from(r)
    finally:
        os.close(r)
    assert out.getvalue() == b"btrfs-stream\0" * 100
    assert ch.sent == len(out.getvalue())
