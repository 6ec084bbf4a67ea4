"""``network``: managed bridges (create, list, show, info, set, unset, edit, delete, rename,
list-leases, attach/detach to an instance or a profile)."""

from __future__ import annotations

import argparse
import sys

from ..errors import TYPE_CHECKING, InvalidArgument
from . import output
from .common import edit_text, load_mapping, parse_kv, str_map, text_field

if TYPE_CHECKING:
    from typing import Any

    from ..host import Host
    from ..record import InstanceRecord


def cmd_create(host: Host, a: argparse.Namespace) -> int:
    host.networks.create(a.name, parse_kv(a.config, "network config"), a.description or "")
    if not a.quiet:
        print(f"Network {a.name} created")
    return 0


def _users_paths(users: list[str]) -> list[str]:
    return [f"/1.0/profiles/{u[len('profile:'):]}" if u.startswith("profile:")
            else f"/1.0/instances/{u}" for u in users]


def _shown(host: Host, rec: dict[str, Any], users: list[str] | None = None) -> dict[str, Any]:
    """A network as LXD's API gives it (api.Network's field order: its NetworkPut's config and
    description, then name, type, used_by, managed, status, locations), its config sorted as
    yaml.v2 writes a Go map and its users as API paths (``users``: when the caller has them)."""
    if users is None:
        users = host.network_users(rec["name"])
    return {"config": dict(sorted((rec.get("config") or {}).items())),
            "description": rec.get("description", ""), "name": rec["name"],
            "type": rec.get("type", "bridge"), "used_by": _users_paths(users), "managed": True,
            "status": "Created", "locations": ["none"]}


def cmd_list(host: Host, a: argparse.Namespace) -> int:
    """The managed networks and, as ``lxc network list`` shows them, the host's other
    interfaces (MANAGED ``NO``; its loopback and the kinds LXD calls ``unknown``, veths and
    the like, left out), in name order; USED BY counts from one walk over the instances."""
    from ..network import hostlinks
    records = {n.name: n.record() for n in host.networks.list()}
    others = {name: kind for name, kind in hostlinks.interfaces().items()
              if name not in records}
    users = host.networks_users([*records, *others])
    # the API's order for json/yaml: the managed ones, then the host's in the kernel's order
    nets = [_shown(host, rec, users[name]) for name, rec in records.items()]
    nets += [{"config": {}, "description": "", "name": name, "type": kind,
              "used_by": _users_paths(users[name]) or ([] if kind == "loopback" else None),
              "managed": False, "status": "", "locations": None}
             for name, kind in others.items()]
    rows = []
    for n in sorted(nets, key=lambda n: str(n["name"])):
        if n["type"] in ("loopback", "unknown"):
            continue
        if n["managed"]:
            cfg = n["config"]
            rows.append([n["name"], "bridge", "YES", cfg.get("ipv4.address", ""),
                         cfg.get("ipv6.address", ""), n["description"],
                         str(len(n["used_by"])), "CREATED"])
        else:
            rows.append([n["name"], n["type"], "NO", "", "", "", str(len(n["used_by"] or [])),
                         ""])
    output.emit(a.format, ["NAME", "TYPE", "MANAGED", "IPV4", "IPV6", "DESCRIPTION", "USED BY",
                           "STATE"], rows, nets)
    return 0


def cmd_show(host: Host, a: argparse.Namespace) -> int:
    sys.stdout.write(output.dump_yaml(_shown(host, host.networks.get(a.name).record())))
    return 0


def cmd_info(host: Host, a: argparse.Namespace) -> int:
    """``lxc network info``'s text: the link, its addresses (only when it has some), its
    counters (bytes in SI units, as ``lxc info``), then the bridge's settings."""
    from .instances import si_size
    st = host.networks.info(a.name)
    lines = [f"Name: {a.name}", f"MAC address: {st.get('hwaddr', '')}",
             f"MTU: {st.get('mtu', 0)}", f"State: {st.get('state', '')}",
             f"Type: {st.get('type', '')}"]
    if st.get("addresses"):
        lines += ["", "IP addresses:"]
        lines += [f"  {ad['family']}\t{ad['address']}/{ad['netmask']} ({ad['scope']})"
                  for ad in st["addresses"]]
    cnt = st.get("counters") or {}
    lines += ["", "Network usage:",
              f"  Bytes received: {si_size(int(cnt.get('bytes_received', 0)))}",
              f"  Bytes sent: {si_size(int(cnt.get('bytes_sent', 0)))}",
              f"  Packets received: {cnt.get('packets_received', 0)}",
              f"  Packets sent: {cnt.get('packets_sent', 0)}"]
    br = st.get("bridge")
    if br is not None:
        lines += ["", "Bridge:", f"  ID: {br['id']}", f"  STP: {str(br['stp']).lower()}",
                  f"  Forward delay: {br['forward_delay']}",
                  f"  Default VLAN ID: {br['vlan_default']}",
                  f"  VLAN filtering: {str(br['vlan_filtering']).lower()}",
                  f"  Upper devices: {', '.join(br['upper_devices'])}"]
    print("\n".join(lines))
    return 0


def cmd_leases(host: Host, a: argparse.Namespace) -> int:
    """The DHCP leases, then the bridge's own addresses as ``<network>.gw`` (LXD's GATEWAY
    rows), the rows sorted as lxc sorts them (by hostname, naturally)."""
    import re
    leases = host.networks.leases(a.name)
    cfg = host.networks.get(a.name).config
    for key in ("ipv4.address", "ipv6.address"):
        addr = cfg.get(key, "")
        if addr and addr not in ("none", "auto"):
            leases.append({"hostname": f"{a.name}.gw", "hwaddr": "",
                           "address": addr.split("/")[0], "type": "gateway"})
    rows = sorted(([str(x.get("hostname", "")), str(x.get("hwaddr", "")),
                    str(x.get("address", "")), str(x.get("type", "dynamic")).upper()]
                   for x in leases), key=lambda r: [[(0, int(t), "") if t.isdigit() else (1, 0, t)
                                  for t in re.split(r"(\d+)", c)] for c in r])
    output.emit(a.format, ["HOSTNAME", "MAC ADDRESS", "IP ADDRESS", "TYPE"], rows, leases)
    return 0


def cmd_set(host: Host, a: argparse.Namespace) -> int:
    if len(a.args) == 2 and "=" not in a.args[0]:
        kv = {a.args[0]: a.args[1]}
    else:
        kv = parse_kv(a.args, "network config")
    host.networks.modify(a.name, lambda cfg: cfg.update(kv))  # read under the network's lock
    return 0


def cmd_unset(host: Host, a: argparse.Namespace) -> int:
    host.networks.modify(a.name, lambda cfg: cfg.pop(a.key, None))
    return 0


def cmd_get(host: Host, a: argparse.Namespace) -> int:
    # as lxc: a key that is not set prints nothing, not an empty line
    cfg = host.networks.get(a.name).config
    if a.key in cfg:
        print(cfg[a.key])
    return 0


def cmd_edit(host: Host, a: argparse.Namespace) -> int:
    n = host.networks.get(a.name).record()
    data = load_mapping(edit_text(output.dump_yaml({"config": n.get("config", {}),
                                                    "description": n.get("description", "")})))
    host.networks.update(a.name, str_map(data.get("config"), "config"),
                         description=text_field(data, "description"))
    return 0


def cmd_delete(host: Host, a: argparse.Namespace) -> int:
    host.networks.delete(a.name)  # refused while an instance or profile uses it
    if not a.quiet:
        print(f"Network {a.name} deleted")
    return 0


def cmd_rename(host: Host, a: argparse.Namespace) -> int:
    host.networks.rename(a.old, a.new)  # refused while an instance or profile uses it
    if not a.quiet:
        print(f"Network {a.old} renamed to {a.new}")
    return 0


def cmd_attach(host: Host, a: argparse.Namespace) -> int:
    dev = a.device or a.name

    def change(rec: InstanceRecord) -> None:
        if dev in rec.devices:
            raise InvalidArgument(f"device {dev!r} already exists on {a.instance}")
        rec.devices[dev] = {"type": "nic", "network": a.name, "name": a.ifname or dev}
    host.instances.get(a.instance).modify(change)  # read under the instance's lock
    return 0


def cmd_detach(host: Host, a: argparse.Namespace) -> int:
    def change(rec: InstanceRecord) -> None:
        names = [n for n, d in rec.devices.items() if d.get("type") == "nic"
                 and d.get("network") == a.name and (a.device is None or n == a.device)]
        if not names:
            raise InvalidArgument("No device found for this network")  # lxc's words
        for n in names:
            del rec.devices[n]
    host.instances.get(a.instance).modify(change)
    return 0


def cmd_attach_profile(host: Host, a: argparse.Namespace) -> int:
    """``network attach-profile <network> <profile> [<device>] [<interface>]``: a bridged nic
    on the network in the profile, named after the network unless a name is given, as LXD
    5.0's ``lxc`` writes it (``nictype: bridged``, ``parent``; ``name`` only when given)."""
    from .profiles import add_device
    host.networks.get(a.name)  # LXD: the network first ("Network not found")
    device = {"type": "nic", "nictype": "bridged", "parent": a.name}
    if a.ifname:
        device["name"] = a.ifname
    add_device(host, a.profile, a.device or a.name, device)
    return 0


def cmd_detach_profile(host: Host, a: argparse.Namespace) -> int:
    """``network detach-profile <network> <profile> [<device>]``: the profile's nic on the
    network goes; without a device name there must be exactly one (LXD's refusals)."""
    from .profiles import detach_pick, remove_devices
    host.networks.get(a.name)

    def on_network(dev: dict[str, str]) -> bool:
        return dev.get("type") == "nic" and a.name in (dev.get("network"), dev.get("parent"))

    remove_devices(host, a.profile, detach_pick(
        a.profile, a.device, a.name, on_network, f"a nic on network {a.name!r}",
        "No device found for this network", "The specified device doesn't match the network"))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("network", help="manage networks")
    s = p.add_subparsers(dest="network_cmd", metavar="<verb>", required=True)
    x = s.add_parser("create")
    x.add_argument("name")
    x.add_argument("config", nargs="*")
    x.add_argument("--description")
    x.add_argument("-t", "--type", default="bridge", choices=("bridge",))
    x.set_defaults(func=cmd_create)
    x = s.add_parser("list", aliases=["ls"])
    output.add_format(x)
    x.set_defaults(func=cmd_list)
    for name, fn in (("show", cmd_show), ("info", cmd_info), ("delete", cmd_delete),
                     ("edit", cmd_edit)):
        x = s.add_parser(name, aliases=["rm"] if name == "delete" else [])
        x.add_argument("name")
        x.set_defaults(func=fn)
    x = s.add_parser("list-leases")
    x.add_argument("name")
    output.add_format(x)
    x.set_defaults(func=cmd_leases)
    x = s.add_parser("set")
    x.add_argument("name")
    x.add_argument("args", nargs="+")
    x.set_defaults(func=cmd_set)
    for name, fn in (("unset", cmd_unset), ("get", cmd_get)):
        x = s.add_parser(name)
        x.add_argument("name")
        x.add_argument("key")
        x.set_defaults(func=fn)
    x = s.add_parser("rename", aliases=["mv"])
    x.add_argument("old")
    x.add_argument("new")
    x.set_defaults(func=cmd_rename)
    x = s.add_parser("attach")
    x.add_argument("name")
    x.add_argument("instance")
    x.add_argument("device", nargs="?")
    x.add_argument("ifname", nargs="?")
    x.set_defaults(func=cmd_attach)
    x = s.add_parser("detach")
    x.add_argument("name")
    x.add_argument("instance")
    x.add_argument("device", nargs="?")
    x.set_defaults(func=cmd_detach)
    x = s.add_parser("attach-profile")
    x.add_argument("name")
    x.add_argument("profile")
    x.add_argument("device", nargs="?")
    x.add_argument("ifname", nargs="?")
    x.set_defaults(func=cmd_attach_profile)
    x = s.add_parser("detach-profile")
    x.add_argument("name")
    x.add_argument("profile")
    x.add_argument("device", nargs="?")
    x.set_defaults(func=cmd_detach_profile)
