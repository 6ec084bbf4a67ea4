"""Profile expansion (LXD's ExpandInstanceConfig/Devices) and the reference acceptance items."""

from __future__ import annotations

import pytest

from lxdlib.config.devices import validate_device
from lxdlib.config.expand import (
    ProfileData,
    expand,
    expand_config,
    expand_devices,
    override_device,
    profiles_using,
    resolve_profile_list,
    root_disk,
)
from lxdlib.config.schema import validate_instance_config
from lxdlib.errors import AlreadyExists, InvalidArgument, InvalidConfig, InvalidName, NotFound

A = ProfileData("A", {"x": "1"}, {"d": {"type": "disk", "path": "/a", "source": "/src"}})
B = ProfileData("B", {"x": "2"}, {"d": {"type": "disk", "path": "/b", "source": "/src"}})
DEFAULT = ProfileData(
    "default", {},
    {"root": {"type": "disk", "path": "/", "pool": "default"},
     "eth0": {"type": "nic", "network": "lxdbr0", "name": "eth0"}},
)


# -- ref §13 item 1 -----------------------------------------------------------------------------
def test_reference_item_1() -> None:
    config, devices = expand([A, B], {"y": "3"}, {})
    assert config == {"x": "2", "y": "3"}
    assert devices["d"]["path"] == "/b"
    _, devices = expand([A, B], {"y": "3"}, {"d": {"type": "none"}})
    assert "d" not in devices
    config, devices = expand([B, A], {"y": "3"}, {})
    assert config["x"] == "1" and devices["d"]["path"] == "/a"


# -- ref §13 item 2 -----------------------------------------------------------------------------
def test_reference_item_2_devices_replace_whole() -> None:
    local = {"root": {"size": "5GB"}}
    _, devices = expand([DEFAULT], {}, local)
    assert devices["root"] == {"size": "5GB"}  # not merged with the profile's root
    with pytest.raises(InvalidConfig, match="Missing device type"):
        validate_device("root", local["root"])
    with pytest.raises(InvalidConfig, match="No root disk device found"):
        root_disk(devices)


# -- ref §13 item 3 (the pure part: the profile list) ------------------------------------------
@pytest.mark.parametrize(
    ("requested", "expected"),
    [(None, ["default"]), ([], []), (["a", "b"], ["a", "b"]), (("b", "a"), ["b", "a"]),
     (["default", "docker"], ["default", "docker"])],
)
def test_resolve_profile_list(requested: list[str] | None, expected: list[str]) -> None:
    assert resolve_profile_list(requested) == expected


def test_resolve_profile_list_duplicate() -> None:
    with pytest.raises(InvalidArgument) as exc:
        resolve_profile_list(["default", "x", "default"])
    assert str(exc.value) == "Duplicate profile found in request"
    with pytest.raises(InvalidArgument, match="Duplicate profile found in request"):
        expand([A, A], {}, {})


@pytest.mark.parametrize("bad", [["a/b"], [""], [".."], "default"])
def test_resolve_profile_list_bad_names(bad: object) -> None:
    with pytest.raises((InvalidName, InvalidArgument)):
        resolve_profile_list(bad)  # type: ignore[arg-type]


# -- ref §13 item 7 (config side) ------------------------------------------------------------
def test_reference_item_7_environment() -> None:
    assert validate_instance_config({"environment.FOO": "bar"}) == {"environment.FOO": "bar"}
    with pytest.raises(InvalidConfig, match="Environment variables cannot contain line breaks"):
        validate_instance_config({"environment.FOO": "bar\nlxc.hook.pre-start=/x"})
    with pytest.raises(InvalidConfig, match="line breaks"):
        validate_instance_config({"environment.FOO": "bar\nx"}, profile=True)
    config, _ = expand([ProfileData("p", {"environment.FOO": "bar"})], {}, {})
    assert config["environment.FOO"] == "bar"


# -- more expansion rules ---------------------------------------------------------------------
def test_local_wins_and_order() -> None:
    p1 = ProfileData("p1", {"a": "1", "b": "1"})
    p2 = ProfileData("p2", {"b": "2", "c": "2"})
    assert expand_config([p1, p2], {"c": "local"}) == {"a": "1", "b": "2", "c": "local"}
    assert expand_config([], {"a": "x"}) == {"a": "x"}


def test_global_migration_stateful() -> None:
    assert expand_config([], {}, global_config={"instances.migration.stateful": "true"}) == {
        "migration.stateful": "true"}
    assert expand_config([ProfileData("p", {"migration.stateful": "false"})], {},
                         global_config={"instances.migration.stateful": "true"}) == {
        "migration.stateful": "false"}
    assert expand_config([], {}, global_config={"instances.migration.stateful": "false"}) == {}


def test_none_device_masks_profile_and_keep_none() -> None:
    devs = expand_devices([DEFAULT], {"eth0": {"type": "none"}})
    assert set(devs) == {"root"}
    devs = expand_devices([DEFAULT], {"eth0": {"type": "none"}}, keep_none=True)
    assert devs["eth0"] == {"type": "none"}
    # a none in a later profile masks an earlier profile's device too
    masker = ProfileData("mask", {}, {"eth0": {"type": "none"}})
    assert "eth0" not in expand_devices([DEFAULT, masker], {})


def test_expand_returns_copies() -> None:
    config, devices = expand([DEFAULT], {"a": "1"}, {})
    devices["root"]["size"] = "1GiB"
    config["b"] = "2"
    assert "size" not in DEFAULT.devices["root"]
    _, again = expand([DEFAULT], {"a": "1"}, {})
    assert "size" not in again["root"]


def test_profile_data_is_a_snapshot() -> None:
    cfg = {"a": "1"}
    devs = {"d": {"type": "none"}}
    p = ProfileData("p", cfg, devs)
    cfg["a"] = "2"
    devs["d"]["type"] = "disk"
    assert p.config == {"a": "1"} and p.devices == {"d": {"type": "none"}}


# -- root disk ------------------------------------------------------------------------------------
def test_root_disk() -> None:
    assert root_disk(DEFAULT.devices) == ("root", {"type": "disk", "path": "/", "pool": "default"})
    with pytest.raises(InvalidConfig) as exc:
        root_disk({})
    assert exc.value.key == "devices" and exc.value.reason == "No root disk device found"
    two = {"r1": {"type": "disk", "path": "/", "pool": "a"},
           "r2": {"type": "disk", "path": "/", "pool": "b"}}
    with pytest.raises(InvalidConfig, match="More than one root disk device found"):
        root_disk(two)
    # a disk on / with a source is not a root disk
    assert root_disk({**DEFAULT.devices,
                      "bind": {"type": "disk", "path": "/", "source": "/x"}})[0] == "root"
    with pytest.raises(InvalidConfig, match="No root disk"):
        root_disk({"r": {"type": "nic", "path": "/"}})


# -- device override ------------------------------------------------------------------------------
def test_override_device() -> None:
    _, exp = expand([DEFAULT], {}, {})
    local = override_device(exp, {}, "root", {"size": "20GiB"})
    assert local == {"root": {"type": "disk", "path": "/", "pool": "default", "size": "20GiB"}}
    with pytest.raises(AlreadyExists):
        override_device(exp, local, "root", {"size": "1GiB"})
    with pytest.raises(NotFound, match="The profile device does not exist"):
        override_device(exp, {}, "nope", {})


def test_profiles_using() -> None:
    assert profiles_using("default", {"c2": ["default"], "c1": ["default", "x"], "c3": []}) == [
        "c1", "c2"]
