"""The ``edit`` verbs read YAML back as LXD's typed fields do: scalars as their text, ``null``
in a config map as "unset", lists and mappings where a string belongs refused with the key."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from lxdlib.cli.common import devices_map, str_list, str_map, text_field
from lxdlib.errors import InvalidArgument, InvalidConfig


@pytest.mark.parametrize(("doc", "expected"), [
    ("{user.a: x}", {"user.a": "x"}),
    ("{user.a: true, user.b: false}", {"user.a": "true", "user.b": "false"}),
    ("{limits.cpu: 5, user.f: 1.5}", {"limits.cpu": "5", "user.f": "1.5"}),
    ("{user.d: 2001-01-01}", {"user.d": "2001-01-01"}),
    ("{user.c: null, user.e: ''}", {"user.e": ""}),  # null: the key is left out (unset)
    ("{5: x}", {"5": "x"}),
    ("null", {}),
])
def test_config_scalars_become_their_text(doc: str, expected: dict[str, str]) -> None:
    assert str_map(yaml.safe_load(doc), "config") == expected


@pytest.mark.parametrize(("doc", "key"), [
    ("{user.a: [1, 2]}", "user.a"),
    ("{user.b: {x: 1}}", "user.b"),
    ("{dns.domain: !!binary aGk=}", "dns.domain"),
])
def test_config_lists_and_mappings_are_refused_naming_the_key(doc: str, key: str) -> None:
    with pytest.raises(InvalidConfig, match="must be a string, not") as e:
        str_map(yaml.safe_load(doc), "config")
    assert e.value.key == key


@pytest.mark.parametrize("doc", ["[1, 2]", "x", "{null: x}"])
def test_config_not_a_mapping_is_refused(doc: str) -> None:
    with pytest.raises(InvalidArgument):
        str_map(yaml.safe_load(doc), "config")


@pytest.mark.parametrize(("doc", "expected"), [
    ("{}", None), ("{description: null}", ""), ("{description: hi}", "hi"),
    ("{description: 5}", "5"), ("{description: true}", "true"),
])
def test_description_text(doc: str, expected: str | None) -> None:
    assert text_field(yaml.safe_load(doc), "description") == expected


@pytest.mark.parametrize("doc", ["{description: [1]}", "{description: {a: 1}}"])
def test_description_list_or_mapping_refused(doc: str) -> None:
    with pytest.raises(InvalidConfig, match="'description': must be a string, not"):
        text_field(yaml.safe_load(doc), "description")


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), (["default", 5], ["default", "5"]),
])
def test_profiles_list(value: Any, expected: list[str] | None) -> None:
    assert str_list(value, "profiles") == expected


@pytest.mark.parametrize("value", ["default", [[1]], {"a": 1}])
def test_profiles_not_a_list_of_names_refused(value: Any) -> None:
    with pytest.raises(InvalidArgument):
        str_list(value, "profiles")


def test_devices_values_are_text_and_nested_lists_refused() -> None:
    devs = yaml.safe_load("{e0: {type: nic, mtu: 1500, hwaddr: null}}")
    assert devices_map(devs) == {"e0": {"type": "nic", "mtu": "1500"}}
    with pytest.raises(InvalidConfig, match="'path': must be a string, not a list"):
        devices_map(yaml.safe_load("{d: {type: disk, path: [1]}}"))
