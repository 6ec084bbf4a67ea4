"""Tables and formats as LXD's client prints them (``--format table|csv|json|yaml|compact``)."""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping, Sequence

from ..errors import TYPE_CHECKING, InvalidArgument

if TYPE_CHECKING:
    from typing import Any

FORMATS = ("table", "csv", "json", "yaml", "compact")


def add_format(p: Any) -> None:
    """``-f/--format`` as ``lxc`` has it: any word is accepted here and a wrong one is refused
    by ``emit`` as ``Invalid format "x"`` (exit 1, as LXD), not by the parser (exit 2)."""
    p.add_argument("-f", "--format", default="table", metavar="csv|json|table|yaml|compact",
                   help="output format (default table)")


def add_columns(p: Any, default: str, letters: dict[str, str]) -> None:
    """``-c/--columns`` with its letters listed in the help, as ``lxc`` describes them."""
    legend = ", ".join(f"{k} {v}" for k, v in letters.items())
    p.add_argument("-c", "--columns", default=default, metavar="COLUMNS",
                   help=f"column letters, optionally comma-separated (default {default}): "
                        f"{legend}")


def columns(spec: str, known: Sequence[str]) -> list[str]:
    """The column letters of a ``-c`` value, in order, as LXD reads them: comma-separated
    groups of letters, none empty, each letter one of ``known``."""
    out: list[str] = []
    for entry in spec.split(","):
        if entry == "":
            raise InvalidArgument("Empty column entry (redundant, leading or trailing command) "
                                  f"in '{spec}'")
        for ch in entry:
            if ch not in known:
                raise InvalidArgument(f"Unknown column shorthand char '{ch}' in '{entry}'")
            out.append(ch)
    return out


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InvalidArgument(f'Invalid format "{fmt}"')


def natural_key(row: Sequence[str]) -> list[list[tuple[int, int, str]]]:
    """Sort key of lxc's natural order of rows (``snap2`` before ``snap10``), column by
    column."""
    import re  # here: only the verbs that sort so need it
    return [[(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", c)]
            for c in row]


def visible(text: str) -> str:
    """One line of text as a terminal is handed it: every character that is not printable is
    spelled ``\\xNN`` (``\\uNNNN``), as ``netstate.shown_name`` spells an interface name. What
    the tables and ``image info`` print is partly an image's word (its properties, from a
    tarball or a remote's catalogue) or a backup's (a description), and an ``ESC ] 0 ;`` in
    one set the admin's window title; others clear or rewrite the screen, or (a CR) the
    line. LXD prints them as they are."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or _is_space(c) else
                   f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" for c in text)


def _is_space(c: str) -> bool:
    """A space other than ASCII's (Zs: no-break, ideographic, thin…), which Python does not
    call printable but a terminal shows as a space: French text puts a no-break space before
    its colons, and a table spelled it ``\\xa0``. Line and paragraph separators stay out."""
    return ord(c) >= 0xa0 and c.isspace() and c not in "\u2028\u2029"


def _cell_lines(cell: object) -> list[str]:
    return [visible(x) for x in str(cell).split("\n")]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """LXD's boxed table; a cell may hold several lines (``visible`` each)."""
    split = [[_cell_lines(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in split:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(len(x) for x in lines))
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: Sequence[str], center: bool = False) -> str:
        parts = []
        for c, w in zip(cells, widths, strict=True):
            if center:  # LXD's tables put the odd padding space on the right
                left = (w - len(c)) // 2
                c = " " * left + c
            parts.append(" " + c.ljust(w) + " ")
        return "|" + "|".join(parts) + "|"

    out = [sep, line(headers, center=True), sep]
    for row in split:
        height = max((len(x) for x in row), default=1)
        for k in range(height):
            out.append(line([cell[k] if k < len(cell) else "" for cell in row]))
        out.append(sep)
    return "\n".join(out)


def compact(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """LXD's ``--format compact``: the table without its borders, each cell padded by a space
    on both sides, headers centred, a cell of several lines on several lines."""
    split = [[_cell_lines(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in split:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(len(x) for x in lines))

    def line(cells: Sequence[str], center: bool = False) -> str:
        parts = []
        for c, w in zip(cells, widths, strict=True):
            if center:
                c = " " * ((w - len(c)) // 2) + c
            parts.append(" " + c.ljust(w) + " ")
        return " " + "".join(parts) + " "

    out = [line(headers, center=True)]
    for row in split:
        height = max((len(x) for x in row), default=1)
        for k in range(height):
            out.append(line([cell[k] if k < len(cell) else "" for cell in row]))
    return "\n".join(out)


def to_csv(rows: Sequence[Sequence[str]]) -> str:
    """Rows as LXD's client writes them (Go's ``encoding/csv``): a row of one empty cell is an
    empty line (Python's writer would quote it, ``""``)."""
    import csv  # here: only --format csv needs it, and every table verb imports this module
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in rows:
        if len(r) == 1 and str(r[0]) == "":
            buf.write("\n")
            continue
        w.writerow([str(c) for c in r])
    return buf.getvalue().rstrip("\n")


def sorted_devices(devices: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """Devices, and each device's keys, in name order, as Go writes its maps (``show``,
    ``device show``, ``list -f json|yaml``)."""
    return {n: dict(sorted(d.items())) for n, d in sorted(devices.items())}


def go_json(data: Any) -> str:
    """``data`` as LXD's client writes JSON (Go's ``json.Marshal``): no spaces, UTF-8 as it
    is, and ``<``, ``>``, ``&``, U+2028 and U+2029 escaped (they only occur inside strings)."""
    import json  # here: only --format json needs it
    text = json.dumps(data, default=str, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def emit(fmt: str, headers: Sequence[str], rows: Sequence[Sequence[str]], data: Any) -> None:
    """Print rows in ``fmt``; json/yaml print ``data`` (the full objects, as LXD does)."""
    check_format(fmt)
    if fmt == "json":
        print(go_json(data))
    elif fmt == "yaml":
        sys.stdout.write(dump_yaml(data))
    elif fmt == "csv":
        if rows:
            print(to_csv(rows))
    elif fmt == "compact":
        print(compact(headers, rows))
    else:
        print(table(headers, rows))


# -- YAML as LXD's client writes it (Go's gopkg.in/yaml.v2) ------------------------------------
# yaml.v2 reads a plain scalar with YAML 1.1's wider rules (``y``/``n``/``on``/``off`` are
# booleans, ``1e3``/``0x1f``/``1:20``/``2001-01-01`` are not strings) and writes a string that
# would read back as anything else in double quotes; other strings it writes as PyYAML would
# (the two emitters are ports of libyaml), multi-line ones as literal blocks.
_GO_BOOL_NULL = frozenset({
    "", "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE",
    "n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE",
    "~", "null", "Null", "NULL", ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF",
    "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF", "<<"})
_GO_FLOAT = r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"
_GO_BASE60 = r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?"
_GO_TIME = (r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
            r"(?:(?:[tT][0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(?:\.[0-9]*)?(?:Z|[-+][0-9]{2}:[0-9]{2}))"
            r"|(?: [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(?:\.[0-9]*)?))?")
_go_dumper: Any = None


def go_reads_as_string(s: str) -> bool:
    """Whether yaml.v2 reads ``s``, written plain, back as a string (its ``resolve``): not one
    of YAML 1.1's booleans/nulls, not a number in any of Go's spellings (``0x``, ``0o``,
    ``0b``, underscores, exponents, base 60), not a timestamp."""
    import re
    if s in _GO_BOOL_NULL:
        return False
    if s[0] not in "0123456789+-.":
        return True
    plain = s.replace("_", "")
    if re.fullmatch(r"[-+]?(0[xX][0-9a-fA-F]+|0[oO]?[0-7]+|0[bB][01]+|[0-9]+)", plain):
        return False
    return not any(re.fullmatch(p, x) for p, x in (
        (_GO_FLOAT, plain), (_GO_BASE60, s), (_GO_TIME, s)))


def _dumper() -> Any:
    """A PyYAML dumper that writes as yaml.v2 (built on first use: ``yaml`` is no start-up
    import). Its resolver is yaml.v2's, so that the emitter's plain/quoted choice is made
    against what LXD, not PyYAML, would read back."""
    global _go_dumper
    if _go_dumper is not None:
        return _go_dumper
    import yaml

    str_tag = "tag:yaml.org,2002:str"

    class GoDumper(yaml.SafeDumper):
        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            resolve: Any = super().resolve  # PyYAML's own is untyped
            tag = resolve(kind, value, implicit)
            if (kind is yaml.ScalarNode and implicit[0] and tag == str_tag
                    and not go_reads_as_string(value)):
                return "tag:yaml.org,2002:bool"  # not a string to yaml.v2: never plain
            return tag

    def represent_str(dumper: Any, value: str) -> Any:
        # double quotes for what yaml.v2 would not read as a string, and for what PyYAML would
        # not (``=``): ``edit`` reads the text back with PyYAML
        style = None
        if "\n" in value:
            style = "|"
        elif dumper.resolve(yaml.ScalarNode, value, (True, False)) != str_tag:
            style = '"'
        return dumper.represent_scalar(str_tag, value, style=style)

    GoDumper.add_representer(str, represent_str)
    GoDumper.add_representer(GoTime, lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:timestamp", str(value)))  # the plain form resolves as this tag
    _go_dumper = GoDumper
    return GoDumper


#: the fields LXD's API holds as Go times (``created_at``…): yaml.v2 writes those plain,
#: ``created_at: 2026-01-02T03:04:05Z``, where a string that reads as a time gets quotes
_TIME_KEYS = frozenset({"created_at", "last_used_at", "expires_at", "uploaded_at",
                        "updated_at", "first_seen_at", "last_seen_at"})
#: maps of free keys and values (a config key can be any string): no Go time below them
_FREE_MAPS = frozenset({"config", "expanded_config", "devices", "expanded_devices",
                        "properties"})
_RFC3339 = (r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
            r"(?:Z|[-+][0-9]{2}:[0-9]{2})")


class GoTime(str):
    """A Go time's text (RFC 3339) that ``dump_yaml`` writes plain, as yaml.v2 does."""


def _go_times(data: Any) -> Any:
    """``data`` with the RFC 3339 values of its ``_TIME_KEYS`` fields as ``GoTime``."""
    import re
    if isinstance(data, list):
        return [_go_times(x) for x in data]
    if not isinstance(data, dict):
        return data
    out = {}
    for k, v in data.items():
        if k in _TIME_KEYS and isinstance(v, str) and re.fullmatch(_RFC3339, v):
            out[k] = GoTime(v)
        elif k in _FREE_MAPS:
            out[k] = v
        else:
            out[k] = _go_times(v)
    return out


def dump_yaml(data: Any) -> str:
    """``data`` as LXD's ``show`` commands print it (yaml.v2's quoting; see ``_dumper``; a
    time field plain, see ``_TIME_KEYS``); it reads back unchanged with ``yaml.safe_load``
    (a time field as a ``datetime``, as it reads LXD's)."""
    import yaml
    return str(yaml.dump(_go_times(data), Dumper=_dumper(), default_flow_style=False,
                         sort_keys=False, allow_unicode=True))


def image_size(n: int) -> str:
    """An image's size as ``lxc image list`` and ``lxc image info`` print it: mebibytes with
    two decimals, labelled ``MB`` (LXD 5.0 divides by 1024² and writes MB; ``0.99MB`` for a
    1009KiB image). One helper so that the two verbs cannot drift apart."""
    return f"{n / 1024 / 1024:.2f}MB"


def size(n: int | None) -> str:
    if n is None:
        return ""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    v = float(n)
    for u in units:
        if v < 1024 or u == units[-1]:
            return f"{v:.2f}{u}" if u != "B" else f"{int(v)}B"
        v /= 1024
    return f"{n}B"
