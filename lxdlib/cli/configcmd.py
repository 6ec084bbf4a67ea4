"""``config``: instance keys (and server keys when no instance is named), devices, edit."""

from __future__ import annotations

import argparse
import sys

from ..errors import TYPE_CHECKING, AlreadyExists, InvalidArgument, InvalidConfig, NotFound
from . import output
from .common import (
    device_props,
    devices_map,
    edit_text,
    load_mapping,
    parse_kv,
    str_list,
    str_map,
    text_field,
)

if TYPE_CHECKING:
    from typing import Any

    from ..host import Host
    from ..instances import Instance
    from ..record import InstanceRecord


def split_target_kv(args: list[str]) -> tuple[str | None, dict[str, str]]:
    """``set [<instance>] <key> <value>`` or ``set [<instance>] <key>=<value>…``, read as lxc
    5.0 reads them. The first word names the instance unless every word is ``key=value``, the
    first is a key (it holds a ``.``, as no instance name does), or there are two words and
    neither holds ``=`` (a server key and its value). The words after it are ``<key> <value>``
    when they are two and the first holds no ``=``; else each must be ``key=value``: a bare
    word among them is refused as lxc refuses it (``Invalid key=value configuration: b``),
    where it was taken for a key ``a=1`` of value ``b`` ("Invalid key name")."""
    if not args:
        raise InvalidArgument("usage: config set [<instance>] <key> <value>")
    server = (all("=" in x for x in args) or "." in args[0].split(":", 1)[-1]
              or (len(args) == 2 and not any("=" in x for x in args)))
    target, rest = (None, args) if server else (args[0], args[1:])
    if len(rest) == 2 and "=" not in rest[0]:
        return target, {rest[0]: rest[1]}
    if not rest:
        raise InvalidArgument("usage: config set [<instance>] <key> <value>")
    bare = [x for x in rest if "=" not in x]
    if bare:
        raise InvalidArgument(f"Invalid key=value configuration: {bare[0]}")
    return target, dict(x.split("=", 1) for x in rest)


def shown_devices(host: Host, rec: InstanceRecord) -> dict[str, dict[str, str]]:
    """The expanded devices as LXD shows them (``show --expanded``, ``expanded_devices``): a
    ``none`` device that masks a profile's device stays, as ``type: none``, so the user sees
    why the profile's device is absent. The runtime's composition drops them."""
    from ..config import expand

    profiles = [host.ctx.profile_data(p) for p in rec.profiles]
    return expand.expand_devices(profiles, rec.devices, keep_none=True)


def show_dict(host: Host, inst: Instance, expanded: bool) -> dict[str, Any]:
    rec = inst.record()
    cfg, devs = ((inst.expanded(rec)[0], shown_devices(host, rec)) if expanded
                 else (rec.config, rec.devices))
    return {"architecture": rec.architecture, "config": dict(sorted(cfg.items())),
            "devices": {n: dict(sorted(d.items())) for n, d in sorted(devs.items())},
            "ephemeral": rec.ephemeral, "profiles": rec.profiles, "stateful": False,
            "description": rec.description}


def cmd_set(host: Host, a: argparse.Namespace) -> int:
    target, kv = split_target_kv(a.args)
    if target is None:
        for k, v in kv.items():
            try:
                host.set_config(k, v)
            except InvalidConfig as e:
                if e.reason != "Unknown configuration key":
                    raise
                # the server's words in lxc 5.0.2, also for `config set c1 key` (a value
                # forgotten: lxc too takes it as a server key and its value)
                from .lxdwords import worded
                raise worded(e, f"cannot set '{k}' to '{v}': unknown key") from None
        return 0
    inst = host.instances.get(target)

    def change(rec: InstanceRecord) -> None:
        rec.config.update(kv)
    inst.modify(change)  # read under the instance's lock: parallel `config set`s all land
    return 0


def cmd_unset(host: Host, a: argparse.Namespace) -> int:
    if len(a.args) == 1:
        host.set_config(a.args[0], None)
        return 0
    if len(a.args) != 2:  # lxc's wrong count: the usage line, `Invalid number of arguments`
        a.parser.error("unrecognized arguments")
    host.instances.get(a.args[0]).unset_config(a.args[1])
    return 0


def cmd_get(host: Host, a: argparse.Namespace) -> int:
    if len(a.args) == 1:
        print(host.config.get(a.args[0], ""))
        return 0
    if len(a.args) != 2:
        a.parser.error("unrecognized arguments")
    inst = host.instances.get(a.args[0])
    cfg = inst.expanded_config if a.expanded else inst.config
    print(cfg.get(a.args[1], ""))
    return 0


def cmd_show(host: Host, a: argparse.Namespace) -> int:
    if a.name is None:
        sys.stdout.write(output.dump_yaml({"config": host.config}))
        return 0
    if "/" in a.name:
        iname, sname = a.name.split("/", 1)
        inst = host.instances.get(iname)
        inst.snapshots.get(sname)  # NotFound in LXD's words for a snapshot that is not there
        rec = inst.record()
        snap = next((s for s in rec.snapshots if s.name == sname), None)
        if snap is None:  # deleted meanwhile
            raise NotFound("snapshot", a.name)
        from .instances import api_snapshot  # as LXD's API gives it, as `list -f json` does
        sys.stdout.write(output.dump_yaml(api_snapshot(host, rec, snap)))
        return 0
    sys.stdout.write(output.dump_yaml(show_dict(host, host.instances.get(a.name), a.expanded)))
    return 0


def cmd_edit(host: Host, a: argparse.Namespace) -> int:
    if a.name is None:
        data = load_mapping(edit_text(output.dump_yaml({"config": host.config})))
        new = str_map(data.get("config"), "config")
        for k in set(host.config) - set(new):
            host.set_config(k, None)
        for k, v in new.items():
            host.set_config(k, v)
        return 0
    inst = host.instances.get(a.name)
    data = load_mapping(edit_text(output.dump_yaml(show_dict(host, inst, False))))
    # LXD's edit can turn `ephemeral` on or off; lxdlib's is fixed when the instance is made
    # (its reaper is set up then), so a change is refused rather than ignored
    ephemeral = data.get("ephemeral", inst.record().ephemeral)
    if not isinstance(ephemeral, bool):
        raise InvalidConfig("ephemeral", "must be true or false", repr(ephemeral))
    if ephemeral != inst.record().ephemeral:
        raise InvalidConfig("ephemeral", "cannot change after the instance is made (copy it "
                            "with or without --ephemeral instead)", str(ephemeral).lower())
    inst.update(config=str_map(data.get("config"), "config"),
                devices=devices_map(data.get("devices")),
                profiles=str_list(data.get("profiles"), "profiles"),
                description=text_field(data, "description") or "")
    return 0


# -- devices ------------------------------------------------------------------------------------
def device_add(devices: dict[str, dict[str, str]], name: str, dtype: str,
               kv: dict[str, str]) -> None:
    if name in devices:
        raise AlreadyExists("device", name)
    devices[name] = {"type": dtype, **kv}


def cmd_device(host: Host, a: argparse.Namespace) -> int:
    from .lxdwords import worded  # small; for the refusals below in lxc's words
    inst = host.instances.get(a.instance)
    verb = a.verb
    rest = a.rest
    if verb in ("list", "show"):
        rec = inst.record()
        devs = shown_devices(host, rec) if a.expanded else rec.devices
        if verb == "list":  # one line each; none is one empty line, as lxc joins them
            print("\n".join(sorted(devs)))
        else:  # sorted, as Go writes its maps
            sys.stdout.write(output.dump_yaml(output.sorted_devices(devs)))
        return 0
    if not rest:
        raise InvalidArgument(f"usage: config device {verb} <instance> <device> …")
    name, rest = rest[0], rest[1:]
    if verb == "get":
        devs = inst.devices
        source = devs if name in devs or not a.expanded else inst.expanded_devices
        if name not in source:
            if name in inst.expanded_devices:  # lxc reads the instance's own devices only
                raise worded(InvalidArgument(f"device {name!r} comes from a profile (-e reads "
                                             "the expanded devices)"),
                             "Device from profile(s) cannot be retrieved for individual "
                             "instance")
            raise NotFound("device", name)
        if len(rest) != 1:
            raise InvalidArgument("usage: config device get <instance> <device> <key>")
        print(source[name].get(rest[0], ""))
        return 0
    if verb not in ("add", "remove", "override", "set", "unset"):
        raise InvalidArgument(f"unknown device verb {verb!r}")
    if verb == "add" and not rest:
        raise InvalidArgument("usage: config device add <instance> <device> <type> [k=v…]")
    props = device_props(rest[1:]) if verb == "add" else {}
    kv: dict[str, str] | None = None
    if verb == "set":
        kv = (parse_kv(rest, "device property") if all("=" in r for r in rest)
              else {rest[0]: rest[1]} if len(rest) == 2 else None)
        if not kv:
            raise InvalidArgument("usage: config device set <instance> <device> <key> <value>")

    def change(rec: InstanceRecord) -> None:
        """Runs under the instance's lock on the record read there (see Instance.modify)."""
        devs = rec.devices
        if verb == "add":
            device_add(devs, name, rest[0], props)
        elif verb == "remove":
            for n in [name, *rest]:
                if n not in devs:
                    if n in inst.expanded(rec)[1]:
                        raise worded(InvalidArgument(f"device {n!r} comes from a profile; "
                                                     "override it with type=none instead"),
                                     "Device from profile(s) cannot be removed from "
                                     "individual instance. Override device or modify profile "
                                     "instead")
                    raise NotFound("device", n)
                del devs[n]
        elif verb == "override":
            exp = inst.expanded(rec)[1]
            if name in devs:
                raise AlreadyExists("local device", name)
            if name not in exp:
                raise worded(NotFound("device", name, "not in the instance's profiles"),
                             "The profile device doesn't exist")
            devs[name] = {**exp[name], **parse_kv(rest, "device property")}
        else:
            if name not in devs:
                if name in inst.expanded(rec)[1]:
                    raise worded(InvalidArgument(f"device {name!r} comes from a profile: use "
                                                 "`config device override` first"),
                                 "Device from profile(s) cannot be modified for individual "
                                 "instance. Override device or modify profile instead")
                raise NotFound("device", name)
            if kv is not None:
                devs[name].update(kv)
            else:
                for k in rest:
                    devs[name].pop(k, None)

    try:
        inst.modify(change)  # the new device is checked here, with the record
    except InvalidConfig as e:
        if verb != "add":
            raise
        from .lxdwords import device_refused
        raise device_refused(e, name, instance=True) from None
    except NotFound as e:
        if verb != "add" or e.kind != "disk source":
            raise
        from .lxdwords import worded  # lxc 5.0.2's words for a host path that is not there
        raise worded(e, f'Failed add validation for device "{name}": Missing source path '
                        f'"{e.name}" for disk "{name}"') from None
    if not a.quiet:  # LXD's words for the verbs that print
        said = {"add": f"Device {name} added to {a.instance}",
                "remove": f"Device {', '.join([name, *rest])} removed from {a.instance}",
                "override": f"Device {name} overridden for {a.instance}"}.get(verb)
        if said:
            print(said)
    return 0


#: ``lxc config trust list``'s columns
TRUST_HEADERS = ["TYPE", "NAME", "COMMON NAME", "FINGERPRINT", "ISSUE DATE", "EXPIRY DATE"]


def cmd_trust_list(host: Host | None, a: argparse.Namespace) -> int:
    """lxdlib has no network API, so no client certificate is ever trusted: LXD's empty list
    (scripts that read it, e.g. before adding a certificate, see what a fresh LXD shows)."""
    remote = (a.remote or "local:").partition(":")[0]
    try:  # no root opened: this runs outside the command's error handling
        output.check_format(a.format)
        if remote != "local":
            raise InvalidArgument(f'The remote "{remote}" doesn\'t exist')
    except InvalidArgument as e:
        if a.debug:
            raise
        sys.stderr.write(f"Error: {e}\n")
        return 1
    output.emit(a.format, TRUST_HEADERS, [], [])
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="instance and server configuration")
    cs = p.add_subparsers(dest="config_cmd", metavar="<verb>", required=True)
    s = cs.add_parser("set")
    s.add_argument("args", nargs="+")
    s.set_defaults(func=cmd_set)
    s = cs.add_parser("unset")
    s.add_argument("args", nargs="+")
    s.set_defaults(func=cmd_unset, parser=s)
    s = cs.add_parser("get")
    s.add_argument("args", nargs="+")
    s.add_argument("-e", "--expanded", action="store_true")
    s.set_defaults(func=cmd_get, parser=s)
    s = cs.add_parser("show")
    s.add_argument("name", nargs="?")
    s.add_argument("-e", "--expanded", action="store_true")
    s.set_defaults(func=cmd_show)
    s = cs.add_parser("edit")
    s.add_argument("name", nargs="?")
    s.set_defaults(func=cmd_edit)
    t = cs.add_parser("trust", help="the client certificates the server trusts (none)")
    ts = t.add_subparsers(dest="trust_cmd", metavar="<verb>", required=True)
    x = ts.add_parser("list", aliases=["ls"], help="list trusted client certificates (none)")
    x.add_argument("remote", nargs="?", metavar="<remote>:")
    output.add_format(x)
    x.set_defaults(func=cmd_trust_list, no_host=True)
    d = cs.add_parser("device", help="instance devices")
    d.add_argument("verb", choices=("add", "remove", "rm", "list", "ls", "show", "set", "unset",
                                    "get", "override"))
    d.add_argument("instance")
    d.add_argument("rest", nargs="*")
    d.add_argument("-e", "--expanded", action="store_true")
    d.set_defaults(func=lambda h, a: cmd_device(h, _norm_verb(a)))
    m = cs.add_parser("metadata", help="show or edit an instance's image metadata")
    m.add_argument("verb", choices=("show", "edit"))
    m.add_argument("instance")
    m.set_defaults(func=cmd_metadata)
    t = cs.add_parser("template", help="list, show, create, edit or delete an instance's "
                                       "file templates")
    t.add_argument("verb", choices=("list", "ls", "show", "create", "edit", "delete", "rm"))
    t.add_argument("instance")
    t.add_argument("template", nargs="?")
    output.add_format(t)
    t.set_defaults(func=cmd_template)


# -- metadata and templates (the instance's own copy of its image's) ---------------------------
def cmd_metadata(host: Host, a: argparse.Namespace) -> int:
    inst = host.instances.get(a.instance)
    shown = output.dump_yaml(_metadata_shown(inst.metadata()))
    if a.verb == "show":
        sys.stdout.write(shown)
        return 0
    inst.set_metadata(load_mapping(edit_text(shown)))
    return 0


def _metadata_shown(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata as LXD's api.ImageMetadata prints it: architecture, creation_date,
    expiry_date (0 when unset), properties, templates, and each template entry as
    api.ImageMetadataTemplate (when, create_only, template, properties), the maps sorted as
    yaml.v2 writes Go maps; other keys of metadata.yaml after them, as they are."""
    known = ("architecture", "creation_date", "expiry_date", "properties", "templates")
    out: dict[str, Any] = {"architecture": meta.get("architecture", ""),
                           "creation_date": meta.get("creation_date", 0),
                           "expiry_date": meta.get("expiry_date", 0),
                           "properties": _sorted_map(meta.get("properties"))}
    templates = meta.get("templates")
    if isinstance(templates, dict):
        out["templates"] = {
            path: ({"when": t.get("when", []), "create_only": t.get("create_only", False),
                    "template": t.get("template", ""),
                    "properties": _sorted_map(t.get("properties")),
                    **{k: v for k, v in t.items()
                       if k not in ("when", "create_only", "template", "properties")}}
                   if isinstance(t, dict) else t)
            for path, t in sorted(templates.items(), key=lambda kv: str(kv[0]))}
    elif templates is not None:
        out["templates"] = templates
    out.update({k: v for k, v in meta.items() if k not in known})
    return out


def _sorted_map(value: Any) -> Any:
    return dict(sorted(value.items(), key=lambda kv: str(kv[0]))) if isinstance(value, dict) \
        else ({} if value is None else value)


def cmd_template(host: Host, a: argparse.Namespace) -> int:
    inst = host.instances.get(a.instance)
    verb = {"ls": "list", "rm": "delete"}.get(a.verb, a.verb)
    if verb == "list":
        output.check_format(a.format)
        names = inst.templates.names()
        output.emit(a.format, ["FILENAME"], [[n] for n in names], names)
        return 0
    if a.template is None:
        raise InvalidArgument(f"Missing template name: config template {verb} <instance> "
                              "<template>")
    if verb == "show":
        sys.stdout.write(inst.templates[a.template])
    elif verb == "create":
        inst.templates.create(a.template)  # empty, as LXD makes it: fill it with `edit`
    elif verb == "edit":
        text = edit_text(inst.templates[a.template])
        if not text.strip():  # as every edit: nothing back is a mistake, not a wipe
            raise InvalidArgument("the new content is empty: nothing was changed")
        inst.templates.update(a.template, text)
    else:
        inst.templates.delete(a.template)
    return 0


def _norm_verb(a: argparse.Namespace) -> argparse.Namespace:
    a.verb = {"rm": "remove", "ls": "list"}.get(a.verb, a.verb)
    return a
