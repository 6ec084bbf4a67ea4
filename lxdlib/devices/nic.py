"""``nic`` devices: a veth pair whose host end joins a bridge (a managed network or a host bridge).

liblxc creates the veth and plugs it; lxdlib picks the bridge, keeps a stable MAC in
``volatile.<dev>.hwaddr``, registers the instance with the network's DHCP/DNS, and names the host
end itself (``host_name``, or ``veth`` + a hash of root, instance and device) so that hooks and
``info`` find it without asking the container.

``limits.*`` are applied with tc on that host end from the start-host hook (so they follow every
start, ``lxc-start`` and reboots included) and at once when they change on a running instance.
So are the ``security.*`` keys: MAC/IPv4/IPv6 spoofing filters (nftables bridge rules matching
that host end, see `lxdlib.network.filtering`) and the bridge port's ``isolated`` flag; they are
removed when the instance stops or the nic is removed. As in LXD, IP filtering implies MAC
filtering, and ``security.ipv4_filtering`` without a static ``ipv4.address`` pins the address the
network gave the nic (or a free one) as a static DHCP entry, so the allowed address cannot drift.
Removing a nic that has ``security.*`` keys from a running instance unplugs it at once (its host
end is deleted): it must not keep its link without its filter. Other nic changes take effect at
the next start, as in LXD for a bridged nic's plumbing.

A host end is found by its name, and a name proves nothing: ``host_name`` may name any host
interface. So lxdlib acts (tc, filters, port flag, delete) only on a host end the kernel shows to
be this instance's (a veth whose peer is in the network namespace of its init:
`lxdlib.network.netstate.veth_peer_in`), and a nic whose host end names an interface that exists
and is not the instance's own is refused at every render (an edit, an add, a start) before
anything changes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from ..config.ids import sha256_hex
from ..config.units import is_true
from ..errors import TYPE_CHECKING, InvalidConfig
from ..logs import get_logger
from ..network import tc
from ..render import Nic
from . import BaseDriver, DeviceContext, Rendered
from .hotmount import in_start_hook

# ``filtering`` (nftables, with ``subprocess``, ``shutil`` and ``socket``: ~3 ms of a command's
# start) is imported where a nic has security keys, not by every start that names a veth
if TYPE_CHECKING:
    from ..network import filtering

def _identity(root: object, instance: str, device: str) -> str:
    return sha256_hex(f"{root}\0{instance}\0{device}")


def default_host_name(root: object, instance: str, device: str) -> str:
    return "veth" + _identity(root, instance, device)[:8]


def ifb_for(root: object, instance: str, device: str) -> str:
    """The ifb that shapes a nic's outgoing traffic (stable even if ``host_name`` changes)."""
    return tc.IFB_PREFIX + _identity(root, instance, device)[:9]


def running_host_names(root: object, instance: str,
                       devices: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """``volatile.<nic>.host_name`` of each nic a start gives a veth (LXD's key, set while the
    instance runs): where scripts find the host end, e.g. for ``tc`` or a capture."""
    return {f"volatile.{dname}.host_name": dev.get("host_name") or
            default_host_name(root, instance, dname)
            for dname, dev in devices.items() if dev.get("type") == "nic"}


def host_veth(ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> str:
    """The host end of the nic's veth (at most 15 characters)."""
    return dev.get("host_name") or default_host_name(ctx.host.paths.root, ctx.name, name)


def host_ifb(ctx: DeviceContext, name: str) -> str:
    return ifb_for(ctx.host.paths.root, ctx.name, name)


log = get_logger(__name__)

_FILTER_KEYS = ("security.mac_filtering", "security.ipv4_filtering", "security.ipv6_filtering")


_LINK_LOCAL = ipaddress.IPv6Network("fe80::/64")


def _filtered(dev: Mapping[str, str]) -> bool:
    return any(is_true(dev.get(k)) for k in _FILTER_KEYS)


def _isolated(dev: Mapping[str, str]) -> bool:
    return is_true(dev.get("security.port_isolation"))


def _secured(dev: Mapping[str, str]) -> bool:
    return _filtered(dev) or _isolated(dev)


def _bridge(dev: Mapping[str, str]) -> str:
    return dev.get("network") or dev.get("parent") or ""


def _hwaddr(ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> str:
    return dev.get("hwaddr") or ctx.record.config.get(f"volatile.{name}.hwaddr") or ""


def _peer_in(veth: str, pid: int) -> bool:
    from ..network import netstate  # here: only a host end that exists is asked about
    return netstate.veth_peer_in(veth, pid)


def _plugged(ctx: DeviceContext, veth: str) -> bool:
    """Whether ``veth`` is a host end of the running instance (see the module's docstring)."""
    return ctx.pid is not None and tc.exists(veth) and _peer_in(veth, ctx.pid)


def _init_pid(ctx: DeviceContext) -> int | None:
    """The instance's init pid when it runs: a render has none in its context (only the
    rare render that meets an existing host end asks)."""
    if ctx.pid is not None:
        return ctx.pid
    from .. import livestate, runtime  # here: only a clash of names needs them
    live = livestate.of(ctx.host.paths.lxcpath, ctx.name)
    pid = live.pid if live is not None else \
        runtime.open_container(ctx.host.paths.lxcpath, ctx.name).init_pid
    return pid if pid > 0 else None


def _check_host_end(ctx: DeviceContext, name: str, veth: str) -> None:
    """Refuse a host end another nic of the instance names too, or that exists on the host
    without being the instance's own (a start has none yet: liblxc would fail to create it)."""
    for other, dev in ctx.devices.items():
        if other != name and dev.get("type") == "nic" and host_veth(ctx, other, dev) == veth:
            raise InvalidConfig(f"devices.{name}.host_name",
                                f"nic {other} of instance {ctx.name} has that host end too", veth)
    if not tc.exists(veth):
        return
    pid = None if ctx.starting else _init_pid(ctx)
    if pid is None or not _peer_in(veth, pid):
        raise InvalidConfig(f"devices.{name}.host_name",
                            f"host interface {veth} exists and is not a nic of instance "
                            f"{ctx.name}", veth)


def _wants_pinned_ipv4(dev: Mapping[str, str]) -> bool:
    return bool(dev.get("network")) and is_true(dev.get("security.ipv4_filtering")) \
        and not dev.get("ipv4.address")


def nic_filter(ctx: DeviceContext, name: str, plugged: Mapping[str, str],
               policy: Mapping[str, str]) -> filtering.NicFilter:
    """The filter of a nic plugged as ``plugged`` (bridge, host end, MAC) under the security
    keys and addresses of ``policy`` (the same config, except during a live update)."""
    from ..network import filtering
    hwaddr = _hwaddr(ctx, name, plugged)
    network = plugged.get("network") or ""
    ipv4: tuple[ipaddress.IPv4Network, ...] | None = None
    ipv6: tuple[ipaddress.IPv6Network, ...] | None = None
    if is_true(policy.get("security.ipv4_filtering")):
        if policy.get("ipv4.address"):
            ipv4 = (ipaddress.IPv4Network(policy["ipv4.address"]),)
        else:
            pinned = ctx.host.networks.dhcp_host_allocate(network, f"{ctx.name}/{name}",
                                                          hwaddr, ctx.name,
                                                          stale=ctx.host.nic_claim_stale)
            ipv4 = (ipaddress.IPv4Network(pinned),) if pinned else ()
    if is_true(policy.get("security.ipv6_filtering")):
        if policy.get("ipv6.address"):
            ipv6 = (ipaddress.IPv6Network(policy["ipv6.address"]),)
        else:
            _, subnet = ctx.host.networks.nic_filter_subnets(network)
            if subnet is not None and subnet.prefixlen == 64:
                ipv6 = (ipaddress.IPv6Network(filtering.eui64(subnet, hwaddr)),)
            else:
                ipv6 = ()  # the network gives no IPv6 address (SLAAC needs a /64): none allowed
    if ipv6:
        # and its own link-local address (derived from its MAC, so nobody else's): without it
        # neighbour discovery towards the router's link-local address fails
        ipv6 = (*ipv6, ipaddress.IPv6Network(filtering.eui64(_LINK_LOCAL, hwaddr)))
    return filtering.NicFilter(bridge=_bridge(plugged), veth=host_veth(ctx, name, plugged),
                               hwaddr=hwaddr, ipv4=ipv4, ipv6=ipv6)


class NicDriver(BaseDriver):
    hotplug = True  # only limits.* change live; the rest waits for the next start

    def render(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> Rendered:
        # the bridge must be up for a start only; a create, copy or edit names it, checked to
        # exist (bringing a network up checks the bridge, dnsmasq and the NAT table: ~1 ms)
        link = ctx.host.nic_link(dev) if ctx.starting else ctx.host.nic_check(dev)
        veth = host_veth(ctx, name, dev)
        _check_host_end(ctx, name, veth)  # before the DHCP entry below
        hwaddr = dev.get("hwaddr") or ctx.record.config.get(f"volatile.{name}.hwaddr") or ""
        if dev.get("network") and dev.get("ipv6.address"):
            ctx.host.networks.check_nic_ipv6(dev["network"], dev["ipv6.address"])
        if dev.get("network") and hwaddr:
            if _wants_pinned_ipv4(dev):
                # the address the nic will be held to, pinned before its DHCP client asks
                ctx.host.networks.dhcp_host_allocate(dev["network"], f"{ctx.name}/{name}",
                                                     hwaddr, ctx.name,
                                                     stale=ctx.host.nic_claim_stale)
            else:
                # the instance's name in the network's DNS, a static ipv4.address honoured,
                # and the nic's hold on its MAC: written at the first render (a create, copy,
                # edit or device add), so that a second nic of the network with that MAC is
                # refused there, before anything is saved, rather than at a start (LXD refuses
                # it at its start validation; a launch then left the instance made). One
                # owner file and one index file per nic: the cost does not grow with the
                # network. An entry already there is kept true by every render.
                ctx.host.networks.dhcp_host_add(
                    dev["network"], f"{ctx.name}/{name}", hwaddr, dev.get("ipv4.address"),
                    ctx.name, stale=ctx.host.nic_claim_stale)
        limits = tc.nic_limits(dev)  # a bad rate fails here, before the start
        tc.collect_orphan(host_ifb(ctx, name))  # unless an earlier stop left it behind: reads
        return Rendered(nics=[Nic(name=dev.get("name", name), link=link, hwaddr=hwaddr,
                                  mtu=dev.get("mtu"), host_name=veth)],
                        start_hook=bool(limits) or _secured(dev))

    def start(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None:
        limits = tc.nic_limits(dev)
        if ctx.pid is None or not (limits or _secured(dev)):
            return
        veth = host_veth(ctx, name, dev)
        if not in_start_hook() and not _plugged(ctx, veth):
            # a nic added to a running instance: it is plugged at the next start (a host
            # interface of that name is someone else's). In the hook, liblxc has just made it
            return
        from ..network import filtering
        if _filtered(dev):
            filtering.install(nic_filter(ctx, name, dev, dev))
        if _isolated(dev):
            filtering.set_isolated(veth, True)
        if limits:
            tc.apply(veth, limits, ifb=host_ifb(ctx, name))

    def stop(self, ctx: DeviceContext, name: str, dev: Mapping[str, str]) -> None:
        veth = host_veth(ctx, name, dev)
        present = tc.exists(veth)
        # ours: the hook's rollback undoes what liblxc just made; a live remove, the kernel
        # says. After the stop (no pid) the instance's host end went with it: one there now
        # is someone else's, and so is the filter chain of that name
        ours = present and ctx.pid is not None and (in_start_hook() or _plugged(ctx, veth))
        if ours and _secured(dev) and not in_start_hook():
            # removed from a running instance: unplug it rather than leave it unfiltered
            import subprocess
            r = subprocess.run(["ip", "link", "del", "dev", veth], capture_output=True,
                               check=False)
            if r.returncode != 0:
                log.warning("nic %s of %s: cannot delete its host end %s: %s", name, ctx.name,
                            veth, r.stderr.decode(errors="replace").strip())
            else:
                log.info("nic %s of %s unplugged (host end %s deleted)", name, ctx.name, veth)

        if tc.nic_limits(dev):
            if ours:
                tc.clear(veth, ifb=host_ifb(ctx, name))
            else:
                tc.drop_ifb(host_ifb(ctx, name))  # named after the instance: always ours
        if _filtered(dev) and (ours or not present):
            from ..network import filtering
            filtering.remove(_bridge(dev), veth)

    def update(self, ctx: DeviceContext, name: str, old: Mapping[str, str],
               new: Mapping[str, str]) -> None:
        """Live: limits and the security keys. The nic stays plugged as it started (``old``'s
        bridge, host end and MAC) until the next start; only what it may send changes."""
        veth = host_veth(ctx, name, old)  # the running veth keeps the name it started with
        if not _plugged(ctx, veth):
            return  # not plugged (added live), or a host interface of that name not ours
        from ..network import filtering
        if _filtered(new):
            want = nic_filter(ctx, name, old, new)
            if not _filtered(old) or want != nic_filter(ctx, name, old, old):
                filtering.install(want)
        elif _filtered(old):
            filtering.remove(_bridge(old), veth)
        if _isolated(old) != _isolated(new):
            filtering.set_isolated(veth, _isolated(new))
        before, after = tc.nic_limits(old), tc.nic_limits(new)
        if before == after:
            return
        if after:
            tc.apply(veth, after, ifb=host_ifb(ctx, name))
        else:
            tc.clear(veth, ifb=host_ifb(ctx, name))


def driver_for(dtype: str) -> NicDriver:
    return NicDriver()
