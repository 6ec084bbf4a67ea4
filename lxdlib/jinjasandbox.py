"""One image template rendered: pongo2's language on Jinja2's sandbox (``templates`` applies them).

This module is apart from ``templates`` so that Jinja2 (about 15 ms of imports) loads only when a
template is rendered, not in every command that opens a root; and a template of text and
``{{ name.name }}`` alone does not come here (``templatetext`` renders it as this module would).

LXD renders templates with pongo2, a Go engine with Django syntax. lxdlib renders them with
Jinja2's ``ImmutableSandboxedEnvironment``: the two languages share the tags image authors use
(``{{ }}``, ``{% if %}/{% elif %}/{% else %}/{% endif %}``, ``{% for %}``, ``{%- -%}``
whitespace control, ``==``/``!=``/``and``/``or``/``not``), and Jinja2 has a sandbox, which a
hand-written subset never had (the old one silently rendered
``{% if config_get("x", "") == "" %}`` as nothing and choked on ``{%-``).

Where the two differ, this module follows pongo2, because the templates were written for it:

- Filter arguments: pongo2 writes ``x|default:"y"``, Jinja2 ``x|default("y")``. ``_from_pongo2``
  rewrites the first into the second inside tags before compiling (string literals untouched, no
  newline added, so error line numbers stay those of the image's file), along with pongo2's
  ``&&``, ``||``, ``!`` and ``<>`` operators.
- Filters are pongo2's, by pongo2's meaning (``_FILTERS``): ``default`` replaces any false
  value, ``""`` included, where Jinja2's replaces only undefined ones. A filter pongo2 does not
  have is an error at compile time, as a filter it does not know is in pongo2.
- Undefined names render as the empty string and are false, and so do their attributes
  (``properties.missing.x``), as pongo2 does with nil; distrobuilder's templates rely on it
  (``properties.default`` absent). Calling or doing arithmetic on one is an error.
  ``None`` also renders as ``""``, as pongo2 renders nil. Jinja2 would print ``None``.
- The trailing newline of the file is kept (Jinja2 drops it by default) and nothing is
  HTML-escaped (LXD wraps every template in ``{% autoescape off %}``).
- ``config_get(key, default)`` returns the expanded config value without its trailing
  ``\\r``/``\\n`` (LXD trims them, so ``user.user-data`` set from a file with a final newline
  does not produce an extra blank line), or ``default`` as is when the key is not set.
- ``{% include "name" %}`` gets its text from the caller's ``include`` (``templates`` gives
  only other files of the image's ``templates/`` directory). Nothing else can read a file.

Errors are ``TemplateError`` naming the template and the line: syntax errors, unknown filters,
and errors while rendering. Unlike LXD, which ignores errors while rendering and writes what it
has, a broken template fails the operation instead of leaving a half-written ``/etc/hosts``.

The sandbox: attributes starting with ``_`` and the internals of functions, frames and
generators are refused with an error (Jinja2 would render them as undefined, i.e. silently
empty), mutating methods of the context's dicts and lists are refused (a template cannot edit
the instance's config it is given), no global besides the context exists (no ``range``,
``dict``…), Python's ``%`` string formatting and the ``format`` filter are not available (pongo2
has neither; ``"%999999999s" % x`` would allocate a gigabyte), repetition and ``**`` are
bounded, and the output is capped at ``MAX_OUTPUT`` characters. Loops are not bounded in time.
"""

from __future__ import annotations

import traceback
import urllib.parse
from collections.abc import Callable, Mapping

import markupsafe
from jinja2 import BaseLoader, ChainableUndefined, Environment, TemplateNotFound, Undefined
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import TYPE_CHECKING, TemplateError
from .patterns import Pattern
from .templatetext import MAX_OUTPUT

if TYPE_CHECKING:
    from typing import Any

_FILENAME = "<image template {}>"  # the filename compiled code carries, to find its lines

# ---------------------------------------------------------------------------------------------
# pongo2 syntax → Jinja2 syntax

_OPENERS = Pattern(r"\{\{|\{%|\{#")
_CLOSERS = {"{{": "}}", "{%": "%}", "{#": "#}"}
_FILTER_COLON = Pattern(r"\|\s*([A-Za-z_]\w*)\s*:\s*")
_ARG = Pattern(r"-?\d+(?:\.\d+)?|[A-Za-z_][\w.]*")


def _string_end(s: str, start: int) -> int:
    """Index just past the string literal opening at ``start`` (its end if unterminated)."""
    quote = s[start]
    i = start + 1
    while i < len(s):
        if s[i] == "\\":
            i += 2
        elif s[i] == quote:
            return i + 1
        else:
            i += 1
    return len(s)


def _arg_end(body: str, start: int) -> int | None:
    """End of a pongo2 filter argument (a literal or a dotted name) at ``start``, or None."""
    if start < len(body) and body[start] in "'\"":
        return _string_end(body, start)
    m = _ARG.match(body, start)
    return m.end() if m else None


def _translate_expr(body: str) -> str:
    """One tag's inside, pongo2 → Jinja2: ``|f:arg`` → ``|f(arg)``, ``&&``/``||``/``!``/``<>``
    → ``and``/``or``/``not``/``!=``. String literals are copied as they are."""
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c in "'\"":
            end = _string_end(body, i)
            out.append(body[i:end])
            i = end
        elif body.startswith("||", i):
            out.append(" or ")
            i += 2
        elif body.startswith("&&", i):
            out.append(" and ")
            i += 2
        elif body.startswith("<>", i):
            out.append("!=")
            i += 2
        elif c == "!" and not body.startswith("!=", i):
            out.append(" not ")
            i += 1
        elif c == "|" and (m := _FILTER_COLON.match(body, i)) and \
                (stop := _arg_end(body, m.end())) is not None:
            out.append(f"|{m.group(1)}({body[m.end():stop]})")
            i = stop
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _from_pongo2(text: str) -> str:
    """The template with pongo2-only syntax inside its tags rewritten for Jinja2 (see the
    module's docstring). Text outside tags and comments is left alone; an unterminated tag is
    left for Jinja2 to report with its line."""
    out: list[str] = []
    pos = 0
    while (m := _OPENERS.search(text, pos)) is not None:
        out.append(text[pos:m.start()])
        opener, closer = m.group(), _CLOSERS[m.group()]
        i = m.end()
        while i < len(text) and not text.startswith(closer, i):
            i = _string_end(text, i) if opener != "{#" and text[i] in "'\"" else i + 1
        if i >= len(text):
            pos = m.start()
            break
        body = text[m.end():i]
        out.append(opener + (body if opener == "{#" else _translate_expr(body)) + closer)
        pos = i + len(closer)
    out.append(text[pos:])
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# pongo2's filters, by pongo2's meaning

def _text(v: Any) -> str:
    return "" if v is None or isinstance(v, Undefined) else str(v)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _yesno(v: Any, arg: str = "yes,no,maybe") -> str:
    choices = str(arg).split(",")
    if len(choices) not in (2, 3):
        raise ValueError("yesno needs 2 or 3 comma-separated choices")
    if v is None or isinstance(v, Undefined):
        return choices[2] if len(choices) == 3 else choices[1]
    return choices[0] if v else choices[1]


def _truncatechars(v: Any, n: Any) -> str:
    s, n = _text(v), int(n)
    return s if len(s) <= n else s[:max(n - 3, 0)] + "..."


def _to_int(v: Any) -> int:
    try:
        return int(float(_text(v) or 0)) if not _number(v) else int(v)
    except ValueError:
        return 0


def _to_float(v: Any) -> float:
    try:
        return float(v) if _number(v) else float(_text(v) or 0)
    except ValueError:
        return 0.0


_FILTERS: dict[str, Callable[..., Any]] = {
    "default": lambda v, arg="": v if v else arg,
    "default_if_none": lambda v, arg="": arg if v is None or isinstance(v, Undefined) else v,
    "lower": lambda v: _text(v).lower(),
    "upper": lambda v: _text(v).upper(),
    "title": lambda v: _text(v).title(),
    "capfirst": lambda v: _text(v)[:1].upper() + _text(v)[1:],
    "length": lambda v: len(v) if hasattr(v, "__len__") else 0,
    "join": lambda v, sep="": str(sep).join(_text(x) for x in v),
    "first": lambda v: v[0] if v else "",
    "last": lambda v: v[-1] if v else "",
    "cut": lambda v, arg: _text(v).replace(str(arg), ""),
    "add": lambda v, arg: v + arg if _number(v) and _number(arg) else _text(v) + _text(arg),
    "yesno": _yesno,
    "truncatechars": _truncatechars,
    "striptags": lambda v: markupsafe.Markup(_text(v)).striptags(),
    "escape": lambda v: str(markupsafe.escape(_text(v))),
    "safe": lambda v: v,
    "urlencode": lambda v: urllib.parse.quote_plus(_text(v)),
    "wordcount": lambda v: len(_text(v).split()),
    "integer": _to_int,
    "float": _to_float,
}


# ---------------------------------------------------------------------------------------------
# the sandbox

class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's sandbox, made to fail loudly, with repetition, ``**`` and ``%`` bounded (see
    the module's docstring; a string can still grow by concatenation in a loop: the
    renderer's memory is not bounded, docs/security.md "out of scope")."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Jinja2 returns an undefined that renders as "": a probe for internals would look like
        # an empty value instead of what it is.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} "
                            "object is not allowed in a template")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise SecurityError("string formatting with % is not available in templates")
        if operator == "*":
            seq, times = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, str | list | tuple) and isinstance(times, int) and \
                    len(seq) * times > MAX_OUTPUT:
                raise SecurityError("repetition result too large")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and \
                right > 0 and max(left.bit_length(), 1) * right > 1 << 16:
            raise SecurityError("power result too large")
        return super().call_binop(context, operator, left, right)


class _Loader(BaseLoader):
    """The template being rendered, and for ``{% include %}`` what ``include`` finds by name
    (nothing without it)."""

    def __init__(self, name: str, source: str,
                 include: Callable[[str], str | None] | None) -> None:
        self.name, self.source, self.include = name, source, include

    def get_source(self, environment: Environment, template: str
                   ) -> tuple[str, str, Callable[[], bool]]:
        if template == self.name:
            text: str | None = self.source
        else:
            text = self.include(template) if self.include is not None else None
        if text is None:
            raise TemplateNotFound(template)
        return _from_pongo2(text), _FILENAME.format(template), lambda: True


def _finalize(value: Any) -> Any:
    return "" if value is None else value


def _error_line(e: BaseException) -> tuple[str | None, int | None]:
    """The template and line an error was raised at: the innermost frame of compiled template
    code in the traceback (Jinja2 rewrites those frames to carry template lines)."""
    if isinstance(e, TemplateSyntaxError):
        return e.name, e.lineno
    prefix, suffix = _FILENAME.split("{}")
    where: tuple[str | None, int | None] = (None, None)
    for frame in traceback.extract_tb(e.__traceback__):
        if frame.filename.startswith(prefix) and frame.filename.endswith(suffix):
            where = frame.filename[len(prefix):len(frame.filename) - len(suffix)], frame.lineno
    return where


def render(text: str, ctx: Mapping[str, Any], *, name: str = "<template>",
           include: Callable[[str], str | None] | None = None) -> str:
    """Render one template's ``text`` with the context ``ctx`` (the names of LXD's context:
    ``trigger``, ``path``, ``container``, ``instance``, ``config``, ``devices``,
    ``properties``); ``config_get`` is added over ``ctx["config"]`` unless given.
    ``include`` gives the text of the template ``{% include %}`` names, or None where there
    is none (it may raise ``TemplateError``); without it nothing can be included.
    Raises ``TemplateError`` naming ``name`` and the line."""
    config = ctx.get("config") or {}

    def config_get(key: Any, default: Any = None) -> Any:
        value = config.get(str(key))
        if value is None:
            return default
        return value.rstrip("\r\n") if isinstance(value, str) else value

    env = _Sandbox(loader=_Loader(name, text, include), undefined=ChainableUndefined,
                   finalize=_finalize, keep_trailing_newline=True, autoescape=False,
                   cache_size=0)
    env.globals.clear()
    env.filters.clear()
    env.filters.update(_FILTERS)
    local = dict(ctx)
    local.setdefault("config_get", config_get)
    out: list[str] = []
    size = 0
    try:
        for chunk in env.get_template(name).generate(local):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise SecurityError(f"output larger than {MAX_OUTPUT} characters")
            out.append(chunk)
    except TemplateNotFound as e:
        raise TemplateError(_message(name, e, f"{e.name!r} cannot be included: only plain "
                                     "names of files in the image's templates/ are")) from None
    except Exception as e:
        raise TemplateError(_message(name, e, getattr(e, "message", None) or str(e))) from None
    return "".join(out)


def _message(name: str, e: BaseException, what: str) -> str:
    where, line = _error_line(e)
    where = where or name
    return f"template {where!r}" + (f", line {line}" if line else "") + f": {what}"
