"""Helpers several command modules share: ``key=value`` arguments, the ``edit`` verbs' editor
round trip and the YAML they read back, and the walk over a built
parser's subcommands (for help, suggestions and completion).

They live here, below every command module, so that no command module has to import another
(``config``, ``profile``, ``network``, ``storage``, ``image`` and the instance verbs all parse
``key=value`` lists and edit YAML the same way). Every command imports this module, so it
imports nothing heavy at its top: YAML, ``subprocess`` and ``tempfile`` load in the helpers
that use them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator

from ..errors import TYPE_CHECKING, InvalidArgument

if TYPE_CHECKING:
    from typing import Any


def parse_kv(items: list[str], what: str) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` → ``{"a": "1", "b": "x=y"}``; ``what`` names the items in errors."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise InvalidArgument(f"{what} must be key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k] = v
    return out


def device_props(items: list[str]) -> dict[str, str]:
    """A device's ``key=value`` properties as ``config device add`` and ``profile device add``
    take them, refused in lxc's words (``No value found in "x"``)."""
    for it in items:
        if "=" not in it:
            raise InvalidArgument(f'No value found in "{it}"')
    return parse_kv(items, "device property")


def edit_text(text: str) -> str:
    """New content for an ``edit`` verb: stdin when it is not a terminal, else ``$EDITOR``."""
    if not sys.stdin.isatty():
        return sys.stdin.read()
    import subprocess
    import tempfile
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w+", suffix=".yaml", delete=False) as f:
        f.write(text)
        path = f.name
    try:
        subprocess.call([*editor.split(), path])
        with open(path) as f:
            return f.read()
    finally:
        os.unlink(path)


#: Said when an ``edit`` verb reads nothing: an edit replaces the whole object, so an empty
#: document (``config edit c < /dev/null``, an emptied editor buffer) would wipe it.
EMPTY_EDIT = "the new content is empty: nothing was changed (give the whole YAML, e.g. the " \
    "output of the matching show command)"


def load_mapping(text: str) -> dict[str, Any]:
    """The YAML mapping an ``edit`` verb got back; anything else is the user's mistake, and so
    is an empty document (only comments, or nothing): it is refused, not applied as a wipe."""
    import yaml
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidArgument(f"invalid YAML: {e}") from None
    if data is None:
        raise InvalidArgument(EMPTY_EDIT)
    if not isinstance(data, dict):
        raise InvalidArgument("expected a YAML mapping")
    return data


def str_map(d: Any, what: str) -> dict[str, str]:
    """An edited ``config`` mapping (instance, profile, network, storage, image properties,
    server) as LXD's ``map[string]string`` (``config.text.text_map``)."""
    from ..config.text import text_map
    return text_map(d, what)


def str_list(d: Any, what: str) -> list[str] | None:
    """An edited list of names (``profiles``), each a string as ``scalar_text`` makes it;
    ``None`` when the document has none (``null`` or left out)."""
    from ..config.text import scalar_text
    if d is None:
        return None
    if not isinstance(d, list):
        raise InvalidArgument(f"{what} must be a list")
    return [scalar_text(v, what) if v is not None else "" for v in d]


def text_field(data: dict[str, Any], key: str) -> str | None:
    """A top-level text field of an edited document (``description``): ``None`` when it is
    left out, ``""`` for null (as LXD reads null into a string), else ``scalar_text``."""
    from ..config.text import scalar_text
    if key not in data:
        return None
    value = data[key]
    return "" if value is None else scalar_text(value, key)


def devices_map(d: Any) -> dict[str, dict[str, str]]:
    """An edited ``devices`` mapping: each device's keys as strings, as ``str_map`` does."""
    from ..config.text import scalar_text
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise InvalidArgument("devices must be a mapping")
    return {scalar_text(k, "device name"): str_map(v, f"device {k}") for k, v in d.items()}


# argparse has no public way to list a parser's subcommands: the three functions below are the
# only places that read its internals (``_actions``, ``_SubParsersAction`` and its
# ``_choices_actions``), stable since Python 3.2 and read the same way by shtab and argcomplete.
def subparsers_action(p: argparse.ArgumentParser) -> Any:
    """The ``add_subparsers`` action of ``p`` (its ``choices`` maps each word, aliases too, to
    its parser), or None."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def verb_helps(p: argparse.ArgumentParser) -> list[Any]:
    """The actions that ``p``'s help lists as its verbs (one per verb, not per alias): their
    ``dest`` is the verb, their ``help`` its one-line description, which can be filled in."""
    sub = subparsers_action(p)
    return list(sub._choices_actions) if sub is not None else []


def fill_verb_helps(p: argparse.ArgumentParser, describe: Callable[[str], str | None]) -> None:
    """Give each verb of ``p`` that its module registered without ``help=`` the line
    ``describe(verb)`` returns, so that ``p``'s help lists every verb with its description
    (argparse lists only those registered with one)."""
    sub = subparsers_action(p)
    if sub is None:
        return
    have = {a.dest: a for a in sub._choices_actions}
    names: dict[int, list[str]] = {}
    for name, child in sub.choices.items():
        names.setdefault(id(child), []).append(name)
    listed = []
    for main, *aliases in names.values():
        action = have.get(main)
        if action is None:
            line = describe(main)
            if line is None and not aliases:  # a hidden command: not listed
                continue
            action = sub._ChoicesPseudoAction(main, aliases, line or "")
        elif not action.help:
            action.help = describe(main) or ""
        listed.append(action)
    sub._choices_actions[:] = listed


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
         ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under ``parser`` with its command path (``("image", "delete")``); an alias
    (``image rm``) is visited once, under its main word."""
    yield path, parser
    sub = subparsers_action(parser)
    if sub is None:
        return
    seen: set[int] = set()
    for name, child in sub.choices.items():
        if id(child) not in seen:
            seen.add(id(child))
            yield from walk(child, (*path, name))
