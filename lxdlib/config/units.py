"""Parsers for the value syntaxes LXD options use: byte sizes, bit rates, booleans, expiry spans.

They follow LXD's own parsers (``units.ParseByteSizeString``, ``ParseBitSizeString``,
``validate.IsBool``, ``shared.GetExpiry``) so a value LXD accepts means the same here; they are
stricter only where LXD would accept garbage and fail later (an empty string, a negative size).
Every failure raises :class:`~lxdlib.errors.InvalidArgument`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ..errors import InvalidArgument
from ..patterns import Pattern
from ..values import Value, assign


def quoted(value: str) -> str:
    """``value`` in double quotes, as LXD's messages quote a refused value (Go's ``%q``):
    escaped, so a newline or a quote in it cannot fake a second line or a closing quote."""
    inner = value.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{inner}"'


INT64_MAX = 2**63 - 1

_DIGITS = frozenset("0123456789")

BYTE_SUFFIXES: dict[str, int] = {
    "": 1,
    "B": 1,
    " bytes": 1,
    "kB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "PB": 1000**5,
    "EB": 1000**6,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "PiB": 1024**5,
    "EiB": 1024**6,
}
"""The suffixes LXD's ``ParseByteSizeString`` knows. ``KB`` is not one of them: LXD refuses it."""

BIT_SUFFIXES: dict[str, int] = {
    "": 1,
    "bit": 1,
    "kbit": 1000,
    "Mbit": 1000**2,
    "Gbit": 1000**3,
    "Tbit": 1000**4,
    "Pbit": 1000**5,
    "Ebit": 1000**6,
    "Kibit": 1024,
    "Mibit": 1024**2,
    "Gibit": 1024**3,
    "Tibit": 1024**4,
    "Pibit": 1024**5,
    "Eibit": 1024**6,
}

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


def _split_number(s: str) -> tuple[str, str]:
    """Split at the first non-ASCII-digit, as LXD does: ``'256MiB'`` -> ``('256', 'MiB')``."""
    for i, ch in enumerate(s):
        if ch not in _DIGITS:
            return s[:i], s[i:]
    return s, ""


def _parse_scaled(s: str, suffixes: dict[str, int], what: str) -> int:
    if not isinstance(s, str):
        raise InvalidArgument(f"Invalid {what}: {s!r} is not a string")
    if s == "":
        raise InvalidArgument(f"Invalid {what}: empty value")
    number, suffix = _split_number(s)
    if number == "":
        raise InvalidArgument(f"Invalid value: {s}")
    value = int(number)
    if value > INT64_MAX:
        raise InvalidArgument(f"Invalid integer: {s}")
    mult = suffixes.get(suffix)
    if mult is None:
        if what == "bit rate":
            raise InvalidArgument(f"Unsupported suffix: {suffix}")
        raise InvalidArgument(f"Invalid value: {s}")
    result = value * mult
    if result > INT64_MAX:
        raise InvalidArgument(f"Overflow multiplying {value} with {mult}")
    return result


def parse_size(s: str) -> int:
    """Bytes from an LXD size string: ``'1048576'``, ``'256MB'``, ``'1GiB'``, ``'5 bytes'``.

    Decimal suffixes kB MB GB TB PB EB, binary KiB MiB GiB TiB PiB EiB, and B. No fractions,
    signs or spaces (except LXD's ``' bytes'``); the empty string is refused here (LXD reads it as
    0, which callers treat as "unset" before they get this far).
    """
    return _parse_scaled(s, BYTE_SUFFIXES, "size")


def parse_bit_rate(s: str) -> int:
    """Bits per second from an LXD rate string: ``'100Mbit'``, ``'1Gibit'``, ``'8000'``."""
    return _parse_scaled(s, BIT_SUFFIXES, "bit rate")


def format_size(n: int, precision: int = 2, *, iec: bool = True) -> str:
    """Human form like LXD's ``GetByteSizeStringIEC``: ``268435456`` -> ``'256.00MiB'``.

    With ``iec=False`` the decimal form (``GetByteSizeString``): ``'268.44MB'``.
    """
    if n < 0:
        raise InvalidArgument(f"Invalid size: {n} is negative")
    divisor = 1024 if iec else 1000
    units = (
        ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB") if iec else ("kB", "MB", "GB", "TB", "PB", "EB")
    )
    if n < divisor:
        return f"{n}B"
    value = float(n)
    chosen = units[0]
    for chosen in units:  # noqa: B007 - the last unit tried is the one used
        value /= divisor
        if value < divisor:
            break
    return f"{value:.{precision}f}{chosen}"


def is_bool(s: str) -> bool:
    """Whether LXD's ``IsBool`` would accept ``s``."""
    return s.lower() in _TRUE or s.lower() in _FALSE


def parse_bool(s: str) -> bool:
    """``true/false/yes/no/1/0/on/off`` in any case, as LXD accepts them."""
    low = s.lower() if isinstance(s, str) else ""
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise InvalidArgument(f"Invalid value for a boolean {quoted(s)}")


def is_true(s: str | None) -> bool:
    """LXD's ``shared.IsTrue``: a set, truthy boolean. Garbage and unset are not true."""
    return s is not None and s.lower() in _TRUE


def is_false(s: str | None) -> bool:
    """LXD's ``shared.IsFalse``: explicitly false. Unset is *not* false."""
    return s is not None and s.lower() in _FALSE


# ------------------------------------------------------------------------------------------------
# snapshots.expiry: "<n>(S|M|H|d|w|m|y)" fields separated by single spaces


class ExpiryDelta(Value, frozen=True):
    """A parsed ``snapshots.expiry``; months and years are calendar units, not fixed spans."""

    _fields = ("years", "months", "weeks", "days", "hours", "minutes", "seconds")
    __slots__ = _fields

    years: int
    months: int
    weeks: int
    days: int
    hours: int
    minutes: int
    seconds: int

    def __init__(self, years: int = 0, months: int = 0, weeks: int = 0, days: int = 0,
                 hours: int = 0, minutes: int = 0, seconds: int = 0) -> None:
        assign(self, "years", years)
        assign(self, "months", months)
        assign(self, "weeks", weeks)
        assign(self, "days", days)
        assign(self, "hours", hours)
        assign(self, "minutes", minutes)
        assign(self, "seconds", seconds)

    @property
    def is_zero(self) -> bool:
        return not any(self._values())


_EXPIRY_FIELD = Pattern(r"(\d+)([SMHdwmy])")
_EXPIRY_NAMES = {
    "S": "seconds",
    "M": "minutes",
    "H": "hours",
    "d": "days",
    "w": "weeks",
    "m": "months",
    "y": "years",
}


def parse_expiry(s: str) -> ExpiryDelta:
    """Parse ``'1M 2H 3d 4w 5m 6y'``: M minutes, H hours, d days, w weeks, m months, y years
    (and S seconds).

    Like LXD, fields are separated by exactly one space and a unit may not appear twice with a
    non-zero value. The empty string is "no expiry".
    """
    expr = s.strip()
    if expr == "":
        return ExpiryDelta()
    values: dict[str, int] = {}
    for field in expr.split(" "):
        m = _EXPIRY_FIELD.fullmatch(field)
        if m is None:
            raise InvalidArgument(f"Invalid expiry expression {s!r}")
        name = _EXPIRY_NAMES[m.group(2)]
        if values.get(name, 0) > 0:
            raise InvalidArgument(f"Invalid expiry expression {s!r}: {m.group(2)!r} given twice")
        values[name] = int(m.group(1))
    return ExpiryDelta(**values)


def add_expiry(ref: datetime, delta: ExpiryDelta) -> datetime:
    """``ref`` plus ``delta`` with Go's ``AddDate`` rules (Jan 31 + 1 month = Mar 3 or Mar 2)."""
    month0 = ref.month - 1 + delta.months
    year = ref.year + delta.years + month0 // 12
    month = month0 % 12 + 1
    # Go normalises an out-of-range day by rolling into the next month; do the same by
    # starting from the 1st and adding the day offset.
    first = ref.replace(year=year, month=month, day=1)
    rolled = first + timedelta(days=ref.day - 1 + delta.days + 7 * delta.weeks)
    return rolled + timedelta(hours=delta.hours, minutes=delta.minutes, seconds=delta.seconds)


def expiry_date(ref: datetime, s: str) -> datetime | None:
    """When a snapshot taken at ``ref`` expires under ``snapshots.expiry=s``; None if never."""
    delta = parse_expiry(s)
    if delta.is_zero:
        return None
    return add_expiry(ref, delta)


#: Go's zero ``time.Time`` as LXD's JSON and YAML print it: a time that was never set (a
#: snapshot's expiry and last use, an image's).
ZERO_TIME = "0001-01-01T00:00:00Z"
#: The Unix epoch as LXD prints it: what its database gives back for a time stored as 0 (an
#: instance never started, a local image that never expires in ``image show``).
EPOCH_TIME = "1970-01-01T00:00:00Z"


def format_api_time(t: datetime | None, unset: str = ZERO_TIME) -> str:
    """A time as LXD's JSON and YAML write it, ``unset`` when there is none.

    Go writes a ``time.Time`` in both (``encoding/json`` and yaml.v2) as RFC 3339 with
    nanoseconds (``time.RFC3339Nano``): the fraction of a second only when there is one,
    without its trailing zeros, so ``.5`` and not ``.500000`` as ``isoformat`` would, and
    whole seconds without any. LXD keeps its times in UTC: ``Z`` (a time without its zone is
    taken as local time, as ``astimezone`` takes it). One formatter for every document
    lxdlib writes in LXD's shape (``list --format``, ``show``s, the backup index, the image
    records), where four had their own and disagreed about the fraction."""
    if t is None:
        return unset
    t = t.astimezone(UTC)
    frac = f".{t.microsecond:06d}".rstrip("0") if t.microsecond else ""
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:" \
           f"{t.second:02d}{frac}Z"


def parse_api_time(value: object) -> datetime | None:
    """A time as LXD's API and its YAML carry it (``expires_at``, ``created_at``): RFC 3339
    text, with ``Z`` or an offset, or the datetime (or date) a YAML reader made of it. None,
    empty and LXD's zero time (year 1, ``0001-01-01T00:00:00Z``) are no time; a time without
    its zone is UTC. One parser for the backup index, the image records and ``edit``s, which
    each had their own. ``ValueError`` for anything else: the caller names the field."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        t = value
    else:  # text, or what YAML made of a date alone
        text = str(value)
        if text.startswith("0001-01-01"):
            return None
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.year <= 1:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def parse_duration_expiry(s: str) -> timedelta:
    """``snapshots.expiry`` as a fixed span, for display and rough comparisons.

    A month counts as 30 days and a year as 365 days here; use :func:`expiry_date` to get the
    exact calendar date LXD would compute.
    """
    d = parse_expiry(s)
    return timedelta(
        days=d.days + 7 * d.weeks + 30 * d.months + 365 * d.years,
        hours=d.hours,
        minutes=d.minutes,
        seconds=d.seconds,
    )

