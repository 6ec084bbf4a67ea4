"""``lxdlib.patterns.Pattern``: what ``re.compile`` gives, compiled at first use; and no lxdlib
module compiles a regular expression while it is imported."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from lxdlib.patterns import Pattern

CASES = [
    (r"[0-9]+", 0, "12ab34"),
    (r"(\d+)([SMHdwmy])", 0, "3d 4w"),
    (r"\{\{(.*?)\}\}", re.S, "a {{ x\n }} b {{y}}"),
    ("[\x7f-\x9f\u2028\u2029]", 0, "a\u2028b\x7f"),
    (r"^abc$", re.M, "x\nabc\ny"),
]


@pytest.mark.parametrize(("source", "flags", "text"), CASES)
def test_a_pattern_does_what_the_compiled_one_does(source: str, flags: int, text: str) -> None:
    lazy, real = Pattern(source, flags), re.compile(source, flags)
    assert lazy._compiled is None  # nothing compiled yet
    for pos in (0, 1, 2):
        for method in ("fullmatch", "match", "search"):
            a, b = getattr(lazy, method)(text, pos), getattr(real, method)(text, pos)
            assert (a and (a.span(), a.groups())) == (b and (b.span(), b.groups()))
    assert [m.span() for m in lazy.finditer(text)] == [m.span() for m in real.finditer(text)]
    assert lazy.sub("<>", text) == real.sub("<>", text)
    assert lazy.sub(lambda m: m.group().upper(), text, 1) == real.sub(
        lambda m: m.group().upper(), text, 1)
    assert lazy.compiled is lazy.compiled and lazy.compiled.pattern == source


def test_a_bad_pattern_fails_when_used() -> None:
    bad = Pattern("(unclosed")
    with pytest.raises(re.error):
        bad.search("x")


IMPORT_ALL = """
import os, pkgutil, re, sys, importlib
import lxdlib
package = os.path.dirname(lxdlib.__file__) + os.sep  # a checkout may be named lxdlib too
compiled = []
real = re._compile
def spy(pattern, flags):
    if (type(pattern), pattern, flags) not in re._cache:
        frame = sys._getframe(1)
        while frame and frame.f_code.co_filename.endswith(("re/__init__.py", "patterns.py")):
            frame = frame.f_back
        if frame and frame.f_code.co_filename.startswith(package) \
                and frame.f_code.co_name == "<module>":
            compiled.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {pattern!r}")
    return real(pattern, flags)
re._compile = spy
for m in pkgutil.walk_packages(lxdlib.__path__, "lxdlib."):
    if m.name.startswith(("lxdlib.__main__", "lxdlib.hooks.__main__")):
        continue
    importlib.import_module(m.name)
print("\\n".join(compiled))
"""


def test_no_module_compiles_a_pattern_when_imported() -> None:
    """Each pattern compiled at import costs every command's start-up; ``Pattern`` instead."""
    r = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True,
                       check=True)
    assert r.stdout.strip() == "", r.stdout
