"""The "shape" of a command's output, to compare lxdlib's ``lxdlib <verb>`` with LXD's recorded
``lxc <verb>`` without comparing what legitimately differs from run to run.

Pure functions, no I/O. ``normalise`` replaces volatile values (times, fingerprints, MACs,
addresses, sizes, pids, durations, UUIDs, interface and generated names) with placeholders and
drops progress lines; ``shape`` reduces one output to what must match (a table's columns and which
cells are filled, YAML's keys and value types, ``info``'s key lines, plain text once normalised,
the exit code, whether stderr is empty); ``differences`` lists, as stable one-line strings, how
two shapes differ, so a test can hold an allow-list of the known ones.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import yaml

TABLE, YAML, INFO, TEXT = "table", "yaml", "info", "text"

# Order matters: UUIDs and times before the hex and number patterns that would eat their parts,
# MACs before IPv6 (both are colon-separated hex).
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
     "<uuid>"),
    (r"\b\d{4}/\d{2}/\d{2} \d{1,2}:\d{2}(?::\d{2})? (?:UTC|[A-Z]{3,5})\b", "<time>"),
    (r"\b[A-Z][a-z]{2} \d{1,2}, \d{4} at \d{1,2}:\d{2}(?:am|pm) \([A-Z]{3,5}\)", "<time>"),
    (r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2}\b)?",
     "<time>"),
    (r"\b[0-9a-f]{64}\b", "<fingerprint>"),
    (r"\b[0-9a-f]{12}\b", "<fp12>"),
    (r"\b(?:[0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}\b", "<mac>"),
    (r"\b\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?\b", "<ipv4>"),
    (r"(?<![\w:])(?=[0-9a-fA-F:]*[0-9a-fA-F])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}"
     r"(?:/\d{1,3})?(?![\w:])", "<ipv6>"),
    (r"\b\d+(?:\.\d+)?(?:[KMGTPE]i?B|kB|B)(?:/s)?(?![\w])", "<size>"),
    (r"\b(?:\d+h)?(?:\d+m)?\d+(?:\.\d+)?(?:ms|µs|us|ns|s)\b", "<duration>"),
    (r"\b(?:veth|lxd|lxv)[0-9a-f]{6,}\b", "<host-iface>"),
    (r"\b(PID|Pid|pid): \d+\b", r"\1: <pid>"),
    (r"(Instance name is: )\S+", r"\1<generated-name>"),
))

#: A progress line of LXD's client (``Retrieving image: Unpack: 7% (332.23MB/s)``), printed
#: line by line when stdout is not a terminal, and its status lines that depend on timing
#: (``Remapping container filesystem`` shows only when the remap outlasts a poll).
_PROGRESS = re.compile(r"^(?:.*: \d{1,3}% \([^)]*\)|Remapping container filesystem)\s*$")


def normalise(text: str, subs: Mapping[str, str] | None = None) -> str:
    """``text`` with volatile values replaced by ``<placeholders>`` and progress lines dropped.

    ``subs`` maps literal values known to vary between runs (a port picked at run time, the
    host's name) to their placeholder; they are replaced first, longest first.
    """
    for value in sorted(subs or {}, key=len, reverse=True):
        if value:
            text = text.replace(value, (subs or {})[value])
    lines = [ln for ln in text.split("\n") if not _PROGRESS.match(ln)]
    text = "\n".join(lines)
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text


# -- shapes --------------------------------------------------------------------------------------

def table_shape(text: str) -> dict[str, Any]:
    """Columns of a boxed table (``+---+`` borders, ``|`` cells) and, per row, which cells hold
    something; a cell spread over several lines is one cell."""
    rows: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("+") and s.endswith("+"):
            if current is not None:
                rows.append(current)
            current = None
        elif s.startswith("|") and s.endswith("|"):
            cells = [c.strip() for c in s[1:-1].split("|")]
            current = cells if current is None else [
                (a + " " + b).strip() for a, b in zip(current, cells, strict=False)]
    if current is not None:
        rows.append(current)
    if not rows:
        return {"table": None}
    header, body = rows[0], rows[1:]
    return {"columns": header, "filled": [[bool(c) for c in row] for row in body]}


def type_tree(value: Any, subs: Mapping[str, str] | None = None) -> Any:
    """Keys and value types of parsed YAML/JSON: a dict keeps its (normalised) keys, a list
    becomes ``[]`` or a one-element list of its elements' merged shape, a scalar its type name."""
    if isinstance(value, dict):
        return {normalise(str(k), subs): type_tree(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        if not value:
            return []
        merged: Any = None
        for item in value:
            merged = _merge(merged, type_tree(item, subs))
        return [merged]
    if value is None:
        return "null"
    return type(value).__name__


def _merge(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = _merge(out.get(k), v)
        return out
    if a == b:
        return a
    return "|".join(sorted(set(str(a).split("|")) | set(str(b).split("|"))))


def yaml_shape(text: str, subs: Mapping[str, str] | None = None) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return {"yaml": None}
    return {"yaml": type_tree(doc, subs)}


_KEY = re.compile(r"^(\s*)([^:]+?):(?:\s|$)")


def info_shape(text: str, subs: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``info``'s lines as paths of keys (``Resources > Memory usage > Memory (peak)``); a line
    that is not ``Key: value`` (a list item, a snapshot line) keeps its normalised text."""
    paths: list[str] = []
    stack: list[tuple[int, str]] = []
    for line in normalise(text, subs).splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        m = _KEY.match(line)
        label = m.group(2).strip() if m else line.strip()
        if label.startswith("- "):
            label = "- <item>"
        while stack and stack[-1][0] >= indent:
            stack.pop()
        paths.append(" > ".join([p for _, p in stack] + [label]))
        if m:
            stack.append((indent, label))
    return {"lines": paths}


def text_shape(text: str, subs: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"text": [ln.rstrip() for ln in normalise(text, subs).splitlines() if ln.strip()]}


def shape(result: Mapping[str, Any], fmt: str, subs: Mapping[str, str] | None = None
          ) -> dict[str, Any]:
    """The shape of one run (``stdout``, ``stderr``, ``exit_code``) whose stdout is ``fmt``.

    stdout is only shaped by its format when the command succeeded: an error's stdout is
    compared as text (mostly empty, or progress lines that normalise away).
    """
    stdout = str(result["stdout"])
    if result["exit_code"] != 0 or fmt == TEXT:
        out = text_shape(stdout, subs)
    elif fmt == TABLE:
        out = table_shape(normalise(stdout, subs))
    elif fmt == YAML:
        out = yaml_shape(stdout, subs)
    elif fmt == INFO:
        out = info_shape(stdout, subs)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return {"exit_code": result["exit_code"], "stderr_empty": not str(result["stderr"]).strip(),
            "stdout": out}


# -- differences ---------------------------------------------------------------------------------

def differences(lxd: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    """How lxdlib's shape differs from LXD's, one stable line each (empty: same shape)."""
    out: list[str] = []
    if lxd["exit_code"] != ours["exit_code"]:
        out.append(f"exit code: LXD {lxd['exit_code']}, lxdlib {ours['exit_code']}")
    if lxd["stderr_empty"] != ours["stderr_empty"]:
        out.append("stderr: " + ("LXD empty, lxdlib not" if lxd["stderr_empty"]
                                 else "LXD has an error message, lxdlib none"))
    a, b = lxd["stdout"], ours["stdout"]
    if set(a) != set(b):
        out.append(f"stdout kind: LXD {sorted(a)}, lxdlib {sorted(b)}")
    elif "columns" in a:
        out += _table_diffs(a, b)
    elif "yaml" in a:
        out += _tree_diffs(a["yaml"], b["yaml"], "")
    elif "lines" in a:
        out += _line_diffs(a["lines"], b["lines"])
    elif a != b:
        key = next(iter(a))
        out.append(f"stdout: LXD {a[key]!r}, lxdlib {b[key]!r}")
    return out


def _table_diffs(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Columns, then rows counted by which cells are empty: row order follows names (values,
    some generated at random), so it is not compared."""
    if a["columns"] != b["columns"]:
        return [f"columns: LXD {a['columns']}, lxdlib {b['columns']}"]
    if len(a["filled"]) != len(b["filled"]):
        return [f"rows: LXD {len(a['filled'])}, lxdlib {len(b['filled'])}"]

    def pattern(row: list[bool]) -> str:
        empty = [c for c, filled in zip(a["columns"], row, strict=False) if not filled]
        return "rows with " + (", ".join(empty) + " empty" if empty else "every cell filled")
    ca = Counter(pattern(r) for r in a["filled"])
    cb = Counter(pattern(r) for r in b["filled"])
    return [f"{p}: LXD {ca[p]}, lxdlib {cb[p]}" for p in sorted(set(ca) | set(cb))
            if ca[p] != cb[p]]


def _tree_diffs(a: Any, b: Any, path: str) -> list[str]:
    here = path or "(top)"
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in a:
            sub = f"{path}.{k}" if path else str(k)
            if k not in b:
                out.append(f"missing key {sub}")
            else:
                out += _tree_diffs(a[k], b[k], sub)
        out += [f"extra key {f'{path}.{k}' if path else k}" for k in b if k not in a]
        return out
    if isinstance(a, list) and isinstance(b, list):
        if bool(a) != bool(b):
            return [f"{here}: LXD {'a non-empty' if a else 'an empty'} list, "
                    f"lxdlib {'a non-empty' if b else 'an empty'} list"]
        return _tree_diffs(a[0], b[0], f"{path}[]") if a else []
    if a != b:
        return [f"type of {here}: LXD {_kind(a)}, lxdlib {_kind(b)}"]
    return []


def _kind(t: Any) -> str:
    if isinstance(t, dict):
        return "mapping"
    if isinstance(t, list):
        return "list"
    return str(t)


#: ``info`` sections whose lines LXD prints from a Go map, in an order that changes between
#: runs (``lxc image info``'s properties): their order is not compared.
UNORDERED = ("Properties > ",)


def _ordered(lines: list[str]) -> list[str]:
    """``lines`` with each run of lines under an ``UNORDERED`` section sorted."""
    out: list[str] = []
    run: list[str] = []
    for line in [*lines, ""]:
        if line.startswith(UNORDERED):
            run.append(line)
            continue
        out += sorted(run)
        run = []
        out.append(line)
    return out[:-1]


def _line_diffs(a: list[str], b: list[str]) -> list[str]:
    ca, cb = Counter(a), Counter(b)
    out = [f"missing line {p}" for p in ca if cb[p] < ca[p]]
    out += [f"extra line {p}" for p in cb if ca[p] < cb[p]]
    if not out and _ordered(a) != _ordered(b):
        out.append("line order differs")
    return out
