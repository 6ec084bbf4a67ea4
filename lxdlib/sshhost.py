"""``lxdlib.connect("ssh://root@host2/var/lib/lxdlib")``: another host's lxdlib, over SSH.

lxdlib has no daemon to listen on a port, so a remote host is reached the way its admin already
reaches it: ``ssh`` runs ``lxdlib serve --stdio`` there and the two processes talk
``lxdlib.wire`` over the channel. Trust is SSH's alone — keys, ``known_hosts``, the user's ssh
config — and the system ``ssh`` client runs with ``BatchMode=yes`` (it never prompts; host key
checking stays as the user's config has it).

One ``RemoteHost`` holds one ssh process for its lifetime, so the connection cost (key exchange,
Python start-up there) is paid once and each request after that is one round trip. Closing it
(or the ``with`` block ending, or the object being collected) closes the channel, and the remote
server exits with it.

The remote objects mirror the local ones for the common verbs — ``host.instances``,
``images``, ``profiles``, ``networks``, ``pools``; ``launch``/``create``; an instance's
``start``/``stop``/``restart``/``freeze``/``delete``, ``exec`` (exit code, stdout, stderr,
streamed to callbacks if given), ``files.put``/``get``, ``snapshots``, ``config``,
``set_config``, ``state`` — and raise the same ``lxdlib.errors`` classes. What the protocol
does not carry (console, devices editing, copy/move between hosts) is absent rather than
emulated.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import os
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from . import wire
from .errors import TYPE_CHECKING, ExecError, InvalidArgument, NotFound
from .execresult import ExecResult
from .imagestore.remotes import LXDLIB, Remote, parse_ssh_url, ssh_file
from .logs import get_logger
from .wire import ConnectionLost, ProtocolError

if TYPE_CHECKING:
    from typing import IO, Any, BinaryIO

__all__ = ["RemoteExecResult", "RemoteHost", "RemoteInstance", "connect", "ssh_command"]

log = get_logger(__name__)

# A dropped network is noticed within about a minute (4 unanswered probes 15 s apart) rather
# than when TCP gives up; the user's ssh config can override both.
_DEFAULT_OPTIONS = ("BatchMode=yes", "ServerAliveInterval=15", "ServerAliveCountMax=4")


def ssh_command(remote: Remote, args: Sequence[str] = ()) -> list[str]:
    """The argv that runs the remote's lxdlib over ssh, with ``args`` after lxdlib's own
    options: ``["ssh", "-T", …, "host", "--", "lxdlib", "--root", "/r", *args]``.

    ssh hands the remote shell one command line, so every remote word here is shell-quoted;
    words appended to this list later must be quoted too (``shlex.quote``), or passed in
    ``args``. ``-T``: no terminal, the channel carries bytes as they are."""
    if not remote.is_ssh:
        raise InvalidArgument(f"remote {remote.name!r} is not an ssh:// remote")
    addr = parse_ssh_url(remote.addr)
    for what, path in (("identity", remote.identity), ("ssh config", remote.ssh_config)):
        # ssh would look a relative path up in whatever directory this command runs from
        # (a host user's, whose file there would be read as root's): ``remote add`` stores
        # absolute ones, so only an older or hand-written remote list has these
        if path and not os.path.isabs(path):
            raise InvalidArgument(f"remote {remote.name!r}: its {what} file {path!r} is a "
                                  "relative path, which each command would look up in its "
                                  "own directory: add the remote again with an absolute path")
    argv = ["ssh", "-T"]
    if remote.ssh_config:
        argv += ["-F", remote.ssh_config]
    for opt in _DEFAULT_OPTIONS:
        argv += ["-o", opt]
    if remote.identity:
        argv += ["-i", remote.identity, "-o", "IdentitiesOnly=yes"]
    for opt in remote.ssh_options:
        argv += ["-o", opt]
    if addr.port is not None:
        argv += ["-p", str(addr.port)]
    if addr.user is not None:
        argv += ["-l", addr.user]
    words = shlex.split(remote.command or "lxdlib")
    if addr.root:
        words += ["--root", addr.root]
    argv += [addr.host, "--", *(shlex.quote(w) for w in [*words, *args])]
    return argv


def _as_remote(target: str | Remote, **kw: Any) -> Remote:
    if isinstance(target, Remote):
        return target
    if not isinstance(target, str) or not target.startswith("ssh://"):
        raise InvalidArgument(f"connect() needs an ssh:// URL or a Remote, not {target!r}")
    parse_ssh_url(target)
    opts = tuple(kw.pop("ssh_options", ()) or ())
    return Remote("ssh", target.rstrip("/"), LXDLIB, command=kw.pop("command", "") or "",
                  identity=ssh_file(kw.pop("identity", "") or ""),
                  ssh_config=ssh_file(kw.pop("ssh_config", "") or ""), ssh_options=opts)


def connect(target: str | Remote, *, command: str = "", identity: str | os.PathLike[str] = "",
            ssh_config: str | os.PathLike[str] = "", ssh_options: Sequence[str] = ()
            ) -> RemoteHost:
    """A host object for another machine's lxdlib, over one ssh connection.

    ``target`` is ``ssh://[user@]host[:port][/path/to/root]`` or a stored remote
    (``host.images.remotes.get("h2")``). ``command`` is lxdlib's command there (default
    ``lxdlib``; e.g. ``/opt/lxdlib/.venv/bin/lxdlib``), ``identity`` a key file, ``ssh_config``
    an ssh config file (``ssh -F``), ``ssh_options`` ``Key=Value`` options for ``ssh -o``.
    Raises ``ConnectionLost`` (with ssh's message) if the connection or the hello fails."""
    remote = _as_remote(target, command=command, identity=identity, ssh_config=ssh_config,
                        ssh_options=ssh_options)
    return RemoteHost(remote)


class _Channel:
    """One ssh process and the protocol on its stdin/stdout; one request at a time."""

    def __init__(self, argv: Sequence[str], label: str) -> None:
        self.label = label
        self.lock = threading.RLock()  # call() holds it around exchange()
        self.next_id = 0
        self.closed = False
        self.err_tail: collections.deque[str] = collections.deque(maxlen=20)
        log.debug("ssh: %s", shlex.join(argv))
        try:
            self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         bufsize=0)
        except FileNotFoundError:
            from .errors import ToolMissing
            raise ToolMissing("ssh is not installed (openssh-client)") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        from typing import cast  # here: typing is no import of lxdlib's modules (errors.py)
        self.inp = cast("BinaryIO", self.proc.stdout)
        self.out = cast("BinaryIO", self.proc.stdin)
        self.err_thread = threading.Thread(target=self._drain_stderr, daemon=True,
                                           name="lxdlib-ssh-stderr")
        self.err_thread.start()

    def _drain_stderr(self) -> None:
        """Keep ssh's (and the remote's) last stderr lines for the error a failure raises."""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            text = line.decode(errors="replace").rstrip()
            if text:
                self.err_tail.append(text)
                log.debug("ssh %s: %s", self.label, text)

    def lost(self, why: str) -> ConnectionLost:
        """The error for a channel that ended: ssh's exit status and last words."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.out.close()
        rc: int | None
        try:
            rc = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.err_thread.join(2)
        tail = "; ".join(self.err_tail)
        status = f"ssh exited with status {rc}" if rc is not None else "ssh is gone"
        return ConnectionLost(f"connection to {self.label} lost ({why}; {status})"
                              + (f": {tail}" if tail else ""))

    def _send(self, msg: Mapping[str, Any], upload: Iterable[bytes] | None) -> None:
        wire.write_json(self.out, msg)
        if upload is not None:
            for chunk in upload:
                for i in range(0, len(chunk), wire.CHUNK):
                    if chunk[i:i + wire.CHUNK]:
                        wire.write_frame(self.out, wire.DATA, chunk[i:i + wire.CHUNK])
            wire.write_frame(self.out, wire.DATA, b"")
            self.out.flush()

    def exchange(self, msg: Mapping[str, Any], upload: Iterable[bytes] | None = None,
                 on_data: Callable[[bytes, bytes], None] | None = None) -> dict[str, Any]:
        """Send one message (and its upload) and read the reply."""
        if self.closed:
            raise ConnectionLost(f"connection to {self.label} is closed")
        failed: list[BaseException] = []

        def guarded(kind: bytes, data: bytes) -> None:
            # a failing callback must not leave the rest of the reply unread on the channel
            if on_data is None:
                raise ProtocolError(f"unexpected {kind.decode()} frame")
            if not failed:
                try:
                    on_data(kind, data)
                except Exception as e:
                    failed.append(e)

        with self.lock:
            try:
                self._send(msg, upload)
                reply = wire.read_json(self.inp, guarded)
            except (BrokenPipeError, ConnectionLost) as e:
                raise self.lost(str(e) or "broken pipe") from None
            except ProtocolError:
                self.close()  # the stream is out of step: nothing after this can be trusted
                raise
            except BaseException:
                # interrupted mid-request (Ctrl-C): the channel is out of step, so it is
                # dropped, and the remote server kills a command it was running for us
                self.abort()
                raise
        if failed:
            raise failed[0]
        return reply

    def call(self, verb: str, args: Mapping[str, Any] | None = None, *,
             upload: Iterable[bytes] | None = None,
             on_data: Callable[[bytes, bytes], None] | None = None) -> Any:
        with self.lock:  # one request at a time on the channel, whatever the threads
            self.next_id += 1
            rid = self.next_id
            msg: dict[str, Any] = {"id": rid, "verb": verb,
                                   "args": {k: v for k, v in (args or {}).items()
                                            if v is not None}}
            if upload is not None:
                msg["upload"] = True
            reply = self.exchange(msg, upload, on_data)
        if reply.get("id") != rid:
            self.close()
            raise ProtocolError(f"reply to request {reply.get('id')!r}, expected {rid}")
        if not reply.get("ok"):
            raise wire.decode_error(reply.get("error"))
        return reply.get("result")

    def abort(self) -> None:
        """Drop the channel at once (kill ssh): the remote server sees it hang up."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.proc.wait()
        for f in (self.out, self.inp):
            with contextlib.suppress(OSError):
                f.close()

    def close(self) -> None:
        """Close the channel: the remote server sees its input end and exits."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.out.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            log.warning("ssh to %s did not exit after its channel closed: killed", self.label)
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            self.inp.close()


class RemoteHost:
    """Another host's lxdlib root, over SSH: the collections and verbs of ``lxdlib.Host``
    that the protocol carries (see the module doc)."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.url = remote.addr
        self._ch = _Channel(ssh_command(remote, ["serve", "--stdio"]), remote.addr)
        try:
            reply = self._ch.exchange(wire.hello("client"))
        except ConnectionLost:
            raise
        if reply.get("hello") != "lxdlib":
            self._ch.close()
            raise wire.decode_error(reply.get("error")) if "error" in reply else ProtocolError(
                f"{remote.addr}: the remote did not answer with an lxdlib hello")
        version, pid = reply.get("version"), reply.get("pid", 0)
        if version not in wire.SUPPORTED or not isinstance(pid, int) or isinstance(pid, bool):
            # the far side's words, never a ValueError of ours: it may be anything at all
            self._ch.close()
            raise ProtocolError(f"{remote.addr}: a malformed hello (version {version!r}, "
                                f"pid {pid!r})")
        self.version = int(version)
        self.root = str(reply.get("root", ""))
        self.server_pid = pid
        self.instances = RemoteInstances(self)
        self.images = RemoteImages(self)
        self.profiles = RemoteProfiles(self)
        self.networks = _Named(self, "networks.names", "network.get", "network")
        self.pools = _Named(self, "pools.names", "pool.get", "storage pool")

    def __repr__(self) -> str:
        return f"<RemoteHost {self.url} root={self.root!r}>"

    def call(self, verb: str, args: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        """One request (a verb of ``lxdlib.serve.VERBS``) and its result."""
        return self._ch.call(verb, args, **kw)

    @property
    def closed(self) -> bool:
        return self._ch.closed

    def close(self) -> None:
        self._ch.close()

    def __enter__(self) -> RemoteHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._ch.close()

    def pool_names(self) -> list[str]:
        return list(self.call("pools.names"))

    def create(self, image: str | None, name: str | None = None, **kw: Any) -> RemoteInstance:
        """``lxc init`` there: see ``Host.create`` (``profiles``, ``config``, ``devices``,
        ``pool``, ``ephemeral``, ``description``)."""
        return self.instances.create(image, name, **kw)

    init = create

    def launch(self, image: str | None, name: str | None = None, **kw: Any) -> RemoteInstance:
        """``lxc launch`` there: create and start."""
        made = self.call("instances.launch", {"image": image, "instance": name, **_create(kw)})
        return RemoteInstance(self, str(made))


def _create(kw: Mapping[str, Any]) -> dict[str, Any]:
    allowed = {"profiles", "config", "devices", "pool", "ephemeral", "description"}
    unknown = set(kw) - allowed
    if unknown:
        raise InvalidArgument(f"not available on a remote host: {', '.join(sorted(unknown))}")
    out = dict(kw)
    if out.get("profiles") is not None:
        out["profiles"] = list(out["profiles"])
    return out


class _Collection:
    """The shared shape of ``lxdlib.model.Collection``: names, ``in``, ``[]``, iteration."""

    kind = "object"

    def __init__(self, host: RemoteHost) -> None:
        self.host = host

    def names(self) -> builtins.list[str]:
        raise NotImplementedError

    def _model(self, name: str) -> Any:
        raise NotImplementedError

    def get(self, name: str) -> Any:
        if name not in self:
            raise NotFound(self.kind, name)
        return self._model(name)

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def list(self) -> builtins.list[Any]:
        return [self._model(n) for n in self.names()]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.host.url}: {', '.join(self.names())}>"


class RemoteModel:
    """A remote profile, image, network or pool: its name and its LXD-shaped dict, read when
    the object is made (``refresh()`` reads it again)."""

    def __init__(self, host: RemoteHost, verb: str, name: str, data: Mapping[str, Any]) -> None:
        self.host = host
        self._verb = verb
        self.name = name
        self.data = dict(data)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self.host.url}>"

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and isinstance(other, RemoteModel)
                and (other.host.url, other.name) == (self.host.url, self.name))

    def __hash__(self) -> int:
        return hash((self.host.url, self.name))

    def refresh(self) -> None:
        self.data = dict(self.host.call(self._verb, {"name": self.name}))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)

    @property
    def description(self) -> str:
        return str(self.data.get("description") or "")

    @property
    def config(self) -> dict[str, str]:
        return dict(self.data.get("config") or {})


class RemoteImage(RemoteModel):
    @property
    def fingerprint(self) -> str:
        return str(self.data.get("fingerprint", self.name))

    @property
    def aliases(self) -> builtins.list[dict[str, str]]:
        return list(self.data.get("aliases") or [])

    @property
    def properties(self) -> dict[str, str]:
        return dict(self.data.get("properties") or {})


class _Named(_Collection):
    """A read-only collection listed by one verb and read by another (networks, pools)."""

    def __init__(self, host: RemoteHost, list_verb: str, get_verb: str, kind: str,
                 model: type[RemoteModel] = RemoteModel) -> None:
        super().__init__(host)
        self.list_verb = list_verb
        self.get_verb = get_verb
        self.kind = kind
        self.model = model

    def names(self) -> builtins.list[str]:
        return [str(n) for n in self.host.call(self.list_verb)]

    def get(self, name: str) -> Any:  # one request: the server raises NotFound itself
        return self._model(name)

    def _model(self, name: str) -> RemoteModel:
        return self.model(self.host, self.get_verb, name,
                          self.host.call(self.get_verb, {"name": name}))


class RemoteProfiles(_Named):
    def __init__(self, host: RemoteHost) -> None:
        super().__init__(host, "profiles.names", "profile.get", "profile")

    def create(self, name: str, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None,
               description: str = "") -> RemoteModel:
        self.host.call("profiles.create", {
            "name": name, "config": dict(config or {}),
            "devices": {k: dict(v) for k, v in (devices or {}).items()},
            "description": description})
        return self._model(name)

    def delete(self, name: str) -> None:
        self.host.call("profiles.delete", {"name": name})


class RemoteImages(_Collection):
    """The remote's local image store (``image list h2:``), by fingerprint."""

    kind = "image"

    def _all(self) -> builtins.list[dict[str, Any]]:
        return [dict(d) for d in self.host.call("images.list")]

    def names(self) -> builtins.list[str]:
        return [str(d["fingerprint"]) for d in self._all()]

    def list(self) -> builtins.list[Any]:
        return [RemoteImage(self.host, "image.get", str(d["fingerprint"]), d)
                for d in self._all()]

    def aliases(self) -> dict[str, str]:
        """Alias -> fingerprint, over every image."""
        return {str(a["name"]): str(d["fingerprint"]) for d in self._all()
                for a in d.get("aliases") or []}

    def __contains__(self, ref: object) -> bool:
        if not isinstance(ref, str):
            return False
        with contextlib.suppress(NotFound):
            self.get(ref)
            return True
        return False

    def get(self, ref: str) -> Any:
        """By alias or fingerprint (prefix), as ``host.images.get``."""
        d = dict(self.host.call("image.get", {"name": ref}))
        return RemoteImage(self.host, "image.get", str(d.get("fingerprint", ref)), d)

    def _model(self, name: str) -> Any:
        return self.get(name)

    def delete(self, ref: str) -> None:
        self.host.call("images.delete", {"name": ref})


class RemoteInstances(_Collection):
    kind = "instance"

    def names(self) -> builtins.list[str]:
        return [str(n) for n in self.host.call("instances.names")]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.host.call("instances.exists",
                                                             {"name": name}))

    def _model(self, name: str) -> RemoteInstance:
        return RemoteInstance(self.host, name)

    def create(self, image: str | None, name: str | None = None, **kw: Any) -> RemoteInstance:
        made = self.host.call("instances.create", {"image": image, "instance": name,
                                                   **_create(kw)})
        return RemoteInstance(self.host, str(made))


#: a remote command's result: the same class as a local one's
RemoteExecResult = ExecResult


class RemoteInstance:
    """An instance on a remote host; each property asks the remote (no cached state)."""

    def __init__(self, host: RemoteHost, name: str) -> None:
        self.host = host
        self.name = name

    def __repr__(self) -> str:
        return f"<RemoteInstance {self.name!r} on {self.host.url}>"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, RemoteInstance)
                and (other.host.url, other.name) == (self.host.url, self.name))

    def __hash__(self) -> int:
        return hash((self.host.url, self.name))

    def _call(self, verb: str, **args: Any) -> Any:
        return self.host.call(verb, {"name": self.name, **args})

    # -- state ----------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        """Config, devices, profiles, description, status (one request)."""
        return dict(self._call("instance.record"))

    @property
    def exists(self) -> bool:
        return self.name in self.host.instances

    @property
    def state(self) -> str:
        return str(self._call("instance.state"))

    @property
    def status(self) -> str:
        return str(self.record()["status"])

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"

    @property
    def config(self) -> dict[str, str]:
        return dict(self.record()["config"])

    @property
    def devices(self) -> dict[str, dict[str, str]]:
        return dict(self.record()["devices"])

    @property
    def profiles(self) -> builtins.list[str]:
        return list(self.record()["profiles"])

    @property
    def description(self) -> str:
        return str(self.record()["description"])

    def info(self) -> dict[str, Any]:
        return dict(self._call("instance.info"))

    # -- verbs ----------------------------------------------------------------------------
    def start(self) -> None:
        self._call("instance.start")

    def stop(self, force: bool = False, timeout: float = -1) -> None:
        self._call("instance.stop", force=force, timeout=timeout)

    def restart(self, force: bool = False, timeout: float = -1) -> None:
        self._call("instance.restart", force=force, timeout=timeout)

    def pause(self) -> None:
        self._call("instance.freeze")

    freeze = pause

    def resume(self) -> None:
        self._call("instance.unfreeze")

    unfreeze = resume

    def delete(self, force: bool = False) -> None:
        self._call("instance.delete", force=force)

    def rename(self, new: str) -> RemoteInstance:
        return RemoteInstance(self.host, str(self._call("instance.rename", new=new)))

    def set_config(self, key: str, value: str) -> None:
        self._call("instance.set_config", key=key, value=value)

    def unset_config(self, key: str) -> None:
        self._call("instance.unset_config", key=key)

    def exec(self, command: Sequence[str] | str, *, env: Mapping[str, str] | None = None,
             cwd: str | None = None, user: int = 0, group: int = 0, input: bytes | None = None,
             check: bool = False, timeout: float | None = None,
             stdout: Callable[[bytes], None] | None = None,
             stderr: Callable[[bytes], None] | None = None) -> RemoteExecResult:
        """Run a command there (see ``Instance.exec``): output streams back as it is written,
        to the callbacks if given, else collected."""
        out, err = bytearray(), bytearray()

        def on_data(kind: bytes, data: bytes) -> None:
            if kind == wire.STDOUT:
                (stdout or out.extend)(data)
            elif kind == wire.STDERR:
                (stderr or err.extend)(data)
            else:
                raise ProtocolError(f"unexpected {kind.decode()} frame in exec output")

        cmd: str | list[str] = command if isinstance(command, str) else list(command)
        res = self.host.call(
            "instance.exec", {"name": self.name, "command": cmd,
                              "env": dict(env) if env else None, "cwd": cwd, "user": user,
                              "group": group, "timeout": timeout},
            upload=[input or b""], on_data=on_data)
        code = res.get("returncode") if isinstance(res, dict) else None
        if not isinstance(code, int) or isinstance(code, bool):
            raise ProtocolError(f"instance.exec: a reply without an exit status: {res!r:.200}")
        result = RemoteExecResult(code, bytes(out), bytes(err))
        if check and not result.ok:
            raise ExecError(result, self.name, cmd)
        return result

    execute = exec

    @property
    def files(self) -> RemoteFiles:
        return RemoteFiles(self)

    @property
    def snapshots(self) -> RemoteSnapshots:
        return RemoteSnapshots(self)


def _chunks(data: bytes | bytearray | memoryview | IO[bytes]) -> Iterator[bytes]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield bytes(data)
        return
    while chunk := data.read(wire.CHUNK):
        yield chunk


class RemoteFiles:
    """``inst.files`` of a remote instance: data streams in 1 MiB frames both ways."""

    def __init__(self, inst: RemoteInstance) -> None:
        self.inst = inst

    def _call(self, verb: str, path: str | os.PathLike[str], **kw: Any) -> Any:
        return self.inst.host.call(verb, {"name": self.inst.name, "path": os.fspath(path),
                                          **{k: v for k, v in kw.items()
                                             if k not in ("upload", "on_data")}},
                                   upload=kw.get("upload"), on_data=kw.get("on_data"))

    def get(self, path: str | os.PathLike[str]) -> bytes:
        out = bytearray()
        self.get_to(path, out.extend)
        return bytes(out)

    def get_to(self, path: str | os.PathLike[str], write: Callable[[bytes], object]
               ) -> dict[str, Any]:
        """Stream the file to ``write`` (e.g. an open file's ``write``); returns its stat."""
        def on_data(kind: bytes, data: bytes) -> None:
            if kind != wire.DATA:
                raise ProtocolError(f"unexpected {kind.decode()} frame in a file")
            write(data)
        return dict(self._call("file.get", path, on_data=on_data))

    def put(self, path: str | os.PathLike[str],
            data: bytes | bytearray | memoryview | IO[bytes], *, mode: int | None = None,
            uid: int | None = None, gid: int | None = None, parents: bool = False) -> None:
        """Write a file from bytes or a binary file object (streamed), atomically there."""
        self._call("file.put", path, mode=mode, uid=uid, gid=gid, parents=parents or None,
                   upload=_chunks(data))

    def stat(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        return dict(self._call("file.stat", path))

    def exists(self, path: str | os.PathLike[str]) -> bool:
        return bool(self._call("file.exists", path))

    def listdir(self, path: str | os.PathLike[str]) -> builtins.list[str]:
        return list(self._call("file.listdir", path))

    def delete(self, path: str | os.PathLike[str], recursive: bool = False) -> None:
        self._call("file.delete", path, recursive=recursive)

    def mkdir(self, path: str | os.PathLike[str], mode: int = 0o755) -> None:
        self._call("file.mkdir", path, mode=mode)


class RemoteSnapshot:
    def __init__(self, inst: RemoteInstance, name: str, data: Mapping[str, Any]) -> None:
        self.inst = inst
        self.name = name
        self.data = dict(data)

    def __repr__(self) -> str:
        return f"<RemoteSnapshot {self.inst.name}/{self.name} on {self.inst.host.url}>"

    @property
    def stateful(self) -> bool:
        return bool(self.data.get("stateful"))

    @property
    def created_at(self) -> str:
        return str(self.data.get("created_at", ""))

    def restore(self, *, stateful: bool = False) -> None:
        self.inst.snapshots.restore(self.name, stateful=stateful)

    def delete(self) -> None:
        self.inst.snapshots.delete(self.name)


class RemoteSnapshots:
    def __init__(self, inst: RemoteInstance) -> None:
        self.inst = inst

    def _all(self) -> builtins.list[dict[str, Any]]:
        return [dict(d) for d in self.inst._call("snapshots.list")]

    def names(self) -> builtins.list[str]:
        return [str(d["name"]) for d in self._all()]

    def list(self) -> builtins.list[RemoteSnapshot]:
        return [RemoteSnapshot(self.inst, str(d["name"]), d) for d in self._all()]

    def __iter__(self) -> Iterator[RemoteSnapshot]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._all())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def get(self, name: str) -> RemoteSnapshot:
        for d in self._all():
            if d["name"] == name:
                return RemoteSnapshot(self.inst, name, d)
        raise NotFound("snapshot", f"{self.inst.name}/{name}")

    __getitem__ = get

    def create(self, name: str | None = None, *, stateful: bool = False,
               description: str = "") -> RemoteSnapshot:
        made = str(self.inst._call("snapshots.create", snapshot=name, stateful=stateful,
                                   description=description))
        return self.get(made)

    def restore(self, name: str, *, stateful: bool = False) -> None:
        self.inst._call("snapshots.restore", snapshot=name, stateful=stateful)

    def delete(self, name: str) -> None:
        self.inst._call("snapshots.delete", snapshot=name)

    def rename(self, old: str, new: str) -> None:
        self.inst._call("snapshots.rename", snapshot=old, new=new)
