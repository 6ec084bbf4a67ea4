"""The ``lxdlib`` command: LXD's ``lxc`` client, word for word, on the library.

Each subcommand lives in the module named for what it manages; this module builds the parser,
opens the ``Host`` and turns every lxdlib error into one ``Error: …`` line with exit status 1 (a
traceback only with ``--debug``), as the ``lxc`` client does.

The library only logs (under the ``lxdlib`` logger) and never decides where that goes; this
command does: ``--verbose`` shows its INFO messages on stderr and ``--debug`` its DEBUG ones,
like ``lxc --verbose`` and ``lxc --debug``. Without either nothing is configured, so warnings
reach stderr as Python prints them by default.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import DiskFull, LxdlibError

if TYPE_CHECKING:
    from ..host import Host

Handler = Callable[["Host", argparse.Namespace], int | None]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit code 2 and usage line
        self.print_usage(sys.stderr)
        sys.stderr.write(f"Error: {message}\n")
        raise SystemExit(2)


# Commands built alone: their parser holds only their own module's verbs, so they start without
# importing every other command (and what it uses) and building ~100 subparsers. For ``list``,
# which is run often and on many instances, that is most of its time.
_ALONE = {"list": "instances", "ls": "instances"}


def command_word(argv: Sequence[str]) -> str | None:
    """The command of a command line (the first word after lxdlib's own options)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in _GLOBAL_WITH_VALUE else 1
    return argv[i] if i < len(argv) else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or only of ``command``'s module for those in ``_ALONE``."""
    p = Parser(prog="lxdlib", description="System containers the LXD way, with no daemon.")
    p.add_argument("--root", help="state directory (default $LXDLIB_ROOT or /var/lib/lxdlib, "
                   "made when missing); a --root must exist unless the command is init")
    p.add_argument("--debug", action="store_true",
                   help="show the library's debug messages, and tracebacks of errors")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show the library's information messages")
    p.add_argument("-q", "--quiet", action="store_true", help="print less")
    p.add_argument("--version", action="version", version="lxdlib 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="<command>", parser_class=Parser)
    if _ALONE.get(command or "") == "instances":
        from . import instances
        instances.register(sub)
        return p
    from . import backup as backup_cmd
    from . import completion as completion_cmd
    from . import configcmd, hostcmd, images, instances, networks, profiles, remotes, storage
    from . import console as console_cmd
    from . import files as files_cmd
    instances.register(sub)
    configcmd.register(sub)
    images.register(sub)
    storage.register(sub)
    profiles.register(sub)
    networks.register(sub)
    remotes.register(sub)
    hostcmd.register(sub)
    backup_cmd.register(sub)  # after images: it joins the image store's housekeeping command
    files_cmd.register(sub)
    console_cmd.register(sub)
    __import__(f"{__package__}.migratecmd", fromlist=["register"]).register(sub)  # hidden
    completion_cmd.register(sub, p)
    h = sub.add_parser("help", help="show help for a command")
    h.add_argument("topic", nargs="*")
    h.set_defaults(func=None, no_host=True)
    return p


def _help(parser: argparse.ArgumentParser, topic: Sequence[str]) -> int:
    if not topic:
        parser.print_help()
        return 0
    try:
        parser.parse_args([*topic, "--help"])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


_GLOBAL_WITH_VALUE = {"--root"}
_EXEC_WITH_VALUE = {"--env", "--cwd", "--user", "--group", "--mode"}


def split_exec(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Separate ``exec``'s command from lxdlib's own options, as LXD's client does.

    Everything after ``--`` is the command; without ``--``, everything after the instance name
    is (``lxdlib exec c1 sh -c 'echo hi'``).
    """
    argv = list(argv)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in _GLOBAL_WITH_VALUE else 1
    if i >= len(argv) or argv[i] != "exec":
        return argv, None
    rest = argv[i + 1:]

    def skip_options(k: int) -> int:
        while k < len(rest) and rest[k].startswith("-") and rest[k] != "--":
            k += 2 if rest[k] in _EXEC_WITH_VALUE else 1
        return k

    name = skip_options(0)
    if name < len(rest) and rest[name] == "--":  # no instance name before the separator
        return argv[:i + 1] + rest[:name], rest[name + 1:]
    start = skip_options(name + 1)
    head = argv[:i + 1] + rest[:start]
    if start < len(rest) and rest[start] == "--":
        return head, rest[start + 1:]
    return head, rest[start:]


_CONFIG_VERBS = {"set", "unset", "get", "show", "edit", "device", "-h", "--help"}


def fix_config_shorthand(argv: Sequence[str]) -> list[str]:
    """``config <instance> <key> <value>`` (the seed article's typo) means ``config set``."""
    argv = list(argv)
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in _GLOBAL_WITH_VALUE else 1
    rest = argv[i + 1:]
    if i < len(argv) and argv[i] == "config" and len(rest) == 3 and rest[0] not in _CONFIG_VERBS:
        sys.stderr.write(f"(taking `config {' '.join(rest)}` as `config set {' '.join(rest)}`)\n")
        return [*argv[:i + 1], "set", *rest]
    return argv


def setup_logging(debug: bool, verbose: bool) -> None:
    """Send the ``lxdlib`` logger's records to stderr at DEBUG (``--debug``) or INFO
    (``--verbose``). Only the command does this: the library never adds handlers."""
    if not (debug or verbose):
        return
    logger = logging.getLogger("lxdlib")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(levelname)-7s [%(asctime)s] %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    head, command = split_exec(fix_config_shorthand(sys.argv[1:] if argv is None else argv))
    parser = build_parser(command_word(head))
    args = parser.parse_args(head)
    setup_logging(args.debug, args.verbose)
    if command is not None:
        args.cmd = command
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "help":
        return _help(parser, args.topic)
    if getattr(args, "no_host", False):  # e.g. `completion`: no root, no root privileges
        return int(args.func(None, args) or 0)
    if os.geteuid() != 0:
        sys.stderr.write("Error: lxdlib manages containers and storage: run it as root\n")
        return 1
    try:
        if getattr(args, "opens_root", False):  # `list`: opens a Host only if it needs one
            return int(args.func(None, args) or 0)
        from ..host import Host
        # `init` sets a root up, so it may make the directory; every other verb refuses a
        # --root that does not exist rather than starting an empty root beside the real one
        host = Host(args.root, create=True if args.command == "init" else None)
        func: Handler = args.func
        rc = func(host, args)
        return int(rc or 0)
    except LxdlibError as e:
        if args.debug:
            raise
        msg = str(e)
        sys.stderr.write(f"Error: {msg}\n")
        return 1
    except OSError as e:
        if args.debug or not DiskFull.is_full(e):
            raise
        # a full disk is the host's state, not a bug: say it in one line wherever it struck
        where = e.filename or args.root or "the lxdlib root"
        sys.stderr.write(f"Error: {DiskFull(where)}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 141


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
