"""Name rules: LXD's IsHostname / ValidSnapName plus lxdlib's file-name safety rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lxdlib.config.names import (
    join_snapshot_ref,
    split_snapshot_ref,
    validate_alias_name,
    validate_instance_name,
    validate_profile_name,
    validate_snapshot_name,
)
from lxdlib.errors import InvalidArgument, InvalidName


@pytest.mark.parametrize("name", ["a", "c1", "web-01", "A-b-C", "x" * 63, "1a", "a1", "0x"])
def test_instance_name_ok(name: str) -> None:
    validate_instance_name(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "Name must be 1-63 characters long"),
        ("a" * 64, "Name must be 1-63 characters long"),
        ("-abc", 'Name must not start with "-" character'),
        ("abc-", 'Name must not end with "-" character'),
        ("1234", "Name cannot be a number"),
        ("9" * 40, "Name cannot be a number"),  # LXD's ParseUint overflows here; we still refuse
        ("foo.bar", "Name can only contain alphanumeric and hyphen characters"),
        ("a_b_c", "Name can only contain alphanumeric and hyphen characters"),
        ("..", "Name can only contain alphanumeric and hyphen characters"),
        ("\\", "Name can only contain alphanumeric and hyphen characters"),
        ("/", "Name can only contain alphanumeric and hyphen characters"),
        (";", "Name can only contain alphanumeric and hyphen characters"),
        ("a b", "Name can only contain alphanumeric and hyphen characters"),
        ("caf\u00e9", "Name can only contain alphanumeric and hyphen characters"),
        ("a\nb", "Name can only contain alphanumeric and hyphen characters"),
    ],
)
def test_instance_name_refused(name: str, reason: str) -> None:
    with pytest.raises(InvalidName) as exc:
        validate_instance_name(name)
    assert exc.value.reason == reason
    assert exc.value.kind == "instance"
    assert isinstance(exc.value, InvalidArgument) and isinstance(exc.value, ValueError)


@pytest.mark.parametrize("name", ["snap0", "before-upgrade", "a.b", "x_y", "@x", "a" * 255, "%d"])
def test_snapshot_name_ok(name: str) -> None:
    validate_snapshot_name(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "Invalid instance snapshot name, cannot be empty"),
        ("..", "Invalid instance snapshot name '..'"),
        (".", "Invalid instance snapshot name '.'"),
        ("a/b", "Cannot contain *, spaces, forward or back slashes"),
        ("/", "Cannot contain *, spaces, forward or back slashes"),
        ("\\", "Cannot contain *, spaces, forward or back slashes"),
        ("a b", "Cannot contain *, spaces, forward or back slashes"),
        ("a*", "Cannot contain *, spaces, forward or back slashes"),
        ("a\tb", "Cannot contain whitespace or control characters"),
        ("a\nb", "Cannot contain whitespace or control characters"),
        ("a\0b", "Cannot contain whitespace or control characters"),
        ("a" * 256, "Name must be at most 255 bytes long"),
    ],
)
def test_snapshot_name_refused(name: str, reason: str) -> None:
    with pytest.raises(InvalidName) as exc:
        validate_snapshot_name(name)
    assert exc.value.reason == reason


@pytest.mark.parametrize("name", ["default", "docker", "my_profile", "p.1", "x" * 63, "a:b"])
def test_profile_name_ok(name: str) -> None:
    validate_profile_name(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "No name provided"),
        ("a/b", "Profile names may not contain slashes"),
        (".", "Invalid profile name '.'"),
        ("..", "Invalid profile name '..'"),
        ("a b", "Cannot contain whitespace or control characters"),
        ("a\x07", "Cannot contain whitespace or control characters"),
        ("x" * 64, "Name must be at most 63 bytes long"),
    ],
)
def test_profile_name_refused(name: str, reason: str) -> None:
    with pytest.raises(InvalidName) as exc:
        validate_profile_name(name)
    assert exc.value.reason == reason


@pytest.mark.parametrize("name", ["busybox", "debian/12", "debian/12/amd64", "a.b-c_d", "x" * 255])
def test_alias_name_ok(name: str) -> None:
    validate_alias_name(name)


@pytest.mark.parametrize("name", ["", "images:debian", "a b", "a\nb", "x" * 256, ".", "..",
                                  "a/../b", "a//b", "/a", "a/"])
def test_alias_name_refused(name: str) -> None:
    with pytest.raises(InvalidName):
        validate_alias_name(name)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [("c1", ("c1", None)), ("c1/snap0", ("c1", "snap0")),
     ("web-1/before.up", ("web-1", "before.up"))],
)
def test_split_snapshot_ref(ref: str, expected: tuple[str, str | None]) -> None:
    assert split_snapshot_ref(ref) == expected


@pytest.mark.parametrize("ref", ["c1/", "c1/a/b", "/snap", "-c/snap", "c1/.."])
def test_split_snapshot_ref_refused(ref: str) -> None:
    with pytest.raises(InvalidName):
        split_snapshot_ref(ref)


@settings(max_examples=40)
@given(st.from_regex(r"[a-zA-Z][-a-zA-Z0-9]{0,61}[a-zA-Z0-9]", fullmatch=True),
       st.from_regex(r"[a-zA-Z0-9._-]{1,40}", fullmatch=True))
def test_snapshot_ref_roundtrip(inst: str, snap: str) -> None:
    if snap in (".", ".."):
        return
    assert split_snapshot_ref(join_snapshot_ref(inst, snap)) == (inst, snap)


@given(st.text(max_size=70))
def test_instance_name_never_crashes(name: str) -> None:
    try:
        validate_instance_name(name)
    except InvalidName:
        return
    assert 1 <= len(name) <= 63 and name.isascii() and not name.isdigit()
