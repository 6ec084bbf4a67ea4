"""The remote protocol's framing: what one lxdlib says to another over an SSH channel.

lxdlib has no daemon, so a remote host is reached by running ``lxdlib serve --stdio`` there
over SSH and talking to it on its stdin/stdout. This module is only the bytes: frames, the
hello, requests, replies and errors, with no I/O policy of its own, so both ends and the unit
tests share one definition.

A frame is a 5-byte header (one kind byte, then a 4-byte big-endian length) and its payload:

- ``J``: a JSON object (UTF-8): the hello, a request, a reply;
- ``D``: raw bytes of a file being pushed or pulled (an empty one ends the stream);
- ``O`` / ``E``: bytes a command wrote on its stdout / stderr while it runs.

Bytes travel in their own frames rather than base64 inside JSON: nothing to decode, and a file
of any size streams in bounded chunks. A frame larger than ``MAX_FRAME`` is refused before it
is read, so a confused or hostile peer cannot make the other side allocate without bound.

The conversation: the client sends ``{"hello": "lxdlib", "versions": [1]}``, the server
answers with the version it picked (or an error and exits); then each request
``{"id": n, "verb": "instance.start", "args": {...}}`` gets exactly one reply
``{"id": n, "ok": true, "result": ...}`` or ``{"id": n, "ok": false, "error": {...}}``,
possibly preceded by data frames that belong to it. An error names its class in
``lxdlib.errors`` and carries the message, so the client raises the same typed error.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping

from . import errors
from .errors import TYPE_CHECKING, LxdlibError
from .logs import get_logger

if TYPE_CHECKING:
    from typing import Any, BinaryIO, Final

__all__ = ["CHUNK", "DATA", "JSON", "MAX_FRAME", "PROTOCOL_VERSION", "STDERR", "STDOUT",
           "ConnectionLost", "ProtocolError", "decode_error", "encode_error", "hello",
           "pick_version", "read_frame", "read_json", "write_frame", "write_json"]

log = get_logger(__name__)

PROTOCOL_VERSION: Final = 1
SUPPORTED: Final = (1,)
MAX_FRAME: Final = 16 * 1024 * 1024
CHUNK: Final = 1024 * 1024

JSON: Final = b"J"
DATA: Final = b"D"
STDOUT: Final = b"O"
STDERR: Final = b"E"
KINDS: Final = frozenset((JSON, DATA, STDOUT, STDERR))

_HEADER = struct.Struct(">cI")


class ConnectionLost(LxdlibError, ConnectionError):
    """The channel to the remote lxdlib closed (ssh failed, the network dropped, the remote
    process died). What the remote had finished stays done; a request in flight may or may not
    have completed there."""


class ProtocolError(LxdlibError):
    """The peer sent something this protocol does not allow (a bad frame, an unknown verb,
    an unsupported version)."""


# -- frames -------------------------------------------------------------------------------------
def write_frame(out: BinaryIO, kind: bytes, payload: bytes | bytearray | memoryview) -> None:
    """Write one frame (not flushed: the caller flushes once a message is complete)."""
    if kind not in KINDS:
        raise ProtocolError(f"unknown frame kind {kind!r}")
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(payload)} bytes is over {MAX_FRAME}")
    out.write(_HEADER.pack(kind, len(payload)))
    out.write(payload)


def _read_exact(inp: BinaryIO, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = inp.read(n - len(buf))
        if not chunk:
            raise ConnectionLost(f"the channel closed after {len(buf)} of {n} bytes"
                                 if buf else "the channel closed")
        buf.extend(chunk)
    return bytes(buf)


def read_frame(inp: BinaryIO) -> tuple[bytes, bytes]:
    """The next frame as ``(kind, payload)``; ``ConnectionLost`` at the end of the stream."""
    kind, size = _HEADER.unpack(_read_exact(inp, _HEADER.size))
    if kind not in KINDS:
        raise ProtocolError(f"unknown frame kind {kind!r}")
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is over {MAX_FRAME}")
    return kind, _read_exact(inp, size) if size else b""


def write_json(out: BinaryIO, message: Mapping[str, Any]) -> None:
    """Write a JSON message and flush: a message is the end of what one side says for now."""
    write_frame(out, JSON, json.dumps(message, separators=(",", ":")).encode())
    out.flush()


def parse_json(payload: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(payload)
    except (ValueError, RecursionError) as e:  # nesting too deep for the parser, too
        raise ProtocolError(f"a message that is not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message that is not a JSON object")
    return msg


def read_json(inp: BinaryIO,
              on_data: Callable[[bytes, bytes], None] | None = None) -> dict[str, Any]:
    """The next JSON message; data frames before it go to ``on_data(kind, payload)`` (refused
    when there is none, as nothing was asked that sends data)."""
    while True:
        kind, payload = read_frame(inp)
        if kind == JSON:
            return parse_json(payload)
        if on_data is None:
            raise ProtocolError(f"unexpected {kind.decode()} frame")
        on_data(kind, payload)


# -- hello --------------------------------------------------------------------------------------
def hello(role: str, version: int | None = None, **extra: Any) -> dict[str, Any]:
    """The first message: the client lists the versions it speaks, the server the one it
    picked."""
    msg: dict[str, Any] = {"hello": "lxdlib", "role": role}
    if version is None:
        msg["versions"] = list(SUPPORTED)
    else:
        msg["version"] = version
    msg.update(extra)
    return msg


def pick_version(msg: Mapping[str, Any]) -> int:
    """The highest version both sides speak, from the client's hello; ``ProtocolError`` if
    the message is no hello or none is shared."""
    if msg.get("hello") != "lxdlib":
        raise ProtocolError("the peer did not start with an lxdlib hello")
    offered = msg.get("versions")
    if not isinstance(offered, list):
        raise ProtocolError("the hello lists no protocol versions")
    shared = [v for v in offered if isinstance(v, int) and v in SUPPORTED]
    if not shared:
        raise ProtocolError(f"no shared protocol version: the peer speaks {offered}, "
                            f"this lxdlib {list(SUPPORTED)}")
    return max(shared)


# -- errors -------------------------------------------------------------------------------------
# public attributes some errors carry, sent along when they are plain JSON values
_ERROR_ATTRS: Final = ("kind", "name", "key", "reason", "value", "failures", "limit",
                       "in_use", "needed", "fix", "log_tail", "instance", "command", "timeout",
                       "path", "state")


def encode_error(exc: BaseException) -> dict[str, Any]:
    """An exception as the wire carries it. Only lxdlib's own classes keep their type; any
    other exception is a bug or a host failure there, sent as ``LxdlibError`` with its type in
    the message so it is not mistaken for an expected condition."""
    if isinstance(exc, LxdlibError):
        name = type(exc).__name__
        if getattr(errors, name, None) is not type(exc) and not isinstance(
                exc, (ConnectionLost, ProtocolError)):
            # a subclass defined elsewhere: the nearest class the client knows
            name = next(c.__name__ for c in type(exc).__mro__
                        if getattr(errors, c.__name__, None) is c)
        message = str(exc)
    else:
        name, message = "LxdlibError", f"{type(exc).__name__}: {exc}"
    out: dict[str, Any] = {"class": name, "message": message}
    fields = {}
    for attr in _ERROR_ATTRS:
        v = getattr(exc, attr, None)
        if isinstance(v, (str, int, float, bool)) or (
                isinstance(v, (list, dict)) and _plain(v)):
            fields[attr] = v
    result = getattr(exc, "result", None)
    if result is not None and hasattr(result, "returncode"):
        fields["result"] = {"returncode": int(result.returncode)}
    if fields:
        out["attrs"] = fields
    return out


def _plain(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


_LOCAL_CLASSES: Final[dict[str, type[LxdlibError]]] = {
    "ConnectionLost": ConnectionLost, "ProtocolError": ProtocolError}


def decode_error(data: Any) -> LxdlibError:
    """The typed lxdlib error a reply's ``error`` names, with its message and attributes.

    Only classes of ``lxdlib.errors`` (and this module's two) are made: a name the client does
    not know, or one that is no lxdlib error, becomes a plain ``LxdlibError`` — a reply never
    chooses an arbitrary Python class. The constructor is bypassed (each class has its own
    arguments); the message is the server's, word for word."""
    if not isinstance(data, Mapping):
        return ProtocolError(f"malformed error reply {data!r}")
    name = str(data.get("class", ""))
    message = str(data.get("message", ""))
    cls: Any = _LOCAL_CLASSES.get(name) or getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, LxdlibError)):
        cls, message = LxdlibError, f"{name}: {message}" if name else message
    exc: LxdlibError = cls.__new__(cls)
    Exception.__init__(exc, message)
    attrs = data.get("attrs")
    if isinstance(attrs, Mapping):
        for k, v in attrs.items():
            if k in _ERROR_ATTRS:
                setattr(exc, k, v)
        res = attrs.get("result")
        if isinstance(res, Mapping) and isinstance(res.get("returncode"), int):
            from types import SimpleNamespace
            exc.result = SimpleNamespace(returncode=res["returncode"],  # type: ignore[attr-defined]
                                         stdout=b"", stderr=b"")
    return exc
