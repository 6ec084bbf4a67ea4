"""An instance's own image metadata and templates: `lxc config metadata` and `config template`.

An instance keeps, beside its rootfs, the ``metadata.yaml`` and ``templates/`` of the image it was
made from; a start (and a copy, a rename) renders the templates its metadata names into the
rootfs (``lxdlib.templates``). These are the verbs that read and change them, so that a
template can be added to, or fixed in, one instance without building a new image.

Every change is made under the instance's lock and checked first: metadata must be a mapping
whose ``templates`` a start can use (each a plain template name, known triggers), a template
name is one path component. Files are replaced whole (``state.atomic_write``): a start never
reads half a template. The directory they live in is host root's, outside the rootfs: the
container cannot reach it, and a symlink found there in place of ``templates/`` is refused.
"""

from __future__ import annotations

import builtins
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from . import templates
from .errors import TYPE_CHECKING, AlreadyExists, InvalidArgument, LxdlibError, NotFound
from .logs import get_logger
from .state import atomic_write, dump_yaml, lock

if TYPE_CHECKING:
    from typing import Any

    from .instance import InstanceCore

log = get_logger(__name__)

#: What may trigger a template (LXD's ``when``).
TRIGGERS = ("create", "copy", "start", "rename")
#: The keys a template's entry in ``metadata.yaml`` may have.
TEMPLATE_KEYS = ("template", "when", "create_only", "properties")


def read_metadata(inst: InstanceCore) -> dict[str, Any]:
    """The instance's ``metadata.yaml`` (``{}`` when it has none)."""
    from .instance import read_metadata as read
    return read(inst.volume)


def check_metadata(data: Any) -> dict[str, Any]:
    """``data`` as ``metadata.yaml`` may hold it, or ``InvalidArgument`` saying what is wrong:
    a start must be able to use every template entry it names."""
    if not isinstance(data, Mapping):
        raise InvalidArgument("metadata must be a mapping")
    # the fields of LXD's ImageMetadata, typed as its edit reads them: before, any value was
    # kept (`creation_date: x`, a list for the architecture) and `publish` failed on it later
    if not isinstance(data.get("architecture") or "", str):
        raise InvalidArgument("metadata architecture must be a string")
    for key in ("creation_date", "expiry_date"):
        value = data.get(key) or 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(f"metadata {key} must be an integer (seconds since 1970)")
    props = data.get("properties") or {}
    if not isinstance(props, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float, bool))
            for k, v in props.items()):
        raise InvalidArgument("metadata properties must map strings to strings")
    tpls = data.get("templates") or {}
    if not isinstance(tpls, Mapping):
        raise InvalidArgument("metadata templates must be a mapping of paths to templates")
    for target, spec in tpls.items():
        where = f"template entry {target!r}"
        if not isinstance(target, str) or not target.startswith("/"):
            raise InvalidArgument(f"{where}: the target must be an absolute path")
        if not isinstance(spec, Mapping):
            raise InvalidArgument(f"{where} must be a mapping")
        unknown = set(spec) - set(TEMPLATE_KEYS)
        if unknown:
            raise InvalidArgument(f"{where}: unknown keys {', '.join(sorted(map(str, unknown)))}")
        if not isinstance(spec.get("template"), str) or not templates.plain_name(
                spec["template"]):
            raise InvalidArgument(f"{where}: template must be a file name in templates/")
        when = spec.get("when") or []
        if not isinstance(when, list) or any(w not in TRIGGERS for w in when):
            raise InvalidArgument(f"{where}: when must list some of {', '.join(TRIGGERS)}")
        if not isinstance(spec.get("create_only", False), bool):
            raise InvalidArgument(f"{where}: create_only must be true or false")
        props = spec.get("properties") or {}
        if not isinstance(props, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in props.items()):
            raise InvalidArgument(f"{where}: properties must map strings to strings")
    return dict(data)


def write_metadata(inst: InstanceCore, data: Any) -> None:
    """Replace the instance's ``metadata.yaml`` with ``data`` (checked first)."""
    text = dump_yaml(check_metadata(data)).encode()
    with lock(inst.ctx.paths, "instance", inst.name):
        volume = _volume(inst)
        atomic_write(volume / "metadata.yaml", text, 0o644)
    log.debug("instance %s: metadata.yaml replaced", inst.name)


def _volume(inst: InstanceCore) -> Path:
    if not inst.exists:
        raise NotFound("instance", inst.name)
    volume: Path = inst.volume
    return volume


def _templates_dir(inst: InstanceCore, create: bool = False) -> Path:
    tdir = _volume(inst) / "templates"
    try:
        st = os.lstat(tdir)
    except FileNotFoundError:
        if not create:
            return tdir
        os.mkdir(tdir, 0o755)
        return tdir
    if not stat.S_ISDIR(st.st_mode):
        raise LxdlibError(f"the templates of instance {inst.name!r} are not a directory "
                          f"({tdir}): refused")
    return tdir


def _checked_name(name: str) -> str:
    if not isinstance(name, str) or not templates.plain_name(name):
        raise InvalidArgument(f"invalid template name {name!r}: a file name, without '/'")
    return name


def template_names(inst: InstanceCore) -> builtins.list[str]:
    """The instance's templates (file names in its ``templates/``), sorted."""
    tdir = _templates_dir(inst)
    try:
        return sorted(e.name for e in os.scandir(tdir) if e.is_file(follow_symlinks=False))
    except FileNotFoundError:
        return []


def read_template(inst: InstanceCore, name: str) -> str:
    """A template's text; ``NotFound`` when the instance has none of that name."""
    path = _templates_dir(inst) / _checked_name(name)
    if not os.path.lexists(path):
        raise NotFound("template", name, f"in instance {inst.name!r}")
    return templates.read_source(path, name, None)


def write_template(inst: InstanceCore, name: str, text: str, *, create: bool = False) -> None:
    """Replace (``create``: add; ``AlreadyExists`` if there is one) a template's text."""
    _checked_name(name)
    data = text.encode()
    with lock(inst.ctx.paths, "instance", inst.name):
        tdir = _templates_dir(inst, create=True)
        path = tdir / name
        there = os.path.lexists(path)
        if create and there:
            raise AlreadyExists("template", name)
        if not create and not there:
            raise NotFound("template", name, f"in instance {inst.name!r}")
        atomic_write(path, data, 0o644)
    log.debug("instance %s: template %s %s", inst.name, name,
              "created" if create else "replaced")


def delete_template(inst: InstanceCore, name: str) -> None:
    """Remove a template (its entries in the metadata stay, as in LXD: a start then says
    which template is missing)."""
    _checked_name(name)
    with lock(inst.ctx.paths, "instance", inst.name):
        path = _templates_dir(inst) / name
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise NotFound("template", name, f"in instance {inst.name!r}") from None
        except IsADirectoryError:
            raise InvalidArgument(f"{name!r} is a directory, not a template") from None
    log.debug("instance %s: template %s deleted", inst.name, name)


class Templates:
    """An instance's templates as a collection: ``inst.templates.names()``,
    ``inst.templates["hostname.tpl"]`` (the text), ``create``, ``update``, ``delete``."""

    def __init__(self, inst: InstanceCore) -> None:
        self._inst = inst

    def names(self) -> builtins.list[str]:
        return template_names(self._inst)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __getitem__(self, name: str) -> str:
        return read_template(self._inst, name)

    def create(self, name: str, text: str = "") -> None:
        write_template(self._inst, name, text, create=True)

    def update(self, name: str, text: str) -> None:
        write_template(self._inst, name, text)

    def delete(self, name: str) -> None:
        delete_template(self._inst, name)
