"""Networks as users hold them: ``Network`` and the ``host.networks`` collection.

``lxdlib.network.manager.NetworkManager`` is the driver (bridges, dnsmasq, nftables) that the
layers below work with, in plain dicts. The public face adds what needs the instance engine —
who uses a network (instances by their expanded devices, and profiles), so that ``delete`` and
``rename`` refuse a network in use on their own — hence a module at the services' layer.

A ``Network`` still answers ``net["config"]`` and ``net.get("description")`` as the dicts did.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping

from .context import Context
from .errors import TYPE_CHECKING, CorruptRecord, InUse, InvalidConfig, NotFound
from .journal import crashpoint
from .model import Collection, RootModel
from .profile_apply import network_users
from .state import lock

if TYPE_CHECKING:
    from typing import Any

    from .network.manager import NetworkManager


def _plain(config: Mapping[str, str] | None) -> dict[str, str] | None:
    """The manager's copy of a caller's config: a mapping is copied, anything else refused
    as the manager's validator refuses it (``dict()`` of a list would raise a bare error)."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise InvalidConfig("config", "must be a mapping of keys to strings", repr(config))
    return dict(config)


class Network(RootModel[Context]):
    """One managed network (a bridge with DHCP/DNS and NAT as configured). Attributes are read
    from its record when asked; ``update`` applies to the running bridge at once."""

    kind = "network"

    @property
    def _manager(self) -> NetworkManager:
        return self._ctx.networks

    def _repr_html_(self) -> str:
        from .notebook import networks_html
        return networks_html([self.record()])

    def record(self) -> dict[str, Any]:
        """The network's record as stored now: name, type, managed, description, config."""
        return self._manager.get(self._name)

    def to_dict(self) -> dict[str, Any]:
        return self.record()

    # -- the dicts' spelling, kept for code written against them --------------------------------
    def __getitem__(self, key: str) -> Any:
        return self.record()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.record().get(key, default)

    # -- live attributes ----------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        try:
            self._manager.get(self._name)
        except NotFound:
            return False
        except CorruptRecord:
            return True  # there, but unreadable
        return True

    @property
    def type(self) -> str:
        return str(self.record().get("type", "bridge"))

    @property
    def managed(self) -> bool:
        return bool(self.record().get("managed", True))

    @property
    def description(self) -> str:
        return str(self.record().get("description") or "")

    @property
    def config(self) -> dict[str, str]:
        return dict(self.record()["config"])

    @property
    def used_by(self) -> builtins.list[str]:
        """Instances (by name) and profiles (``profile:<name>``) whose nics use the network."""
        self._manager.get(self._name)  # NotFound for a deleted network
        return network_users(self._ctx, self._name)

    def info(self) -> dict[str, Any]:
        """Live state in LXD's shape: state, type, mtu, hwaddr, addresses, counters."""
        return self._manager.info(self._name)

    def leases(self) -> builtins.list[dict[str, Any]]:
        """Current DHCP leases: hwaddr, address, hostname, expiry, type."""
        return self._manager.leases(self._name)

    # -- verbs --------------------------------------------------------------------------------
    def update(self, *, config: Mapping[str, str] | None = None,
               description: str | None = None) -> None:
        """Replace the config (keys left out are unset, as LXD's ``PUT``) and/or the
        description (``None`` keeps that part). A network that is up takes the change at once;
        if it cannot, the old config is put back before the error is raised."""
        if config is None:
            self._manager.modify(self._name, lambda cfg: None, description)
        else:
            self._manager.update(self._name, _plain(config) or {}, description)

    def modify(self, change: Callable[[dict[str, str]], object]) -> None:
        """Read-modify-write of the config under the network's lock, applied like ``update``."""
        self._manager.modify(self._name, change)

    def set_config(self, key: str, value: str) -> None:
        self.modify(lambda cfg: cfg.__setitem__(key, value))

    def unset_config(self, key: str) -> None:
        self.modify(lambda cfg: cfg.pop(key, None))

    def delete(self) -> None:
        """Remove the network; refused (``InUse``) while an instance or profile uses it."""
        self._unused_then(lambda: self._manager.delete(self._name, withdrawn=True),
                          unreadable=True)

    def rename(self, new: str) -> Network:
        """Rename a network nothing uses; it comes back up under the new name if it was up."""
        if new != self._name:
            self._unused_then(lambda: self._manager.rename(self._name, new, withdrawn=True))
        return Network(self._ctx, new)

    def _unused_then(self, commit: Callable[[], None], *, unreadable: bool = False) -> None:
        """Run ``commit`` (a delete or rename of the withdrawn network) once nothing uses it.

        A nic added to an instance (``network attach``, ``config device add``, a launch)
        checks that its network exists under the instance's lock alone, and a start takes the
        network's lock while it holds its instance's; so the network is withdrawn first
        (``NetworkManager.withdraw``: no look-up finds it), then the instance changes under
        way are waited for (``Context.quiesce_instances``, with no network lock held), then
        the users read again: one that found the network is counted, one that looks later
        finds it gone. Users found, or a failed commit, put it back. ``unreadable``: a
        record that cannot be read is withdrawn too (a delete needs nothing of it)."""
        from .network.manager import WITHDRAW_LOCK
        ctx = self._ctx
        with lock(ctx.paths, WITHDRAW_LOCK, self._name):
            self._refuse_users()
            self._manager.withdraw(self._name, unreadable=unreadable)
            try:
                crashpoint("network.withdrawn")
                ctx.quiesce_instances()
                self._refuse_users()
                commit()
            except BaseException:
                self._manager.restore(self._name)
                raise

    def _refuse_users(self) -> None:
        users = network_users(self._ctx, self._name)
        if users:
            raise InUse(f"network {self._name!r} is in use by: {', '.join(users)}")

    def up(self) -> None:
        """Bring the bridge, its DHCP/DNS and its NAT up (a no-op when they are)."""
        self._manager.ensure_up(self._name)

    def down(self) -> None:
        """Take the runtime parts down, keeping the record (``up`` or a start brings it back)."""
        self._manager.down(self._name)


class Networks(Collection[Network]):
    """The managed networks of a root: ``host.networks["lxdbr0"]``, ``in``, iteration,
    ``create``; name-based verbs for scripts that hold only names."""

    kind = "network"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def names(self) -> builtins.list[str]:
        return [str(n["name"]) for n in self.ctx.networks.list()]

    def _exists(self, name: str) -> bool:
        try:
            self.ctx.networks.get(name)
        except NotFound:
            return False
        except CorruptRecord:  # there, unreadable: its model says so when read, and deletes
            return True
        return True

    def _model(self, name: str) -> Network:
        return Network(self.ctx, name)

    def create(self, name: str, config: Mapping[str, str] | None = None,
               description: str = "") -> Network:
        """Create the bridge and everything it serves (``ipv4.address=auto`` picks a free
        subnet); on any failure nothing is left."""
        self.ctx.networks.create(name, _plain(config), description)
        return Network(self.ctx, name)

    def update(self, name: str, config: Mapping[str, str],
               description: str | None = None) -> Network:
        """``Network.update`` by name."""
        net = self.get(name)
        net.update(config=config, description=description)
        return net

    def modify(self, name: str, change: Callable[[dict[str, str]], object]) -> Network:
        net = self.get(name)
        net.modify(change)
        return net

    def delete(self, name: str) -> None:
        self.get(name).delete()

    def rename(self, old: str, new: str) -> Network:
        return self.get(old).rename(new)

    def info(self, name: str) -> dict[str, Any]:
        return self.get(name).info()

    def leases(self, name: str) -> builtins.list[dict[str, Any]]:
        return self.get(name).leases()

    def _repr_html_(self) -> str:
        from .notebook import networks_html
        return networks_html(self.ctx.networks.list())
