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
bounded, and the output is capped at ``MAX_OUTPUT`` characters.

The sandbox bounds neither memory nor time: a string grows by ``~`` in a loop or a macro,
``ljust``, ``format``, ``expandtabs``, ``join``, ``{% set %}`` blocks, and nested loops over a
long list run for hours. ``render_bounded``, which ``templates`` uses, renders in one forked
child with hard limits (``MAX_MEMORY`` of address space over the child's size at the fork,
``DEADLINE`` seconds) and fails with ``TemplateError`` naming the template beyond either;
``render`` alone, in this process, is what that child runs (docs/security.md, section 9).
"""

from __future__ import annotations

import os
import traceback
import urllib.parse
from collections.abc import Callable, Mapping, Sequence

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
    the module's docstring; a string can still grow by concatenation in a loop, so a
    template's memory and time are bounded by the child `render_bounded` renders in)."""

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
    ``properties``) in this process, bounded in neither memory nor time (`render_bounded`
    runs it in a child with limits); ``config_get`` is added over ``ctx["config"]`` unless given.
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
    except MemoryError:
        raise  # the limit of `render_bounded`'s child: it says so itself
    except Exception as e:
        raise TemplateError(_message(name, e, getattr(e, "message", None) or str(e))) from None
    return "".join(out)


def _message(name: str, e: BaseException, what: str) -> str:
    where, line = _error_line(e)
    where = where or name
    return f"template {where!r}" + (f", line {line}" if line else "") + f": {what}"


# ---------------------------------------------------------------------------------------------
# rendering in a child with hard limits

MAX_MEMORY = 512 * 1024 * 1024
"""Bytes of address space the child of `render_bounded` may add to what it had when forked.
Relative, because the forking process may be a Jupyter kernel holding gigabytes. A legitimate
template stays far below it (the largest output allowed, ``MAX_OUTPUT`` characters, takes
64 MiB as ASCII, held twice while joined and once more marshalled); a string doubled in a loop
reached 500 MB in 0.3 s in the process that rendered it before this existed."""

DEADLINE = 5.0
"""Seconds the child of `render_bounded` has for all the templates of one ``apply`` (fork
included) before it is killed. Templates of real images render in milliseconds; a loop has no
other bound in time (``{% for %}`` nested over a long list runs for hours), and the start
waits for it. Also what a child stuck on a lock another thread of the caller held at the fork
costs (see `render_bounded`): an error after this long, never a hang."""

_CPU_SECONDS = int(DEADLINE) + 2
"""The child's own CPU limit (SIGXCPU, then SIGKILL a second later): it ends a looping child
even if the caller is killed before its deadline and cannot kill it."""


def _limit_this_process(resource: Any) -> None:
    """In the child: its address space bounded to its size now plus ``MAX_MEMORY`` (a template
    that allocates beyond gets ``MemoryError``), its CPU time to ``_CPU_SECONDS``. Lower limits
    already set stay. Reads /proc with ``os`` alone: the child must not import."""
    fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    try:
        pages = int(os.read(fd, 256).split()[0])
    finally:
        os.close(fd)
    for kind, want in ((resource.RLIMIT_AS, pages * resource.getpagesize() + MAX_MEMORY),
                       (resource.RLIMIT_CPU, _CPU_SECONDS)):
        soft, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
        if soft != resource.RLIM_INFINITY:
            want = min(want, soft)
        if kind == resource.RLIMIT_CPU:
            # the soft limit sends SIGXCPU, the hard one SIGKILL
            resource.setrlimit(kind, (want, want + 1 if hard == resource.RLIM_INFINITY
                                      else max(want, hard)))
        else:
            resource.setrlimit(kind, (want, want))


def _warm_lexer() -> None:
    """Build the sandbox's lexer here, before the fork: Jinja2 keeps it in a cache, so each
    child finds it instead of compiling its regular expressions again (~1 ms)."""
    _Sandbox(keep_trailing_newline=True, autoescape=False, cache_size=0).lexer  # noqa: B018


def render_bounded(items: Sequence[tuple[str, str, Mapping[str, Any]]], *,
                   include: Callable[[str], str | None] | None = None) -> list[str]:
    """`render` of each ``(name, text, ctx)`` of ``items``, all in one forked child bounded
    in memory (``MAX_MEMORY``) and time (``DEADLINE``): the outputs in order, or
    ``TemplateError`` naming the template that failed or went beyond a limit (the child is
    then killed and waited for, and this process's memory is where it was).

    The image is untrusted input (docs/security.md), and Jinja2's sandbox bounds neither
    memory nor time: ``{% set b = a ~ a %}`` in a loop, ``'x'.ljust(N)``, nested loops over a
    long list. The child runs only the rendering: Jinja2 is imported and the lexer built
    here, before the fork, so it imports nothing, and it logs nothing. A fork copies only the
    thread that forks; a lock another thread of this process held at that moment (the
    caller's own use of Jinja2's caches, say) stays taken in the child, which then waits
    until ``DEADLINE`` kills it: an error, never a hang. ``include`` runs in the child."""
    if not items:
        return []
    # what the child would otherwise import on its way (it must not): Jinja2's error path,
    # the codec of string literals, the entities ``striptags`` unescapes (~1.3 ms, once)
    import encodings.unicode_escape  # noqa: F401
    import html  # noqa: F401
    import mmap
    import resource  # here, before the fork: only a render that forks needs it

    import jinja2.debug  # noqa: F401

    from .forkjob import ForkedJob
    _warm_lexer()
    progress = mmap.mmap(-1, 8)  # shared with the child: which template it is on

    def job() -> tuple[list[str], str | None, bool]:
        _limit_this_process(resource)
        out: list[str] = []
        for i, (name, text, ctx) in enumerate(items):
            progress[:4] = i.to_bytes(4, "little")
            try:
                out.append(render(text, ctx, name=name, include=include))
            except TemplateError as e:
                return out, str(e), False
            except MemoryError:
                out.clear()
                return out, None, True
        return out, None, False

    try:
        child = ForkedJob(job, close_fds=True)
    except OSError as e:
        raise TemplateError(f"cannot fork to render templates: {e.strerror or e}") from None
    failures: list[tuple[int, OSError]] = []
    try:
        got = child.result(failures, deadline=DEADLINE)
        index = int.from_bytes(progress[:4], "little")
    finally:
        progress.close()
    name = items[min(index, len(items) - 1)][0]
    if child.timed_out:
        raise TemplateError(f"template {name!r} exceeded the time allowed to render "
                            f"({DEADLINE} s): the rendering was stopped")
    if got is None:  # no result: MemoryError outside a template, a signal (SIGXCPU)…
        raise TemplateError(f"template {name!r} exceeded the memory or time allowed to render "
                            f"({MAX_MEMORY >> 20} MiB, {DEADLINE} s) or its rendering failed: "
                            f"stopped ({_how_it_ended(child.status)})")
    out, error, memory = got
    if memory:
        raise TemplateError(f"template {name!r} exceeded the memory allowed to render "
                            f"({MAX_MEMORY >> 20} MiB): the rendering was stopped")
    if error is not None:
        raise TemplateError(error)
    return list(out)


def _how_it_ended(status: int | None) -> str:
    """A child's wait status, said for an error message (a signal tells SIGXCPU from a crash)."""
    if status is None:
        return "status unknown"
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
