"""Character classes the name and key rules use, judged by Unicode category.

Names, config keys and device option names are checked for control and format characters
(categories Cc, Cf, Zl, Zp: newlines, NUL, zero-width and bidi marks) and lone surrogates (Cs),
values for lone surrogates (``is_utf8``), and ``user.*`` key names
for letters, digits and punctuation only (L*, Nd, P*), as LXD checks them. ``unicodedata``
answers that, but loading its tables costs ~1 ms of every command that validates a name, and
nearly every name is ASCII, whose categories are fixed: ASCII text is judged here from those,
``unicodedata`` is imported only for text beyond it. ``tests/unit/test_config_text.py`` holds
both ways to the same answer for every ASCII character.

``scalar_text``: a YAML scalar (an edited document, a preseed) as the text LXD keeps for it.
"""

from __future__ import annotations

from ..errors import TYPE_CHECKING, InvalidArgument, InvalidConfig

if TYPE_CHECKING:
    from typing import Any

#: the ASCII characters of Unicode's punctuation categories (P*); the others that are neither
#: letters nor digits (``$+<=>^`|~``) are symbols (S*)
ASCII_PUNCTUATION = frozenset("!\"#%&'()*,-./:;?@[\\]_{}")

_CONTROL = ("Cc", "Cf", "Zl", "Zp", "Cs")


def has_control(s: str) -> bool:
    """Whether ``s`` holds a control, format or line/paragraph separator character, or a lone
    surrogate (``is_utf8``). In ASCII those are exactly the C0 controls and DEL, the
    characters ``str.isprintable`` refuses."""
    if s.isascii():
        return not s.isprintable()
    import unicodedata
    return any(unicodedata.category(ch) in _CONTROL for ch in s)


def is_utf8(s: str) -> bool:
    """Whether ``s`` can be written as UTF-8, i.e. holds no lone surrogate. Python reads a
    command-line word or file name whose bytes are not UTF-8 with ``surrogateescape``
    (``\\xff`` becomes ``\\udcff``), and a caller may pass one in a ``str``: no record, liblxc
    config or name on disk can hold it, so it is refused with the other bad input, before
    anything is written (at the write it was a ``UnicodeEncodeError``, a traceback)."""
    if s.isascii():
        return True
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def is_printable_name(s: str) -> bool:
    """Whether ``s`` is not empty and all letters, decimal digits and punctuation."""
    if s.isascii():
        return s != "" and all(ch.isalnum() or ch in ASCII_PUNCTUATION for ch in s)
    import unicodedata
    return all(unicodedata.category(ch)[0] in "LP" or unicodedata.category(ch) == "Nd"
               for ch in s)


def scalar_text(value: Any, where: str) -> str:
    """One YAML scalar of an edited document as the text LXD keeps.

    LXD reads an edit into typed Go fields (``map[string]string``, ``string``): a bool or a
    number in a string field becomes its text (``true``, ``5``), while a list or a mapping is
    refused. PyYAML has already turned the scalar into a Python value, so the text is its
    canonical YAML form (``true``, ``5``, ``1000.0``, ``2001-01-01``). ``where`` names the
    field in the error (the config key, ``description``...)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    import datetime as dt  # a YAML date (`2001-01-01`) loads as one
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    kind = ("a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict)
            else f"a {type(value).__name__}")
    raise InvalidConfig(where, f"must be a string, not {kind}", repr(value))


def text_map(value: Any, where: str) -> dict[str, str]:
    """A config mapping of an edited document (an edit verb's, a preseed's) as LXD's
    ``map[string]string`` reads it: scalars become their text (``scalar_text``), a list or
    mapping is refused naming the key. A ``null`` value leaves the key out, so the document
    unsets it: LXD reads null into a string map as ``""``, and an empty value means "unset"
    wherever LXD keeps config; leaving it out gives that one meaning whatever the service
    does with ``""``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be a mapping, not {type(value).__name__}")
    out = {}
    for k, v in value.items():
        if k is None:
            raise InvalidArgument(f"{where} has a key that is null")
        key = scalar_text(k, f"{where} key {k!r}")
        if v is not None:
            out[key] = scalar_text(v, key)
    return out


def check_flag(value: object, name: str) -> bool:
    """A flag of the API (``ephemeral``) as the bool it must be. Python takes any object for
    true or false, so ``ephemeral="false"`` made an ephemeral instance, deleted with its
    files at its first stop; ``"yes"`` was stored as that string in its record."""
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be True or False, not {value!r}")
    return value


def check_description(description: object, what: str = "") -> None:
    """The one rule for the description of everything that has one (instances, snapshots,
    profiles, networks, storage pools, custom volumes and their snapshots, image aliases): one
    string (LXD's field is a string) without a carriage return or NUL: lxdlib's own rule, as
    the list tables print a description as it is and a CR there rewrites the line a terminal
    shows. InvalidArgument, not InvalidConfig: a description is no config key; ``what`` names
    the object where the caller checks several (a backup's instance and its snapshots)."""
    where = f"{what}: " if what else ""
    if not isinstance(description, str):
        raise InvalidArgument(
            f"{where}description must be a string, not {type(description).__name__}")
    if any(ch in description for ch in "\r\0"):
        raise InvalidArgument(f"{where}description contains a carriage return or NUL")
    if not is_utf8(description):
        raise InvalidArgument(f"{where}description holds bytes that are not UTF-8")
