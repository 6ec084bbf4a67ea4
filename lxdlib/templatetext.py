"""An image template that only names values, rendered without loading a template engine.

Most image templates are text with a few ``{{ container.name }}``: the busybox image's
``/etc/hostname`` is nothing else. Rendering one through ``jinjasandbox`` first imports Jinja2
and compiles its lexer: ~45 ms of a fresh process's first create or copy from such an image
(measured: a launch worker's first launch took 142 ms, its next ones 37). Every ``lxdlib
launch`` and ``lxdlib copy`` is such a first, and so is each of ``launch_many``'s workers.

``substitute`` renders exactly that subset — literal text and ``{{ name(.name)* }}`` looking
up string values in nested dicts — and gives up (``None``) on anything else, which then goes to
Jinja2 as before: tags, comments, whitespace control, filters, literals, a carriage return
(Jinja2 rewrites line ends), a name starting with ``_`` or naming a dict method (Jinja2 looks
attributes up before items), a keyword or constant, a value that is not a string or ``None``.
Where it gives an answer it is Jinja2's, as ``jinjasandbox`` configures it (a missing name
renders as the empty string, ``None`` too, no escaping, the final newline kept):
``tests/unit/test_templates_jinja.py`` compares the two on generated templates. So Jinja2's
sandbox stays the engine of every template that has any logic in it.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import TYPE_CHECKING
from .patterns import Pattern

if TYPE_CHECKING:
    from typing import Any

MAX_OUTPUT = 64 * 1024 * 1024
"""Characters one template may produce; a bigger file is refused as an error."""

_REFERENCE = Pattern(r"\{\{ *([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*) *\}\}")
# Jinja2 reads these as constants or operators, never as names to look up
_RESERVED = frozenset({"and", "or", "not", "in", "is", "if", "else", "true", "false", "none",
                       "True", "False", "None",
                       # and these name what it provides itself in some places
                       "self", "loop", "super", "caller", "varargs", "kwargs"})
_MISSING = object()


def _value(ctx: dict[str, Any], path: str) -> str | None:
    """The text of one reference, or None where only Jinja2 can tell."""
    parts = path.split(".")
    if any(p in _RESERVED for p in parts):
        return None
    value: Any = ctx.get(parts[0], _MISSING)
    for part in parts[1:]:
        if value is _MISSING:
            break  # a missing name's attributes are missing too (pongo2's nil)
        if type(value) is not dict or hasattr(dict, part):
            return None
        value = value.get(part, _MISSING)
    if value is _MISSING or value is None:
        return ""
    return value if type(value) is str else None


def substitute(text: str, ctx: Mapping[str, Any]) -> str | None:
    """``text`` with each ``{{ name.name }}`` replaced by its value in ``ctx``; None when the
    template is more than that (see the module's docstring)."""
    if type(ctx) is not dict or "\r" in text or "{%" in text or "{#" in text:
        return None
    out: list[str] = []
    pos = 0
    for m in (*_REFERENCE.finditer(text), None):
        literal = text[pos:m.start() if m else len(text)]
        # "{{" left in the text is a reference of another shape, and "{{{ a }}" is not "{"
        # and a reference: both Jinja2's
        if "{{" in literal or (m is not None and literal.endswith("{")):
            return None
        out.append(literal)
        if m is None:
            break
        value = _value(ctx, m.group(1))
        if value is None:
            return None
        out.append(value)
        pos = m.end()
    result = "".join(out)
    return result if len(result) <= MAX_OUTPUT else None  # else the engine refuses it
