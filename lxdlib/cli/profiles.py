"""``profile``: list, show, create, copy, edit, delete, rename, set/unset/get, add/remove/assign,
device …; ``profile apply <c> p1,p2`` is the seed article's spelling of assign."""

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
    str_map,
    text_field,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from ..host import Host
    from ..profiles import ProfileRecord
    from ..record import InstanceRecord


def cmd_list(host: Host, a: argparse.Namespace) -> int:
    # one read of each profile, and one walk over the instances for every used_by
    profs = host.ctx.profiles.list()
    rows = [[p.name, p.description, str(len(p.used_by))] for p in profs]
    output.emit(a.format, ["NAME", "DESCRIPTION", "USED BY"], rows,
                [_api_profile(p) for p in profs])
    return 0


def _api_profile(p: ProfileRecord) -> dict[str, Any]:
    """A profile as LXD's API gives it (``show``, ``list -f json|yaml``): api.Profile's field
    order (its ProfilePut's config, description, devices, then name, used_by), its maps sorted
    by key, as Go writes a map, and ``used_by`` as API paths."""
    return {"config": dict(sorted(p.config.items())), "description": p.description,
            "devices": output.sorted_devices(p.devices),
            "name": p.name, "used_by": [f"/1.0/instances/{n}" for n in p.used_by]}


def cmd_show(host: Host, a: argparse.Namespace) -> int:
    p = host.profiles.get(a.name).record()
    sys.stdout.write(output.dump_yaml(_api_profile(p)))
    return 0


def cmd_create(host: Host, a: argparse.Namespace) -> int:
    host.profiles.create(a.name, description=a.description or "")
    if not a.quiet:
        print(f"Profile {a.name} created")
    return 0


def cmd_copy(host: Host, a: argparse.Namespace) -> int:
    src = host.profiles.get(a.source).record()
    host.profiles.create(a.target, src.config, src.devices, src.description)
    return 0


def cmd_edit(host: Host, a: argparse.Namespace) -> int:
    p = host.profiles.get(a.name).record()
    shown = {"config": p.config, "description": p.description, "devices": p.devices}
    data = load_mapping(edit_text(output.dump_yaml(shown)))
    if data.get("name") not in (None, a.name):
        raise InvalidArgument("the profile name cannot be changed by edit (use rename)")
    host.update_profile(a.name, config=str_map(data.get("config"), "config"),
                        devices=devices_map(data.get("devices")),
                        description=text_field(data, "description") or "")
    return 0


def cmd_delete(host: Host, a: argparse.Namespace) -> int:
    for n in a.names:
        host.profiles.delete(n)
        if not a.quiet:
            print(f"Profile {n} deleted")
    return 0


def cmd_rename(host: Host, a: argparse.Namespace) -> int:
    host.profiles.rename(a.old, a.new)
    if not a.quiet:
        print(f"Profile {a.old} renamed to {a.new}")
    return 0


def cmd_set(host: Host, a: argparse.Namespace) -> int:
    if len(a.args) == 2 and "=" not in a.args[0]:
        kv = {a.args[0]: a.args[1]}
    else:
        bad = [x for x in a.args if "=" not in x]
        if bad:  # lxc's words, as `storage set`
            raise InvalidArgument(f"Invalid key=value configuration: {bad[0]}")
        kv = parse_kv(a.args, "config")

    def change(p: ProfileRecord) -> None:
        p.config.update(kv)
    host.modify_profile(a.name, change)  # read under the profile's lock
    return 0


def cmd_unset(host: Host, a: argparse.Namespace) -> int:
    """As ``lxc profile unset``: a key that is not set is left so, without complaint, if it is
    a key at all (an unknown one is refused: ``Unknown configuration key``)."""
    def change(p: ProfileRecord) -> None:
        if a.key in p.config:
            del p.config[a.key]
        else:
            from ..config.schema import spec_for
            spec_for(a.key)
    host.modify_profile(a.name, change)
    return 0


def cmd_get(host: Host, a: argparse.Namespace) -> int:
    print(host.profiles.get(a.name).config.get(a.key, ""))
    return 0


def _set_profiles(host: Host, inst_name: str, profiles: list[str]) -> None:
    host.instances.get(inst_name).update(profiles=profiles)


def cmd_add(host: Host, a: argparse.Namespace) -> int:
    def change(rec: InstanceRecord) -> None:
        if a.profile in rec.profiles:
            from .lxdwords import worded
            raise worded(AlreadyExists("profile", f"{a.profile} on {a.instance}"),
                         "Duplicate profile found in request")
        rec.profiles.append(a.profile)
    host.instances.get(a.instance).modify(change)  # read under the instance's lock
    if not a.quiet:
        print(f"Profile {a.profile} added to {a.instance}")
    return 0


def cmd_remove(host: Host, a: argparse.Namespace) -> int:
    def change(rec: InstanceRecord) -> None:
        if a.profile not in rec.profiles:
            from .lxdwords import worded
            raise worded(NotFound("profile", a.profile, f"not applied to {a.instance}"),
                         f"Profile {a.profile} isn't currently applied to {a.instance}")
        rec.profiles[:] = [p for p in rec.profiles if p != a.profile]
    host.instances.get(a.instance).modify(change)
    if not a.quiet:
        print(f"Profile {a.profile} removed from {a.instance}")
    return 0


def cmd_assign(host: Host, a: argparse.Namespace) -> int:
    names = [p for p in a.profiles.split(",") if p] if a.profiles else []
    _set_profiles(host, a.instance, names)
    if not a.quiet:
        print(f"Profiles {a.profiles or '(none)'} applied to {a.instance}")
    return 0


def add_device(host: Host, profile: str, name: str, device: Mapping[str, str]) -> None:
    """Add ``device`` to ``profile`` as ``name`` (``AlreadyExists`` when the name is taken),
    read and written under the profile's lock and re-applied to its users: ``profile device
    add`` and the ``attach-profile`` verbs of ``network`` and ``storage volume``, one path."""
    def change(p: ProfileRecord) -> None:
        if name in p.devices:
            raise AlreadyExists("device", name)
        p.devices[name] = dict(device)
    host.modify_profile(profile, change)


def remove_devices(host: Host, profile: str,
                   pick: Callable[[dict[str, dict[str, str]]], list[str]]) -> list[str]:
    """Remove the devices ``pick`` names from ``profile``; ``pick`` chooses among the devices
    as read under the profile's lock (so a choice by content, ``detach-profile``'s, sees what
    is removed). A name that is not there is ``NotFound`` and nothing is removed. ``profile
    device remove`` and the ``detach-profile`` verbs share it. The names removed."""
    removed: list[str] = []

    def change(p: ProfileRecord) -> None:
        names = pick(p.devices)
        for n in names:
            if n not in p.devices:
                raise NotFound("device", n)
        for n in names:
            del p.devices[n]
        removed[:] = names
    host.modify_profile(profile, change)
    return removed


def detach_pick(profile: str, device: str | None, target: str,
                matches: Callable[[dict[str, str]], bool], what: str, none_text: str,
                mismatch_text: str | None = None
                ) -> Callable[[dict[str, dict[str, str]]], list[str]]:
    """The ``pick`` of a ``detach-profile`` verb (``network``, ``storage volume``) for
    ``remove_devices``: the named ``device`` if it ``matches``, else the one device of the
    profile that does, with LXD's refusals (``none_text`` when none does; ``mismatch_text``
    for a named device that does not, None where LXD has no refusal of its own). ``what``
    says in lxdlib's words what a matching device is ("a nic on network 'n'")."""
    from .lxdwords import worded

    def pick(devs: dict[str, dict[str, str]]) -> list[str]:
        if device is None:
            found = sorted(n for n, d in devs.items() if matches(d))
            if not found:
                raise worded(NotFound("device", target,
                                      f"no device of profile {profile!r} is {what}"), none_text)
            if len(found) > 1:
                raise worded(InvalidArgument(
                    f"profile {profile!r} has several devices that are {what} "
                    f"({', '.join(found)}): name the device"),
                    "More than one device matches, specify the device name")
            return found
        if device not in devs:
            raise worded(NotFound("device", device), "The specified device doesn't exist")
        if not matches(devs[device]):
            e = InvalidArgument(f"device {device!r} of profile {profile!r} is not {what}")
            raise e if mismatch_text is None else worded(e, mismatch_text)
        return [device]
    return pick


def cmd_device(host: Host, a: argparse.Namespace) -> int:
    verb = {"rm": "remove", "ls": "list"}.get(a.verb, a.verb)
    if verb in ("list", "show", "get"):
        devs = host.profiles.get(a.profile).devices
        if verb == "list":  # one line each; none is one empty line, as lxc joins them
            print("\n".join(sorted(devs)))
        elif verb == "show":  # sorted, as Go writes its maps
            sys.stdout.write(output.dump_yaml(output.sorted_devices(devs)))
        else:
            if not a.rest:
                raise InvalidArgument("usage: profile device get <profile> <device> <key>")
            if a.rest[0] not in devs:
                raise NotFound("device", a.rest[0])
            print(devs[a.rest[0]].get(a.rest[1] if len(a.rest) > 1 else "", ""))
        return 0
    if not a.rest:
        raise InvalidArgument(f"usage: profile device {verb} <profile> <device> …")
    name, rest = a.rest[0], a.rest[1:]
    if verb == "add" and not rest:
        raise InvalidArgument("usage: profile device add <profile> <device> <type> [k=v…]")
    kv: dict[str, str] = {}
    if verb == "set":
        kv = (parse_kv(rest, "device property") if all("=" in r for r in rest)
              else {rest[0]: rest[1]} if len(rest) == 2 else {})
        if not kv:
            raise InvalidArgument("usage: profile device set <profile> <device> <key> <value>")

    if verb == "add":
        props = {"type": rest[0], **device_props(rest[1:])}
        try:
            add_device(host, a.profile, name, props)
        except InvalidConfig as e:
            from .lxdwords import device_refused
            raise device_refused(e, name, instance=False) from None
    elif verb == "remove":
        remove_devices(host, a.profile, lambda devs: [name, *rest])
    else:
        def change(p: ProfileRecord) -> None:
            """Runs under the profile's lock on the profile read there."""
            devs = p.devices
            if name not in devs:
                raise NotFound("device", name)
            if verb == "set":
                devs[name].update(kv)
            elif verb == "unset":
                for k in rest:
                    devs[name].pop(k, None)
        host.modify_profile(a.profile, change)
    if a.quiet:
        return 0
    if verb == "add":
        print(f"Device {name} added to {a.profile}")
    elif verb == "remove":
        print(f"Device {', '.join([name, *rest])} removed from {a.profile}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("profile", help="manage profiles")
    s = p.add_subparsers(dest="profile_cmd", metavar="<verb>", required=True)
    x = s.add_parser("list", aliases=["ls"])
    output.add_format(x)
    x.set_defaults(func=cmd_list)
    for name, fn in (("show", cmd_show), ("edit", cmd_edit)):
        x = s.add_parser(name)
        x.add_argument("name")
        x.set_defaults(func=fn)
    x = s.add_parser("create")
    x.add_argument("name")
    x.add_argument("--description")
    x.set_defaults(func=cmd_create)
    x = s.add_parser("copy", aliases=["cp"])
    x.add_argument("source")
    x.add_argument("target")
    x.set_defaults(func=cmd_copy)
    x = s.add_parser("delete", aliases=["rm"])
    x.add_argument("names", nargs="+")
    x.set_defaults(func=cmd_delete)
    x = s.add_parser("rename", aliases=["mv"])
    x.add_argument("old")
    x.add_argument("new")
    x.set_defaults(func=cmd_rename)
    x = s.add_parser("set")
    x.add_argument("name")
    x.add_argument("args", nargs="+")
    x.set_defaults(func=cmd_set)
    for name, fn in (("unset", cmd_unset), ("get", cmd_get)):
        x = s.add_parser(name)
        x.add_argument("name")
        x.add_argument("key")
        x.set_defaults(func=fn)
    for name, fn in (("add", cmd_add), ("remove", cmd_remove)):
        x = s.add_parser(name)
        x.add_argument("instance")
        x.add_argument("profile")
        x.set_defaults(func=fn)
    x = s.add_parser("assign", aliases=["apply"])
    x.add_argument("instance")
    x.add_argument("profiles", nargs="?", default="")
    x.set_defaults(func=cmd_assign)
    x = s.add_parser("device")
    x.add_argument("verb", choices=("add", "remove", "rm", "list", "ls", "show", "set", "unset",
                                    "get"))
    x.add_argument("profile")
    x.add_argument("rest", nargs="*")
    x.set_defaults(func=cmd_device)
