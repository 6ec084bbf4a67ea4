"""``image``: import, build, list, info, show, edit, delete, export, alias."""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from . import output
from .configcmd import edit_text, load_mapping

if TYPE_CHECKING:
    from ..host import Host
    from ..imagestore.store import ImageRecord


def _local(ref: str) -> str:
    if ref.startswith("local:"):
        return ref[len("local:"):]
    if ":" in ref.split("/", 1)[0]:
        raise InvalidArgument(f"remote {ref.split(':', 1)[0]!r}: image servers are not "
                              "supported yet")
    return ref


def _matches(img: ImageRecord, filters: list[str]) -> bool:
    for f in filters:
        f = _local(f) if f != "local:" else ""
        if not f:
            continue
        if "=" in f:
            k, v = f.split("=", 1)
            if img.properties.get(k) != v:
                return False
        elif not (img.fingerprint.startswith(f) or any(f in a["name"] for a in img.aliases)
                  or f in img.properties.get("description", "")):
            return False
    return True


def _date(t: dt.datetime | None) -> str:
    return t.strftime("%b %d, %Y at %I:%M%p (UTC)") if t else ""


def cmd_list(host: Host, a: argparse.Namespace) -> int:
    imgs = [i for i in host.images.list() if _matches(i, a.filters)]
    rows = [["\n".join(x["name"] for x in i.aliases), i.fingerprint[:12],
             "yes" if i.public else "no", i.properties.get("description", ""),
             i.architecture, "CONTAINER", output.size(i.size).replace("iB", "iB"),
             _date(i.uploaded_at)] for i in imgs]
    output.emit(a.format, ["ALIAS", "FINGERPRINT", "PUBLIC", "DESCRIPTION", "ARCHITECTURE",
                           "TYPE", "SIZE", "UPLOAD DATE"], rows, [i.to_dict() for i in imgs])
    return 0


def cmd_import(host: Host, a: argparse.Namespace) -> int:
    props: dict[str, str] = {}
    files = []
    for x in a.files:
        if "=" in x and not Path(x).exists():
            k, v = x.split("=", 1)
            props[k] = v
        else:
            files.append(x)
    if not files or len(files) > 2:
        raise InvalidArgument("usage: image import <tarball>|<url> [<rootfs>] [key=value…]")
    src = files[0]
    if src.startswith(("http://", "https://")):
        from ..imagestore.fetch import download_image
        img = download_image(host, src, aliases=a.alias, properties=props, public=a.public)
    else:
        kw: dict[str, Any] = {"aliases": a.alias, "properties": props, "public": a.public}
        if len(files) == 2:
            kw["rootfs_path"] = files[1]
        img = host.images.import_file(src, **kw)
    if not a.quiet:
        print(f"Image imported with fingerprint: {img.fingerprint}")
    return 0


def cmd_build(host: Host, a: argparse.Namespace) -> int:
    if a.kind != "busybox":
        raise InvalidArgument(f"unknown image builder {a.kind!r} (known: busybox)")
    img = host.images.build_busybox(a.alias or "busybox", compression=a.compression)
    if not a.quiet:
        print(f"Image built with fingerprint: {img.fingerprint}")
    return 0


def cmd_delete(host: Host, a: argparse.Namespace) -> int:
    for ref in a.refs:
        host.images.delete(_local(ref))
    return 0


def cmd_info(host: Host, a: argparse.Namespace) -> int:
    i = host.images.get(_local(a.ref))
    lines = [f"Fingerprint: {i.fingerprint}", f"Size: {output.size(i.size)}",
             f"Architecture: {i.architecture}", "Type: container",
             f"Public: {'yes' if i.public else 'no'}", "Timestamps:",
             f"    Created: {_date(i.created_at)}", f"    Uploaded: {_date(i.uploaded_at)}",
             f"    Expires: {_date(i.expires_at) or 'never'}",
             f"    Last used: {_date(i.last_used_at) or 'never'}", "Properties:"]
    lines += [f"    {k}: {v}" for k, v in sorted(i.properties.items())]
    lines.append("Aliases:")
    lines += [f"    - {x['name']}" for x in i.aliases]
    lines += [f"Cached: {'yes' if i.cached else 'no'}",
              f"Auto update: {'enabled' if i.auto_update else 'disabled'}"]
    print("\n".join(lines))
    return 0


def _editable(i: ImageRecord) -> dict[str, Any]:
    return {"auto_update": i.auto_update, "properties": dict(i.properties), "public": i.public,
            "expires_at": i.expires_at.isoformat() if i.expires_at else None}


def cmd_show(host: Host, a: argparse.Namespace) -> int:
    sys.stdout.write(output.dump_yaml(host.images.get(_local(a.ref)).to_dict()))
    return 0


def cmd_edit(host: Host, a: argparse.Namespace) -> int:
    i = host.images.get(_local(a.ref))
    data = load_mapping(edit_text(output.dump_yaml(_editable(i))))
    host.images.store.update(i.fingerprint, properties={str(k): str(v) for k, v in
                                                        (data.get("properties") or {}).items()},
                             public=bool(data.get("public", i.public)),
                             auto_update=bool(data.get("auto_update", i.auto_update)),
                             expires_at=data.get("expires_at"))
    return 0


def cmd_export(host: Host, a: argparse.Namespace) -> int:
    i = host.images.get(_local(a.ref))
    src = host.images.store.tarball_path(i.fingerprint)
    target = Path(a.target or ".")
    dest = target / (i.fingerprint + "".join(Path(i.filename).suffixes[-2:]) if i.filename
                     else i.fingerprint) if target.is_dir() else target
    shutil.copyfile(src, dest)
    rootfs = host.images.store.rootfs_path(i.fingerprint)
    if rootfs is not None:
        shutil.copyfile(rootfs, dest.with_name(dest.name + ".rootfs"))
    if not a.quiet:
        print(f"Image exported successfully to {dest}")
    return 0


def cmd_alias(host: Host, a: argparse.Namespace) -> int:
    store = host.images.store
    if a.verb == "create":
        if len(a.args) != 2:
            raise InvalidArgument("usage: image alias create <alias> <fingerprint>")
        store.alias_create(_local(a.args[0]), store.get(_local(a.args[1])).fingerprint,
                           a.description or "")
    elif a.verb in ("delete", "rm"):
        for x in a.args:
            store.alias_delete(_local(x))
    elif a.verb in ("rename", "mv"):
        if len(a.args) != 2:
            raise InvalidArgument("usage: image alias rename <old> <new>")
        store.alias_rename(_local(a.args[0]), _local(a.args[1]))
    else:
        table = store.aliases()
        rows = [[n, v["target"][:12], "CONTAINER", v.get("description", "")]
                for n, v in sorted(table.items())
                if not a.args or any(f in n for f in a.args)]
        output.emit(a.format, ["ALIAS", "FINGERPRINT", "TYPE", "DESCRIPTION"], rows,
                    [{"name": n, **v} for n, v in sorted(table.items())])
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("image", help="manage images")
    s = p.add_subparsers(dest="image_cmd", metavar="<verb>", required=True)
    x = s.add_parser("list", aliases=["ls"])
    x.add_argument("filters", nargs="*")
    x.add_argument("-f", "--format", choices=output.FORMATS, default="table")
    x.set_defaults(func=cmd_list)
    x = s.add_parser("import")
    x.add_argument("files", nargs="+")
    x.add_argument("--alias", action="append", default=[])
    x.add_argument("--public", action="store_true")
    x.set_defaults(func=cmd_import)
    x = s.add_parser("build", help="build an image locally (busybox)")
    x.add_argument("kind")
    x.add_argument("--alias")
    x.add_argument("--compression", default="gzip", choices=("gzip", "xz", "none"))
    x.set_defaults(func=cmd_build)
    x = s.add_parser("delete", aliases=["rm"])
    x.add_argument("refs", nargs="+")
    x.set_defaults(func=cmd_delete)
    for name, fn in (("info", cmd_info), ("show", cmd_show), ("edit", cmd_edit)):
        x = s.add_parser(name)
        x.add_argument("ref")
        x.set_defaults(func=fn)
    x = s.add_parser("export")
    x.add_argument("ref")
    x.add_argument("target", nargs="?")
    x.set_defaults(func=cmd_export)
    x = s.add_parser("alias")
    x.add_argument("verb", choices=("create", "delete", "rm", "rename", "mv", "list", "ls"))
    x.add_argument("args", nargs="*")
    x.add_argument("--description")
    x.add_argument("-f", "--format", choices=output.FORMATS, default="table")
    x.set_defaults(func=cmd_alias)
