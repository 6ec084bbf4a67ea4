"""The ``lxdlib`` command: LXD's ``lxc`` client, word for word, on the library.

Each subcommand lives in the module named for what it manages; this module builds the parser,
opens the ``Host`` and turns every lxdlib error into one ``Error: …`` line with exit status 1 (a
traceback only with ``--debug``), as the ``lxc`` client does.

A command line builds only the parser of its own command: ``COMMANDS`` says which module
registers each command word, so ``lxdlib list`` imports the instance verbs and nothing of the
images, networks or storage verbs (nor what those import), and ``lxdlib --help`` lists every
command from the table without importing any. Building every parser and importing every
module cost about 125 ms of each invocation; the whole parser is built only where all of it
is needed (shell completion, the tests that hold the table to it).

The library only logs (under the ``lxdlib`` logger) and never decides where that goes; this
command does: ``--verbose`` shows its INFO messages on stderr and ``--debug`` its DEBUG ones,
like ``lxc --verbose`` and ``lxc --debug``. Without either nothing is configured, so warnings
reach stderr as Python prints them by default.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence

from ..errors import TYPE_CHECKING, DiskFull, LxdlibError
from ..version import VERSION
from .common import fill_verb_helps, subparsers_action, verb_helps, walk

if TYPE_CHECKING:
    from typing import Any, NoReturn

    from ..host import Host

Handler = Callable[["Host", argparse.Namespace], int | None]

# The command modules, in the order the whole parser registers them (``backup`` after
# ``images``: it joins the image store's ``housekeeping`` command).
MODULES = ("instances", "configcmd", "images", "storage", "profiles", "networks", "remotes",
           "hostcmd", "backup", "files", "console", "extras", "migratecmd", "completion")

# Every command word: the modules that register it, and the line ``lxdlib --help`` shows for
# it. A command added to a module needs its line here (tests/unit/test_cli_table.py holds the
# table to what the modules register).
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "init": (("instances",), "Create an instance from an image, or set this host up"),
    "launch": (("instances",), "Create an instance from an image and start it"),
    "start": (("instances",), "Start stopped instances, or resume frozen ones"),
    "stop": (("instances",), "Stop running instances"),
    "restart": (("instances",), "Stop and start running instances again"),
    "pause": (("instances",), "Freeze the processes of running instances"),
    "delete": (("instances",), "Delete instances or snapshots"),
    "move": (("instances",), "Rename an instance or a snapshot, or move it to another pool"),
    "copy": (("instances",), "Copy an instance, or make one from a snapshot"),
    "list": (("instances",), "List the instances, with their state and addresses"),
    "info": (("instances",), "Show the state and resources of an instance, or of the host"),
    "exec": (("instances",), "Run a command inside an instance"),
    "snapshot": (("instances",), "Take a snapshot of an instance"),
    "restore": (("instances",), "Bring an instance back to one of its snapshots"),
    "config": (("configcmd",), "Read and change instance and host settings and devices"),
    "image": (("images",), "Manage the local images and get images from remotes"),
    "publish": (("images",), "Make an image from an instance or a snapshot"),
    "housekeeping": (("images", "backup"),
                     "Run the periodic upkeep: scheduled snapshots, image expiry and updates"),
    "storage": (("storage",), "Manage storage pools and custom volumes"),
    "profile": (("profiles",), "Manage profiles and which instances use them"),
    "network": (("networks",), "Manage bridges and attach instances to them"),
    "remote": (("remotes",), "Manage the image servers (remotes) images come from"),
    "autostart": (("hostcmd",), "Start the instances marked to start with the host"),
    "export": (("backup",), "Write an instance (and its snapshots) to a backup file"),
    "import": (("backup",), "Make an instance from a backup file"),
    "recover": (("backup",), "Finish or undo operations a crash interrupted"),
    "file": (("files",), "Copy files into and out of instances, edit and delete them"),
    "console": (("console",), "Attach to an instance's console, or show its log"),
    "monitor": (("console",), "Follow lifecycle events on this root"),
    "rename": (("extras",), "Rename an instance or a snapshot"),
    "version": (("extras",), "Show the client and server versions"),
    "alias": (("extras",), "Manage your command aliases"),
    "operation": (("extras",), "List background operations (lxdlib runs none)"),
    "project": (("extras",), "Show the projects (only the default project)"),
    "warning": (("extras",), "List warnings (none are kept)"),
    "cluster": (("extras",), "List cluster members (an lxdlib root is never clustered)"),
    "completion": (("completion",), "Print the shell completion script (bash, zsh)"),
    "help": ((), "Show the help of a command"),
    "serve": (("remotes",), "Answer lxdlib's remote protocol on stdin/stdout (run over ssh)"),
    "migrate-send": (("migratecmd",), "Send an instance to a copy or move between hosts"),
    "migrate-receive": (("migratecmd",), "Receive an instance of a copy or move between hosts"),
}
# commands other programs run, not people: left out of ``lxdlib --help``
HIDDEN = frozenset({"serve", "migrate-send", "migrate-receive"})
ALIASES = {"ls": "list", "rm": "delete", "mv": "move", "cp": "copy"}

_DESCRIPTION = """System containers the LXD way, with no daemon: LXD's `lxc` commands on lxdlib.

The state lives in one directory (the root): --root, else $LXDLIB_ROOT, else /var/lib/lxdlib."""
_EPILOG = """Examples:
  lxdlib init --auto                      # a storage pool, a bridge, the default profile
  lxdlib image build busybox --alias busybox
  lxdlib launch busybox c1
  lxdlib exec c1 -- sh -c 'echo hi'

Run `lxdlib help <command>` (or `lxdlib <command> --help`) for a command's options and
examples."""


@functools.cache
def _untranslated_argparse() -> None:
    """argparse asks gettext for every message it formats, and gettext looks for a dozen
    catalog files each time (~1 ms of a command). Where the default domain has no catalog
    (Python ships none for argparse's messages), gettext would return every message unchanged:
    argparse is given functions that do so without the lookups. Asked by ``build_parser``:
    ``--version``, which builds none, imports neither gettext's lookup nor ``locale``. In the
    C locale (the languages ``gettext.find`` would try, from the same variables, are all C or
    POSIX) there is nothing to look for: not even ``locale`` is imported (~1 ms)."""
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):  # gettext.find's order
        value = os.environ.get(var)
        if value:
            untranslated = all(lang in ("C", "POSIX") or lang.startswith("C.")
                               for lang in value.split(":"))
            break
    else:
        untranslated = True
    if not untranslated:
        import gettext
        untranslated = gettext.find(gettext.textdomain()) is None
    if untranslated:
        setattr(argparse, "_", lambda message: message)  # noqa: B010 (argparse's private name)
        setattr(argparse, "ngettext",  # noqa: B010
                lambda singular, plural, n: singular if n == 1 else plural)


@functools.cache
def _terminal_width() -> int:
    """``shutil.get_terminal_size().columns``, asked once: argparse makes a formatter for every
    argument it adds (to check its metavar), and each asked again, and imported ``shutil``
    (with bz2 and lzma) into every command for it."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns if columns > 0 else 80) - 2


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples printed as written (their line breaks are the layout), at the
    terminal's width (``_terminal_width``)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _terminal_width() if width is None else width)


class Parser(argparse.ArgumentParser):
    """argparse's parser with LXD's ``Error: …`` line, and descriptions and examples printed
    as written (their line breaks are the layout)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        """A usage error ends with exit status 1, as ``lxc``'s do (argparse's own is 2). An
        unknown option or one without its value gets lxc's line alone; a missing or extra
        argument, the usage line and lxc's ``Invalid number of arguments``."""
        flag = _lxc_flag_error(message)
        if flag is None:
            self.print_usage(sys.stderr)
            if message.startswith(("the following arguments are required",
                                   "unrecognized arguments")):
                message = "Invalid number of arguments"
        sys.stderr.write(f"Error: {flag or message}\n")
        raise SystemExit(1)


def _lxc_flag_error(message: str) -> str | None:
    """lxc's words for argparse's ``message`` about an option, or None if it is not one:
    ``unknown flag: --x``, ``unknown shorthand flag: 'x' in -x``, ``flag needs an argument:
    --timeout``."""
    if message.startswith("unrecognized arguments: "):
        word = message.split(": ", 1)[1].split(" ", 1)[0]
        if word.startswith("--") and len(word) > 2:
            return f"unknown flag: {word.split('=', 1)[0]}"
        if word.startswith("-") and len(word) > 1 and not word[1].isdigit():
            return f"unknown shorthand flag: '{word[1]}' in {word}"
        return None
    needs = re.fullmatch(r"argument (\S+?)(?:/(\S+))?: expected one argument", message)
    if needs:
        return f"flag needs an argument: {needs.group(2) or needs.group(1)}"
    number = re.fullmatch(r"argument (\S+?)(?:/(\S+))?: invalid (?:int|float) value: '(.*)'",
                          message, re.S)
    if number:  # Go's strconv refusing the value of an integer flag
        flag, value = number.group(2) or number.group(1), number.group(3)
        parse = "ParseUint" if flag in _UNSIGNED_FLAGS else "ParseInt"
        return (f'invalid argument "{value}" for "{flag}" flag: strconv.{parse}: parsing '
                f'"{value}": invalid syntax')
    return None


#: lxc's flags that take an unsigned number (``exec``'s uid and gid); its others are signed
_UNSIGNED_FLAGS = frozenset({"--user", "--group"})


def hoist_global_flags(argv: Sequence[str]) -> list[str]:
    """``argv`` with the global flags that follow the command word (``launch busybox c1 -q``,
    as lxc takes them) moved before it, where argparse takes them; nothing after ``--``."""
    from .forward import GLOBAL_FLAGS  # imported by every command line's run anyway
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in _GLOBAL_WITH_VALUE else 1
    rest = list(argv[i:])
    end = rest.index("--") if "--" in rest else len(rest)
    moved = [x for x in rest[:end] if x in GLOBAL_FLAGS]
    if not moved:
        return list(argv)
    kept = [x for x in rest[:end] if x not in GLOBAL_FLAGS]
    return [*argv[:i], *moved, *kept, *rest[end:]]


def drop_lxc_globals(argv: Sequence[str]) -> list[str] | str:
    """``argv`` without the global flags of lxc that change nothing on an lxdlib root, taken
    anywhere before ``--`` as lxc takes them: ``--force-local`` (a root is always local) and
    ``--project default`` / ``--project=default`` (its only project). Another project is
    refused: the error line (lxc's flag-parser words for a ``--project`` without its value)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return [*out, *argv[i:]]
        if word == "--force-local":
            i += 1
            continue
        if word == "--project" or word.startswith("--project="):
            if word == "--project":
                if i + 1 >= len(argv):
                    return "flag needs an argument: --project"
                value, i = argv[i + 1], i + 2
            else:
                value, i = word.split("=", 1)[1], i + 1
            if value != "default":
                return "Project not found"  # what lxc says of a project that is not there
            continue
        out.append(word)
        i += 1
    return out


def command_word(argv: Sequence[str]) -> str | None:
    """The command of a command line (the first word after lxdlib's own options)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in _GLOBAL_WITH_VALUE else 1
    return argv[i] if i < len(argv) else None


def _command_list() -> str:
    width = max(len(w) for w in COMMANDS) + 2
    return "\n".join(f"{w.ljust(width)}{desc}" for w, (_, desc) in sorted(COMMANDS.items())
                     if w not in HIDDEN)


class _Unbuilt:
    """What ``OneCommand`` gives for another command's parser: every call on it (adding
    arguments, groups, sub-commands, defaults) does nothing and answers itself."""

    def __getattr__(self, name: str) -> Any:
        return self._ignore

    def _ignore(self, *args: Any, **kwargs: Any) -> _Unbuilt:
        return self


class OneCommand:
    """The commands' sub-parsers as a module's ``register`` sees them when one command runs:
    only that command's parser is built (a module registers a dozen, and every argument costs
    argparse a formatter: ~3 ms of each command's start-up); the others are ``_Unbuilt``."""

    def __init__(self, sub: Any, names: set[str]) -> None:
        self._sub = sub
        self._names = names

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name in self._names or self._names & set(kwargs.get("aliases", ())):
            return self._sub.add_parser(name, **kwargs)
        return _Unbuilt()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sub, name)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``command`` alone (the parsers its modules register), of no command
    (``None``: lxdlib's own options and the list of commands, for ``--help``), or of every
    command (``"*"``: completion and tests)."""
    _untranslated_argparse()
    p = Parser(prog="lxdlib", description=_DESCRIPTION, epilog=_EPILOG)
    p.add_argument("--root", help="state directory (default $LXDLIB_ROOT or /var/lib/lxdlib, "
                   "made when missing); a --root must exist unless the command is init")
    p.add_argument("--debug", action="store_true",
                   help="show the library's debug messages, and tracebacks of errors")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show the library's information messages")
    p.add_argument("-q", "--quiet", action="store_true", help="print less")
    p.add_argument("--version", action="version", version=VERSION)  # lxc prints the number alone
    sub = p.add_subparsers(dest="command", metavar="<command>", parser_class=Parser,
                           title="commands", description=_command_list(),
                           help="one of the commands above")
    if command is None:
        return p
    word = ALIASES.get(command, command)
    wanted = set(MODULES) if command == "*" else set(COMMANDS[word][0]) if word in COMMANDS \
        else set()
    only = sub if command == "*" else OneCommand(sub, {command, word})
    for name in MODULES:
        if name not in wanted:
            continue
        module = importlib.import_module(f"{__package__}.{name}")
        if name == "completion":
            module.register(sub, lambda: build_parser("*"))
        else:
            module.register(only)
    if command == "*" or word == "help":
        h = sub.add_parser("help", help=COMMANDS["help"][1])
        h.add_argument("topic", nargs="*", metavar="<command>")
        h.set_defaults(func=None, no_host=True)
    _add_target_flags(p)
    _describe(p)
    return p


_INSTANCES = "--target cannot be used with instances"
_NOT_CLUSTER = "To use --target, the destination remote must be a cluster"
_NO_MEMBER = "Cluster member not found"
#: lxc's ``--target <member>`` (a cluster member) on the commands that take it, refused with
#: what LXD 5.0.2 (not clustered) says there: an lxdlib root is never a cluster. A pair: the
#: words when an instance is named, and when the server is meant (``_names_instance``).
#: ``init`` and ``launch`` take it with their other options (cli/instances.py).
TARGET_REFUSALS: dict[tuple[str, ...], str | tuple[str, str]] = {
    ("info",): (_INSTANCES, _NOT_CLUSTER),
    **{("config", verb): (_INSTANCES, _NOT_CLUSTER)
       for verb in ("show", "get", "set", "unset", "edit")},
    ("copy",): _NOT_CLUSTER,
    ("move",): "The source LXD server is not clustered",
    **{("storage", verb): _NO_MEMBER
       for verb in ("create", "show", "get", "set", "unset", "edit")},
    ("storage", "info"): _NOT_CLUSTER,
    **{("storage", "volume", verb): _NO_MEMBER
       for verb in ("create", "delete", "show", "get", "set", "unset", "edit", "info",
                    "rename", "snapshot", "restore", "copy")},
    **{("network", verb): _NO_MEMBER
       for verb in ("create", "show", "get", "set", "unset")},
    ("network", "info"): _NOT_CLUSTER,
}


def _add_target_flags(parser: argparse.ArgumentParser) -> None:
    """``--target`` on the built commands that ``TARGET_REFUSALS`` names."""
    for path, p in walk(parser):
        refusal = TARGET_REFUSALS.get(path)
        if refusal is not None:
            p.add_argument("--target", dest="cluster_target", metavar="<member>",
                           help="refused: an lxdlib root is never a cluster")
            p.set_defaults(target_refusal=refusal)


def target_refusal(args: argparse.Namespace) -> str | None:
    """What the command says of its ``--target``, or None without one."""
    if getattr(args, "cluster_target", None) is None or \
            not hasattr(args, "target_refusal"):
        return None
    refusal: str | tuple[str, str] = args.target_refusal
    if isinstance(refusal, str):
        return refusal
    return refusal[0] if _names_instance(args) else refusal[1]


def _names_instance(args: argparse.Namespace) -> bool:
    """Whether ``info``/``config <verb>`` was given an instance, not meant for the server:
    a name (``show``, ``edit``, ``info``), or a first argument that is neither a server key
    (they hold a dot, which instance names cannot) nor ``key=value``."""
    if getattr(args, "name", None):
        return True
    first = (getattr(args, "args", None) or [""])[0]
    return bool(first) and "." not in first and "=" not in first


def _verb_line(path: tuple[str, ...], verb: str) -> str | None:
    """The line a group's help shows for a verb its module registered without one."""
    from . import helptext
    if not path:  # a hidden command stays out of the list (None: not listed)
        return None if verb in HIDDEN else COMMANDS[verb][1]
    return helptext.VERBS.get(" ".join((*path, verb)))


def _describe(parser: argparse.ArgumentParser) -> None:
    """Give every command its one-line description and examples: a module's own ``help=``
    stays; what is missing comes from ``COMMANDS`` (commands) and ``helptext`` (their verbs),
    so that a group's ``--help`` lists each verb with a line, as ``lxc`` does."""
    from . import helptext
    for path, p in walk(parser):
        fill_verb_helps(p, functools.partial(_verb_line, path))
        sub = subparsers_action(p)
        for action in verb_helps(p):
            child = sub.choices[action.dest]
            key = " ".join((*path, action.dest))
            line = COMMANDS[action.dest][1] if not path and action.dest in COMMANDS \
                else str(action.help or "")
            child.description = child.description or line[:1].upper() + line[1:]
            child.usage = child.usage or helptext.USAGE.get(key)
            examples = helptext.EXAMPLES.get(key)
            if examples and not child.epilog:
                child.epilog = "Examples:\n" + examples.strip("\n")


def distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest inserts, deletes and substitutions from ``a`` to ``b``."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def suggest(word: str, choices: Sequence[str]) -> list[str]:
    """What a mistyped command may have meant, as ``lxc`` (cobra) picks it: every command the
    word begins, or within two edits of it, case ignored, in name order (``st``: list, start,
    stop, storage; ``resume``: rename)."""
    low = word.lower()
    return [c for c in sorted(set(choices))
            if c.lower().startswith(low) or distance(low, c.lower()) <= 2]


def unknown_command(word: str, where: str, choices: Sequence[str]) -> int:
    """LXD's reply to an unknown command; exit status 1. As ``lxc``, only a top-level command
    gets suggestions (``Did you mean this?``, then a blank line); a group's verb gets none."""
    msg = f'Error: unknown command "{word}" for "{where}"\n'
    near = suggest(word, choices) if " " not in where else []
    if near:
        msg += "\nDid you mean this?\n" + "".join(f"\t{n}\n" for n in near) + "\n"
    sys.stderr.write(msg)
    return 1


def _verb_choices(parser: argparse.ArgumentParser) -> list[str]:
    """The choices of a parser's ``verb`` positional: the subcommands of a group that takes
    them as an argument (``config device``, ``image alias``, ``profile device``…)."""
    for action in parser._actions:
        if not action.option_strings and action.dest == "verb" and action.choices:
            return [str(c) for c in action.choices]
    return []


def _check_verbs(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int | None:
    """Refuse an unknown verb of a group (``lxdlib image lsit``) the way an unknown command
    is refused, rather than with argparse's list of every choice."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in _GLOBAL_WITH_VALUE else 1
    path = ["lxdlib"]
    p = parser
    while True:
        sub = subparsers_action(p)
        if i < len(argv) and argv[i].startswith("-"):
            return None
        if sub is None:  # a group whose verbs are a positional's choices (`profile device`)
            verbs = _verb_choices(p)
            if verbs and i < len(argv) and argv[i] not in verbs:
                return unknown_command(argv[i], " ".join(path), verbs)
            return None
        # `>=`: a last global option without its value (`lxdlib --root`) steps past the end;
        # argparse then says what is missing
        if i >= len(argv):  # a group without its verb (`lxdlib image`): its help, as lxc does
            if len(path) == 1:
                return None
            p.print_help()
            return 0
        if argv[i] not in sub.choices:
            names = [a.dest for a in verb_helps(p)] or list(sub.choices)
            return unknown_command(argv[i], " ".join(path), names)
        path.append(argv[i])
        p = sub.choices[argv[i]]
        i += 1
    return None


def _help(topic: Sequence[str]) -> int:
    if not topic:
        build_parser(None).print_help()
        return 0
    word = ALIASES.get(topic[0], topic[0])
    if word not in COMMANDS:
        return unknown_command(topic[0], "lxdlib", sorted(COMMANDS))
    parser = build_parser(word)
    rc = _check_verbs(parser, topic)
    if rc is not None:
        return rc
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


_CONFIG_VERBS = {"set", "unset", "get", "show", "edit", "device", "metadata", "template", "trust",
                 "-h",
                 "--help"}


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
    import logging
    logger = logging.getLogger("lxdlib")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(levelname)-7s [%(asctime)s] %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def exits_after(argv: Sequence[str] | None, args: argparse.Namespace) -> bool:
    """Whether this process ends when the verb returns (``state.SHORT_LIVED``): it runs the
    process's own command line (a caller passing ``argv`` goes on), and the verb is not a
    session of many requests (``serve``, whose execs must not leave a pidfd each)."""
    return argv is None and not getattr(args, "long_lived", False)


def main(argv: Sequence[str] | None = None) -> int:
    """The command: ``argv`` (default: this process's) run, its exit status returned."""
    try:
        rc = _run(argv)
        # here, not at exit: a reader that went away (`lxdlib list | head -1`) is told by the
        # last write, which a buffered stdout makes only now (Python would exit 120 on it).
        # None: started with stdout closed (`>&-`), where print() writes nothing, as to
        # /dev/null
        if sys.stdout is not None:
            sys.stdout.flush()
        return rc
    except BrokenPipeError:  # quiet, as lxc, which dies of SIGPIPE (141 in a shell)
        # and no second error when Python flushes the closed stdout on its way out
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141


def _run(argv: Sequence[str] | None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw == ["--version"]:  # the one answer that needs no parser at all
        print(VERSION)
        return 0
    from .useraliases import expand_argv  # the user's aliases, before any parsing, as lxc
    expanded = expand_argv(raw)
    from .forward import maybe_forward  # `h2:c1`: the command runs on that host, over ssh
    forwarded = maybe_forward(expanded)
    if isinstance(forwarded, int):
        return forwarded
    head, command = split_exec(fix_config_shorthand(forwarded))
    kept = drop_lxc_globals(head)
    if isinstance(kept, str):
        sys.stderr.write(f"Error: {kept}\n")
        return 1
    head = hoist_global_flags(kept)
    word = command_word(head)
    if word is not None and word not in COMMANDS and word not in ALIASES:
        return unknown_command(word, "lxdlib", sorted(COMMANDS))
    parser = build_parser(word)
    rc = _check_verbs(parser, head)
    if rc is not None:
        return rc
    args = parser.parse_args(head)
    setup_logging(args.debug, args.verbose)
    if command is not None:
        args.cmd = command
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "help":
        return _help(args.topic)
    refused = target_refusal(args)
    if refused is not None:
        sys.stderr.write(f"Error: {refused}\n")
        return 1
    if getattr(args, "no_host", False):  # e.g. `completion`: no root, no root privileges
        return int(args.func(None, args) or 0)
    if os.geteuid() != 0:
        sys.stderr.write("Error: lxdlib manages containers and storage: run it as root\n")
        return 1
    try:
        if getattr(args, "opens_root", False):  # `list`: opens a Host only if it needs one
            return int(args.func(None, args) or 0)
        from .. import state
        from ..host import Host
        # `init` sets a root up, so it may make the directory; every other verb refuses a
        # --root that does not exist rather than starting an empty root beside the real one
        host = Host(args.root, create=True if args.command == "init" else None)
        func: Handler = args.func
        short_lived, state.SHORT_LIVED = state.SHORT_LIVED, exits_after(argv, args)
        try:
            rc = func(host, args)
        finally:
            state.SHORT_LIVED = short_lived
        return int(rc or 0)
    except LxdlibError as e:
        if args.debug:
            raise
        from .lxdwords import lxd_text  # LXD's own sentence for it, as `lxc` prints it
        sys.stderr.write(f"Error: {lxd_text(e, args)}\n")
        return 1
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            raise  # main's: the reader went away
        if args.debug or not DiskFull.is_full(e):
            raise
        # a full disk is the host's state, not a bug: say it in one line wherever it struck
        where = e.filename or args.root or "the lxdlib root"
        sys.stderr.write(f"Error: {DiskFull(where)}\n")
        return 1
    except KeyboardInterrupt:
        return 130


def entry() -> NoReturn:
    """The installed ``lxdlib`` command and ``python -m lxdlib``: :func:`main`, then the
    process ends at once, without Python's own shutdown.

    That shutdown frees every module and object one by one: 3 ms of a ``list`` of an empty
    root, 10-15 ms of a verb that opened a root (measured, bench/cli.py), and the process has
    nothing left for it to do: ``main`` has returned, so every lock is released and every file
    closed by its ``with``; the only threads still alive are daemons (a progress bar) that it
    would not wait for either. What it would still do is flush the standard streams, so that
    is done here. A traceback (an error with ``--debug``, or a bug) takes Python's usual way
    out."""
    try:
        rc = main()
    except SystemExit as e:  # argparse's --help and usage errors, as Python would end them
        rc = exit_status(e.code)
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with it closed
            continue
        try:
            stream.flush()
        except BrokenPipeError:  # `lxdlib --help | head -1`: quiet, as main's own case
            rc = rc or 141
        except (OSError, ValueError):  # a closed or broken stream: nothing more can be said
            pass
    os._exit(rc)


def exit_status(code: object) -> int:
    """The status ``SystemExit(code)`` gives a process: None is 0, a number is itself, anything
    else is printed to stderr and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


if __name__ == "__main__":
    entry()
