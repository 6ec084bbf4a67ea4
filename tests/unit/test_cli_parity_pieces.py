"""The pure pieces of the CLI's LXD parity (issue 13): empty edits refused, LXD's SI units for
network counters, exec's messages, the instance state's shape for a stopped instance."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from lxdlib.cli import common
from lxdlib.cli import instances as cli
from lxdlib.errors import InvalidArgument
from lxdlib.listing import Listed
from lxdlib.record import InstanceRecord


@pytest.mark.parametrize("text", ["", "\n", "   \n", "# only a comment\n", "---\n"])
def test_an_empty_edit_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        common.load_mapping(text)


def test_an_explicit_empty_mapping_is_still_a_mapping() -> None:
    assert common.load_mapping("{}") == {}
    assert common.load_mapping("config: {}\n") == {"config": {}}
    with pytest.raises(InvalidArgument, match="mapping"):
        common.load_mapping("- a\n")


@pytest.mark.parametrize(("n", "text"), [
    (0, "0B"), (999, "999B"), (1000, "1.00kB"), (2304, "2.30kB"), (1_500_000, "1.50MB"),
    (999_999_999, "1000.00MB"), (3 * 10**12, "3.00TB"),
])
def test_si_size_matches_lxds_counters(n: int, text: str) -> None:
    assert cli.si_size(n) == text


def test_exec_messages_are_lxds() -> None:
    assert cli.EXEC_ERRORS == {127: "Command not found", 126: "Command not executable"}


def test_stopped_instance_state_has_lxds_zeros() -> None:
    rec = InstanceRecord(name="c1", architecture="x86_64",
                         created_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC), pool="default")
    state = cli.instance_state(Listed("c1", "STOPPED", -1, rec), None, {"memory_usage": 5}, {},
                               {"c1": None})
    assert state == {"status": "Stopped", "status_code": 102, "disk": {},
                     "memory": {"usage": 0, "usage_peak": 0, "swap_usage": 0,
                                "swap_usage_peak": 0},
                     "network": None, "pid": 0, "processes": 0, "cpu": {"usage": 0}}


@pytest.mark.parametrize(("usages", "disk"), [
    ({"c1": 4096}, {"rootfs": {"usage": 4096}}),  # the listing's figure, under the root's name
    ({"c1": None}, {}),  # the pool cannot say (btrfs quotas off): no entry, as LXD
    ({}, {}),  # not asked of the pool (deleted meanwhile)
])
def test_disk_usage_comes_from_the_listings_figures(usages: dict[str, int | None],
                                                    disk: dict[str, Any]) -> None:
    """A listing asks each pool once for all its volumes (``disk_usages``); an instance's
    state takes its figure from there, under the root disk's name."""
    rec = InstanceRecord(name="c1", architecture="x86_64",
                         created_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC), pool="default")
    devices = {"rootfs": {"type": "disk", "path": "/", "pool": "default"},
               "eth0": {"type": "nic", "network": "lxdbr0"}}
    state = cli.instance_state(Listed("c1", "STOPPED", -1, rec), None, {}, devices, usages)
    assert state["disk"] == disk
    # without a root disk among the devices (its profile gone) there is no entry to name
    assert cli.instance_state(Listed("c1", "STOPPED", -1, rec), None, {}, {}, usages)["disk"] == {}




# -- lxc's flags beyond the seed article (tests/data/lxd/cli: the recorded words) ---------------

@pytest.mark.parametrize(("argv", "kept"), [
    (["--project", "default", "list"], ["list"]),
    (["list", "--project=default", "-c", "n"], ["list", "-c", "n"]),
    (["--force-local", "list", "--force-local"], ["list"]),
    (["exec", "c1", "--", "echo", "--project", "x"], ["exec", "c1", "--", "echo", "--project",
                                                      "x"]),
    (["info", "c1", "--project", "nope"], "Project not found"),
    (["list", "--project"], "flag needs an argument: --project"),
])
def test_lxcs_no_op_globals_are_dropped(argv: list[str], kept: list[str] | str) -> None:
    from lxdlib.cli import main
    assert main.drop_lxc_globals(argv) == kept


@pytest.mark.parametrize(("message", "said"), [
    ("argument --user: invalid int value: 'abc'",
     'invalid argument "abc" for "--user" flag: strconv.ParseUint: parsing "abc": invalid '
     "syntax"),
    ("argument --timeout: invalid float value: 'x'",
     'invalid argument "x" for "--timeout" flag: strconv.ParseInt: parsing "x": invalid syntax'),
    ("argument -f/--force: expected one argument", "flag needs an argument: --force"),
])
def test_number_flags_are_refused_in_gos_words(message: str, said: str) -> None:
    from lxdlib.cli import main
    assert main._lxc_flag_error(message) == said


def test_all_projects_puts_the_project_column_first() -> None:
    from lxdlib.cli import listcols
    assert listcols.parse(None, False, True) == list("ens46tS")
    assert listcols.parse("ns", False, True) == ["n", "s"]
    assert listcols.parse(None, False) == list("ns46tS")


def test_target_is_refused_in_lxds_words() -> None:
    """Every command ``TARGET_REFUSALS`` names takes ``--target`` and refuses it; an instance
    named or not picks the words where LXD's depend on it."""
    from lxdlib.cli import main
    cases = [(["info", "c1", "--target", "n1"], "--target cannot be used with instances"),
             (["info", "--target", "n1"], main._NOT_CLUSTER),
             (["config", "get", "c1", "user.x", "--target", "n1"], main._INSTANCES),
             (["config", "get", "core.https_address", "--target", "n1"], main._NOT_CLUSTER),
             (["config", "set", "user.x=1", "--target", "n1"], main._NOT_CLUSTER),
             (["storage", "volume", "show", "default", "v1", "--target=n1"], main._NO_MEMBER),
             (["move", "c1", "c2", "--target", "n1"], "The source LXD server is not clustered"),
             (["info", "c1"], None)]
    for argv, said in cases:
        args = main.build_parser(argv[0]).parse_args(argv)
        assert main.target_refusal(args) == said, argv
    parser = main.build_parser("*")
    from lxdlib.cli.common import walk
    taking = {path for path, p in walk(parser)
              if any("--target" in a.option_strings for a in p._actions)}
    assert set(main.TARGET_REFUSALS) | {("init",), ("launch",)} == taking
