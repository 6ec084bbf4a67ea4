"""``nic`` devices: a veth pair whose host end joins a bridge (a managed network or a host bridge).

liblxc creates the veth and plugs it; lxdlib picks the bridge, keeps a stable MAC in
``volatile.<dev>.hwaddr`` and registers the instance with the network's DHCP/DNS.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..render import Nic
from . import BaseDriver, DeviceContext, Rendered


class NicDriver(BaseDriver):
    hotplug = False

    def render(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> Rendered:
        link = ctx.host._nic_link(dev)
        hwaddr = dev.get("hwaddr") or ctx.record.config.get(f"volatile.{name}.hwaddr") or ""
        if dev.get("network") and hwaddr:
            # the instance's name in the network's DNS, and a static ipv4.address honoured
            ctx.host.networks.dhcp_host_add(dev["network"], f"{ctx.name}/{name}", hwaddr,
                                            dev.get("ipv4.address"), ctx.name)
        return Rendered(nics=[Nic(name=dev.get("name", name), link=link, hwaddr=hwaddr,
                                  mtu=dev.get("mtu"), host_name=dev.get("host_name"))])


def driver_for(dtype: str) -> NicDriver:
    return NicDriver()
