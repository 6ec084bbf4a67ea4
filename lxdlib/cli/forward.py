"""``lxdlib list h2:``, ``lxdlib exec h2:c1 -- …``: commands for another host, run there.

An instance or image command whose names carry an SSH remote's prefix (``h2:c1``, ``h2:``) is
not run here: the whole command line, with the prefix taken off, runs as the remote host's own
``lxdlib`` over ``ssh`` (``lxdlib.sshhost.ssh_command``), with this process's stdin, stdout and
stderr, and its exit status becomes ours. So every option of every forwarded verb behaves
exactly as it does there, the output is the remote's own, and an interactive ``exec``/
``console`` gets a terminal (``ssh -t``) when ours is one. A ``--root`` given here is this
host's and is not sent: the remote's root is the one in its URL.

``file push``/``file pull`` move a local file: each file is streamed through ssh's stdin/stdout
to a ``file push -``/``file pull … -`` there. ``copy``/``move`` between hosts are not handled
here (they need both sides at once); a command naming two hosts is refused.

When ``remote switch h2`` made an SSH remote the default, unprefixed commands go there too, as
``lxc`` sends them to its default remote; ``local:`` names this host explicitly. A forwarded
command carries the hidden global flag ``--no-forward``, taken off here before parsing, so the
far side runs it on its own root whatever its own default remote is (a remote pointing back at
this root would otherwise send the command round for ever).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Sequence

from ..errors import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Final

    from ..imagestore.remotes import Remote

__all__ = ["FORWARDED", "NO_FORWARD", "maybe_forward", "plan"]


# the commands whose names may carry a remote: instance and image commands
FORWARDED: Final = frozenset({
    "list", "ls", "launch", "init", "info", "start", "stop", "restart", "pause", "delete", "rm",
    "exec", "console", "file", "snapshot", "restore", "config", "image", "publish", "monitor"})
#: the command's own flags, which lxc (cobra's persistent flags) takes anywhere on the line
GLOBAL_FLAGS: Final = frozenset({"--debug", "-v", "--verbose", "-q", "--quiet"})
NO_FORWARD: Final = "--no-forward"
_EXEC_WITH_VALUE: Final = frozenset({"--env", "--cwd", "--user", "--group", "--mode"})


class Plan:
    """What a command line means for forwarding: the remote, and the argv to run there."""

    def __init__(self, remote: Remote, args: list[str], command: str) -> None:
        self.remote = remote
        self.args = args
        self.command = command


def _split_global(argv: Sequence[str]) -> tuple[str | None, list[str], list[str]]:
    """(--root, the global flags to pass on, the command and what follows)."""
    root, flags = None, []
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        a = argv[i]
        if a == "--root" and i + 1 < len(argv):
            root = argv[i + 1]
            i += 2
            continue
        if a.startswith("--root="):
            root = a.split("=", 1)[1]
        elif a in GLOBAL_FLAGS:
            flags.append(a)
        elif a == NO_FORWARD:
            pass
        i += 1
    return root, flags, list(argv[i:])


def _name_part(args: list[str], command: str) -> int:
    """How many of ``args`` (after the command word) may hold names: for ``exec``, up to the
    instance (the command after it is the instance's business)."""
    if command != "exec":
        return len(args)
    k = 0
    while k < len(args) and args[k].startswith("-") and args[k] != "--":
        k += 2 if args[k] in _EXEC_WITH_VALUE else 1
    return min(k + 1, len(args))


def plan(argv: Sequence[str]) -> Plan | None:
    """The forwarding a command line asks for, or None to run it here."""
    root, flags, rest = _split_global(argv)
    if NO_FORWARD in argv[:len(argv) - len(rest)]:
        return None
    if not rest or rest[0] not in FORWARDED:
        return None
    command, args = rest[0], rest[1:]
    if not any(":" in a for a in args) and not _may_have_ssh_default(root):
        return None  # the common case decided without reading anything
    from ..errors import InvalidArgument
    from ..imagestore.remotes import LOCAL, Remotes
    from ..state import Paths
    remotes = Remotes(Paths.at(root))
    try:
        known = {r.name: r for r in remotes.list()}
    except Exception:  # an unreadable remote list: the command here reports it, if it needs it
        return None
    n = _name_part(args, command)
    used: set[str] = set()
    out: list[str] = []
    for i, a in enumerate(args):
        name, sep, tail = a.partition(":")
        if i < n and sep and not a.startswith("-") and name in known:
            r = known[name]
            if name == LOCAL or r.is_ssh:
                used.add(name)
                if tail:
                    out.append(tail)
                continue
        out.append(a)
    if len(used) > 1:
        raise InvalidArgument(f"{command}: one command names several hosts "
                              f"({', '.join(sorted(used))}); between hosts, use copy/move")
    if used == {LOCAL}:
        return None  # this host, named explicitly: run here
    if used:
        target = known[used.pop()]
    else:
        default = known.get(remotes.default)
        if default is None or not default.is_ssh:
            return None
        target = default
    return Plan(target, [NO_FORWARD, *flags, command, *out], command)


def _may_have_ssh_default(root: str | None) -> bool:
    """Whether the remote list could make an SSH remote the default: the file names one at
    all (read as bytes; the common ``lxdlib list`` pays no YAML parse)."""
    from ..rootdir import root_dir
    try:
        with open(os.path.join(root_dir(root), "remotes.yaml"), "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"ssh://" in data


def maybe_forward(argv: Sequence[str]) -> int | list[str]:
    """Run the command on its remote host and return the exit status, or return the command
    line to run here (without ``--no-forward``). A refused command line (two hosts named)
    prints ``Error: …`` and returns 1."""
    from ..errors import LxdlibError
    try:
        p = plan(argv)
        if p is None:
            _, _, rest = _split_global(argv)
            head = list(argv[:len(argv) - len(rest)])
            return [a for a in head if a != NO_FORWARD] + rest
        # the word after `file` (the args start with --no-forward and the global flags):
        # a push or pull moves a file of this host, so it cannot be run there as it is
        verb = p.args.index(p.command) + 1
        if p.command == "file" and verb < len(p.args) and p.args[verb] in ("push", "pull"):
            return _file_transfer(p)
        return _run(p.remote, p.args, tty=p.command in ("exec", "console"))
    except LxdlibError as e:
        sys.stderr.write(f"Error: {e}\n")
        return 1


def _run(remote: Remote, args: Sequence[str], *, tty: bool = False,
         stdin: int | None = None, stdout: int | None = None,
         into: tuple[int, str] | None = None) -> int:
    """ssh's exit status; ``into``: ssh's output written to that descriptor by this process
    (``_call_into``), not by ssh, the file named as given."""
    import logging  # here, as subprocess: a command run on this host (and `--help`) skips
    import subprocess  # their imports (logging alone ~5 ms)

    from ..sshhost import ssh_command
    argv = ssh_command(remote, args)
    if tty and stdin is None:
        argv[1] = _terminal(args)
    logging.getLogger(__name__).debug("forwarding to %s: %s", remote.name, argv)
    try:
        if into is None:
            rc = subprocess.call(argv, stdin=stdin, stdout=stdout)
        else:
            rc = _call_into(argv, stdin, *into)
    except FileNotFoundError:
        sys.stderr.write("Error: ssh is not installed (openssh-client)\n")
        return 1
    except KeyboardInterrupt:
        return 130
    if rc == 255 and args and args[0] != "exec":
        sys.stderr.write(f"Error: could not reach remote {remote.name!r} ({remote.addr}) "
                         "over ssh\n")
        return 1
    return rc


def _call_into(argv: Sequence[str], stdin: int | None, fd: int, where: str) -> int:
    """Run ``argv`` (ssh) with its output copied to ``fd`` here, counted against a
    ``hostroom.Room``: the far side's container chose its size, and ssh writing straight into
    the file, as root, wrote into the filesystem's root reserve. ``DiskFull`` ends ssh (our
    own child, by pid)."""
    import subprocess

    from ..hostroom import Room, pump
    with subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        try:
            pump(proc.stdout.fileno(), fd, Room(), where)
        except BaseException:
            proc.kill()
            raise
        return proc.wait()


def _terminal(args: Sequence[str]) -> str:
    """ssh's terminal flag for ``exec``/``console``: a terminal there when the command would
    get one here (both ends of ours are terminals, or ``--mode interactive``), so the remote
    lxdlib makes the same choice; ``-T`` (bytes as they are) otherwise."""
    words: list[str] = []
    for w in args[:args.index("--")] if "--" in args else args:
        words += w.split("=", 1) if w.startswith("--mode=") else [w]
    mode = words[words.index("--mode") + 1] if "--mode" in words[:-1] else "auto"
    if mode == "non-interactive" or "-T" in words or "--force-noninteractive" in words:
        return "-T"
    if mode == "interactive":
        return "-tt"  # even without a terminal here, as asked
    return "-t" if sys.stdin.isatty() and sys.stdout.isatty() else "-T"


def _file_transfer(p: Plan) -> int:
    """``file push``/``file pull`` of single files, streamed through ssh."""
    from pathlib import Path

    from ..errors import InvalidArgument
    flags = p.args[:p.args.index("file")]
    verb, rest = p.args[p.args.index("file") + 1], p.args[p.args.index("file") + 2:]
    opts: list[str] = []
    paths: list[str] = []
    i = 0
    mode: str | None = None
    while i < len(rest):
        a = rest[i]
        if a in ("-r", "--recursive"):
            raise InvalidArgument("file push/pull -r to or from an ssh remote is not supported: "
                                  "stream a tar through `exec` instead")
        if a in ("-p", "--create-dirs"):
            opts.append(a)
        elif a in ("--uid", "--gid", "--mode") and i + 1 < len(rest):
            if a == "--mode":
                mode = rest[i + 1]
            else:
                opts += [a, rest[i + 1]]
            i += 1
        elif a.startswith("-") and a != "-":
            raise InvalidArgument(f"file {verb}: option {a} is not supported to an ssh remote")
        else:
            paths.append(a)
        i += 1
    if len(paths) < 2:
        raise InvalidArgument(f"file {verb}: a source and a target are needed")
    *sources, target = paths
    if verb == "push":
        into_dir = target.endswith("/") or len(sources) > 1
        for src in sources:
            if src == "-":
                rc = _run(p.remote, [*flags, "file", "push", *opts,
                                     *(["--mode", mode] if mode else []), "-", target])
            else:
                st = os.stat(src)
                if stat.S_ISDIR(st.st_mode):
                    raise InvalidArgument(f"{src} is a directory (-r is not supported to an "
                                          "ssh remote)")
                where = f"{target.rstrip('/')}/{Path(src).name}" if into_dir else target
                m = mode or f"{stat.S_IMODE(st.st_mode):04o}"
                with open(src, "rb") as f:
                    rc = _run(p.remote, [*flags, "file", "push", *opts, "--mode", m, "-", where],
                              stdin=f.fileno())
            if rc:
                return rc
        return 0
    if opts and opts != ["-p"] and opts != ["--create-dirs"]:
        raise InvalidArgument("file pull: only -p is supported from an ssh remote")
    for src in sources:
        if target == "-":
            rc = _run(p.remote, [*flags, "file", "pull", src, "-"])
        else:
            dest = Path(target)
            if dest.is_dir() or target.endswith("/") or len(sources) > 1:
                if opts:
                    dest.mkdir(parents=True, exist_ok=True)
                dest = dest / Path(src).name
            elif opts:
                dest.parent.mkdir(parents=True, exist_ok=True)
            rc = _pull_into(p, [*flags, "file", "pull", src, "-"], dest)
        if rc:
            return rc
    return 0


def _pull_into(p: Plan, args: list[str], dest: os.PathLike[str]) -> int:
    """Receive a pulled file beside ``dest`` and rename it into place once complete. The
    directory may be a host user's: the temporary file has a random name and is created
    exclusively (``O_EXCL``, so a link planted there is never followed and a file of the
    user's never written into), readable by root alone until it is whole; a
    link at ``dest`` itself is replaced, not followed (``state.temp_beside`` and
    ``create_private``, as exports and image builds write theirs)."""
    from ..state import create_private, temp_beside
    target = os.fspath(dest)
    from ..hostroom import into_device
    if into_device(target):
        # ``/dev/null``, a named pipe: written into, as lxc's pull opens it (renamed over,
        # /dev/null became a regular file of the far side's bytes); no room on a disk taken.
        # A disk is refused there, not replaced by the rename below
        fd = os.open(target, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            return _run(p.remote, args, stdout=fd)
        finally:
            os.close(fd)
    tmp = temp_beside(target)
    try:
        with os.fdopen(create_private(tmp), "wb") as f:
            rc = _run(p.remote, args, into=(f.fileno(), target))
            if not rc:  # the mode a plain create would give it (the far side sends no mode)
                mask = os.umask(0o022)
                os.umask(mask)
                os.fchmod(f.fileno(), 0o666 & ~mask)
        if not rc:
            os.replace(tmp, target)
            return 0
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    return rc
