"""Snapshot naming (snapshots.pattern) and scheduling (snapshots.schedule)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lxdlib.config.snapshots import (
    go_time_format,
    next_index,
    next_run,
    next_snapshot_name,
    parse_cron,
    parse_schedule,
    render_pattern,
    schedule_due,
    validate_pattern,
)
from lxdlib.errors import InvalidConfig

NOW = datetime(2024, 5, 6, 17, 8, 9, 123456, tzinfo=UTC)


# -- ref §13 item 8 -----------------------------------------------------------------------------
def test_snap_sequence_from_reference() -> None:
    existing: list[str] = []
    for _ in range(3):
        existing.append(next_snapshot_name(None, existing, NOW))
    assert existing == ["snap0", "snap1", "snap2"]
    existing.remove("snap1")
    assert next_snapshot_name(None, existing, NOW) == "snap3"  # a lower gap is not reused
    existing.append("snap3")
    existing.remove("snap3")
    assert next_snapshot_name(None, existing, NOW) == "snap3"  # the highest is reused


@pytest.mark.parametrize(
    ("pattern", "existing", "expected"),
    [
        (None, [], "snap0"),
        ("", [], "snap0"),
        ("snap%d", ["snap0", "snap2"], "snap3"),
        ("snap%d", ["other", "snapX", "snap"], "snap0"),
        ("snap%d", ["snap5-old"], "snap6"),  # Sscanf ignores what follows the number
        ("snap%d", ["snap-1"], "snap0"),  # negative indexes never win
        ("snap%d", ["snap007"], "snap8"),
        ("snap%d", ["snap99999999999999999999"], "snap0"),  # overflow: Sscanf fails
        ("backup-%d-x", ["backup-4-x", "backup-9-y", "backup-7-xtra"], "backup-8-x"),
        ("%d", ["3", "a"], "4"),
        ("fixed", [], "fixed"),
        ("fixed", ["fixed"], "fixed-0"),
        ("fixed", ["fixed", "fixed-0", "fixed-4"], "fixed-5"),
        ("100%%-%d", ["100%-3"], "100%%-4"),
        ('d{{ creation_date|date:"2006-01-02" }}', [], "d2024-05-06"),
        ("{{creation_date|date:'20060102_150405'}}-%d", ["20240506_170809-1"],
         "20240506_170809-2"),
        ('{{ creation_date|date:"2006-01-02" }}', ["2024-05-06"], "2024-05-06-0"),
        ("x{# a comment #}%d", [], "x0"),
    ],
)
def test_next_snapshot_name(pattern: str | None, existing: list[str], expected: str) -> None:
    assert next_snapshot_name(pattern, existing, NOW) == expected


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("snap%d%d", "Snapshot pattern may contain '%d' only once"),
        ("a%db%d", "Snapshot pattern may contain '%d' only once"),
        ("/", "Invalid snapshot name '/'"),
        ("a/b%d", "Invalid snapshot name"),
        ("a b", "Invalid snapshot name"),
        ("..", "Invalid snapshot name"),
        ("snap*%d", "Invalid snapshot name"),
        ('{% include "/etc/hosts" %}', "Template tags"),
        ("{{ creation_date }}", "Unsupported template expression"),
        ("{{ config.x }}", "Unsupported template expression"),
        ("{{ creation_date|date:\"2006\"", "Unbalanced template delimiters"),
        ('{{ creation_date|date:"Mon Jan 2" }}', "Invalid snapshot name"),  # spaces
    ],
)
def test_bad_patterns(pattern: str, reason: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        next_snapshot_name(pattern, [], NOW)
    assert exc.value.key == "snapshots.pattern"
    assert reason in exc.value.reason
    with pytest.raises(InvalidConfig):
        validate_pattern(pattern)


def test_next_index_direct() -> None:
    assert next_index("snap%d", []) == 0
    assert next_index("snap%d", ["snap+4"]) == 5
    assert next_index("s%q%d", ["s1"]) == 0  # another verb: never matches


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("2006-01-02_15-04-05", "2024-05-06_17-08-09"),
        ("20060102", "20240506"),
        ("06/1/2 3:4:5", "24/5/6 5:8:9"),
        ("Jan January Mon Monday", "May May Mon Monday"),
        ("Janx", "Janx"),  # "Jan" followed by lower case is literal in Go
        ("Monx", "Monx"),
        ("_2 __2 002", " 6 127 127"),
        ("03 PM pm", "05 PM pm"),
        (".000 .999999 ,000", ".123 .123456 ,123"),
        ("05.00000", "09.12345"),
        ("MST -0700 -07:00 -07 Z07:00 Z0700", "UTC +0000 +00:00 +00 Z Z"),
        ("_2006", "_2024"),
        ("literal text!", "literal text!"),
    ],
)
def test_go_time_format(layout: str, expected: str) -> None:
    assert go_time_format(NOW, layout) == expected


def test_go_time_format_offsets_and_naive() -> None:
    t = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-7, minutes=-30)))
    assert go_time_format(t, "-0700 -07:00 Z07:00 -07") == "-0730 -07:30 -07:30 -07"
    assert go_time_format(datetime(2024, 1, 2, 0, 0), "3 PM .999 MST") == "12 AM  UTC"


def test_render_pattern_quotes_and_spacing() -> None:
    assert render_pattern("{{creation_date|date:'2006'}}", NOW) == "2024"
    assert render_pattern('{{  creation_date | date : "01" }}', NOW) == "05"


# -- schedules ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "when", "matches"),
    [
        ("* * * * *", datetime(2024, 1, 1, 0, 0), True),
        ("0 6 * * *", datetime(2024, 1, 1, 6, 0), True),
        ("0 6 * * *", datetime(2024, 1, 1, 6, 1), False),
        ("*/15 * * * *", datetime(2024, 1, 1, 3, 45), True),
        ("*/15 * * * *", datetime(2024, 1, 1, 3, 46), False),
        ("5/20 * * * *", datetime(2024, 1, 1, 3, 45), True),
        ("0 0 1 jan,jul *", datetime(2024, 7, 1), True),
        ("0 0 1 JAN *", datetime(2024, 2, 1), False),
        ("0 9 * * mon-fri", datetime(2024, 5, 6, 9), True),  # a Monday
        ("0 9 * * mon-fri", datetime(2024, 5, 5, 9), False),  # a Sunday
        ("0 9 * * 0", datetime(2024, 5, 5, 9), True),
        ("0 9 * * sun", datetime(2024, 5, 5, 9), True),
        # both day fields restricted: either may match (cron's OR rule)
        ("0 0 13 * 5", datetime(2024, 9, 13), True),  # Friday 13th
        ("0 0 13 * 5", datetime(2024, 9, 6), True),  # a Friday
        ("0 0 13 * 5", datetime(2024, 11, 13), True),  # a 13th (Wednesday)
        ("0 0 13 * 5", datetime(2024, 11, 14), False),
        # one day field is "*": both must match
        ("0 0 * * 5", datetime(2024, 11, 13), False),
        ("0 0 ? * 5", datetime(2024, 9, 6), True),
        ("0 0 1-7 * *", datetime(2024, 9, 7), True),
        ("0,30 12 * * *", datetime(2024, 9, 7, 12, 30), True),
    ],
)
def test_cron_matches(spec: str, when: datetime, matches: bool) -> None:
    assert parse_cron(spec).matches(when) is matches


def test_schedule_aliases_and_lists() -> None:
    s = parse_schedule("@daily, @startup, 0 12 * * *")
    assert s.startup and len(s.crons) == 2
    assert parse_schedule("@never").crons == () and not parse_schedule("@never").startup
    assert parse_schedule("").crons == ()
    assert parse_schedule("@HOURLY").crons[0].minutes == frozenset({0})
    assert parse_schedule("@midnight").crons[0].hours == frozenset({0})
    weekly = parse_schedule("@weekly").crons[0]
    assert weekly.weekdays == frozenset({0}) and weekly.hours == frozenset({0})
    assert parse_schedule("@yearly").crons[0] == parse_schedule("@annually").crons[0]
    spread = parse_schedule("@daily", subject="web1").crons[0]
    assert spread == parse_schedule("@daily", subject="web1").crons[0]  # stable per instance
    assert len(spread.minutes) == 1 and len(spread.hours) == 1


@pytest.mark.parametrize(
    ("spec", "after", "expected"),
    [
        ("0 6 * * *", datetime(2024, 1, 1, 5, 59, 30), datetime(2024, 1, 1, 6, 0)),
        ("0 6 * * *", datetime(2024, 1, 1, 6, 0), datetime(2024, 1, 2, 6, 0)),
        ("*/15 * * * *", datetime(2024, 1, 1, 23, 50), datetime(2024, 1, 2, 0, 0)),
        ("0 0 29 2 *", datetime(2024, 3, 1), datetime(2028, 2, 29)),
        ("@hourly", datetime(2024, 1, 1, 10, 0), datetime(2024, 1, 1, 11, 0)),
        ("@monthly, @daily", datetime(2024, 1, 31, 1), datetime(2024, 2, 1, 0, 0)),
        ("0 0 31 2 *", datetime(2024, 1, 1), None),
        ("@never", datetime(2024, 1, 1), None),
        ("@startup", datetime(2024, 1, 1), None),
    ],
)
def test_next_run(spec: str, after: datetime, expected: datetime | None) -> None:
    assert next_run(spec, after) == expected


def test_schedule_due() -> None:
    last = datetime(2024, 1, 1, 6, 0)
    assert not schedule_due("0 6 * * *", last, datetime(2024, 1, 2, 5, 59))
    assert schedule_due("0 6 * * *", last, datetime(2024, 1, 2, 6, 0))
    assert schedule_due("0 6 * * *", last, datetime(2024, 1, 5))  # missed runs: due once
    assert schedule_due("0 6 * * *", None, datetime(2024, 1, 2, 6, 0, 40))
    assert not schedule_due("0 6 * * *", None, datetime(2024, 1, 2, 6, 1))
    assert not schedule_due("@startup", None, datetime(2024, 1, 2))
    assert schedule_due("@startup", None, datetime(2024, 1, 2), at_startup=True)
    assert schedule_due("@daily", None, datetime(2024, 1, 2), at_startup=True)  # 00:00 anyway
    assert not schedule_due("@daily", None, datetime(2024, 1, 2, 1), at_startup=True)
    assert not schedule_due("", last, datetime(2030, 1, 1))
    assert not schedule_due("@never", last, datetime(2030, 1, 1))
    aware = datetime(2024, 1, 1, 6, 0, tzinfo=UTC)
    assert schedule_due("0 7 * * *", aware, aware + timedelta(hours=1))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 59), st.integers(0, 23),
       st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)))
def test_next_run_is_next_match(minute: int, hour: int, after: datetime) -> None:
    spec = f"{minute} {hour} * * *"
    nxt = next_run(spec, after)
    assert nxt is not None and nxt > after and parse_cron(spec).matches(nxt)
    assert nxt - after <= timedelta(days=1)
