"""The remote end of an SSH remote: ``lxdlib serve --stdio`` answers requests on stdin/stdout.

Another host's lxdlib runs this over ``ssh -T`` and sends requests framed by ``lxdlib.wire``.
Each request names a verb from ``VERBS`` — a fixed table of what a remote may do, each verb with
its typed arguments — and nothing else: no attribute lookup by name, no eval, no pickles. A verb
or argument the table lacks, or an argument of the wrong type, is refused with
``ProtocolError`` before anything runs. Errors go back as their ``lxdlib.errors`` class and
message.

The process exits when its stdin closes, which is what happens when the SSH channel closes for
any reason (the client closed it, ssh was killed, the network dropped), so a lost client leaves
no server behind. Processes started for the host (a container's monitor, dnsmasq) must not keep
the channel open, so the protocol runs on private close-on-exec copies of fds 0 and 1, and the
fds children inherit point at ``/dev/null`` (stdin/stdout) and stderr stays the caller's only
if ``--debug`` asked for messages there.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import threading
from collections.abc import Callable, Iterator, Mapping

from . import wire
from .errors import TYPE_CHECKING, LxdlibError
from .logs import get_logger
from .version import VERSION
from .wire import ProtocolError

if TYPE_CHECKING:
    from typing import Any, BinaryIO, Final

    from .host import Host
    from .instances import Instance

    Handler = Callable[["Host", "Request"], Any]

__all__ = ["VERBS", "Server", "serve_stdio"]

log = get_logger(__name__)



class _Opt:
    """An optional argument of type ``t`` (``None`` allowed)."""

    def __init__(self, t: Any) -> None:
        self.t = t


STR_LIST: Final = "list[str]"
STR_MAP: Final = "dict[str,str]"
DEV_MAP: Final = "dict[str,dict[str,str]]"


def _check(verb: str, name: str, value: Any, t: Any) -> None:
    if isinstance(t, _Opt):
        if value is None:
            return
        t = t.t
    ok: bool
    if t == STR_LIST:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif t == STR_MAP:
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    elif t == DEV_MAP:
        ok = isinstance(value, dict) and all(
            isinstance(d, dict) and all(isinstance(v, str) for v in d.values())
            for d in value.values())
    elif t is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif t is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(t, tuple):  # one of several types (a command: a string or a list)
        ok = any(_is(value, x) for x in t)
    else:
        ok = isinstance(value, t)
    if not ok:
        raise ProtocolError(f"{verb}: argument {name!r} must be {_tname(t)}")


def _is(value: Any, t: Any) -> bool:
    if t == STR_LIST:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, t)


def _tname(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_tname(x) for x in t)
    return t if isinstance(t, str) else t.__name__


class Request:
    """One request's context: its checked arguments, the upload it may carry (pushed file data
    or an exec's stdin, as ``D`` frames), and the output channel for the data it sends back."""

    def __init__(self, server: Server, args: dict[str, Any], upload: bool) -> None:
        self.server = server
        self.args = args
        self.upload_open = upload

    def read_upload(self, n: int = -1) -> bytes:
        """The next chunk of the upload (``b""`` at its end)."""
        if not self.upload_open:
            return b""
        kind, payload = wire.read_frame(self.server.inp)
        if kind != wire.DATA:
            raise ProtocolError(f"expected upload data, got a {kind.decode()} frame")
        if not payload:
            self.upload_open = False
        return payload

    def drain_upload(self) -> None:
        while self.upload_open:
            self.read_upload()

    def send(self, kind: bytes, data: bytes | memoryview) -> None:
        out = self.server.out
        for i in range(0, len(data), wire.CHUNK):
            wire.write_frame(out, kind, data[i:i + wire.CHUNK])
        out.flush()


class _UploadReader(io.RawIOBase):
    """The upload as a binary file object, so ``files.put`` streams it."""

    def __init__(self, req: Request) -> None:
        self.req = req
        self.buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.buf:
            self.buf = self.req.read_upload()
            if not self.buf:
                return 0
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


# -- the verbs --------------------------------------------------------------------------------
def _inst(host: Host, req: Request) -> Instance:
    return host.instances.get(req.args["name"])


def _create_kw(a: dict[str, Any]) -> dict[str, Any]:
    return {"profiles": a.get("profiles"), "config": a.get("config"),
            "devices": a.get("devices"), "pool": a.get("pool"),
            "ephemeral": bool(a.get("ephemeral")), "description": a.get("description") or ""}


def _host_info(host: Host, req: Request) -> Any:
    return {"root": str(host.paths.root), "version": VERSION, "pid": os.getpid()}


def _create(host: Host, req: Request) -> Any:
    a = req.args
    return host.create(a.get("image"), a.get("instance"), **_create_kw(a)).name


def _launch(host: Host, req: Request) -> Any:
    a = req.args
    return host.launch(a.get("image"), a.get("instance"), **_create_kw(a)).name


def _record(host: Host, req: Request) -> Any:
    inst = _inst(host, req)
    rec = inst.record()
    return {"name": rec.name, "config": dict(rec.config), "devices": dict(rec.devices),
            "profiles": list(rec.profiles), "description": rec.description,
            "ephemeral": rec.ephemeral, "architecture": rec.architecture,
            "created_at": rec.created_at.isoformat(), "status": inst.status,
            "state": inst.state}


def _stop(host: Host, req: Request) -> Any:
    a = req.args
    _inst(host, req).stop(force=bool(a.get("force")), timeout=float(a.get("timeout", -1)))


def _restart(host: Host, req: Request) -> Any:
    a = req.args
    _inst(host, req).restart(force=bool(a.get("force")), timeout=float(a.get("timeout", -1)))


def _exec(host: Host, req: Request) -> Any:
    a = req.args
    inp = bytearray()
    while chunk := req.read_upload():
        inp.extend(chunk)
    res = _inst(host, req).exec(
        a["command"], env=a.get("env"), cwd=a.get("cwd"), user=int(a.get("user") or 0),
        group=int(a.get("group") or 0), input=bytes(inp) if inp else None,
        timeout=a.get("timeout"),
        stdout=lambda b: req.send(wire.STDOUT, b), stderr=lambda b: req.send(wire.STDERR, b))
    return {"returncode": res.returncode}


def _file_get(host: Host, req: Request) -> Any:
    from typing import cast  # here: typing is no import of lxdlib's modules (errors.py)
    st = _inst(host, req).files.get_to(req.args["path"], cast("BinaryIO", _Sender(req)))
    return {"type": st.type, "mode": st.mode, "uid": st.uid, "gid": st.gid, "size": st.size}


class _Sender:
    """A binary sink that sends what is written as ``D`` frames."""

    def __init__(self, req: Request) -> None:
        self.req = req

    def write(self, b: Any) -> int:
        self.req.send(wire.DATA, bytes(b))
        return len(b)


def _file_put(host: Host, req: Request) -> Any:
    a = req.args
    _inst(host, req).files.put(a["path"], io.BufferedReader(_UploadReader(req), wire.CHUNK),
                               mode=a.get("mode"), uid=a.get("uid"), gid=a.get("gid"),
                               parents=bool(a.get("parents")))


def _file_stat(host: Host, req: Request) -> Any:
    st = _inst(host, req).files.stat(req.args["path"])
    return {"type": st.type, "mode": st.mode, "uid": st.uid, "gid": st.gid, "size": st.size}


def _snapshots(host: Host, req: Request) -> Any:
    return [{"name": s.name, "created_at": s.created_at.isoformat(), "stateful": s.stateful,
             "expires_at": s.expires_at.isoformat() if s.expires_at else None}
            for s in _inst(host, req).record().snapshots]


def _snap_create(host: Host, req: Request) -> Any:
    a = req.args
    return _inst(host, req).snapshots.create(a.get("snapshot"), stateful=bool(a.get("stateful")),
                                             description=a.get("description") or "").name


def _model_dict(get: Callable[[Host, str], Any]) -> Handler:
    def handler(host: Host, req: Request) -> Any:
        return get(host, req.args["name"]).to_dict()
    return handler


def _image_dicts(host: Host, req: Request) -> Any:
    return [i.to_dict() for i in host.images.list()]


def _profile_create(host: Host, req: Request) -> Any:
    a = req.args
    host.profiles.create(a["name"], a.get("config"), a.get("devices"),
                         a.get("description") or "")


N: Final = {"name": str}
CREATE: Final = {"image": _Opt(str), "instance": _Opt(str), "profiles": _Opt(STR_LIST),
                 "config": _Opt(STR_MAP), "devices": _Opt(DEV_MAP), "pool": _Opt(str),
                 "ephemeral": _Opt(bool), "description": _Opt(str)}

# verb -> (handler, {argument: type}, takes an upload). The whole surface a remote exposes.
VERBS: Final[dict[str, tuple[Handler, dict[str, Any], bool]]] = {
    "host.info": (_host_info, {}, False),
    "instances.names": (lambda h, r: h.instances.names(), {}, False),
    "instances.exists": (lambda h, r: r.args["name"] in h.instances, N, False),
    "instances.create": (_create, CREATE, False),
    "instances.launch": (_launch, CREATE, False),
    "instance.record": (_record, N, False),
    "instance.state": (lambda h, r: _inst(h, r).state, N, False),
    "instance.info": (lambda h, r: _inst(h, r).info(), N, False),
    "instance.start": (lambda h, r: _inst(h, r).start(), N, False),
    "instance.stop": (_stop, {**N, "force": _Opt(bool), "timeout": _Opt(float)}, False),
    "instance.restart": (_restart, {**N, "force": _Opt(bool), "timeout": _Opt(float)}, False),
    "instance.freeze": (lambda h, r: _inst(h, r).pause(), N, False),
    "instance.unfreeze": (lambda h, r: _inst(h, r).resume(), N, False),
    "instance.delete": (lambda h, r: _inst(h, r).delete(force=bool(r.args.get("force"))),
                        {**N, "force": _Opt(bool)}, False),
    "instance.rename": (lambda h, r: _inst(h, r).rename(r.args["new"]).name,
                        {**N, "new": str}, False),
    "instance.set_config": (lambda h, r: _inst(h, r).set_config(r.args["key"], r.args["value"]),
                            {**N, "key": str, "value": str}, False),
    "instance.unset_config": (lambda h, r: _inst(h, r).unset_config(r.args["key"]),
                              {**N, "key": str}, False),
    "instance.exec": (_exec, {**N, "command": (str, STR_LIST), "env": _Opt(STR_MAP),
                              "cwd": _Opt(str), "user": _Opt(int), "group": _Opt(int),
                              "timeout": _Opt(float)}, True),
    "file.get": (_file_get, {**N, "path": str}, False),
    "file.put": (_file_put, {**N, "path": str, "mode": _Opt(int), "uid": _Opt(int),
                             "gid": _Opt(int), "parents": _Opt(bool)}, True),
    "file.stat": (_file_stat, {**N, "path": str}, False),
    "file.exists": (lambda h, r: _inst(h, r).files.exists(r.args["path"]),
                    {**N, "path": str}, False),
    "file.listdir": (lambda h, r: _inst(h, r).files.listdir(r.args["path"]),
                     {**N, "path": str}, False),
    "file.delete": (lambda h, r: _inst(h, r).files.delete(r.args["path"],
                                                          bool(r.args.get("recursive"))),
                    {**N, "path": str, "recursive": _Opt(bool)}, False),
    "file.mkdir": (lambda h, r: _inst(h, r).files.mkdir(r.args["path"],
                                                        r.args.get("mode") or 0o755),
                   {**N, "path": str, "mode": _Opt(int)}, False),
    "snapshots.list": (_snapshots, N, False),
    "snapshots.create": (_snap_create, {**N, "snapshot": _Opt(str), "stateful": _Opt(bool),
                                        "description": _Opt(str)}, False),
    "snapshots.restore": (lambda h, r: _inst(h, r).snapshots.restore(
        r.args["snapshot"], stateful=bool(r.args.get("stateful"))),
        {**N, "snapshot": str, "stateful": _Opt(bool)}, False),
    "snapshots.delete": (lambda h, r: _inst(h, r).snapshots.delete(r.args["snapshot"]),
                         {**N, "snapshot": str}, False),
    "snapshots.rename": (lambda h, r: _inst(h, r).snapshots.rename(r.args["snapshot"],
                                                                   r.args["new"]),
                         {**N, "snapshot": str, "new": str}, False),
    "images.list": (_image_dicts, {}, False),
    "image.get": (_model_dict(lambda h, n: h.images.get(n)), N, False),
    "images.delete": (lambda h, r: h.images.delete(r.args["name"]), N, False),
    "profiles.names": (lambda h, r: h.profiles.names(), {}, False),
    "profile.get": (_model_dict(lambda h, n: h.profiles.get(n)), N, False),
    "profiles.create": (_profile_create, {**N, "config": _Opt(STR_MAP), "devices": _Opt(DEV_MAP),
                                          "description": _Opt(str)}, False),
    "profiles.delete": (lambda h, r: h.profiles.delete(r.args["name"]), N, False),
    "networks.names": (lambda h, r: h.networks.names(), {}, False),
    "network.get": (_model_dict(lambda h, n: h.networks.get(n)), N, False),
    "pools.names": (lambda h, r: h.pool_names(), {}, False),
    "pool.get": (_model_dict(lambda h, n: h.pools.get(n)), N, False),
}


def _jsonable(value: Any) -> Any:
    """A result as plain JSON (dates and paths as strings): handlers return library values."""
    return json.loads(json.dumps(value, default=str))


class Server:
    """One conversation: hello, then requests until the input ends."""

    def __init__(self, host: Host, inp: BinaryIO, out: BinaryIO) -> None:
        self.host = host
        self.inp = inp
        self.out = out

    def handshake(self) -> bool:
        try:
            msg = wire.read_json(self.inp)
            version = wire.pick_version(msg)
        except wire.ConnectionLost:
            return False
        except ProtocolError as e:
            wire.write_json(self.out, {"ok": False, "error": wire.encode_error(e)})
            return False
        wire.write_json(self.out, wire.hello("server", version, server=VERSION,
                                             root=str(self.host.paths.root), pid=os.getpid()))
        return True

    def run(self) -> None:
        """Answer requests until the client closes the channel."""
        if not self.handshake():
            return
        while True:
            try:
                msg = wire.read_json(self.inp)
            except wire.ConnectionLost:
                log.debug("serve: the client closed the channel")
                return
            self.answer(msg)

    def answer(self, msg: Mapping[str, Any]) -> None:
        rid = msg.get("id")
        upload = bool(msg.get("upload"))
        req = Request(self, {}, upload)
        try:
            verb, args = self.check(msg)
            req.args = args
            handler = VERBS[verb][0]
            log.debug("serve: %s %s", verb, args.get("name", ""))
            with self.watch(verb):
                result = handler(self.host, req)
            req.drain_upload()
            reply: dict[str, Any] = {"id": rid, "ok": True, "result": _jsonable(result)}
        except wire.ConnectionLost:
            raise
        except Exception as e:  # every failure goes back to the client, typed
            if not isinstance(e, LxdlibError):
                log.debug("serve: %r failed", msg.get("verb"), exc_info=True)
            with contextlib.suppress(ProtocolError):
                req.drain_upload()
            reply = {"id": rid, "ok": False, "error": wire.encode_error(e)}
        wire.write_json(self.out, reply)

    @contextlib.contextmanager
    def watch(self, verb: str) -> Iterator[None]:
        """While an ``exec`` runs, watch the channel: a client that hung up gets no reply, so
        the command it started is killed (with what it started) rather than left to run to its
        end. Other verbs are short or must not stop halfway (a start, a snapshot), so they
        finish, and the server exits when it next reads."""
        try:
            fd = self.inp.fileno()
        except (AttributeError, OSError, ValueError):  # not a real channel (tests)
            fd = -1
        if verb != "instance.exec" or fd < 0:
            yield
            return
        wake_r, wake_w = os.pipe()

        def watcher() -> None:
            poller = select.poll()
            poller.register(fd, select.POLLRDHUP)  # POLLHUP/POLLERR are always reported
            poller.register(wake_r, select.POLLIN)
            events = dict(poller.poll())
            if fd in events:
                log.debug("serve: the client hung up during %s: killing it", verb)
                _kill_children()

        t = threading.Thread(target=watcher, name="lxdlib-serve-hangup", daemon=True)
        t.start()
        try:
            yield
        finally:
            os.write(wake_w, b"x")
            t.join()
            os.close(wake_r)
            os.close(wake_w)

    @staticmethod
    def check(msg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The verb and its arguments, after checking both against ``VERBS``."""
        verb = msg.get("verb")
        if not isinstance(verb, str) or verb not in VERBS:
            raise ProtocolError(f"unknown verb {verb!r}")
        _, spec, takes_upload = VERBS[verb]
        if bool(msg.get("upload")) and not takes_upload:
            raise ProtocolError(f"{verb} takes no upload")
        args = msg.get("args") or {}
        if not isinstance(args, dict):
            raise ProtocolError(f"{verb}: arguments must be an object")
        unknown = set(args) - set(spec)
        if unknown:
            raise ProtocolError(f"{verb}: unknown arguments {sorted(unknown)}")
        for name, t in spec.items():
            if name not in args:
                if not isinstance(t, _Opt):
                    raise ProtocolError(f"{verb}: missing argument {name!r}")
                continue
            _check(verb, name, args[name], t)
        return verb, dict(args)


def _kill_children() -> None:
    """Kill this process's children with their descendants: an ``exec`` attach's command
    (liblxc makes it our child) and whatever it started."""
    from . import proctree
    from .livestate import parent_of
    me = os.getpid()
    for pid in proctree.descendants(me):
        if parent_of(pid) == me:
            proctree.kill_tree(pid)


def serve_stdio(host: Host, *, keep_stderr: bool = False) -> int:
    """Run the server on this process's stdin/stdout (``lxdlib serve --stdio``).

    fds 0 and 1 (and 2 unless ``keep_stderr``, for ``--debug``) are pointed at ``/dev/null``
    after the protocol takes private copies: sshd closes the channel only once every process
    holding them has, and a container's monitor started here lives on."""
    inp_fd = os.dup(0)
    out_fd = os.dup(1)  # os.dup makes non-inheritable copies: children never hold them
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if not keep_stderr:
        os.dup2(devnull, 2)
    os.close(devnull)
    inp = os.fdopen(inp_fd, "rb", buffering=0)
    out = os.fdopen(out_fd, "wb", buffering=wire.CHUNK + 16)
    try:
        Server(host, inp, out).run()  # type: ignore[arg-type]
    except (BrokenPipeError, wire.ConnectionLost):
        log.debug("serve: the channel closed mid-reply")
    finally:
        with contextlib.suppress(OSError):
            out.close()
        inp.close()
    return 0
