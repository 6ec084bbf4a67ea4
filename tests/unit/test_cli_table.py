"""The command table: ``COMMANDS`` says which module registers each command word, so that a
command line builds only its own command's parser. These tests hold the table to what the
modules register (a command added without its line fails here), and check the help every
command gets and LXD's reply to a mistyped command."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import pytest

import lxdlib.cli
from lxdlib.cli import helptext
from lxdlib.cli.common import subparsers_action, verb_helps, walk
from lxdlib.cli.main import ALIASES, COMMANDS, HIDDEN, MODULES, build_parser, distance, main


@pytest.fixture(scope="module")
def full() -> argparse.ArgumentParser:
    return build_parser("*")


def shape(parser: argparse.ArgumentParser) -> dict[tuple[str, ...], set[str]]:
    """Each command path under ``parser`` with the options its parser takes."""
    return {path: {o for a in p._actions for o in a.option_strings}
            for path, p in walk(parser)}


def test_every_command_module_is_listed() -> None:
    """A new command module (one with ``register``) must be in MODULES, or its commands would
    never be built."""
    found = set()
    for info in pkgutil.iter_modules(lxdlib.cli.__path__):
        module = importlib.import_module(f"lxdlib.cli.{info.name}")
        if callable(getattr(module, "register", None)):
            found.add(info.name)
    assert found == set(MODULES)


def test_table_matches_registered_commands(full: argparse.ArgumentParser) -> None:
    sub = subparsers_action(full)
    assert set(sub.choices) == set(COMMANDS) | set(ALIASES)
    for alias, word in ALIASES.items():
        assert sub.choices[alias] is sub.choices[word]


@pytest.mark.parametrize("word", sorted(set(COMMANDS) | set(ALIASES)))
def test_command_alone_is_the_whole_command(full: argparse.ArgumentParser, word: str) -> None:
    """Built alone, a command has every verb and option it has in the whole parser: the
    table names every module that adds to it (``housekeeping``: images and backup)."""
    alone = subparsers_action(build_parser(word)).choices[word]
    assert shape(alone) == shape(subparsers_action(full).choices[word])


def test_every_command_has_a_description(full: argparse.ArgumentParser) -> None:
    missing = [" ".join(path) for path, p in walk(full) if path and not p.description]
    assert missing == []
    for path, p in walk(full):  # every verb a group lists has its line
        assert all(a.help for a in verb_helps(p)), path


def test_helptext_names_existing_commands(full: argparse.ArgumentParser) -> None:
    paths = {" ".join(path) for path, _ in walk(full)}
    assert set(helptext.VERBS) - paths == set()
    assert set(helptext.EXAMPLES) - paths == set()
    assert set(helptext.USAGE) - paths == set()
    for word in ("launch", "exec", "list", "config", "snapshot", "file", "image", "profile",
                 "network", "storage"):
        assert word in helptext.EXAMPLES


def test_top_help_lists_commands_without_importing_them(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out == out
    for word, (_, line) in COMMANDS.items():
        if word in HIDDEN:  # run by programs (``serve`` over ssh), not listed
            assert f"  {word}  " not in out
            continue
        assert f"  {word}  " in out and line in out


def test_group_help_lists_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["image", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "delete (rm)" in out and "delete images" in out and "Examples:" in out
    assert main(["help", "config", "set"]) == 0
    assert "limits.memory" in capsys.readouterr().out
    assert main(["profile"]) == 0  # a group without a verb: its help
    assert "set keys of a profile" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "word", "where", "near"), [
    (["lauch"], "lauch", "lxdlib", ["launch"]),
    (["LAUNCH"], "LAUNCH", "lxdlib", ["launch"]),
    (["--root", "/nowhere", "lauch", "c1"], "lauch", "lxdlib", ["launch"]),
    (["help", "lauch"], "lauch", "lxdlib", ["launch"]),
    # lxc 5.0.2's own answers (recorded): prefix or two edits, in name order
    (["resume"], "resume", "lxdlib", ["rename"]),
    (["lis"], "lis", "lxdlib", ["alias", "list"]),
    (["st"], "st", "lxdlib", ["list", "start", "stop", "storage"]),
    # a group's unknown verb: no suggestions, as lxc
    (["image", "lsit"], "lsit", "lxdlib image", []),
    (["storage", "volume", "craete", "p"], "craete", "lxdlib storage volume", []),
    (["zzzzzz"], "zzzzzz", "lxdlib", []),
])
def test_unknown_command_suggests(capsys: pytest.CaptureFixture[str], argv: list[str],
                                  word: str, where: str, near: list[str]) -> None:
    """LXD's wording: the unknown word, where, the nearest commands (tab-indented, then a
    blank line); exit 1."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    expected = f'Error: unknown command "{word}" for "{where}"\n'
    if near:
        expected += "\nDid you mean this?\n" + "".join(f"\t{n}\n" for n in near) + "\n"
    assert err == expected


@pytest.mark.parametrize(("a", "b", "d"), [
    ("", "", 0), ("abc", "", 3), ("", "ab", 2), ("lauch", "launch", 1), ("resume", "rename", 2),
    ("resume", "remote", 3), ("kitten", "sitting", 3), ("st", "list", 2)])
def test_distance(a: str, b: str, d: int) -> None:
    assert distance(a, b) == d == distance(b, a)


def test_a_cell_reaches_no_terminal_as_control_characters() -> None:
    """An image's description (a tarball's or a remote's word) with ``ESC ] 0 ;`` set the
    admin's window title from ``image list``; a CR rewrote the line. Each such character is
    spelled out, in both table formats; a line break still makes lines of a cell."""
    from lxdlib.cli.output import compact, table, visible
    evil = "evil\x1b]0;pwned\x07\rX\u202e\x9b"
    for out in (table(["D"], [[evil + "\nnext"]]), compact(["D"], [[evil + "\nnext"]])):
        assert "\x1b" not in out and "\r" not in out and "\x07" not in out
        assert "\u202e" not in out and "\x9b" not in out
        assert "evil\\x1b]0;pwned\\x07\\x0dX\\u202e\\x9b" in out
        assert "next" in out.splitlines()[-2 if out.startswith("+") else -1]
    assert visible("caf\u00e9 ok") == "caf\u00e9 ok"


def test_a_cell_keeps_its_spaces() -> None:
    """Spaces other than ASCII's are not printable to Python but are spaces to a terminal
    (LXD prints them): a French description's no-break space before its colon, an ideographic
    space, stay as they are in both table formats; line separators are still spelled out."""
    from lxdlib.cli.output import compact, table, visible
    text = "Serveur\u00a0: web\u202f!\u3000x"
    for out in (table(["D"], [[text]]), compact(["D"], [[text]])):
        assert text in out
    assert visible("a\u2028b\u2029c\x85") == "a\\u2028b\\u2029c\\x85"
