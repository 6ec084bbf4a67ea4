"""The `lxdlib` words LXD's `lxc` has (issue 13): alias expansion, `-c` columns, formats, the
progress line and the parsers of the new commands — without a root."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from lxdlib.cli import output, useraliases
from lxdlib.cli.images import IMAGE_DEFAULT_COLUMNS, image_cells
from lxdlib.cli.instances import loop_size
from lxdlib.cli.main import build_parser, hoist_global_flags, main
from lxdlib.cli.storage import volume_columns
from lxdlib.errors import InvalidArgument
from lxdlib.progress import LineProgress, byte_size

# -- alias expansion ----------------------------------------------------------------------------


def test_alias_appends_the_rest_when_it_has_no_args_marker() -> None:
    assert useraliases.expand(["ll", "c1"], {"ll": "list -c ns46S"}) == \
        ["list", "-c", "ns46S", "c1"]


def test_alias_args_and_numbered_args() -> None:
    aliases = {"cg": "config get @ARG1@ limits.@ARG2@", "sh2": "exec @ARGS@ -- sh"}
    assert useraliases.expand(["cg", "c1", "memory", "x"], aliases) == \
        ["config", "get", "c1", "limits.memory", "x"]
    assert useraliases.expand(["sh2", "c1"], aliases) == ["exec", "c1", "--", "sh"]


def test_alias_keeps_leading_options_and_their_values() -> None:
    assert useraliases.expand(["--root", "/r", "-q", "ll"], {"ll": "list"}) == \
        ["--root", "/r", "-q", "list"]
    # a --root value that looks like an alias is not one
    assert useraliases.expand(["--root", "ll", "list"], {"ll": "version"}) is None


def test_alias_multi_word_keys_prefer_the_longest() -> None:
    aliases = {"image": "version", "image ls": "image list -c lf"}
    assert useraliases.expand(["image", "ls", "x"], aliases) == \
        ["image", "list", "-c", "lf", "x"]


def test_builtin_shell_alias_and_user_override() -> None:
    assert useraliases.expand(["shell", "c1"], {}) == ["exec", "c1", "--", "su", "-l"]
    assert useraliases.expand(["shell", "c1"], {"shell": "exec @ARGS@ -- sh"}) == \
        ["exec", "c1", "--", "sh"]
    assert useraliases.expand(["list"], {}) is None


def test_alias_referring_past_the_arguments_is_refused() -> None:
    with pytest.raises(InvalidArgument, match='Found alias "two" references an argument'):
        useraliases.expand(["two", "a"], {"two": "config get @ARG1@ @ARG2@"})


def test_alias_file_round_trip_keeps_other_keys(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LXDLIB_CONF", str(tmp_path / "conf"))
    assert useraliases.config_path() == tmp_path / "conf" / "config.yml"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yml").write_text("default-remote: local\n")
    useraliases.save({"ll": "list"})
    data = yaml.safe_load((tmp_path / "conf" / "config.yml").read_text())
    assert data == {"default-remote": "local", "aliases": {"ll": "list"}}
    assert useraliases.load() == {"ll": "list"}
    monkeypatch.setenv("LXDLIB_CONF", str(tmp_path / "mine.yaml"))
    assert useraliases.config_path() == tmp_path / "mine.yaml"


def test_alias_commands_and_expansion_through_main(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LXDLIB_CONF", str(tmp_path))
    assert main(["alias", "add", "v", "version"]) == 0
    assert main(["alias", "add", "v", "list"]) == 1
    assert capsys.readouterr().err == "Error: Alias v already exists\n"
    assert main(["alias", "list", "-f", "csv"]) == 0
    assert capsys.readouterr().out == "v,version\n"
    assert main(["v"]) == 0  # expanded before parsing
    assert capsys.readouterr().out.startswith("Client version: ")
    assert main(["alias", "rename", "v", "w"]) == 0
    assert main(["alias", "remove", "v"]) == 1
    assert capsys.readouterr().err == "Error: Alias v doesn't exist\n"
    assert main(["alias", "rm", "w"]) == 0
    assert useraliases.load() == {}


def test_alias_commands_at_once_keep_each_others_changes(tmp_path: Path) -> None:
    """Each ``alias add`` reads the file, adds its alias and writes the file back: without a
    lock around the three, concurrent ones overwrote each other (1 of 12 kept, seen)."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "LXDLIB_CONF": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-m", "lxdlib", "alias", "add", f"a{i}",
                               "version"], env=env) for i in range(16)]
    assert [p.wait(60) for p in procs] == [0] * 16
    assert useraliases.load(tmp_path / "config.yml") == {f"a{i}": "version" for i in range(16)}
    procs = [subprocess.Popen([sys.executable, "-m", "lxdlib", "alias", "remove", f"a{i}"],
                              env=env) for i in range(0, 16, 2)]
    assert [p.wait(60) for p in procs] == [0] * 8
    assert useraliases.load(tmp_path / "config.yml") == {
        f"a{i}": "version" for i in range(1, 16, 2)}


# -- columns and formats ------------------------------------------------------------------------


def test_columns_as_lxd_reads_them() -> None:
    assert output.columns("lf", "lLf") == ["l", "f"]
    assert output.columns("l,f", "lLf") == ["l", "f"]
    with pytest.raises(InvalidArgument, match="Empty column entry"):
        output.columns("l,", "lf")
    with pytest.raises(InvalidArgument, match="Unknown column shorthand char 'x' in 'lx'"):
        output.columns("f,lx", "lf")


def test_a_wrong_format_is_refused_with_lxds_words() -> None:
    with pytest.raises(InvalidArgument, match=r'^Invalid format "xml"$'):
        output.emit("xml", ["A"], [["1"]], [])


def test_image_cells_match_lxd() -> None:
    cells = image_cells(["busybox", "bb", "busybox/amd64"], "ab" * 32, False, "BusyBox",
                        "x86_64", "container", 3 * 1024 * 1024 + 1024 * 20, None)
    assert cells["l"] == "bb (2 more)"
    assert cells["L"] == "bb\nbusybox\nbusybox/amd64"
    assert cells["f"] == "ab" * 6 and cells["F"] == "ab" * 32
    assert cells["p"] == "no" and cells["t"] == "CONTAINER" and cells["s"] == "3.02MB"
    assert list(IMAGE_DEFAULT_COLUMNS) == ["l", "f", "p", "d", "a", "t", "s", "u"]


def test_storage_volume_columns() -> None:
    assert volume_columns("etndcuL") == ["t", "n", "d", "c", "u"]
    assert volume_columns("nU") == ["n", "U"]
    with pytest.raises(InvalidArgument, match="Can't specify column L when not clustered"):
        volume_columns("nL")


def test_image_list_parses_columns_and_format() -> None:
    a = build_parser("*").parse_args(["image", "list", "-c", "lf", "--format", "csv"])
    assert (a.columns, a.format) == ("lf", "csv")
    a = build_parser("*").parse_args(["image", "ls"])
    assert (a.columns, a.format) == ("lfpdatsu", "table")


@pytest.mark.parametrize("argv", [
    ["rename", "a", "b"], ["version"], ["version", "images:"], ["alias", "ls"],
    ["operation", "list", "-f", "json"], ["operation", "show", "x"], ["operation", "rm", "x"],
    ["project", "list", "-f", "yaml"], ["project", "show", "default"],
    ["warning", "list", "-c", "us", "-f", "csv"], ["profile", "list", "-f", "compact"],
    ["network", "list", "-f", "json"], ["storage", "list", "-f", "csv"],
    ["storage", "volume", "list", "default", "-c", "nt", "-f", "csv"],
    ["remote", "list", "-f", "yaml"], ["image", "alias", "list", "-f", "csv"],
])
def test_new_words_parse(argv: list[str]) -> None:
    assert build_parser("*").parse_args(argv).func is not None


def test_operation_and_warning_lists_are_lxds_empty_ones(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LXDLIB_CONF", str(tmp_path))  # no alias of the user's in the way
    assert main(["operation", "list"]) == 0
    assert capsys.readouterr().out == (
        "+----+------+-------------+--------+------------+---------+\n"
        "| ID | TYPE | DESCRIPTION | STATUS | CANCELABLE | CREATED |\n"
        "+----+------+-------------+--------+------------+---------+\n")
    assert main(["operation", "list", "-f", "json"]) == 0
    assert capsys.readouterr().out == "[]\n"
    assert main(["operation", "show", "abc"]) == 1
    assert capsys.readouterr().err == "Error: Operation not found\n"
    assert main(["warning", "list", "-f", "csv"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["warning", "list", "-c", "L"]) == 1
    assert "Can't specify column L" in capsys.readouterr().err


# -- progress -----------------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_byte_size_is_lxds_decimal_units() -> None:
    assert byte_size(999) == "999B"
    assert byte_size(12_300_000) == "12.30MB"
    assert byte_size(1500) == "1.50kB"


def test_progress_line_on_a_terminal_only() -> None:
    piped = io.StringIO()
    bar = LineProgress("Pushing a to /a", stream=piped)
    bar(50, 100)
    bar.done()
    assert piped.getvalue() == ""
    tty = _Tty()
    bar = LineProgress("Pushing a to /a", stream=tty)
    bar(100, 100)
    assert tty.getvalue().startswith("\rPushing a to /a: 100% (")
    assert tty.getvalue().endswith("B/s)")
    bar.done()
    assert tty.getvalue().endswith("\r")
    quiet = _Tty()
    LineProgress("x", stream=quiet, quiet=True)(1, 2)
    assert quiet.getvalue() == ""


def test_progress_text_without_a_total() -> None:
    bar = LineProgress("Pulling /tmp/x from /x", stream=io.StringIO())
    assert bar.text(12_300_000, 0, 1.0) == "Pulling /tmp/x from /x: 12.30MB (12.30MB/s)"
    assert bar.text(45, 100, 1.0) == "Pulling /tmp/x from /x: 45% (45B/s)"


# -- lxc list's columns, filters and the compact and csv formats (issue 13, second look) ---------


def test_list_columns_custom_and_every_letter() -> None:
    from lxdlib.cli import listcols
    cols = listcols.parse("nsmMuDfFp,config:limits.memory,image.os:OS:0,devices:root.path::3",
                          False)
    assert listcols.letters(cols) == "nsmMuDfFp"
    assert listcols.headers(cols)[2:] == ["MEMORY USAGE", "MEMORY USAGE%", "CPU USAGE",
                                          "DISK USAGE", "BASE IMAGE", "BASE IMAGE", "PID",
                                          "LIMITS MEMORY", "OS", ""]
    custom = [c for c in cols if isinstance(c, listcols.Custom)]
    local, expanded = {"image.os": "busybox"}, {"limits.memory": "64MiB", "image.os": "x"}
    devs = {"root": {"path": "/"}}
    assert [c.cell(local, expanded, {}, devs) for c in custom] == ["64MiB", "bu", "/"]
    assert listcols.letters(listcols.parse(None, False)) == "ns46tS"
    assert listcols.letters(listcols.parse(None, True)) == "nsacPt"
    for spec, message in [("L", "Can't specify column L when not clustered"),
                          ("nx.y", "Invalid config key 'nx.y' in 'nx.y'"),
                          ("image.os:a:b:c", "too many fields"),
                          ("image.os:X:abc", "Invalid max width (must be an integer) 'abc'"),
                          ("image.os:", "empty string is only allowed when defining maxWidth")]:
        with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
            listcols.parse(spec, False)
    with pytest.raises(InvalidArgument, match="Can't specify --fast with --columns"):
        listcols.parse("n", True)


def test_list_filters_as_lxds_should_show() -> None:
    from lxdlib.cli import listcols
    facts = {"status": "Running", "type": "container", "architecture": "x86_64",
             "location": "none"}
    cfg = {"image.os": "busybox", "limits.memory": "64MiB"}
    net = {"eth0": {"addresses": [{"family": "inet", "address": "10.1.2.3"}]}}

    def shows(*filters: str) -> bool:
        return listcols.matches(filters, "web1", facts, cfg, net)
    assert shows("status=running") and shows("STATUS=stopped,running") and shows("type=container")
    assert not shows("status=stopped")
    assert shows("image.os=bus.*") and shows("i.o=busybox") and not shows("image.os=bus")
    assert shows("architecture=X86_64") and shows("ipv4=10.1.0.0/16")
    assert not shows("ipv4=10.2.0.0/16")
    assert shows("web") and shows("w.b1") and not shows("eb1") and not shows("we[")
    assert not shows("user.x=1")


def test_compact_and_csv_as_lxds_client_writes_them() -> None:
    assert output.compact(["NAME", "STATE", "IPV4"], [["c1", "RUNNING", "10.0.0.2 (eth0)"]]) == (
        "  NAME   STATE        IPV4        \n  c1    RUNNING  10.0.0.2 (eth0)  ")
    assert output.compact(["NAME", "IPV4"], [["c1", "a\nb"]]) == (
        "  NAME  IPV4  \n  c1    a     \n        b     ")
    assert output.to_csv([["c1"], [""], ["", ""]]) == 'c1\n\n,'


# -- YAML as LXD writes it (gopkg.in/yaml.v2) ---------------------------------------------------

@pytest.mark.parametrize(("value", "written"), [
    ("true", '"true"'), ("", '""'), ("1000000", '"1000000"'), ("0", '"0"'),
    ("y", '"y"'), ("n", '"n"'), ("yes", '"yes"'), ("No", '"No"'), ("on", '"on"'),
    ("off", '"off"'), ("null", '"null"'), ("~", '"~"'), ("1e3", '"1e3"'), ("0x1f", '"0x1f"'),
    ("1_000", '"1_000"'), ("1:20", '"1:20"'), ("2001-01-01", '"2001-01-01"'), (".5", '".5"'),
    ("-.inf", '"-.inf"'), ("<<", '"<<"'), ("=", '"="'),
    ("RUNNING", "RUNNING"), ("hello world", "hello world"), ("00:16:3e:4d:3a:d3",
                                                              "00:16:3e:4d:3a:d3"),
    ("1.2.3", "1.2.3"), ("/1.0/instances/c1", "/1.0/instances/c1"),
    ('[{"Isuid":true}]', "'[{\"Isuid\":true}]'"), ("a: b", "'a: b'"), ("-", "'-'"),
])
def test_show_yaml_quotes_as_go_yaml_v2(value: str, written: str) -> None:
    """What needs quotes gets yaml.v2's double quotes, with YAML 1.1's y/n/on/off and Go's
    number spellings counted as non-strings; what cannot be plain for its syntax gets single
    quotes, as yaml.v2's emitter gives it; all of it reads back as the same string."""
    text = output.dump_yaml({"k": value})
    assert text == f"k: {written}\n"
    assert yaml.safe_load(text) == {"k": value}


def test_show_yaml_keys_multiline_and_non_strings() -> None:
    data = {"y": "x", "config": {"user.a": "a\nb\n"}, "n": None, "b": True, "i": 5,
            "f": 1.5, "l": ["a", "no"], "m": {}, "e": []}
    text = output.dump_yaml(data)
    assert text == ('"y": x\nconfig:\n  user.a: |\n    a\n    b\n"n": null\nb: true\ni: 5\n'
                    'f: 1.5\nl:\n- a\n- "no"\nm: {}\ne: []\n')
    assert yaml.safe_load(text) == data


@pytest.mark.parametrize(("given", "size"), [
    ("2", "2GB"), ("30", "30GB"), ("512MiB", "512MiB"), ("5GiB", "5GiB"), (None, "5GiB")])
def test_init_storage_create_loop_takes_a_bare_number_as_gigabytes(given: str | None,
                                                                  size: str) -> None:
    """``lxd init --auto --storage-create-loop 2`` makes a 2 GB loop file; lxdlib read 2 bytes
    (and refused it as too small)."""
    assert loop_size(given) == size


@pytest.mark.parametrize("content", [b"\xff\xfe\x00", b"[1]\n", b"aliases: [1]\n", None])
def test_an_unreadable_alias_file_is_an_error_naming_it(tmp_path: Path,
                                                        content: bytes | None) -> None:
    """A config file that is not text, of another shape, or a directory: every command says
    which file it cannot read (no traceback), and ``alias add`` does not write it over."""
    path = tmp_path / "config.yml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(InvalidArgument, match=r"cannot read .*config\.yml"):
        useraliases.load(path)
    with pytest.raises(InvalidArgument, match=r"cannot read .*config\.yml"):
        useraliases.modify(lambda aliases: aliases.update(x="version"), path)
    assert path.is_dir() or path.read_bytes() == content


# -- global flags anywhere, as lxc's ------------------------------------------------------------


def test_global_flags_after_the_command_are_taken_as_lxc_takes_them() -> None:
    assert hoist_global_flags(["launch", "busybox", "c1", "-q"]) == \
        ["-q", "launch", "busybox", "c1"]
    assert hoist_global_flags(["--root", "/r", "start", "c1", "--debug", "-v"]) == \
        ["--root", "/r", "--debug", "-v", "start", "c1"]
    # after `--` they are the instance's command's arguments
    assert hoist_global_flags(["exec", "c1", "-q", "--", "echo", "-q"]) == \
        ["-q", "exec", "c1", "--", "echo", "-q"]
    assert hoist_global_flags(["list", "-c", "ns"]) == ["list", "-c", "ns"]
