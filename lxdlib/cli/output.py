"""Tables and formats as LXD's client prints them (``--format table|csv|json|yaml|compact``)."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence

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


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """LXD's boxed table; a cell may hold several lines."""
    split = [[str(c).split("\n") for c in row] for row in rows]
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
    split = [[str(c).split("\n") for c in row] for row in rows]
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


def emit(fmt: str, headers: Sequence[str], rows: Sequence[Sequence[str]], data: Any) -> None:
    """Print rows in ``fmt``; json/yaml print ``data`` (the full objects, as LXD does)."""
    check_format(fmt)
    if fmt == "json":
        import json  # here: only --format json needs it
        print(json.dumps(data, default=str))
    elif fmt == "yaml":
        import yaml  # here, not at the top: a table needs none of it (start-up time)
        sys.stdout.write(yaml.safe_dump(data, default_flow_style=False, sort_keys=False))
    elif fmt == "csv":
        if rows:
            print(to_csv(rows))
    elif fmt == "compact":
        print(compact(headers, rows))
    else:
        print(table(headers, rows))


def dump_yaml(data: Any) -> str:
    import yaml
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False, allow_unicode=True)


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
