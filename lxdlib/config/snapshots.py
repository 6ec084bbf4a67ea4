"""Snapshot naming (``snapshots.pattern``) and scheduling (``snapshots.schedule``), without I/O.

Naming follows LXD's ``NextSnapshotName``: the pattern is rendered as a template with
``creation_date``, then a single ``%d`` becomes ``max(index)+1`` over the existing snapshots whose
names match the pattern the way Go's ``fmt.Sscanf`` matches them. Only the template form LXD
documents is supported (``{{ creation_date|date:"2006-01-02_15-04-05" }}`` with any Go time
layout); anything else in ``{{ }}`` or ``{% %}`` is refused, which also closes LXD's template
sandbox problems (``{% include "/etc/hosts" %}``).

Scheduling follows LXD's minute ticker: a schedule is a ``", "``-separated list of 5-field cron
specs (robfig/cron's standard syntax: lists, ranges, steps, month and weekday names, ``?``) or the
aliases ``@hourly @daily @midnight @weekly @monthly @annually @yearly @startup @never``.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from ..errors import InvalidConfig, InvalidName
from ..patterns import Pattern
from ..values import Value, assign
from .names import validate_snapshot_name
from .units import parse_api_time

DEFAULT_PATTERN = "snap%d"
PATTERN_KEY = "snapshots.pattern"
SCHEDULE_KEY = "snapshots.schedule"

# ------------------------------------------------------------------------------------------------
# Go time layouts (pongo2's ``date`` filter is Go's ``time.Format``)

_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _starts_lower(s: str) -> bool:
    return bool(s) and "a" <= s[0] <= "z"


def _tz_offset(t: datetime) -> int:
    off = t.utcoffset()
    return int(off.total_seconds()) if off is not None else 0


def _fmt_offset(t: datetime, *, z: bool, colon: bool, seconds: bool, hours_only: bool) -> str:
    off = _tz_offset(t)
    if z and off == 0:
        return "Z"
    sign = "-" if off < 0 else "+"
    off = abs(off)
    hh, rem = divmod(off, 3600)
    mm, ss = divmod(rem, 60)
    out = f"{sign}{hh:02d}"
    if hours_only:
        return out
    out += f":{mm:02d}" if colon else f"{mm:02d}"
    if seconds:
        out += f":{ss:02d}" if colon else f"{ss:02d}"
    return out


_ZONE_TOKENS = (
    # (token, z, colon, seconds, hours_only) — longest first, as Go matches them
    ("070000", False, False, True, False),
    ("07:00:00", False, True, True, False),
    ("0700", False, False, False, False),
    ("07:00", False, True, False, False),
    ("07", False, False, False, True),
)


def go_time_format(t: datetime, layout: str) -> str:
    """Format ``t`` with a Go reference-time layout (``2006-01-02 15:04:05``), as Go does.

    A naive ``t`` is taken as UTC.
    """
    out: list[str] = []
    i = 0
    n = len(layout)
    while i < n:
        rest = layout[i:]
        c = layout[i]
        if c == "J" and rest.startswith("Jan"):
            if rest.startswith("January"):
                out.append(_MONTHS[t.month - 1])
                i += 7
                continue
            if not _starts_lower(rest[3:]):
                out.append(_MONTHS[t.month - 1][:3])
                i += 3
                continue
        elif c == "M" and (rest.startswith("Mon") or rest.startswith("MST")):
            if rest.startswith("Monday"):
                out.append(_WEEKDAYS[t.weekday()])
                i += 6
                continue
            if rest.startswith("Mon") and not _starts_lower(rest[3:]):
                out.append(_WEEKDAYS[t.weekday()][:3])
                i += 3
                continue
            if rest.startswith("MST"):
                name = t.tzname() if t.tzinfo is not None else "UTC"
                out.append(name or _fmt_offset(t, z=False, colon=False, seconds=False,
                                               hours_only=False))
                i += 3
                continue
        elif c == "0" and len(rest) >= 2 and rest[1] in "123456":
            v = {
                "1": t.month, "2": t.day, "3": (t.hour % 12) or 12,
                "4": t.minute, "5": t.second, "6": t.year % 100,
            }[rest[1]]
            out.append(f"{v:02d}")
            i += 2
            continue
        elif c == "0" and rest.startswith("002"):
            out.append(f"{t.timetuple().tm_yday:03d}")
            i += 3
            continue
        elif c == "1":
            if rest.startswith("15"):
                out.append(f"{t.hour:02d}")
                i += 2
            else:
                out.append(str(t.month))
                i += 1
            continue
        elif c == "2":
            if rest.startswith("2006"):
                out.append(f"{t.year:04d}")
                i += 4
            else:
                out.append(str(t.day))
                i += 1
            continue
        elif c == "_" and rest.startswith("_2"):
            if rest.startswith("_2006"):
                out.append("_")  # Go reads "_2006" as a literal "_" and the year
                i += 1
                continue
            out.append(f"{t.day:2d}")
            i += 2
            continue
        elif c == "_" and rest.startswith("__2"):
            out.append(f"{t.timetuple().tm_yday:3d}")
            i += 3
            continue
        elif c in "345":
            v = {"3": (t.hour % 12) or 12, "4": t.minute, "5": t.second}[c]
            out.append(str(v))
            i += 1
            continue
        elif c == "P" and rest.startswith("PM"):
            out.append("PM" if t.hour >= 12 else "AM")
            i += 2
            continue
        elif c == "p" and rest.startswith("pm"):
            out.append("pm" if t.hour >= 12 else "am")
            i += 2
            continue
        elif c in "-Z":
            matched = False
            for tok, _z, colon, secs, hours_only in _ZONE_TOKENS:
                if rest[1:].startswith(tok):
                    out.append(_fmt_offset(t, z=(c == "Z"), colon=colon, seconds=secs,
                                           hours_only=hours_only))
                    i += 1 + len(tok)
                    matched = True
                    break
            if matched:
                continue
        elif c in ".," and len(rest) >= 2 and rest[1] in "09":
            ch = rest[1]
            j = 1
            while j < len(rest) and rest[j] == ch:
                j += 1
            if not (j < len(rest) and rest[j].isdigit()):
                digits = j - 1
                frac = f"{t.microsecond:06d}{'0' * 3}"[:digits].ljust(digits, "0")
                if ch == "9":
                    frac = frac.rstrip("0")
                    out.append(c + frac if frac else "")
                else:
                    out.append(c + frac)
                i += j
                continue
        out.append(c)
        i += 1
    return "".join(out)


# ------------------------------------------------------------------------------------------------
# Pattern rendering and the next name

_TEMPLATE_EXPR = Pattern(r"\{\{(.*?)\}\}", re.S)
_DATE_FILTER = Pattern(
    r"""\s*creation_date\s*\|\s*date\s*:\s*(?:"([^"]*)"|'([^']*)')\s*""", re.S
)


def render_pattern(pattern: str, now: datetime) -> str:
    """Render the template parts of ``snapshots.pattern`` for a snapshot taken at ``now``."""
    if "{%" in pattern:
        raise InvalidConfig(PATTERN_KEY, "Template tags ({% %}) are not supported", pattern)
    text = re.sub(r"\{#.*?#\}", "", pattern, flags=re.S)

    def one(m: re.Match[str]) -> str:
        f = _DATE_FILTER.fullmatch(m.group(1))
        if f is None:
            raise InvalidConfig(
                PATTERN_KEY,
                f"Unsupported template expression {{{{{m.group(1)}}}}}: only "
                '{{ creation_date|date:"<Go time layout>" }} is supported',
                pattern,
            )
        layout = f.group(1) if f.group(1) is not None else f.group(2)
        return go_time_format(now, layout)

    rendered = _TEMPLATE_EXPR.sub(one, text)
    if "{{" in rendered or "}}" in rendered or "{#" in rendered:
        raise InvalidConfig(PATTERN_KEY, "Unbalanced template delimiters", pattern)
    return rendered


_GO_INT = Pattern(r"[+-]?[0-9]+")


def _scan_index(name: str, pattern: str) -> int | None:
    """The integer Go's ``fmt.Sscanf(name, pattern, &n)`` would read, or None if it fails.

    Sscanf matches the literal text around ``%d`` and ignores input left over after the format.
    """
    prefix, _, suffix = pattern.partition("%d")
    literal: list[str] = []
    for part in (prefix, suffix):
        if "%" in part.replace("%%", ""):
            return None  # another verb: Sscanf would fail for lack of operands
        literal.append(part.replace("%%", "%"))
    pre, post = literal
    if not name.startswith(pre):
        return None
    m = _GO_INT.match(name, len(pre))
    if m is None:
        return None
    value = int(m.group(0))
    if not -(2**63) <= value < 2**63:
        return None
    if not name[m.end():].startswith(post):
        return None
    return value


def next_index(pattern: str, existing: Iterable[str]) -> int:
    """LXD's ``GetNextInstanceSnapshotIndex``: one past the highest index among matching names."""
    nxt = 0
    for name in existing:
        n = _scan_index(name, pattern)
        if n is not None and n >= nxt:
            nxt = n + 1
    return nxt


def next_snapshot_name(pattern: str | None, existing: Sequence[str], now: datetime) -> str:
    """The name of the next unnamed or scheduled snapshot.

    ``pattern`` empty or None means ``snap%d``. With one ``%d`` the index is max+1 over existing
    names that match (so with snap0 and snap2 the next is snap3, and a deleted highest index is
    reused). With no ``%d`` and the name taken, ``-%d`` is appended and the same rule applies.
    """
    source = pattern or DEFAULT_PATTERN
    rendered = render_pattern(source, now)
    count = rendered.count("%d")
    if count > 1:
        raise InvalidConfig(PATTERN_KEY, "Snapshot pattern may contain '%d' only once", source)
    if count == 1:
        name = rendered.replace("%d", str(next_index(rendered, existing)), 1)
    elif rendered in existing:
        with_index = rendered + "-%d"
        name = with_index.replace("%d", str(next_index(with_index, existing)), 1)
    else:
        name = rendered
    try:
        validate_snapshot_name(name)
    except InvalidName as e:
        raise InvalidConfig(
            PATTERN_KEY, f"Invalid snapshot name {name!r}: {e.reason}", source
        ) from e
    return name


_SAMPLE_DATE = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)


def validate_pattern(pattern: str) -> None:
    """Refuse a ``snapshots.pattern`` that can never give a valid name (checked at set time,
    where LXD only finds out at the first snapshot)."""
    if pattern == "":
        return
    next_snapshot_name(pattern, (), _SAMPLE_DATE)


# ------------------------------------------------------------------------------------------------
# Cron schedules

SCHEDULE_ALIASES = (
    "@hourly", "@daily", "@midnight", "@weekly", "@monthly",
    "@annually", "@yearly", "@startup", "@never",
)
_ALIAS_CRON = {
    "@hourly": "{m} * * * *",
    "@daily": "{m} {h} * * *",
    "@midnight": "{m} 0 * * *",
    "@weekly": "{m} {h} * * 0",
    "@monthly": "{m} {h} 1 * *",
    "@annually": "{m} {h} 1 1 *",
    "@yearly": "{m} {h} 1 1 *",
}
_FIELD_FORM = "Schedule must be of the form: <minute> <hour> <day-of-month> <month> <day-of-week>"

_MONTH_NAMES = {n[:3].lower(): i + 1 for i, n in enumerate(_MONTHS)}
_DOW_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# (min, max, names) per field, in cron order
_BOUNDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, _MONTH_NAMES),
    (0, 6, _DOW_NAMES),
)


class _CronError(ValueError):
    pass


class CronSpec(Value, frozen=True):
    """One 5-field cron expression, expanded to the sets of values it allows."""

    _fields = ("minutes", "hours", "days", "months", "weekdays", "days_star", "weekdays_star")
    __slots__ = _fields

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_star: bool
    weekdays_star: bool

    def __init__(self, minutes: frozenset[int], hours: frozenset[int], days: frozenset[int],
                 months: frozenset[int], weekdays: frozenset[int], days_star: bool,
                 weekdays_star: bool) -> None:
        assign(self, "minutes", minutes)
        assign(self, "hours", hours)
        assign(self, "days", days)
        assign(self, "months", months)
        assign(self, "weekdays", weekdays)
        assign(self, "days_star", days_star)
        assign(self, "weekdays_star", weekdays_star)

    def day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.weekday() + 1) % 7 in self.weekdays
        # robfig/cron: if either day field is "*" both must match, otherwise either may.
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def matches(self, t: datetime) -> bool:
        return (
            t.minute in self.minutes
            and t.hour in self.hours
            and t.month in self.months
            and self.day_matches(t)
        )


class Schedule(Value, frozen=True):
    """A parsed ``snapshots.schedule``: cron specs plus whether ``@startup`` was given."""

    _fields = ("crons", "startup")
    __slots__ = _fields

    crons: tuple[CronSpec, ...]
    startup: bool

    def __init__(self, crons: tuple[CronSpec, ...], startup: bool) -> None:
        assign(self, "crons", crons)
        assign(self, "startup", startup)


def _parse_int(s: str, names: dict[str, int]) -> int:
    if s.lower() in names:
        return names[s.lower()]
    if not re.fullmatch(r"[+-]?[0-9]+", s):
        raise _CronError(f"failed to parse int from {s}")
    v = int(s)
    if v < 0:
        raise _CronError(f"negative number ({v}) not allowed: {s}")
    return v


def _parse_range(expr: str, lo: int, hi: int, names: dict[str, int]) -> tuple[set[int], bool]:
    range_and_step = expr.split("/")
    low_high = range_and_step[0].split("-")
    single = len(low_high) == 1
    star = False
    if low_high[0] in ("*", "?"):
        start, end, star = lo, hi, True
    else:
        start = _parse_int(low_high[0], names)
        if len(low_high) == 1:
            end = start
        elif len(low_high) == 2:
            end = _parse_int(low_high[1], names)
        else:
            raise _CronError(f"too many hyphens: {expr}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        step = _parse_int(range_and_step[1], {})
        if single:
            end = hi
        if step > 1:
            star = False
    else:
        raise _CronError(f"too many slashes: {expr}")
    if start < lo:
        raise _CronError(f"beginning of range ({start}) below minimum ({lo}): {expr}")
    if end > hi:
        raise _CronError(f"end of range ({end}) above maximum ({hi}): {expr}")
    if start > end:
        raise _CronError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise _CronError(f"step of range should be a positive number: {expr}")
    return set(range(start, end + 1, step)), star


def _parse_field(
    field: str, lo: int, hi: int, names: dict[str, int]
) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for expr in field.split(","):
        got, is_star = _parse_range(expr, lo, hi, names)
        values |= got
        star = star or is_star
    return frozenset(values), star


def parse_cron(spec: str) -> CronSpec:
    """Parse one 5-field cron expression; InvalidConfig on error (LXD's wording)."""
    fields = spec.split(" ")
    if len(fields) != 5:
        raise InvalidConfig(SCHEDULE_KEY, _FIELD_FORM, spec)
    try:
        parsed = [
            _parse_field(f, lo, hi, names)
            for f, (lo, hi, names) in zip(fields, _BOUNDS, strict=True)
        ]
    except _CronError as e:
        raise InvalidConfig(SCHEDULE_KEY, f"Error parsing schedule: {e}", spec) from e
    return CronSpec(
        minutes=parsed[0][0],
        hours=parsed[1][0],
        days=parsed[2][0],
        months=parsed[3][0],
        weekdays=parsed[4][0],
        days_star=parsed[2][1],
        weekdays_star=parsed[4][1],
    )


def _obfuscated(subject: str | int | None) -> tuple[int, int]:
    """A stable minute and hour per instance, so ``@daily`` snapshots of many instances spread
    out (LXD does the same with a different generator)."""
    if subject is None:
        return 0, 0
    import hashlib  # here: OpenSSL's start costs ~2 ms, which a config without schedules skips
    digest = hashlib.sha256(str(subject).encode()).digest()
    return digest[0] % 60, digest[1] % 24


def parse_schedule(spec: str, *, subject: str | int | None = None) -> Schedule:
    """Parse ``snapshots.schedule``. ``subject`` (e.g. the instance name) picks the stable
    minute/hour the aliases fire at; without it they fire at minute 0 (and hour 0)."""
    if spec == "":
        return Schedule((), False)
    minute, hour = _obfuscated(subject)
    crons: list[CronSpec] = []
    startup = False
    for trigger in spec.lower().split(", "):
        if trigger in SCHEDULE_ALIASES:
            if trigger == "@startup":
                startup = True
            elif trigger != "@never":
                crons.append(parse_cron(_ALIAS_CRON[trigger].format(m=minute, h=hour)))
            continue
        crons.append(parse_cron(trigger))
    return Schedule(tuple(crons), startup)


def validate_schedule(spec: str) -> None:
    """LXD's ``IsCron`` with the snapshot aliases."""
    parse_schedule(spec)


def _floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


_SEARCH_DAYS = 366 * 5  # robfig/cron gives up after five years too


def next_run(schedule: Schedule | str, after: datetime, *, subject: str | int | None = None
             ) -> datetime | None:
    """The first scheduled minute strictly after ``after``; None if there is none within 5 years."""
    sched = parse_schedule(schedule, subject=subject) if isinstance(schedule, str) else schedule
    if not sched.crons:
        return None
    best: datetime | None = None
    for cron in sched.crons:
        t = _next_for(cron, after)
        if t is not None and (best is None or t < best):
            best = t
    return best


def _next_for(cron: CronSpec, after: datetime) -> datetime | None:
    t = _floor_minute(after) + timedelta(minutes=1)
    hours = sorted(cron.hours)
    minutes = sorted(cron.minutes)
    for _ in range(_SEARCH_DAYS):
        if t.month in cron.months and cron.day_matches(t):
            for h in hours:
                if h < t.hour:
                    continue
                for m in minutes:
                    if h == t.hour and m < t.minute:
                        continue
                    return t.replace(hour=h, minute=m)
        t = (t + timedelta(days=1)).replace(hour=0, minute=0)
    return None


#: How far ahead of a housekeeping run's ``now`` the last run's stamp may be and still be kept
#: (``stamp_time``): another run's, that went first while this one waited for locks. Beyond
#: it the clock was set back, and ``now`` is kept.
STAMP_AHEAD = timedelta(hours=1)


def stamp_time(now: datetime, looked: datetime | None) -> datetime:
    """The time a housekeeping run records as its look at a schedule: ``now``, never back
    from the last look. A run whose ``now`` was older than the stamp (it waited for the lock
    while a later run went first) put it back, and the next run took that minute's snapshot
    again."""
    if looked is not None and now < looked <= now + STAMP_AHEAD:
        return looked
    return now


def stamp_when(value: object) -> datetime | None:
    """A time a housekeeping stamp holds (``parse_api_time``: UTC where it names no zone);
    None for none or garbage (the stamp is not durable: a power loss may leave it empty)."""
    try:
        return parse_api_time(value)
    except ValueError:
        return None


def stamp_looked(stamp: Mapping[str, object], snapshots: Container[str]) -> datetime | None:
    """When a housekeeping run last looked at an instance's or a volume's schedule, from the
    stamp the runs leave (``last_run``). A run writes ``taking_stamp`` before it takes a
    scheduled snapshot: if it was killed after that snapshot's commit and before its own
    stamp, the snapshot it names is among ``snapshots`` (those there are now), so the run did
    take it, and its minute (``taking``) counts as looked at — not due again, a second
    snapshot in the same minute. If not, the old time stands and the snapshot is taken now."""
    last = stamp_when(stamp.get("last_run"))
    taking = stamp_when(stamp.get("taking"))
    snap = stamp.get("snapshot")
    if taking is not None and isinstance(snap, str) and snap in snapshots:
        return taking if last is None else max(last, taking)
    return last


def taking_stamp(looked: datetime | None, now: datetime, snapshot: str) -> dict[str, str]:
    """The stamp a run writes before it takes the scheduled ``snapshot`` (``stamp_looked``)."""
    before = {} if looked is None else {"last_run": looked.isoformat()}
    return {**before, "taking": now.isoformat(), "snapshot": snapshot}


def schedule_due(
    spec: str,
    last: datetime | None,
    now: datetime,
    *,
    subject: str | int | None = None,
    at_startup: bool = False,
) -> bool:
    """Whether a scheduled snapshot is due at ``now``.

    Due if a scheduled minute lies in ``(last, now]``; with ``last`` None (pass the instance's
    creation time instead where you have it), only if ``now`` is itself a scheduled minute.
    ``at_startup`` says the caller is running its host-start pass, where ``@startup`` fires.
    """
    sched = parse_schedule(spec, subject=subject)
    if at_startup and sched.startup:
        return True
    if last is None:
        minute = _floor_minute(now)
        return any(c.matches(minute) for c in sched.crons)
    nxt = next_run(sched, last)
    return nxt is not None and nxt <= now
