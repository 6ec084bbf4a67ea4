"""``lxdlib.config.text`` judges ASCII without ``unicodedata``: the same answers as the
Unicode categories, for every ASCII character alone and inside a name, and for text beyond
ASCII (where it asks ``unicodedata``)."""

from __future__ import annotations

import unicodedata

import pytest

from lxdlib.config.text import has_control, is_printable_name


def by_category_control(s: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") for ch in s)


def by_category_printable(s: str) -> bool:
    return s != "" and all(unicodedata.category(ch)[0] in "LP" or unicodedata.category(ch) == "Nd"
                           for ch in s)


@pytest.mark.parametrize("code", range(128))
def test_each_ascii_character_as_the_categories_say(code: int) -> None:
    for s in (chr(code), f"web{chr(code)}1"):
        assert has_control(s) is by_category_control(s), repr(s)
        assert is_printable_name(s) is by_category_printable(s), repr(s)


@pytest.mark.parametrize("s", [
    "", "c1", "a-b_c.d", "x\u200by", "x\u2028y", "x\u2029y", "\u00e9t\u00e9", "na\u00efve\n",
    "\u0661\u0662", "\u00bd", "\u2014", "\ufeff", "\u00a0", "\u202e", "caf\u00e9$",
    "x\udcffy", "\ud800"])
def test_text_beyond_ascii_as_the_categories_say(s: str) -> None:
    assert has_control(s) is by_category_control(s)
    assert is_printable_name(s) is by_category_printable(s)
