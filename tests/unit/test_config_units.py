"""Size, bit-rate, boolean and expiry parsers (LXD's ParseByteSizeString & co.)."""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lxdlib.config.units import (
    BYTE_SUFFIXES,
    EPOCH_TIME,
    ZERO_TIME,
    ExpiryDelta,
    expiry_date,
    format_api_time,
    format_size,
    is_false,
    is_true,
    parse_api_time,
    parse_bit_rate,
    parse_bool,
    parse_duration_expiry,
    parse_expiry,
    parse_size,
)
from lxdlib.errors import InvalidArgument


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("10B", 10),
        ("5 bytes", 5),
        ("1kB", 1000),
        ("256MB", 256_000_000),
        ("2GB", 2_000_000_000),
        ("1TB", 10**12),
        ("1PB", 10**15),
        ("1EB", 10**18),
        ("1KiB", 1024),
        ("512KiB", 512 * 1024),
        ("256MiB", 268435456),
        ("512MiB", 536870912),
        ("1GiB", 2**30),
        ("20GiB", 20 * 2**30),
        ("1TiB", 2**40),
        ("1PiB", 2**50),
        ("7EiB", 7 * 2**60),
        ("007MiB", 7 * 2**20),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "MiB", "-1", "-1MiB", "1.5GiB", "1 GiB", "1KB", "1mb", "1gib", "1G", "1M", "abc",
     " 1", "1 ", "+5", "1e3", "0x10", "8EiB", "9223372036854775808", "١٢"],
)
def test_parse_size_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_size(text)


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0B"), (1023, "1023B"), (1024, "1.00KiB"), (268435456, "256.00MiB"),
     (536870912, "512.00MiB"), (2**30, "1.00GiB"), (1536 * 2**20, "1.50GiB"), (2**62, "4.00EiB")],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


def test_format_size_decimal_and_negative() -> None:
    assert format_size(268435456, iec=False) == "268.44MB"
    assert format_size(999, iec=False) == "999B"
    with pytest.raises(InvalidArgument):
        format_size(-1)


@given(st.integers(min_value=0, max_value=2**40), st.sampled_from(sorted(BYTE_SUFFIXES)))
def test_parse_size_roundtrip(n: int, suffix: str) -> None:
    mult = BYTE_SUFFIXES[suffix]
    if n * mult >= 2**63:
        with pytest.raises(InvalidArgument):
            parse_size(f"{n}{suffix}")
    else:
        assert parse_size(f"{n}{suffix}") == n * mult


@given(st.text(max_size=12))
def test_parse_size_total(text: str) -> None:
    with contextlib.suppress(InvalidArgument):
        assert parse_size(text) >= 0


@pytest.mark.parametrize(
    ("text", "value"),
    [("8000", 8000), ("100bit", 100), ("1kbit", 1000), ("100Mbit", 100_000_000),
     ("1Gbit", 10**9), ("1Tbit", 10**12), ("1Kibit", 1024), ("2Mibit", 2 * 2**20),
     ("1Gibit", 2**30)],
)
def test_parse_bit_rate(text: str, value: int) -> None:
    assert parse_bit_rate(text) == value


@pytest.mark.parametrize("text", ["", "10MB", "10mbit", "1.5Mbit", "-1bit", "Mbit"])
def test_parse_bit_rate_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_bit_rate(text)


def test_bit_rate_unsupported_suffix_message() -> None:
    with pytest.raises(InvalidArgument, match="Unsupported suffix: MB"):
        parse_bit_rate("10MB")


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("TRUE", True), ("Yes", True), ("1", True), ("on", True), ("ON", True),
     ("false", False), ("False", False), ("no", False), ("0", False), ("off", False)],
)
def test_parse_bool(text: str, value: bool) -> None:
    assert parse_bool(text) is value


@pytest.mark.parametrize("text", ["", "y", "n", "2", "truee", " true", "enabled"])
def test_parse_bool_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="Invalid value for a boolean"):
        parse_bool(text)


def test_is_true_is_false() -> None:
    assert is_true("yes") and not is_true(None) and not is_true("") and not is_true("x")
    assert is_false("off") and not is_false(None) and not is_false("") and not is_false("true")


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("", ExpiryDelta()),
        ("1d", ExpiryDelta(days=1)),
        ("1M 2H 3d 4w 5m 6y", ExpiryDelta(6, 5, 4, 3, 2, 1, 0)),
        ("30S", ExpiryDelta(seconds=30)),
        ("  2w ", ExpiryDelta(weeks=2)),
        ("0d 1d", ExpiryDelta(days=1)),  # LXD only refuses a unit given twice with a value > 0
    ],
)
def test_parse_expiry(text: str, delta: ExpiryDelta) -> None:
    assert parse_expiry(text) == delta


@pytest.mark.parametrize("text", ["1", "d", "1D", "1h", "1d  2H", "1d,2H", "1d 1d", "-1d", "1.5d"])
def test_parse_expiry_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="Invalid expiry expression"):
        parse_expiry(text)


@pytest.mark.parametrize(
    ("ref", "text", "expected"),
    [
        (datetime(2024, 1, 1, tzinfo=UTC), "1d", datetime(2024, 1, 2, tzinfo=UTC)),
        (datetime(2024, 1, 31, tzinfo=UTC), "1m", datetime(2024, 3, 2, tzinfo=UTC)),  # Go AddDate
        (datetime(2023, 1, 31, tzinfo=UTC), "1m", datetime(2023, 3, 3, tzinfo=UTC)),
        (datetime(2024, 2, 29, tzinfo=UTC), "1y", datetime(2025, 3, 1, tzinfo=UTC)),
        (datetime(2024, 12, 15, tzinfo=UTC), "1m", datetime(2025, 1, 15, tzinfo=UTC)),
        (datetime(2024, 1, 1, tzinfo=UTC), "1M 2H 3d 1w",
         datetime(2024, 1, 11, 2, 1, tzinfo=UTC)),
        (datetime(2024, 5, 1, 23, 59), "2M", datetime(2024, 5, 2, 0, 1)),
    ],
)
def test_expiry_date(ref: datetime, text: str, expected: datetime) -> None:
    assert expiry_date(ref, text) == expected


def test_expiry_date_none_when_empty() -> None:
    assert expiry_date(datetime(2024, 1, 1), "") is None
    assert expiry_date(datetime(2024, 1, 1), "0d") is None


def test_parse_duration_expiry() -> None:
    assert parse_duration_expiry("1d 2H") == timedelta(days=1, hours=2)
    assert parse_duration_expiry("1m 1y 1w") == timedelta(days=30 + 365 + 7)
    assert parse_duration_expiry("") == timedelta(0)


@pytest.mark.parametrize(("value", "want"), [
    (None, None), ("", None), ("0001-01-01T00:00:00Z", None),
    (datetime(1, 1, 1, tzinfo=UTC), None),  # the zero time as YAML reads it
    ("2100-01-02T15:04:05Z", datetime(2100, 1, 2, 15, 4, 5, tzinfo=UTC)),
    ("2001-01-01T00:00:00+02:00", datetime(2000, 12, 31, 22, tzinfo=UTC)),
    ("2030-05-06T07:08:09", datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)),  # no zone: UTC
    (datetime(2030, 5, 6), datetime(2030, 5, 6, tzinfo=UTC)),
    (date(2030, 5, 6), datetime(2030, 5, 6, tzinfo=UTC)),  # YAML's unquoted date
])
def test_api_times_as_lxd_writes_them(value: object, want: datetime | None) -> None:
    assert parse_api_time(value) == want


_PLUS2 = timezone(timedelta(hours=2))


@pytest.mark.parametrize(("value", "unset", "want"), [
    # unset: Go's zero time, or what the field says instead (an instance never started)
    (None, ZERO_TIME, "0001-01-01T00:00:00Z"),
    (None, EPOCH_TIME, "1970-01-01T00:00:00Z"),
    # Go's RFC3339Nano: whole seconds carry no fraction...
    (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), ZERO_TIME, "2026-01-02T03:04:05Z"),
    # ...and a fraction keeps its digits but not its trailing zeros (the backup index
    # dropped it; isoformat() wrote all six)
    (datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC), ZERO_TIME, "2026-01-02T03:04:05.5Z"),
    (datetime(2026, 1, 2, 3, 4, 5, 123400, tzinfo=UTC), ZERO_TIME,
     "2026-01-02T03:04:05.1234Z"),
    (datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=UTC), ZERO_TIME, "2026-01-02T03:04:05.000001Z"),
    (datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=UTC), ZERO_TIME,
     "2026-01-02T03:04:05.999999Z"),
    # in UTC, whatever zone the time came in
    (datetime(2026, 1, 2, 1, 4, 5, 250000, tzinfo=_PLUS2), ZERO_TIME,
     "2026-01-01T23:04:05.25Z"),
    # the zero time itself, as a YAML reader makes it, is written as Go writes it
    (datetime(1, 1, 1, tzinfo=UTC), EPOCH_TIME, "0001-01-01T00:00:00Z"),
    (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), ZERO_TIME, "9999-12-31T23:59:59Z"),
])
def test_api_times_written_as_lxd_writes_them(value: datetime | None, unset: str,
                                              want: str) -> None:
    assert format_api_time(value, unset) == want


@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31),
                    timezones=st.just(UTC)))
def test_api_times_read_back_as_written(t: datetime) -> None:
    """What the formatter writes, the parser reads back to the same instant."""
    assert parse_api_time(format_api_time(t)) == t


@pytest.mark.parametrize("value", ["bogus", "2100-13-01T00:00:00Z", 5, ["2100-01-01"]])
def test_what_is_no_time_is_a_value_error(value: object) -> None:
    with pytest.raises(ValueError):
        parse_api_time(value)
