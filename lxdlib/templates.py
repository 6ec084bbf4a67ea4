"""Image templates: files in the rootfs rendered from ``templates/`` on create, copy, start, rename.

LXD renders them with pongo2 (a Django/Jinja-like engine). lxdlib implements the subset image
authors use: ``{{ expression }}`` with dotted lookups (``container.name``, ``config.key``,
``properties.x``), ``config_get("key", "default")``, string literals, the ``default`` filter,
and ``{% if expr %}…{% else %}…{% endif %}``. ``include`` and anything that reads files is not
supported, so a template cannot pull host files into the container. Targets are written through
``confined`` so a symlink in the rootfs cannot redirect them onto the host, and a FIFO or device
planted there by the container's root is refused (``TemplateError``, the start fails naming the
file, as in LXD) instead of blocking the start forever.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import confined
from .errors import ImageError, InvalidArgument, TemplateError

_TOKEN = re.compile(r"({{.*?}}|{%.*?%})", re.S)
_CALL = re.compile(r"""^config_get\(\s*(['"])(.*?)\1\s*(?:,\s*(['"])(.*?)\3\s*)?\)$""")


def _lookup(expr: str, ctx: Mapping[str, Any]) -> Any:
    expr = expr.strip()
    if not expr:
        return ""
    if (expr[0] == expr[-1]) and expr[0] in "'\"" and len(expr) >= 2:
        return expr[1:-1]
    m = _CALL.match(expr)
    if m:
        config = ctx.get("config", {})
        return config.get(m.group(2), m.group(4) or "")
    if expr.lstrip("-").isdigit():
        return int(expr)
    value: Any = ctx
    for part in expr.split("."):
        value = value.get(part, "") if isinstance(value, Mapping) else getattr(value, part, "")
    return value


def _eval(expr: str, ctx: Mapping[str, Any]) -> Any:
    parts = [p.strip() for p in expr.split("|")]
    value = _lookup(parts[0], ctx)
    for flt in parts[1:]:
        name, _, arg = flt.partition(":")
        if name == "default":
            if value in ("", None):
                value = _lookup(arg, ctx)
        elif name == "lower":
            value = str(value).lower()
        elif name == "upper":
            value = str(value).upper()
        else:
            raise ImageError(f"template filter {name!r} is not supported")
    return value


def render(text: str, ctx: Mapping[str, Any]) -> str:
    out: list[str] = []
    # stack of (active_before, this_branch_taken, in_else)
    stack: list[tuple[bool, bool]] = []
    active = True
    for token in _TOKEN.split(text):
        if token.startswith("{{") and token.endswith("}}"):
            if active:
                v = _eval(token[2:-2], ctx)
                out.append("true" if v is True else "false" if v is False else str(v))
        elif token.startswith("{%") and token.endswith("%}"):
            words = token[2:-2].strip().split(None, 1)
            tag = words[0] if words else ""
            if tag == "if":
                cond = bool(_eval(words[1], ctx)) if len(words) > 1 else False
                stack.append((active, cond))
                active = active and cond
            elif tag == "else":
                if not stack:
                    raise ImageError("template has {% else %} without {% if %}")
                outer, cond = stack[-1]
                active = outer and not cond
            elif tag == "endif":
                if not stack:
                    raise ImageError("template has {% endif %} without {% if %}")
                active, _ = stack.pop()
            else:
                raise ImageError(f"template tag {tag!r} is not supported")
        elif active:
            out.append(token)
    if stack:
        raise ImageError("template has an unclosed {% if %}")
    return "".join(out)


def _read_source(path: Path, name: str, target: str) -> str:
    """The text of a template file of the image. ``O_NONBLOCK`` and a type check on the open
    descriptor: a FIFO shipped as a template would otherwise block the start forever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY |
                     os.O_CLOEXEC)
    except OSError as e:
        raise TemplateError(f"template {name!r} (for {target!r}) cannot be read: "
                            f"{e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise TemplateError(f"template {name!r} (for {target!r}) is "
                                f"{confined.file_kind(mode)} in the image, not a regular file")
        os.set_blocking(fd, True)
        raw = f.read()
    try:
        return raw.decode()
    except UnicodeDecodeError as e:
        raise TemplateError(f"template {name!r} (for {target!r}) is not UTF-8: {e}") from None


def apply(volume: Path, metadata: Mapping[str, Any], trigger: str, ctx: Mapping[str, Any],
          uid: int = 0, gid: int = 0) -> list[str]:
    """Render every template whose ``when`` has ``trigger``; returns the paths written."""
    templates = metadata.get("templates") or {}
    written = []
    rootfs = volume / "rootfs"
    for target, spec in sorted(templates.items()):
        if trigger not in (spec.get("when") or []):
            continue
        if spec.get("create_only") and confined.exists_in_root(rootfs, target):
            continue
        name = str(spec.get("template", ""))
        if not name or "/" in name or name in (".", ".."):
            raise ImageError(f"invalid template name {name!r} for {target}")
        tdir = volume / "templates"
        if tdir.is_symlink():
            raise ImageError("the image's templates directory is a symlink")
        text = _read_source(tdir / name, name, target)
        local = dict(ctx)
        local["path"] = target
        local["trigger"] = trigger
        local["properties"] = spec.get("properties") or {}
        data = render(text, local).encode()
        try:
            confined.write_in_root(rootfs, target, data, 0o644, uid, gid)
        except (InvalidArgument, OSError) as e:
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # a full pool is not the template's fault
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise TemplateError(f"cannot apply template {name!r} to {target!r} "
                                f"({trigger}): {reason}") from None
        written.append(target)
    return written
