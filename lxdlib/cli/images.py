"""``image`` (list, info, show, edit, import, export, copy, refresh, delete, alias, build,
properties), ``publish`` and ``housekeeping``, as LXD's client spells them."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import TYPE_CHECKING, InvalidArgument, NotFound
from ..logs import get_logger
from ..progress import LineProgress as ProgressBar
from . import output
from .common import edit_text, load_mapping, str_map

if TYPE_CHECKING:
    from typing import Any

    from ..host import Host
    from ..imagestore.remotes import Remote
    from ..imagestore.store import ImageRecord

log = get_logger(__name__)


# -- helpers --------------------------------------------------------------------------------------

def _split(host: Host, ref: str) -> tuple[Remote, str]:
    from ..imagestore.remotes import split_ref
    name, rest = split_ref(ref, host.images.remotes.default)
    return host.images.remotes.get(name), rest


def _local(host: Host, ref: str) -> str:
    remote, rest = _split(host, ref)
    if not remote.is_local:
        raise InvalidArgument(f"{remote.name}: is an image server (read-only): this verb "
                              "works on local images")
    return rest


def _list_date(t: dt.datetime | None) -> str:
    """``Jan 2, 2006 at 3:04pm (UTC)``, as ``lxc image list`` prints."""
    if t is None:
        return ""
    t = t.astimezone(dt.UTC)
    hour = t.hour % 12 or 12
    return f"{t:%b} {t.day}, {t.year} at {hour}:{t:%M}{'am' if t.hour < 12 else 'pm'} (UTC)"


def _info_date(t: dt.datetime | None) -> str:
    """``2006/01/02 15:04 UTC``, as ``lxc image info`` prints."""
    return t.astimezone(dt.UTC).strftime("%Y/%m/%d %H:%M UTC") if t else ""


def _matches(aliases: Sequence[str], fingerprint: str, props: dict[str, str],
             filters: Sequence[str]) -> bool:
    for f in filters:
        if not f:
            continue
        if "=" in f:
            k, v = f.split("=", 1)
            if props.get(k) != v:
                return False
        elif not (fingerprint.startswith(f) or any(f in a for a in aliases)
                  or f in props.get("description", "")):
            return False
    return True


def _split_props(items: Sequence[str], what: str) -> tuple[list[str], dict[str, str]]:
    """Positional arguments: the ``key=value`` ones are properties (unless an existing file)."""
    plain: list[str] = []
    props: dict[str, str] = {}
    for x in items:
        if "=" in x and not Path(x).exists():
            k, v = x.split("=", 1)
            if not k:
                raise InvalidArgument(f"invalid {what} {x!r}")
            props[k] = v
        else:
            plain.append(x)
    return plain, props


# -- list / info / show / edit --------------------------------------------------------------------

#: ``image list -c`` letters and their headers, as LXD 5.0's ``lxc image list``
IMAGE_COLUMNS = {"l": "ALIAS", "L": "ALIASES", "f": "FINGERPRINT", "F": "FINGERPRINT",
                 "p": "PUBLIC", "d": "DESCRIPTION", "a": "ARCHITECTURE", "s": "SIZE",
                 "u": "UPLOAD DATE", "t": "TYPE"}
IMAGE_DEFAULT_COLUMNS = "lfpdatsu"


def _shortest(aliases: Sequence[str]) -> str:
    """LXD's ``l`` column: the shortest alias, and how many others there are."""
    if not aliases:
        return ""
    short = min(aliases, key=len)
    return f"{short} ({len(aliases) - 1} more)" if len(aliases) > 1 else short


def image_cells(aliases: Sequence[str], fingerprint: str, public: bool, description: str,
                architecture: str, kind: str, size: int,
                uploaded: dt.datetime | None) -> dict[str, str]:
    """Every ``image list`` column of one image (LXD prints sizes in MiB written ``MB``)."""
    return {"l": _shortest(aliases), "L": "\n".join(sorted(aliases)),
            "f": fingerprint[:12], "F": fingerprint, "p": "yes" if public else "no",
            "d": description, "a": architecture, "s": output.image_size(size),
            "u": _list_date(uploaded), "t": (kind or "container").upper()}


def cmd_list(host: Host, a: argparse.Namespace) -> int:
    cols = output.columns(a.columns, list(IMAGE_COLUMNS))
    output.check_format(a.format)
    filters = list(a.filters)
    remote = host.images.remotes.get(host.images.remotes.default)
    if filters and ":" in filters[0]:
        remote, first = _split(host, filters[0])
        filters[0] = first
    headers = [IMAGE_COLUMNS[c] for c in cols]
    cells: list[dict[str, str]] = []
    data: list[dict[str, Any]] = []
    if not remote.is_local:
        for i in host.images.remote_list(remote.name):
            if _matches(i.aliases, i.fingerprint, i.properties, filters):
                cells.append(image_cells(i.aliases, i.fingerprint, True,
                                         i.properties.get("description", ""), i.architecture,
                                         "container", i.size, i.created_at))
                data.append(i.to_dict())
    else:
        for r in (img.record() for img in host.images.list()):
            names = [x["name"] for x in r.aliases]
            if _matches(names, r.fingerprint, r.properties, filters):
                cells.append(image_cells(names, r.fingerprint, r.public,
                                         r.properties.get("description", ""), r.architecture,
                                         r.type, r.size, r.uploaded_at))
                data.append(r.to_dict())
    rows = sorted(([c[k] for k in cols] for c in cells), key=_row_key)
    output.emit(a.format, headers, rows, data)
    return 0


def _row_key(row: Sequence[str]) -> tuple[tuple[bool, str], ...]:
    """LXD sorts the rows by their cells, empty cells last."""
    return tuple((cell == "", cell) for cell in row)


def _record_or_remote(host: Host, ref: str) -> dict[str, Any]:
    remote, rest = _split(host, ref)
    if remote.is_local:
        return host.images.get(rest).to_dict()
    image, _ = host.images.client(remote.name).resolve(rest or "default")
    data: dict[str, Any] = image.to_dict()
    return data


def cmd_info(host: Host, a: argparse.Namespace) -> int:
    from ..config.units import parse_api_time
    d = _record_or_remote(host, a.ref)

    def when(key: str) -> dt.datetime | None:
        return parse_api_time(d.get(key))

    lines = [f"Fingerprint: {d['fingerprint']}", f"Size: {output.image_size(d['size'])}",
             f"Architecture: {d['architecture']}", f"Type: {d.get('type', 'container')}",
             f"Public: {'yes' if d['public'] else 'no'}", "Timestamps:"]
    if when("created_at"):
        lines.append(f"    Created: {_info_date(when('created_at'))}")
    lines.append(f"    Uploaded: {_info_date(when('uploaded_at'))}")
    lines.append(f"    Expires: {_info_date(when('expires_at')) or 'never'}")
    lines.append(f"    Last used: {_info_date(when('last_used_at')) or 'never'}")
    lines.append("Properties:")
    lines += [f"    {output.visible(k)}: {output.visible(v)}"
              for k, v in sorted(d["properties"].items())]
    lines.append("Aliases:")
    lines += [f"    - {x['name']}" for x in d["aliases"]]
    lines += [f"Cached: {'yes' if d['cached'] else 'no'}",
              f"Auto update: {'enabled' if d['auto_update'] else 'disabled'}"]
    src = d.get("update_source")
    if src:
        lines += ["Source:", f"    Server: {src.get('server', '')}",
                  f"    Protocol: {src.get('protocol', '')}", f"    Alias: {src.get('alias', '')}"]
    if "profiles" in d:  # a local image's (a remote catalogue has none)
        lines += ["Profiles:", *(f"    - {p}" for p in d["profiles"])] if d["profiles"] \
            else ["Profiles: []"]
    print("\n".join(lines))
    return 0


def cmd_show(host: Host, a: argparse.Namespace) -> int:
    """What ``lxc image show`` prints: the image's ImagePut alone (auto_update, properties,
    public, expires_at, profiles), the fields ``image edit`` takes; ``image info`` and
    ``--format`` of ``image list`` give the rest."""
    sys.stdout.write(_put_yaml(_record_or_remote(host, a.ref)))
    return 0


def _put_yaml(d: dict[str, Any]) -> str:
    """An image's ImagePut as yaml.v2 writes it: ``expires_at`` a Go time, plain RFC 3339 (a
    local image that never expires says the Unix epoch, as LXD's database gives it back)."""
    from ..config.units import EPOCH_TIME, ZERO_TIME, format_api_time, parse_api_time
    expires = format_api_time(parse_api_time(d.get("expires_at")),
                              EPOCH_TIME if "profiles" in d else ZERO_TIME)
    head = {"auto_update": bool(d.get("auto_update")),
            "properties": dict(sorted((d.get("properties") or {}).items())),
            "public": bool(d.get("public"))}
    return (output.dump_yaml(head) + f"expires_at: {expires}\n"
            + output.dump_yaml({"profiles": list(d.get("profiles") or [])}))


def _editable(i: ImageRecord) -> str:
    """The part of an image ``image edit`` changes (LXD's ImagePut), as ``image show``."""
    return _put_yaml(i.to_dict())


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidArgument(f"{key} must be true or false, not {value!r}")


#: The fields ``image edit`` changes (LXD's ImagePut) and those it ignores (the rest of what
#: ``image show`` prints, LXD's or lxdlib's).
_EDITABLE = frozenset({"auto_update", "properties", "public", "expires_at", "profiles"})
_READ_ONLY = frozenset({"aliases", "architecture", "cached", "filename", "fingerprint", "size",
                        "type", "update_source", "created_at", "last_used_at", "uploaded_at"})


def cmd_edit(host: Host, a: argparse.Namespace) -> int:
    from ..imagestore.store import UNSET
    i = host.images.get(_local(host, a.ref)).record()
    data = load_mapping(edit_text(_editable(i)))
    # what ``image show`` prints is accepted back: its read-only fields are ignored, as LXD
    # ignores them; only a field no image has (a typo) is refused
    unknown = set(data) - _EDITABLE - _READ_ONLY
    if unknown:
        raise InvalidArgument(f"unknown image fields: {', '.join(sorted(map(str, unknown)))}")
    props = str_map(data.get("properties"), "properties")
    expires: Any = UNSET
    if "expires_at" in data:
        expires = data["expires_at"]
        if isinstance(expires, dt.datetime):
            pass
        elif expires is not None:
            expires = str(expires)
        if str(expires).startswith("0001-01-01"):  # LXD's zero time leaves it as it is
            expires = UNSET
        elif isinstance(expires, dt.datetime) and expires.replace(tzinfo=dt.UTC).timestamp() == 0:
            expires = None  # the epoch: ``image show``'s never, as LXD reads it
    profiles = data.get("profiles")
    if profiles is not None and (not isinstance(profiles, list) or
                                 not all(isinstance(p, str) for p in profiles)):
        raise InvalidArgument("profiles must be a list of profile names")
    host.images.update(
        i.fingerprint,
        # LXD's edit replaces the list; one left out (or null) means ``default`` alone
        profiles=profiles if profiles is not None else ["default"],
        properties=props,
        public=_bool(data.get("public", i.public), "public"),
        auto_update=_bool(data.get("auto_update", i.auto_update), "auto_update"),
        expires_at=expires)
    return 0


def cmd_get_property(host: Host, a: argparse.Namespace) -> int:
    i = host.images.get(_local(host, a.ref))
    if a.key not in i.properties:
        raise NotFound("image property", a.key)  # as lxc: an error, not an empty line
    print(i.properties[a.key])
    return 0


def cmd_set_property(host: Host, a: argparse.Namespace) -> int:
    i = host.images.get(_local(host, a.ref))
    host.images.set_properties(i.fingerprint, {a.key: a.value})  # read under the image's lock
    return 0


def cmd_unset_property(host: Host, a: argparse.Namespace) -> int:
    i = host.images.get(_local(host, a.ref))
    host.images.set_properties(i.fingerprint, {a.key: None})
    return 0


# -- import / export / copy / refresh / delete ----------------------------------------------------

def cmd_import(host: Host, a: argparse.Namespace) -> int:
    files, props = _split_props([a.source, *_rest(a, _import_options)], "property")
    if files and files[-1] in ("local:", "local"):
        files = files[:-1]
    if not files or len(files) > 2:
        raise InvalidArgument("usage: image import <tarball>|<url> [<rootfs>] [key=value…]")
    src = files[0]
    bar = ProgressBar("Transferring image", quiet=a.quiet)
    try:
        if src.startswith(("http://", "https://")):
            if len(files) > 1:
                raise InvalidArgument("a URL import takes no separate rootfs")
            img = host.images.import_url(src, aliases=a.alias, properties=props,
                                         public=a.public, progress=bar)
        else:
            kw: dict[str, Any] = {"aliases": a.alias, "properties": props, "public": a.public,
                                  "progress": bar}
            if len(files) == 2:
                kw["rootfs_path"] = files[1]
            img = host.images.import_file(src, **kw)
    finally:
        bar.done()
    if not a.quiet:
        print(f"Image imported with fingerprint: {img.fingerprint}")
    return 0


def cmd_build(host: Host, a: argparse.Namespace) -> int:
    if a.name is not None:  # `image build busybox NAME`: the alias, as a user first tries
        if a.alias is not None and a.alias != a.name:
            raise InvalidArgument(f"two aliases given ({a.name!r} and --alias {a.alias!r}): "
                                  "give one")
        a.alias = a.name
    if a.kind == "busybox":
        if a.compression not in (None, "gzip", "xz", "none"):
            raise InvalidArgument("the busybox builder compresses with gzip, xz or none")
        for opt in ("release", "variant", "mirror", "packages"):
            if getattr(a, opt) is not None:
                raise InvalidArgument(f"--{opt} is for the debian builder")
        img = host.images.build_busybox(a.alias or "busybox", compression=a.compression or "gzip")
    elif a.kind == "debian":
        def step(text: str) -> None:
            if not a.quiet:
                print(text, file=sys.stderr, flush=True)

        img = host.images.build_debian(
            a.alias or "debian", release=a.release or "bookworm",
            variant=a.variant or "minbase", mirror=a.mirror or "http://deb.debian.org/debian",
            compression=a.compression or "xz", progress=step, cache_dir=a.cache_dir,
            packages=[p for arg in a.packages or () for p in arg.replace(",", " ").split()])
    else:
        raise InvalidArgument(f"unknown image builder {a.kind!r} (known: busybox, debian)")
    if not a.quiet:
        print(f"Image built with fingerprint: {img.fingerprint}")
    return 0


def cmd_export(host: Host, a: argparse.Namespace) -> int:
    import os

    from ..progress import Sampled, growing_files
    ref = _local(host, a.ref)
    target = a.target or "."
    where = target if Path(target).is_dir() else (os.path.dirname(target) or ".")
    total = host.images.get(ref).record().size
    # the export writes ``.<name>.tmp<pid>`` files and renames them: their growth is its progress
    with Sampled(ProgressBar("Exporting the image", quiet=a.quiet),
                 lambda: (growing_files(where, ".", f".tmp{os.getpid()}"), total)):
        outs = host.images.export(ref, target)
    log.info("image %s exported to %s", a.ref, ", ".join(str(o) for o in outs))
    if not a.quiet:
        print("Image exported successfully!")
    return 0


def cmd_copy(host: Host, a: argparse.Namespace) -> int:
    target, rest = _split(host, a.target if ":" in a.target else a.target + ":")
    if not target.is_local or rest:
        raise InvalidArgument("images can only be copied to local: (image servers are "
                              "read-only)")
    source, name = _split(host, a.source)
    bar = ProgressBar("Copying the image", quiet=a.quiet)
    try:
        if source.is_local:
            raise InvalidArgument("The source and target servers must be different")
        host.images.copy(f"{source.name}:{name}", aliases=a.alias,
                         copy_aliases=a.copy_aliases, auto_update=a.auto_update,
                         public=a.public, progress=bar)
    finally:
        bar.done()
    if not a.quiet:
        print("Image copied successfully!")
    return 0


def cmd_refresh(host: Host, a: argparse.Namespace) -> int:
    for ref in a.refs:
        bar = ProgressBar("Refreshing the image", quiet=a.quiet)
        try:
            _, changed = host.images.refresh(_local(host, ref), progress=bar)
        finally:
            bar.done()
        if not a.quiet:
            print("Image refreshed successfully!" if changed else "Image already up to date.")
    return 0


def cmd_delete(host: Host, a: argparse.Namespace) -> int:
    for ref in a.refs:
        host.images.delete(_local(host, ref))
    return 0


# -- aliases --------------------------------------------------------------------------------------

def cmd_alias(host: Host, a: argparse.Namespace) -> int:
    store = host.images.store
    if a.verb == "create":
        if len(a.args) != 2:
            raise InvalidArgument("usage: image alias create <alias> <fingerprint>")
        # LXD takes the target as a fingerprint (or a unique prefix of one), never an alias
        from ..imagestore.store import validate_alias_name
        name, target = _local(host, a.args[0]), _local(host, a.args[1])
        validate_alias_name(name)  # the name first, as LXD checks it
        image = store.get(target)
        if not image.fingerprint.startswith(target.lower()):
            raise NotFound("image", target)
        store.alias_create(name, image.fingerprint, a.description or "")
    elif a.verb in ("delete", "rm"):
        if not a.args:
            raise InvalidArgument("usage: image alias delete <alias>")
        for x in a.args:
            store.alias_delete(_local(host, x))
    elif a.verb in ("rename", "mv"):
        if len(a.args) != 2:
            raise InvalidArgument("usage: image alias rename <old> <new>")
        store.alias_rename(_local(host, a.args[0]), _local(host, a.args[1]))
    else:
        args = list(a.args)
        remote = host.images.remotes.get(host.images.remotes.default)
        if args and ":" in args[0]:
            remote, first = _split(host, args[0])
            args[0] = first
        args = [x for x in args if x]
        if remote.is_local:
            entries = [{"name": n, "target": v["target"], "type": "container",
                        "description": v.get("description", "")}
                       for n, v in sorted(store.aliases().items())]
        else:
            entries = [{"name": e.name, "target": e.target, "type": e.type, "description": ""}
                       for e in sorted(host.images.client(remote.name).aliases(),
                                       key=lambda e: e.name)]
        entries = [e for e in entries if not args or any(f in e["name"] for f in args)]
        rows = [[e["name"], e["target"][:12], e["type"].upper(), e["description"]]
                for e in entries]
        output.emit(a.format, ["ALIAS", "FINGERPRINT", "TYPE", "DESCRIPTION"], rows, entries)
    return 0


# -- publish / housekeeping -----------------------------------------------------------------------

def _publish_options(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    d: Any = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    p.add_argument("--alias", action="append", default=d([]))
    p.add_argument("--compression", default=d(None),
                   help="gzip, xz, zstd, bzip2, lzma, none … (default "
                   "images.compression_algorithm)")
    p.add_argument("-f", "--force", action="store_true", default=d(False),
                   help="stop a running instance, publish it and start it again")
    p.add_argument("--reuse", action="store_true", default=d(False),
                   help="move aliases that already exist")
    p.add_argument("--public", action="store_true", default=d(False))


def _import_options(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    d: Any = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    p.add_argument("--alias", action="append", default=d([]))
    p.add_argument("--public", action="store_true", default=d(False))


def _rest(a: argparse.Namespace, options: Any) -> list[str]:
    """Options may follow ``key=value`` arguments (``publish c1 k=v --alias x``): argparse cannot
    mix them after a subcommand, so the remainder is parsed again here."""
    p = argparse.ArgumentParser(prog="lxdlib", add_help=False, exit_on_error=False)
    options(p, defaults=False)
    p.add_argument("args", nargs="*")
    try:
        # known only: an unknown option made argparse print its own usage and exit, which
        # came out as "Error: 2"; it is said in lxc's words, as the main parser says it
        extra, unknown = p.parse_known_intermixed_args(a.rest)
    except (argparse.ArgumentError, SystemExit) as e:
        raise InvalidArgument(str(e)) from None
    if unknown:
        word = unknown[0]
        raise InvalidArgument(f"unknown flag: {word.split('=', 1)[0]}" if word.startswith("--")
                              else f"unknown shorthand flag: '{word[1:2]}' in {word}")
    for key, value in vars(extra).items():
        if key == "args":
            continue
        current = getattr(a, key, None)
        setattr(a, key, current + value if isinstance(current, list) else value)
    return list(extra.args)


def cmd_publish(host: Host, a: argparse.Namespace) -> int:
    rest, props = _split_props(_rest(a, _publish_options), "property")
    for x in rest:
        remote, name = _split(host, x if ":" in x else x + ":")
        if not remote.is_local or name:
            raise InvalidArgument(f"unexpected argument {x!r}: images are published to local:")
    source = _local(host, a.source)
    bar = ProgressBar("Publishing instance", quiet=a.quiet)
    try:
        img = host.images.publish(source, aliases=a.alias, compression=a.compression,
                                  properties=props or None, force=a.force, reuse=a.reuse,
                                  public=a.public, progress=bar)
    finally:
        bar.done()
    print(f"Instance published with fingerprint: {img.fingerprint}")  # even with -q, as lxc
    return 0


def cmd_housekeeping(host: Host, a: argparse.Namespace) -> int:
    report = host.images.housekeeping()
    if not a.quiet:
        for fp in report["pruned"]:
            print(f"Expired cached image {fp} deleted")
        for old, new in report["updated"].items():
            print(f"Image {old} updated to {new}")
    for fp, err in report["errors"].items():
        sys.stderr.write(f"Error: auto-update of image {fp} failed: {err}\n")
    return 1 if report["errors"] else 0


def register(sub: Any) -> None:
    p = sub.add_parser("image", help="manage images")
    s = p.add_subparsers(dest="image_cmd", metavar="<verb>", required=True)
    x = s.add_parser("list", aliases=["ls"], help="list local images or a remote's images")
    x.add_argument("filters", nargs="*")
    output.add_columns(x, IMAGE_DEFAULT_COLUMNS, {
        "l": "shortest alias", "L": "all aliases", "f": "fingerprint", "F": "full fingerprint",
        "p": "public", "d": "description", "a": "architecture", "s": "size",
        "u": "upload date", "t": "type"})
    output.add_format(x)
    x.set_defaults(func=cmd_list)
    x = s.add_parser("import", help="import an image tarball (split: metadata + rootfs) or URL")
    x.add_argument("source", help="<tarball>|<URL>")
    x.add_argument("rest", nargs=argparse.REMAINDER, help="[<rootfs>] [key=value…] [options]")
    _import_options(x)
    x.set_defaults(func=cmd_import)
    x = s.add_parser("build", help="build an image locally (busybox, debian)",
                     usage="lxdlib image build [-h] {busybox,debian} [<alias>] [options]",
                     description="Build an image here and add it to the local store under "
                     "<alias> (default: busybox or debian), e.g. `lxdlib image build busybox "
                     "bb` then `lxdlib launch bb c1`.")
    x.add_argument("kind", help="busybox or debian")
    x.add_argument("name", nargs="?", metavar="<alias>",
                   help="the image's alias (the same as --alias)")
    x.add_argument("--alias", help="the image's alias (default: the builder's name)")
    x.add_argument("--compression", choices=("gzip", "xz", "zstd", "none"),
                   help="default: gzip for busybox, xz for debian")
    x.add_argument("--release", help="debian: the suite to debootstrap (default bookworm)")
    x.add_argument("--variant", help="debian: debootstrap's --variant (default minbase)")
    x.add_argument("--mirror", help="debian: the archive (default http://deb.debian.org/debian)")
    x.add_argument("--packages", action="append", metavar="PKG[,PKG…]",
                   help="debian: more packages to install into the image (downloaded by the "
                        "host, e.g. docker.io); repeatable")
    # Internal (tests, repeated builds): reuse an identical earlier debootstrap kept here.
    x.add_argument("--cache-dir", help=argparse.SUPPRESS)
    x.set_defaults(func=cmd_build)
    x = s.add_parser("copy", aliases=["cp"],
                     help="copy an image from a remote into this host's store (local:)")
    x.add_argument("source")
    x.add_argument("target")
    x.add_argument("--alias", action="append", default=[])
    x.add_argument("--copy-aliases", action="store_true")
    x.add_argument("--auto-update", action="store_true")
    x.add_argument("--public", action="store_true")
    x.set_defaults(func=cmd_copy)
    x = s.add_parser("refresh", help="check images against their server now")
    x.add_argument("refs", nargs="+")
    x.set_defaults(func=cmd_refresh)
    x = s.add_parser("delete", aliases=["rm"])
    x.add_argument("refs", nargs="+")
    x.set_defaults(func=cmd_delete)
    for name, fn in (("info", cmd_info), ("show", cmd_show), ("edit", cmd_edit)):
        x = s.add_parser(name)
        x.add_argument("ref")
        x.set_defaults(func=fn)
    x = s.add_parser("get-property")
    x.add_argument("ref")
    x.add_argument("key")
    x.set_defaults(func=cmd_get_property)
    x = s.add_parser("set-property")
    x.add_argument("ref")
    x.add_argument("key")
    x.add_argument("value")
    x.set_defaults(func=cmd_set_property)
    x = s.add_parser("unset-property")
    x.add_argument("ref")
    x.add_argument("key")
    x.set_defaults(func=cmd_unset_property)
    x = s.add_parser("export")
    x.add_argument("ref")
    x.add_argument("target", nargs="?")
    x.set_defaults(func=cmd_export)
    x = s.add_parser("alias")
    x.add_argument("verb", choices=("create", "delete", "rm", "rename", "mv", "list", "ls"))
    x.add_argument("args", nargs="*")
    x.add_argument("--description")
    output.add_format(x)
    x.set_defaults(func=cmd_alias)

    x = sub.add_parser("publish", help="make an image from an instance or a snapshot")
    x.add_argument("source", help="<instance>[/<snapshot>]")
    x.add_argument("rest", nargs=argparse.REMAINDER, help="[local:] [key=value…] [options]")
    _publish_options(x)
    x.set_defaults(func=cmd_publish)

    x = sub.add_parser("housekeeping", help="expire unused cached images and auto-update "
                       "images (what LXD's daemon does on timers; run it from cron/systemd)")
    x.set_defaults(func=cmd_housekeeping)


__all__ = ["register"]
