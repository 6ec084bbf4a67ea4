"""``lxc list``'s columns and filters, read as LXD 5.0's client reads them.

Columns: shorthand letters, and custom columns ``[config:|devices:]key[:name][:maxWidth]`` (an
entry holding a ``.`` is one); filters: a name (a regular expression anchored at both ends, or a
prefix), ``key=value`` on the expanded config (each part of ``key`` a prefix of the key's part,
the value an anchored regular expression) and the shorthands ``status=``, ``type=``,
``architecture=``, ``location=``, ``ipv4=``, ``ipv6=`` (a ``,`` between values: any of them).
Kept apart from ``instances`` so that the common ``lxdlib list`` (letters only, no filter) reads
nothing more than it did; no import here costs start-up time (no ``typing``, no ``re`` work
unless a filter is given).
"""

from __future__ import annotations

from ..errors import TYPE_CHECKING, InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

#: LXD's letters and their headers (``L``, the cluster member, is refused: no cluster here)
LETTERS = {
    "n": "NAME", "s": "STATE", "4": "IPV4", "6": "IPV6", "t": "TYPE", "S": "SNAPSHOTS",
    "a": "ARCHITECTURE", "c": "CREATED AT", "l": "LAST USED AT", "p": "PID", "P": "PROFILES",
    "b": "STORAGE POOL", "d": "DESCRIPTION", "N": "PROCESSES", "m": "MEMORY USAGE",
    "M": "MEMORY USAGE%", "u": "CPU USAGE", "e": "PROJECT", "D": "DISK USAGE",
    "f": "BASE IMAGE", "F": "BASE IMAGE",
}
#: LXD's default (its ``L`` dropped when not clustered) and ``--fast``'s columns
DEFAULT = "ns46tSL"
FAST = "nsacPt"
#: the letters whose cells need the instance's counters (liblxc, cgroups)
USAGE_LETTERS = "NmMu"
SHORTHAND_FILTERS = ("type", "status", "architecture", "location", "ipv4", "ipv6")


class Custom:
    """A custom column: a config key (local value, else the expanded one) or a device's key
    (``eth0.parent``), its header and the width it is cut to (-1: none)."""

    __slots__ = ("header", "key", "source", "width")

    def __init__(self, source: str, key: str, header: str, width: int) -> None:
        self.source = source
        self.key = key
        self.header = header
        self.width = width

    def cell(self, config: Mapping[str, str], expanded: Mapping[str, str],
             devices: Mapping[str, Mapping[str, str]],
             expanded_devices: Mapping[str, Mapping[str, str]]) -> str:
        if self.source == "config":
            value = config[self.key] if self.key in config else expanded.get(self.key, "")
        else:
            dev, dot, key = self.key.partition(".")
            if not dot:
                return ""
            local = devices.get(dev, {})
            value = local[key] if key in local else expanded_devices.get(dev, {}).get(key, "")
        return value[:self.width] if 0 < self.width < len(value) else value


def title(name: str) -> str:
    """A custom column's header as LXD's tables print it: ``_`` and ``.`` (unless between
    digits) as spaces, upper case (``limits.memory`` → ``LIMITS MEMORY``)."""
    chars = list(name)
    for i, ch in enumerate(chars):
        if ch == "_":
            chars[i] = " "
        elif ch == ".":
            before = i > 0 and (chars[i - 1].isdigit() or chars[i - 1] == " ")
            after = i < len(chars) - 1 and (chars[i + 1].isdigit() or chars[i + 1] == " ")
            if not (before and after):
                chars[i] = " "
    out = "".join(chars).strip()
    return (" " if name and not out else out).upper()


def parse(spec: str | None, fast: bool, all_projects: bool = False) -> list[str | Custom]:
    """The columns of ``-c``/``--fast``, with LXD's refusals (each an ``InvalidArgument``);
    ``--all-projects`` puts LXD's ``PROJECT`` column before the default ones (a root has one
    project, so it lists the same instances)."""
    if fast:
        if spec is not None and spec != DEFAULT:
            raise InvalidArgument("Can't specify --fast with --columns")
        spec = FAST
    elif spec is None:
        spec = "e" + DEFAULT if all_projects else DEFAULT
    if spec not in (DEFAULT, "e" + DEFAULT) and "L" in spec:
        raise InvalidArgument("Can't specify column L when not clustered")
    spec = spec.replace("L", "")
    out: list[str | Custom] = []
    for entry in spec.split(","):
        if entry == "":
            raise InvalidArgument("Empty column entry (redundant, leading or trailing command) "
                                  f"in '{spec}'")
        if "." not in entry:  # config keys always hold a dot: anything else is letters
            for ch in entry:
                if ch not in LETTERS:
                    raise InvalidArgument(f"Unknown column shorthand char '{ch}' in '{entry}'")
                out.append(ch)
            continue
        out.append(_custom(entry))
    return out


def _custom(entry: str) -> Custom:
    parts = entry.split(":")
    source = "config"
    if parts[0] in ("config", "devices") and len(parts) > 1:
        source = parts.pop(0)
    if len(parts) > 3:
        raise InvalidArgument(f"Invalid config key column format (too many fields): '{entry}'")
    key = parts[0]
    if source == "config":
        from ..config.schema import spec_for
        try:
            spec_for(key)
        except InvalidArgument:
            raise InvalidArgument(f"Invalid config key '{key}' in '{entry}'") from None
    name = key
    if len(parts) > 1:
        if parts[1] == "" and len(parts) != 3:
            raise InvalidArgument(f"Invalid name in '{entry}', empty string is only allowed "
                                  "when defining maxWidth")
        name = parts[1]
    width = -1
    if len(parts) > 2:
        try:
            width = int(parts[2])
        except ValueError:
            raise InvalidArgument(f"Invalid max width (must be an integer) '{parts[2]}' in "
                                  f"'{entry}'") from None
        if width < -1:
            raise InvalidArgument(f"Invalid max width (must -1, 0 or a positive integer) "
                                  f"'{parts[2]}' in '{entry}'")
        if width == 0:
            width = len(name)
    return Custom(source, key, title(name), width)


def headers(columns: Sequence[str | Custom]) -> list[str]:
    return [c.header if isinstance(c, Custom) else LETTERS[c] for c in columns]


def letters(columns: Sequence[str | Custom]) -> str:
    return "".join(c for c in columns if isinstance(c, str))


def wants_config(columns: Sequence[str | Custom], filters: Sequence[str]) -> bool:
    """Whether the rows or the filters need each instance's expanded config and devices."""
    return "M" in letters(columns) or any(isinstance(c, Custom) for c in columns) or any(
        "=" in f and f.split("=", 1)[0].lower() not in SHORTHAND_FILTERS for f in filters)


def wants_network(filters: Sequence[str]) -> bool:
    return any(f.split("=", 1)[0].lower() in ("ipv4", "ipv6") for f in filters if "=" in f)


def _anchored(text: str) -> str:
    return text if "^" in text or "$" in text else f"^{text}$"


def _dot_prefix(short: str, full: str) -> bool:
    shorts, fulls = short.split("."), full.split(".")
    return len(shorts) == len(fulls) and all(f.startswith(s) for s, f in zip(shorts, fulls,
                                                                               strict=True))


def _net_match(net: Mapping[str, Any] | None, family: str, query: str) -> bool:
    import ipaddress
    try:
        subnet = ipaddress.ip_network(query, strict=False) if "/" in query else None
    except ValueError:
        subnet = None
    for nic in (net or {}).values():
        for addr in nic.get("addresses", ()):
            if addr.get("family") != family:
                continue
            if addr.get("address") == query:
                return True
            if subnet is not None:
                try:
                    if ipaddress.ip_address(addr.get("address", "")) in subnet:
                        return True
                except ValueError:
                    continue
    return False


def _shorthand(key: str, value: str, facts: Mapping[str, str],
               net: Mapping[str, Any] | None) -> bool:
    def one(v: str) -> bool:
        if key == "ipv4":
            return _net_match(net, "inet", v)
        if key == "ipv6":
            return _net_match(net, "inet6", v)
        return facts.get(key, "").lower() == v.lower()
    return any(one(v) for v in value.split(","))


def matches(filters: Sequence[str], name: str, facts: Mapping[str, str],
            expanded: Mapping[str, str], net: Mapping[str, Any] | None) -> bool:
    """Whether an instance passes every filter, as LXD's ``shouldShow``; ``facts``: its
    ``status``, ``type``, ``architecture``, ``location``."""
    import re
    for f in filters:
        if "=" not in f:
            try:
                if re.search(_anchored(f), name):
                    continue
            except re.error:
                pass
            if not name.startswith(f):
                return False
            continue
        key, value = f.split("=", 1)
        if key.lower() in SHORTHAND_FILTERS and _shorthand(key.lower(), value, facts, net):
            continue
        found = False
        for ckey, cvalue in expanded.items():
            if not _dot_prefix(key, ckey):
                continue
            try:
                pattern = re.compile(_anchored(value))
            except re.error:
                if value != cvalue:
                    return False  # the property was found but did not match
                found = True
                break
            if pattern.search(cvalue):
                found = True
                break
        if expanded.get(key) == value:
            continue
        if not found:
            return False
    return True
