"""Character classes the name and key rules use, judged by Unicode category.

Names, config keys and device option names are checked for control and format characters
(categories Cc, Cf, Zl, Zp: newlines, NUL, zero-width and bidi marks), and ``user.*`` key names
for letters, digits and punctuation only (L*, Nd, P*), as LXD checks them. ``unicodedata``
answers that, but loading its tables costs ~1 ms of every command that validates a name, and
nearly every name is ASCII, whose categories are fixed: ASCII text is judged here from those,
``unicodedata`` is imported only for text beyond it. ``tests/unit/test_config_text.py`` holds
both ways to the same answer for every ASCII character.
"""

from __future__ import annotations

#: the ASCII characters of Unicode's punctuation categories (P*); the others that are neither
#: letters nor digits (``$+<=>^`|~``) are symbols (S*)
ASCII_PUNCTUATION = frozenset("!\"#%&'()*,-./:;?@[\\]_{}")

_CONTROL = ("Cc", "Cf", "Zl", "Zp")


def has_control(s: str) -> bool:
    """Whether ``s`` holds a control, format or line/paragraph separator character. In ASCII
    those are exactly the C0 controls and DEL, the characters ``str.isprintable`` refuses."""
    if s.isascii():
        return not s.isprintable()
    import unicodedata
    return any(unicodedata.category(ch) in _CONTROL for ch in s)


def is_printable_name(s: str) -> bool:
    """Whether ``s`` is not empty and all letters, decimal digits and punctuation."""
    if s.isascii():
        return s != "" and all(ch.isalnum() or ch in ASCII_PUNCTUATION for ch in s)
    import unicodedata
    return all(unicodedata.category(ch)[0] in "LP" or unicodedata.category(ch) == "Nd"
               for ch in s)
