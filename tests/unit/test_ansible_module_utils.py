"""The desired-state rules the Ansible modules share (the collection's module_utils), and the
collection's own rule of importing no underscore name of lxdlib."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest

from ansible_collections.lxdlib.containers.plugins.module_utils import merge

COLLECTION = Path(__file__).resolve().parents[2] / "ansible_collections" / "lxdlib" / "containers"


def test_values_are_compared_as_lxdlib_stores_them() -> None:
    assert merge.wanted_config({"limits.cpu": 2, "security.nesting": True, "a": None}) == \
        {"limits.cpu": "2", "security.nesting": "true", "a": None}
    assert merge.wanted_devices({"d": {"type": "disk", "readonly": False, "x": None},
                                 "gone": None}) == \
        {"d": {"type": "disk", "readonly": "false"}, "gone": None}
    with pytest.raises(ValueError, match="mapping"):
        merge.wanted_devices({"d": "disk"})


def test_merge_leaves_alone_what_the_task_does_not_name() -> None:
    current = {"a": "1", "b": "2", "volatile.x": "v"}
    assert merge.merge_config(current, {"b": "3", "c": "4"}) == \
        {"a": "1", "b": "3", "c": "4", "volatile.x": "v"}
    assert merge.merge_config(current, {"a": None}) == {"b": "2", "volatile.x": "v"}
    assert merge.merge_config(current, {"a": "1"}) == current  # nothing to do: same dict


def test_purge_keeps_only_the_task_and_what_is_protected() -> None:
    current = {"a": "1", "volatile.x": "v"}
    keep = lambda k: k.startswith("volatile.")  # noqa: E731
    assert merge.merge_config(current, {"b": "2"}, purge=True, keep=keep) == \
        {"b": "2", "volatile.x": "v"}
    devs = {"root": {"type": "disk"}, "eth0": {"type": "nic"}}
    assert merge.merge_devices(devs, {"eth0": None}) == {"root": {"type": "disk"}}
    assert merge.merge_devices(devs, {"x": {"type": "none"}}, purge=True) == \
        {"x": {"type": "none"}}
    # a named device is replaced whole: a setting left out of the task goes
    assert merge.merge_devices({"d": {"type": "disk", "readonly": "true"}},
                               {"d": {"type": "disk"}}) == {"d": {"type": "disk"}}


def test_auto_is_met_by_the_address_picked() -> None:
    have = {"ipv4.address": "10.1.2.1/24", "ipv6.address": "none"}
    resolved = ("ipv4.address", "ipv6.address")
    assert merge.satisfied(have, {"ipv4.address": "auto"}, resolved)
    assert not merge.satisfied(have, {"ipv6.address": "auto"}, resolved)
    assert not merge.satisfied(have, {"ipv4.address": "auto"})  # only for the resolved keys
    assert merge.satisfied(have, {"ipv4.nat": None}, resolved)
    assert not merge.satisfied(have, {"ipv6.address": None}, resolved)
    assert merge.changed_keys({"a": 1, "b": 2}, {"b": 3, "c": 4}) == ["a", "b", "c"]


def test_durations_and_times() -> None:
    pytest.importorskip("ansible")
    from ansible_collections.lxdlib.containers.plugins.module_utils import common
    assert common.parse_duration("7d") == dt.timedelta(days=7)
    assert common.parse_duration("90") == dt.timedelta(seconds=90)
    assert common.parse_duration(None) is None
    with pytest.raises(ValueError):
        common.parse_duration("soon")
    assert common.parse_time("2026-01-31T12:00:00") == \
        dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)
    assert common.parse_time("2026-01-31T12:00:00Z") == \
        dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)
    assert common.plain({"t": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "l": (1,)}) == \
        {"t": "2026-01-01T00:00:00+00:00", "l": [1]}


def test_the_collection_imports_no_private_lxdlib_name() -> None:
    files = sorted(COLLECTION.rglob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lxdlib"):
                modules = [node.module or ""]
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names if a.name.startswith("lxdlib")]
                names = []
            else:
                continue
            for name in [*names, *(p for m in modules for p in m.split("."))]:
                assert not name.startswith("_"), f"{path}: imports {name}"
