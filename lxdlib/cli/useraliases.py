"""The user's command aliases (``lxdlib alias add ls "list -c ns4"``), kept and expanded as
``lxc`` keeps and expands its own.

They live in the user's client configuration, not in a root: ``$LXDLIB_CONF/config.yml`` (or the
file ``$LXDLIB_CONF`` names when it ends in ``.yml``/``.yaml``), else
``~/.config/lxdlib/config.yml``, under ``aliases:`` as in ``lxc``'s ``config.yml``. The
built-in ``shell`` alias (``exec @ARGS@ -- su -l``) applies when the user has none of that name.

``expand_argv`` runs before any parsing on every invocation, so it imports nothing heavy: the
file is read (with PyYAML) only when it exists.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence

from ..errors import TYPE_CHECKING, InvalidArgument
from ..patterns import Pattern

if TYPE_CHECKING:
    from pathlib import Path

#: Aliases every user has unless they define their own of the same name (as ``lxc``'s).
DEFAULT_ALIASES = {"shell": "exec @ARGS@ -- su -l"}

_NUMBERED = Pattern(r"@ARG(\d+)@")


def config_file() -> str:
    """Where the user's aliases are kept (see the module's docstring); a string, as every
    command asks this before anything else: ``pathlib`` is not imported for it."""
    conf = os.environ.get("LXDLIB_CONF")
    if conf:
        return conf if conf.endswith((".yml", ".yaml")) else os.path.join(conf, "config.yml")
    return os.path.join(os.path.expanduser("~"), ".config", "lxdlib", "config.yml")


def config_path() -> Path:
    """``config_file`` as a path."""
    from pathlib import Path
    return Path(config_file())


def load(path: Path | str | None = None) -> dict[str, str]:
    """The user's aliases ({} without a config file)."""
    path = path or config_file()
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:  # a directory, unreadable, not text
        raise InvalidArgument(f"cannot read {path}: {e}") from None
    import yaml
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise InvalidArgument(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):  # an `alias add` would write it over
        raise InvalidArgument(f"cannot read {path}: not a mapping")
    aliases = data.get("aliases")
    if aliases is None:
        return {}
    if not isinstance(aliases, dict):
        raise InvalidArgument(f"cannot read {path}: aliases is not a mapping")
    return {str(k): str(v) for k, v in aliases.items()}


def save(aliases: Mapping[str, str], path: Path | None = None) -> None:
    """Write the aliases back, keeping whatever else the file holds; atomically."""
    import yaml
    path = path or config_path()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    data["aliases"] = dict(sorted(aliases.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(yaml.safe_dump(data, default_flow_style=False, sort_keys=False))
    os.replace(tmp, path)


def modify(change: Callable[[dict[str, str]], None], path: Path | None = None) -> None:
    """Read the aliases, ``change`` them and write them back, under an exclusive lock on a
    file beside the config: two ``alias`` commands at once (a script's, a playbook's) each
    keep the other's change, as a load and a save apart would not. ``change`` may raise to
    change nothing."""
    import fcntl
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"),
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        aliases = load(path)
        change(aliases)
        save(aliases, path)
    finally:
        os.close(fd)  # the lock goes with it


def _find(aliases: Mapping[str, str], words: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """The alias whose words start ``words`` (the longest when several do): (key, value)."""
    best: tuple[list[str], list[str]] | None = None
    for key, value in aliases.items():
        kw = key.split(" ")
        if kw == list(words[:len(kw)]) and (best is None or len(kw) > len(best[0])):
            best = (kw, value.split(" "))
    return best


def expand(argv: Sequence[str], aliases: Mapping[str, str],
           with_value: frozenset[str] = frozenset({"--root"})) -> list[str] | None:
    """``argv`` (without the program name) with its alias replaced, or None when no alias
    applies. Leading options stay in front (``with_value`` are those taking a value).

    As ``lxc``: ``@ARGS@`` stands for the arguments after the alias (those not taken by an
    ``@ARGn@``) and, without it, they are appended; ``@ARG1@``… are substituted anywhere in a
    word; an ``@ARGn@`` beyond the arguments given is an error. User aliases come first, then
    ``DEFAULT_ALIASES``.
    """
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in with_value else 1
    head, words = list(argv[:i]), list(argv[i:])
    found = _find(aliases, words) or _find(DEFAULT_ALIASES, words)
    if found is None:
        return None
    key, value = found
    rest = words[len(key):]
    numbered: dict[int, str] = {}
    for part in value:
        for m in _NUMBERED.finditer(part):
            n = int(m.group(1))
            if n < 1 or n > len(rest):
                raise InvalidArgument(f'Found alias "{" ".join(key)}" references an argument '
                                      "outside the given number")
            numbered[n] = rest[n - 1]
    at_args = [x for k, x in enumerate(rest, 1) if k not in numbered]
    out: list[str] = []
    used_args = False
    for part in value:
        if part == "@ARGS@":
            out += at_args
            used_args = True
        else:
            out.append(_NUMBERED.sub(lambda m: numbered[int(m.group(1))], part))
    if not used_args:
        out += at_args
    return head + out if not out or not out[0].startswith("/") else out


def expand_argv(argv: Sequence[str]) -> list[str]:
    """The command line to run: ``argv`` with the user's alias expanded once (an expansion is
    not expanded again, as ``lxc`` re-runs itself with aliases off). An alias whose target
    starts with ``/`` runs that program in place of lxdlib, as ``lxc`` does."""
    try:
        new = expand(argv, load())
    except InvalidArgument as e:
        sys.stderr.write(f"Error: {e}\n")
        raise SystemExit(1) from None
    if new is None:
        return list(argv)
    if new and new[0].startswith("/"):
        try:
            os.execv(new[0], new)
        except OSError as e:
            sys.stderr.write(f"Error: Processing aliases failed: {e}\n")
            raise SystemExit(1) from None
    return new
