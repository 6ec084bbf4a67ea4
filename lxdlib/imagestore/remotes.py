"""Image servers by name (``images:``, ``ubuntu:``…), as LXD's client keeps them in its config.

LXD keeps remotes in the *client's* ``config.yml``; lxdlib has no separate client, so they live
with the root they serve, in ``<root>/remotes.yaml``. The defaults are LXD's: ``local`` (this
host), ``images`` (images.linuxcontainers.org) and the two Ubuntu streams, all simplestreams.
``local``, ``ubuntu`` and ``ubuntu-daily`` are static, as in LXD: they cannot be removed,
renamed or pointed elsewhere, and they are never written to the file (so a newer lxdlib can
change them).

An ``ssh://[user@]host[:port][/root]`` remote (protocol ``lxdlib``) is another host running
lxdlib, reached by running lxdlib there over SSH (see ``lxdlib.sshhost``): instance and image
commands take ``<remote>:`` names for it, as ``lxc`` does for an LXD remote. Its entry also keeps
the command to run there and the ssh options (identity, config file, ``-o`` options).

Unlike LXD, an ``http://`` simplestreams remote is accepted (a local mirror): every file is still
checked against the sha256 the catalogue gives, but the catalogue itself is then unauthenticated,
so use ``https://`` for anything but a trusted network.
"""

from __future__ import annotations

import builtins
import os
import urllib.parse
from collections.abc import Mapping, Sequence

from ..errors import (
    TYPE_CHECKING,
    AlreadyExists,
    CorruptRecord,
    InvalidArgument,
    InvalidName,
    NotFound,
    WrongState,
)
from ..state import Paths, RecordSyntaxError, lock, read_record, write_record
from ..values import Value, assign

if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["DEFAULT_REMOTES", "LOCAL", "LXDLIB", "Remote", "Remotes", "SshAddress",
           "parse_ssh_url", "split_ref", "ssh_file", "validate_remote_name", "validate_url"]

LOCAL: Final = "local"
SIMPLESTREAMS: Final = "simplestreams"
LXDLIB: Final = "lxdlib"
PROTOCOLS: Final = (SIMPLESTREAMS, "lxd", LXDLIB, "ssh")


class Remote(Value, frozen=True):
    """One image server: ``addr`` is its base URL (``unix://`` for ``local``)."""

    _fields = ("name", "addr", "protocol", "public", "static", "command", "identity",
               "ssh_config", "ssh_options")
    __slots__ = _fields

    name: str
    addr: str
    protocol: str
    public: bool
    static: bool
    command: str  # ssh remotes: the lxdlib command there ("" is ``lxdlib``)
    identity: str  # ssh remotes: a private key file (``ssh -i``)
    ssh_config: str  # ssh remotes: a config file (``ssh -F``)
    ssh_options: tuple[str, ...]  # ssh remotes: ``-o Key=Value`` options

    def __init__(self, name: str, addr: str, protocol: str = SIMPLESTREAMS, public: bool = True,
                 static: bool = False, command: str = "", identity: str = "",
                 ssh_config: str = "", ssh_options: tuple[str, ...] = ()) -> None:
        assign(self, "name", name)
        assign(self, "addr", addr)
        assign(self, "protocol", protocol)
        assign(self, "public", public)
        assign(self, "static", static)
        assign(self, "command", command)
        assign(self, "identity", identity)
        assign(self, "ssh_config", ssh_config)
        assign(self, "ssh_options", ssh_options)

    @property
    def is_local(self) -> bool:
        return self.addr == "unix://"

    @property
    def is_ssh(self) -> bool:
        """Another lxdlib host reached over SSH (not an image server)."""
        return self.protocol == LXDLIB

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "addr": self.addr, "protocol": self.protocol,
               "public": self.public, "static": self.static}
        if self.is_ssh:
            out.update(command=self.command or "lxdlib", identity=self.identity,
                       ssh_config=self.ssh_config, ssh_options=list(self.ssh_options))
        return out


class SshAddress(Value, frozen=True):
    """The parts of an ``ssh://`` remote URL."""

    _fields = ("host", "user", "port", "root")
    __slots__ = _fields

    host: str
    user: str | None
    port: int | None
    root: str | None  # the lxdlib root there (``--root``); None: its default

    def __init__(self, host: str, user: str | None = None, port: int | None = None,
                 root: str | None = None) -> None:
        assign(self, "host", host)
        assign(self, "user", user)
        assign(self, "port", port)
        assign(self, "root", root)


#: what OpenSSH (9.6 on) refuses in a host or user name of its command line
_SHELL_CHARS: Final = frozenset("'`\"$\\;&<>|()")


def parse_ssh_url(url: str) -> SshAddress:
    """``ssh://[user@]host[:port][/path/to/root]``; no password, query or fragment (keys come
    from ssh itself), and nothing ssh could read as an option."""
    if not isinstance(url, str) or any(not c.isprintable() or c.isspace() for c in url):
        raise InvalidArgument(f"invalid remote URL {url!r}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname:
        raise InvalidArgument(f"invalid remote URL {url!r}: ssh://[user@]host[:port][/root] "
                              "is needed")
    if parts.password is not None or parts.query or parts.fragment:
        raise InvalidArgument(f"invalid remote URL {url!r}: no password, query or fragment "
                              "(ssh's keys are the credentials)")
    try:
        port = parts.port
    except ValueError:
        raise InvalidArgument(f"invalid remote URL {url!r}: bad port") from None
    user = urllib.parse.unquote(parts.username) if parts.username else None
    host = parts.hostname
    if host.startswith("-") or (user or "").startswith("-") or "@" in (user or ""):
        raise InvalidArgument(f"invalid remote URL {url!r}")
    if any(c in _SHELL_CHARS or not c.isprintable() or c.isspace() for c in host + (user or "")):
        # ssh puts the host and user into the commands of the user's config (%h and %r in a
        # ProxyCommand, a Match exec), which a shell runs: OpenSSH 9.6 refuses these itself
        raise InvalidArgument(f"invalid remote URL {url!r}: the host or user has a shell "
                              "character")
    path = urllib.parse.unquote(parts.path)
    root = path.rstrip("/") or None if path else None
    if path and not path.startswith("/"):
        raise InvalidArgument(f"invalid remote URL {url!r}: the root must be an absolute path")
    return SshAddress(host, user, port, root)


DEFAULT_REMOTES: Final[dict[str, Remote]] = {
    LOCAL: Remote(LOCAL, "unix://", "lxd", public=False, static=True),
    "images": Remote("images", "https://images.linuxcontainers.org"),
    "ubuntu": Remote("ubuntu", "https://cloud-images.ubuntu.com/releases", static=True),
    "ubuntu-daily": Remote("ubuntu-daily", "https://cloud-images.ubuntu.com/daily", static=True),
}
_FILE = "remotes.yaml"


def _entry(r: Remote) -> dict[str, Any]:
    """A remote as ``remotes.yaml`` keeps it (ssh settings only where set)."""
    out: dict[str, Any] = {"addr": r.addr, "protocol": r.protocol, "public": r.public}
    for key in ("command", "identity", "ssh_config"):
        if getattr(r, key):
            out[key] = getattr(r, key)
    if r.ssh_options:
        out["ssh_options"] = list(r.ssh_options)
    return out


def _check_ssh_option(opt: str) -> str:
    """A ``Key=Value`` for ``ssh -o``."""
    key, sep, _ = opt.partition("=")
    if not sep or not key.isalnum() or any(not c.isprintable() for c in opt):
        raise InvalidArgument(f"invalid ssh option {opt!r}: Key=Value is needed")
    return opt


def ssh_file(path: str | os.PathLike[str]) -> str:
    """An identity or ssh config file as an absolute path (``~`` expanded), as the remote
    keeps it. Kept relative, it would be looked up in the directory of each later command: a
    ``--ssh-config cfg`` added in root's home is a host user's ``cfg`` (its ``ProxyCommand``
    run as root) when ``lxdlib list h2:`` runs from that user's directory."""
    text = os.fspath(path)
    return os.path.abspath(os.path.expanduser(text)) if text else ""


def _is_static(name: str) -> bool:
    return name in DEFAULT_REMOTES and DEFAULT_REMOTES[name].static


def validate_remote_name(name: str) -> None:
    """Non-empty, printable, no ``:`` (it separates the remote from the image) and no ``/``."""
    if not isinstance(name, str) or not name:
        raise InvalidName("remote", str(name), "must not be empty")
    if ":" in name or "/" in name:
        raise InvalidName("remote", name, 'must not contain ":" or "/"')
    if len(name) > 255 or any(c.isspace() or not c.isprintable() for c in name):
        raise InvalidName("remote", name, "must be printable, without whitespace")


def validate_url(url: str) -> str:
    """An ``https://`` (or, for local mirrors, ``http://``) URL with a host, without the
    trailing ``/``; anything else (``file://``, credentials, a fragment) is refused."""
    if not isinstance(url, str) or any(not c.isprintable() or c.isspace() for c in url):
        raise InvalidArgument(f"invalid remote URL {url!r}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidArgument(f"invalid remote URL {url!r}: an https:// (or http://) URL is "
                              "needed")
    if parts.username or parts.password or parts.fragment or parts.query:
        raise InvalidArgument(f"invalid remote URL {url!r}: no credentials, query or fragment")
    return url.rstrip("/")


def split_ref(ref: str, default: str = LOCAL) -> tuple[str, str]:
    """``"images:alpine/3.19"`` → ``("images", "alpine/3.19")``; with no ``remote:`` the default
    remote. Aliases cannot hold ``:``, so the first one always ends the remote name."""
    if not isinstance(ref, str):
        raise InvalidArgument(f"invalid image reference {ref!r}")
    remote, sep, rest = ref.partition(":")
    if not sep:
        return default, ref
    return remote, rest


class Remotes:
    """The remotes of one root: the static defaults plus ``<root>/remotes.yaml``."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    @property
    def path(self) -> Any:
        return self.paths.root / _FILE

    # -- file ---------------------------------------------------------------------------------
    def _corrupt(self, reason: str) -> CorruptRecord:
        return CorruptRecord("remote list", _FILE, self.path, reason)

    def _load(self) -> Any:
        """The file's data (None without one); ``CorruptRecord`` naming it for a file that
        is no record (cut short, hand-edited, a directory or a symlink)."""
        try:
            return read_record(self.path)
        except FileNotFoundError:
            return None
        except RecordSyntaxError as e:
            raise self._corrupt(e.reason) from None

    def _read(self) -> tuple[str, dict[str, Remote]]:
        """The default remote and the remotes of the file. Any part of another shape makes
        the whole file ``CorruptRecord``: a change writes the file whole, and would drop what
        it skipped (a remote the user added, and only mistyped by hand)."""
        data = self._load()
        if data is None:
            return LOCAL, {k: v for k, v in DEFAULT_REMOTES.items() if not v.static}
        if not isinstance(data, Mapping) or not isinstance(data.get("remotes") or {}, Mapping):
            raise self._corrupt("not a mapping with a remotes mapping")
        if not isinstance(data.get("default-remote") or LOCAL, str):
            raise self._corrupt("default-remote is not a name")
        if not isinstance(data.get("mirrors") or {}, Mapping):
            raise self._corrupt("mirrors is not a mapping")
        remotes: dict[str, Remote] = {}
        for name, entry in (data.get("remotes") or {}).items():
            if not isinstance(entry, Mapping):
                raise self._corrupt(f"remote {str(name)!r} is not a mapping")
            if _is_static(str(name)):
                continue
            opts = entry.get("ssh_options") or []
            remotes[str(name)] = Remote(str(name), str(entry.get("addr", "")),
                                        str(entry.get("protocol", SIMPLESTREAMS)),
                                        bool(entry.get("public", True)),
                                        command=str(entry.get("command") or ""),
                                        identity=str(entry.get("identity") or ""),
                                        ssh_config=str(entry.get("ssh_config") or ""),
                                        ssh_options=tuple(str(o) for o in opts)
                                        if isinstance(opts, list) else ())
        return str(data.get("default-remote") or LOCAL), remotes

    def _mirrors(self) -> dict[str, str]:
        """URL overrides for the static image remotes (local mirrors; LXD has none)."""
        data = self._load()
        mirrors = data.get("mirrors") if isinstance(data, Mapping) else None
        if mirrors is not None and not isinstance(mirrors, Mapping):
            raise self._corrupt("mirrors is not a mapping")
        if not isinstance(mirrors, Mapping):
            return {}
        return {str(k): str(v) for k, v in mirrors.items() if _is_static(str(k)) and k != LOCAL}

    def _static(self, name: str) -> Remote:
        remote = DEFAULT_REMOTES[name]
        addr = self._mirrors().get(name)
        return remote.evolve(addr=addr) if addr else remote

    def _write(self, default: str, remotes: Mapping[str, Remote],
               mirrors: Mapping[str, str] | None = None) -> None:
        write_record(self.path, {
            "default-remote": default,
            "remotes": {n: _entry(r) for n, r in sorted(remotes.items()) if not r.static},
            "mirrors": dict(sorted((self._mirrors() if mirrors is None else mirrors).items())),
        })

    # -- queries ------------------------------------------------------------------------------
    def list(self) -> builtins.list[Remote]:
        _, remotes = self._read()
        merged = {**remotes, **{k: self._static(k) for k, v in DEFAULT_REMOTES.items()
                                if v.static}}
        return [merged[n] for n in sorted(merged)]

    def get(self, name: str) -> Remote:
        static = DEFAULT_REMOTES.get(name)
        if static is not None and static.static:
            return self._static(name)
        _, remotes = self._read()
        try:
            return remotes[name]
        except KeyError:
            raise NotFound("remote", name, f'The remote "{name}" does not exist') from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(r.name == name for r in self.list())

    @property
    def default(self) -> str:
        return self._read()[0]

    # -- changes ------------------------------------------------------------------------------
    def _mutable(self, name: str) -> None:
        remote = self.get(name)
        if remote.static:
            raise WrongState(f"Remote {name} is static and cannot be modified")

    def add(self, name: str, url: str, *, protocol: str | None = None,
            public: bool = True, command: str = "", identity: str = "", ssh_config: str = "",
            ssh_options: Sequence[str] = ()) -> Remote:
        """``remote add``: a simplestreams image server, or (``ssh://`` URL, protocol
        ``lxdlib``) another lxdlib host over SSH with the command to run there and ssh's
        options. An LXD daemon (protocol ``lxd``) cannot be used: lxdlib speaks no LXD API."""
        validate_remote_name(name)
        if protocol is None:
            protocol = LXDLIB if url.startswith("ssh://") else SIMPLESTREAMS
        if protocol not in PROTOCOLS:
            raise InvalidArgument(f"Invalid protocol: {protocol}")
        if protocol == "ssh":
            protocol = LXDLIB
        if protocol == "lxd":
            raise InvalidArgument("lxdlib reads simplestreams image servers and reaches other "
                                  "lxdlib hosts over ssh:// (protocol lxd needs an LXD daemon)")
        if protocol == LXDLIB:
            parse_ssh_url(url)
            addr = url.rstrip("/")
            opts = tuple(_check_ssh_option(o) for o in ssh_options)
            identity, ssh_config = ssh_file(identity), ssh_file(ssh_config)
        else:
            if command or identity or ssh_config or ssh_options:
                raise InvalidArgument("ssh settings are only for ssh:// remotes")
            addr, opts = validate_url(url), ()
        with lock(self.paths, "host", "remotes"):
            default, remotes = self._read()
            if name in remotes or _is_static(name):
                raise AlreadyExists("remote", name)
            remote = Remote(name, addr, protocol, public, command=command, identity=identity,
                            ssh_config=ssh_config, ssh_options=opts)
            remotes[name] = remote
            self._write(default, remotes)
        return remote

    def remove(self, name: str) -> None:
        self._mutable(name)
        with lock(self.paths, "host", "remotes"):
            default, remotes = self._read()
            if name not in remotes:
                raise NotFound("remote", name)
            if name == default:
                raise WrongState("Can't remove the default remote")
            del remotes[name]
            self._write(default, remotes)

    def rename(self, old: str, new: str) -> None:
        self._mutable(old)
        validate_remote_name(new)
        with lock(self.paths, "host", "remotes"):
            default, remotes = self._read()
            if old not in remotes:
                raise NotFound("remote", old)
            if new in remotes or _is_static(new):
                raise AlreadyExists("remote", new)
            remotes[new] = remotes.pop(old).evolve(name=new)
            self._write(new if default == old else default, remotes)

    def set_url(self, name: str, url: str) -> None:
        """Change a remote's URL. Unlike LXD, the static ``ubuntu``/``ubuntu-daily`` remotes can
        be pointed at a local mirror (air-gapped hosts); ``local`` cannot change."""
        if _is_static(name) and name != LOCAL:
            addr = validate_url(url)
            with lock(self.paths, "host", "remotes"):
                default, remotes = self._read()
                mirrors = {**self._mirrors(), name: addr}
                if addr == DEFAULT_REMOTES[name].addr:
                    del mirrors[name]
                self._write(default, remotes, mirrors)
            return
        self._mutable(name)
        with lock(self.paths, "host", "remotes"):
            default, remotes = self._read()
            if name not in remotes:
                raise NotFound("remote", name)
            if remotes[name].is_ssh:
                parse_ssh_url(url)
                addr = url.rstrip("/")
            else:
                addr = validate_url(url)
            remotes[name] = remotes[name].evolve(addr=addr)
            self._write(default, remotes)

    def switch(self, name: str) -> None:
        """Make ``name`` the remote used when a reference names none."""
        self.get(name)
        with lock(self.paths, "host", "remotes"):
            _, remotes = self._read()
            self._write(name, remotes)
