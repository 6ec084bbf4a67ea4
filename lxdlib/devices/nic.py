"""``nic`` devices: a veth pair whose host end joins a bridge (a managed network or a host bridge).

liblxc creates the veth and plugs it; lxdlib picks the bridge, keeps a stable MAC in
``volatile.<dev>.hwaddr``, registers the instance with the network's DHCP/DNS, and names the host
end itself (``host_name``, or ``veth`` + a hash of root, instance and device) so that hooks and
``info`` find it without asking the container.

``limits.*`` are applied with tc on that host end from the start-host hook (so they follow every
start, ``lxc-start`` and reboots included) and at once when they change on a running instance.
Other nic changes take effect at the next start, as in LXD for a bridged nic's plumbing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from .. import tc
from ..render import Nic
from . import BaseDriver, DeviceContext, Rendered
from .hotmount import in_start_hook


def _identity(root: object, instance: str, device: str) -> str:
    return hashlib.sha256(f"{root}\0{instance}\0{device}".encode()).hexdigest()


def default_host_name(root: object, instance: str, device: str) -> str:
    return "veth" + _identity(root, instance, device)[:8]


def ifb_for(root: object, instance: str, device: str) -> str:
    """The ifb that shapes a nic's outgoing traffic (stable even if ``host_name`` changes)."""
    return tc.IFB_PREFIX + _identity(root, instance, device)[:9]


def host_veth(ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> str:
    """The host end of the nic's veth (at most 15 characters)."""
    return dev.get("host_name") or default_host_name(ctx.host.paths.root, ctx.name, name)


def host_ifb(ctx: DeviceContext, name: str) -> str:
    return ifb_for(ctx.host.paths.root, ctx.name, name)


class NicDriver(BaseDriver):
    hotplug = True  # only limits.* change live; the rest waits for the next start

    def render(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> Rendered:
        link = ctx.host._nic_link(dev)
        hwaddr = dev.get("hwaddr") or ctx.record.config.get(f"volatile.{name}.hwaddr") or ""
        if dev.get("network") and hwaddr:
            # the instance's name in the network's DNS, and a static ipv4.address honoured
            ctx.host.networks.dhcp_host_add(dev["network"], f"{ctx.name}/{name}", hwaddr,
                                            dev.get("ipv4.address"), ctx.name)
        limits = tc.nic_limits(dev)  # a bad rate fails here, before the start
        tc.collect_orphans()  # sysfs reads only, unless an earlier stop left an ifb behind
        return Rendered(nics=[Nic(name=dev.get("name", name), link=link, hwaddr=hwaddr,
                                  mtu=dev.get("mtu"), host_name=host_veth(ctx, name, dev))],
                        start_hook=bool(limits))

    def start(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None:
        limits = tc.nic_limits(dev)
        if ctx.pid is None or not limits:
            return
        veth = host_veth(ctx, name, dev)
        if not in_start_hook() and not tc.exists(veth):
            return  # a nic added to a running instance: it is plugged at the next start
        tc.apply(veth, limits, ifb=host_ifb(ctx, name))

    def stop(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None:
        if tc.nic_limits(dev):
            tc.clear(host_veth(ctx, name, dev), ifb=host_ifb(ctx, name))

    def update(self, ctx: DeviceContext, name: str, old: Mapping[str, str],
               new: Mapping[str, str]) -> None:
        before, after = tc.nic_limits(old), tc.nic_limits(new)
        if before == after:
            return
        veth = host_veth(ctx, name, old)  # the running veth keeps the name it started with
        if not tc.exists(veth):
            return
        if after:
            tc.apply(veth, after, ifb=host_ifb(ctx, name))
        else:
            tc.clear(veth, ifb=host_ifb(ctx, name))


def driver_for(dtype: str) -> NicDriver:
    return NicDriver()
