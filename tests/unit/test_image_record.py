"""ImageRecord's LXD shape and round trip, and the alias name rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lxdlib.errors import ImageError, InvalidName
from lxdlib.imagestore import ImageRecord, validate_alias_name

FP = "ab" * 32


def _record(**changes: object) -> ImageRecord:
    fields: dict[str, object] = {
        "fingerprint": FP, "filename": "busybox.tar.gz", "size": 1234,
        "architecture": "x86_64",
        "created_at": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "uploaded_at": datetime(2024, 2, 3, 4, 5, 6, 789000, tzinfo=UTC),
        "last_used_at": None, "expires_at": None,
        "properties": {"os": "busybox"}, "aliases": [{"name": "bb", "description": "d"}],
        "public": False, "auto_update": True, "cached": False,
    }
    fields.update(changes)
    return ImageRecord(**fields)  # type: ignore[arg-type]


def test_to_dict_has_lxd_keys() -> None:
    d = _record().to_dict()
    assert set(d) == {"fingerprint", "filename", "size", "architecture", "type", "public",
                      "auto_update", "cached", "properties", "aliases", "created_at",
                      "uploaded_at", "last_used_at", "expires_at", "profiles"}
    assert d["type"] == "container"
    assert d["profiles"] == ["default"]
    assert d["created_at"] == "2024-01-02T03:04:05Z"
    assert d["uploaded_at"] == "2024-02-03T04:05:06.789Z"  # Go: no trailing zeros
    assert d["last_used_at"] == "0001-01-01T00:00:00Z"
    assert d["expires_at"] == "0001-01-01T00:00:00Z"
    assert d["aliases"] == [{"name": "bb", "description": "d"}]


@pytest.mark.parametrize("changes", [
    {},
    {"last_used_at": datetime(2025, 1, 1, tzinfo=UTC)},
    {"expires_at": datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC), "cached": True, "public": True},
    {"properties": {}, "aliases": []},
])
def test_round_trip(changes: dict[str, object]) -> None:
    rec = _record(**changes)
    assert ImageRecord.from_dict(rec.to_dict()) == rec


def test_from_dict_aliases_override() -> None:
    rec = ImageRecord.from_dict(_record().to_dict(), aliases=[])
    assert rec.aliases == []


@pytest.mark.parametrize("broken", [
    {"size": "big"}, {"created_at": "yesterday"}, {"uploaded_at": "0001-01-01T00:00:00Z"},
])
def test_from_dict_corrupt(broken: dict[str, object]) -> None:
    data = {**_record().to_dict(), **broken}
    with pytest.raises(ImageError, match="corrupt image record"):
        ImageRecord.from_dict(data)


def test_from_dict_missing_key() -> None:
    data = _record().to_dict()
    del data["fingerprint"]
    with pytest.raises(ImageError):
        ImageRecord.from_dict(data)


@pytest.mark.parametrize("name", ["busybox", "debian/12", "ubuntu/22.04/amd64", "a" * 255,
                                  "x-y_z.1", "é"])
def test_alias_names_ok(name: str) -> None:
    validate_alias_name(name)


@pytest.mark.parametrize(("name", "reason"), [
    ("", "empty"), ("a b", "whitespace"), ("a\tb", "whitespace"), ("a\nb", "whitespace"),
    ("images:debian", ":"), ("a" * 256, "255"), ("a\x7f", "control"), ("a\x00", "control"),
    ("..", '"\\.\\."'), (".", "empty"), ("a/../b", "empty"), ("a//b", "empty"),
])
def test_alias_names_refused(name: str, reason: str) -> None:
    with pytest.raises(InvalidName, match=reason):
        validate_alias_name(name)


@pytest.mark.parametrize(("stored", "profiles"), [
    (None, ["default"]),  # a record older than the field, or LXD's nil: default alone
    ([], []),  # none at all
    (["default", "web"], ["default", "web"]),
])
def test_profiles_round_trip_and_default(stored: list[str] | None, profiles: list[str]) -> None:
    data = _record().to_dict()
    if stored is None:
        del data["profiles"]
    else:
        data["profiles"] = stored
    rec = ImageRecord.from_dict(data)
    assert rec.profiles == profiles
    assert ImageRecord.from_dict(rec.to_dict()) == rec
