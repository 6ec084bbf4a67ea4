"""Image templates: files in the rootfs rendered from ``templates/`` on create, copy, start, rename.

LXD renders them with pongo2, a Go engine with Django syntax; lxdlib renders them with Jinja2's
sandbox, following pongo2's meaning where the two differ: ``jinjasandbox`` does that, and its
docstring says how. ``render`` imports it when a template is rendered, not this module at its
top: Jinja2 costs about 15 ms of imports, which every command opening a root paid although most
of them render nothing (``tests/unit/test_cli_imports.py`` keeps it so).

What this module adds around the rendering, as LXD does it:

- ``container``/``instance`` carry strings, as LXD's do: ``privileged`` and ``ephemeral`` are
  ``"true"``/``"false"``, so ``{% if instance.privileged == "true" %}`` works as in LXD.
- ``{% include "name" %}`` reads another file of the image's ``templates/`` directory (LXD
  confines includes to that directory too); only plain names, never a path, and never through a
  symlink. Nothing else can read a file.
- Unlike LXD, which ignores errors while rendering and writes what it has, a broken template
  fails the operation (``TemplateError`` naming the template and the line) instead of leaving a
  half-written ``/etc/hosts``; all the templates of a trigger are rendered before any is
  written, so none of them is.
- An image is untrusted input, and Jinja2's sandbox bounds neither memory nor time: the
  templates of a trigger that need it render in one forked child with hard limits
  (``jinjasandbox.render_bounded``, docs/security.md section 9); those of text and names alone
  (``templatetext``) render here, without a fork.

Targets are written through ``confined`` so a symlink in the rootfs cannot redirect them onto the
host, and a FIFO or device planted there by the container's root is refused (``TemplateError``,
the start fails naming the file, as in LXD) instead of blocking the start forever.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from . import confined
from .errors import TYPE_CHECKING, ImageError, InvalidArgument, TemplateError
from .logs import get_logger

if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)


def render(text: str, ctx: Mapping[str, Any], *, name: str = "<template>",
           templates_dir: Path | None = None) -> str:
    """Render one template's ``text`` with the context ``ctx`` (the names of LXD's context:
    ``trigger``, ``path``, ``container``, ``instance``, ``config``, ``devices``,
    ``properties``); ``config_get`` is added over ``ctx["config"]`` unless given.
    ``templates_dir`` is where ``{% include %}`` finds other templates (none without it).
    Raises ``TemplateError`` naming ``name`` and the line, or the limit it went beyond."""
    plain = _plain(text, ctx)
    if plain is not None:
        return plain
    return _render_engine([(name, text, ctx)], templates_dir)[0]


def _plain(text: str, ctx: Mapping[str, Any]) -> str | None:
    """The template rendered here, without an engine, when it is only text and names
    (``templatetext``); None when it needs Jinja2."""
    from .templatetext import substitute
    # the context jinjasandbox gives, config_get (a function: only Jinja2 can render it) included
    return substitute(text, {"config_get": render, **ctx})


def _render_engine(items: list[tuple[str, str, Mapping[str, Any]]],
                   templates_dir: Path | None) -> list[str]:
    """``(name, text, ctx)`` templates rendered by Jinja2, all in one forked child bounded in
    memory and time (``jinjasandbox.render_bounded``): an image is untrusted input."""
    from . import jinjasandbox  # here, not at the top: Jinja2 loads only when a template renders

    def include(template: str) -> str | None:
        if templates_dir is None or not plain_name(template):
            return None
        path = templates_dir / template
        if not os.path.lexists(path):
            return None
        return read_source(path, template, None)

    return jinjasandbox.render_bounded(items, include=include)


def plain_name(name: str) -> bool:
    """A template's name: one path component (templates live in one flat directory)."""
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")


# ---------------------------------------------------------------------------------------------
# applying an image's templates

def read_source(path: Path, name: str, target: str | None) -> str:
    """The text of a template file of the image. ``O_NONBLOCK`` and a type check on the open
    descriptor: a FIFO shipped as a template would otherwise block the start forever."""
    what = f"template {name!r}" + (f" (for {target!r})" if target else "")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY |
                     os.O_CLOEXEC)
    except OSError as e:
        raise TemplateError(f"{what} cannot be read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise TemplateError(f"{what} is {confined.file_kind(mode)} in the image, "
                                "not a regular file")
        if os.fstat(fd).st_nlink != 1:  # a second name, in the rootfs: the container's to write
            raise TemplateError(f"{what} is hard-linked to another file; replace it "
                                "(config template edit)")
        os.set_blocking(fd, True)
        raw = f.read()
    try:
        return raw.decode()
    except UnicodeDecodeError as e:
        raise TemplateError(f"{what} is not UTF-8: {e}") from None


def _lxd_meta(meta: Any) -> Any:
    """``container``/``instance`` as LXD gives them: strings, booleans as ``"true"``/
    ``"false"``."""
    if not isinstance(meta, Mapping):
        return meta
    return {k: ("true" if v else "false") if isinstance(v, bool) else v
            for k, v in meta.items()}


def apply(volume: Path, metadata: Mapping[str, Any], trigger: str, ctx: Mapping[str, Any],
          uid: int = 0, gid: int = 0) -> list[str]:
    """Render every template whose ``when`` has ``trigger``; returns the paths written."""
    templates = metadata.get("templates") or {}
    rootfs = volume / "rootfs"
    tdir = volume / "templates"
    todo: list[tuple[str, str, str, dict[str, Any]]] = []  # target, name, text, context
    for target, spec in sorted(templates.items()):
        if trigger not in (spec.get("when") or []):
            continue
        if spec.get("create_only") and confined.exists_in_root(rootfs, target):
            continue
        name = str(spec.get("template", ""))
        if not plain_name(name):
            raise ImageError(f"invalid template name {name!r} for {target}")
        if tdir.is_symlink():
            raise ImageError("the image's templates directory is a symlink")
        text = read_source(tdir / name, name, target)
        local = dict(ctx)
        for key in ("container", "instance"):
            if key in local:
                local[key] = _lxd_meta(local[key])
        local["path"] = target
        local["trigger"] = trigger
        local["properties"] = spec.get("properties") or {}
        todo.append((target, name, text, local))
    # every template rendered before any is written: a broken one writes nothing; those that
    # need Jinja2 all in one bounded child (one fork per apply, none for text and names alone)
    outputs: dict[int, str] = {}
    engine: list[int] = []
    for i, (_, _, text, local) in enumerate(todo):
        plain = _plain(text, local)
        if plain is None:
            engine.append(i)
        else:
            outputs[i] = plain
    if engine:
        rendered = _render_engine([(todo[i][1], todo[i][2], todo[i][3]) for i in engine], tdir)
        outputs.update(zip(engine, rendered, strict=True))
    written = []
    for i, (target, name, _, _) in enumerate(todo):
        data = outputs[i].encode()
        try:
            confined.write_in_root(rootfs, target, data, 0o644, uid, gid)
        except (InvalidArgument, OSError) as e:
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise  # a full pool is not the template's fault
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise TemplateError(f"cannot apply template {name!r} to {target!r} "
                                f"({trigger}): {reason}") from None
        log.debug("template %s rendered to %s (%s)", name, target, trigger)
        written.append(target)
    return written
