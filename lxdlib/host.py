"""``Host``: the public entry point — one root directory, its collections, and host facts.

A thin façade: the work happens in the services below (``instances``, ``images``, ``copy``,
``backup``, ``profile_apply``…), which receive the root's ``Context`` rather than the ``Host``.
``Host()`` costs a few directory checks; pools, networks and images are touched only when an
operation needs them. A fresh root that lacks a default pool, network or profile gets them on
first use (``init --auto``), so ``Host(root=tmp).launch("busybox", "c1")`` works on its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from .context import DEFAULT_NETWORK, DEFAULT_POOL, Context, HostFacts
from .errors import TYPE_CHECKING, HostLimit, NotFound
from .instances import Instance, Instances
from .logs import get_logger
from .profiles import ProfileRecord
from .state import Paths

if TYPE_CHECKING:
    from typing import Any

    from .images import Image, Images  # loaded by ``Host.images``: most commands use no image
    from .networks import Networks
    from .profile_apply import Profiles  # by ``Host.profiles``: a verb on an instance uses none
    from .record import InstanceRecord
    from .storage.base import PoolDriver  # the drivers load when a pool is opened
    from .views import Pools
    from .volumes import Volumes

__all__ = ["DEFAULT_NETWORK", "DEFAULT_POOL", "Host", "HostFacts"]

log = get_logger(__name__)


class Host:
    """One lxdlib root: instances, images, profiles, pools and networks that live under it.

    Each collection has the one shape of ``lxdlib.model`` (``host.profiles["web"]``, ``in``,
    iteration, ``len``, ``get``, ``create``…) and hands out live models. Custom volumes are
    ``host.volumes["<pool>/<name>"]``, or ``host.pools["<pool>"].volumes["<name>"]``."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *,
                 create: bool | None = None) -> None:
        """Open the root at ``root`` (default: ``$LXDLIB_ROOT`` or ``/var/lib/lxdlib``).

        A root named by the caller must exist (a directory: an empty one is set up), so a
        mistyped path fails with ``NotFound`` instead of starting an empty root beside the real
        one; ``create=True`` makes it. The default root is created when missing.
        ``create=False`` opens only a root that was set up before: what runs on its own later —
        liblxc's hooks, the ephemeral reaper — must never bring back a root that was deleted.
        """
        paths = Paths.at(root)
        if create is False:
            if not paths.lxcpath.is_dir():
                raise NotFound("lxdlib root", str(paths.root), "it does not exist")
        elif create is None and root is not None and not paths.root.is_dir():
            raise NotFound("lxdlib root", str(paths.root),
                           "no such directory (Host(root, create=True) makes one)")
        self.ctx = Context.open(paths)
        self.paths = paths
        self.events = self.ctx.events
        self.instances = Instances(self.ctx)
        self._profiles: Profiles | None = None
        self._images: Images | None = None

    def __repr__(self) -> str:
        return f"<Host root={str(self.paths.root)!r}>"

    @property
    def profiles(self) -> Profiles:
        """The profiles (``host.profiles["default"]``). Made on first use: the profile service
        (``lxdlib.profile_apply``, ~0.8 ms to import) is no part of ``info``, ``exec`` or
        ``config set`` on an instance, which compose profiles through ``ctx.profiles``."""
        if self._profiles is None:
            from .profile_apply import Profiles
            self._profiles = Profiles(self.ctx)
        return self._profiles

    @property
    def images(self) -> Images:
        """The local images (``host.images["busybox"]``), and those of remotes by
        ``<remote>:<alias>``. Made on first use: the image code and the store's modules
        (tarfile, compressors) are no part of the commands that use no image."""
        if self._images is None:
            from .images import Images
            self._images = Images(self.ctx)
        return self._images

    def _repr_html_(self) -> str:
        from .notebook import host_html
        return host_html(self)

    # -- facts and server config --------------------------------------------------------------
    def facts(self) -> HostFacts:
        """CPUs, memory, cgroup version, lxcfs, the id range for containers (read once)."""
        return self.ctx.facts()

    def seccomp_policy(self) -> Path:
        return self.ctx.seccomp_policy()

    @property
    def config(self) -> dict[str, str]:
        """Server keys (``images.remote_cache_expiry`` …) as saved."""
        return self.ctx.config

    def set_config(self, key: str, value: str | None) -> None:
        """Server keys (``images.remote_cache_expiry`` …); ``None`` unsets."""
        self.ctx.set_config(key, value)

    # -- storage ------------------------------------------------------------------------------
    def pool(self, name: str) -> PoolDriver:
        """A storage pool's driver by name."""
        return self.ctx.pool(name)

    def _modify_instance(self, name: str, change: Callable[[InstanceRecord], None]) -> None:
        """What volumes need to attach themselves: an instance's read-modify-write (they sit
        below the instance engine, as devices use them)."""
        self.instances.get(name).modify(change)

    @property
    def pools(self) -> Pools:
        """The storage pools as a collection (``host.pools["default"]``, notebook table)."""
        from .views import Pools
        return Pools(self.ctx, self._modify_instance)

    @property
    def volumes(self) -> Volumes:
        """Custom storage volumes of every pool, keyed ``<pool>/<name>``
        (``host.volumes["default/data"]``); ``host.pools["default"].volumes`` has one pool's."""
        from .volumes import Volumes
        return Volumes(self.ctx, self._modify_instance)

    def pool_names(self) -> list[str]:
        return self.ctx.pool_names()

    def create_pool(self, name: str, driver: str, config: Mapping[str, str] | None = None,
                    description: str = "") -> PoolDriver:
        return self.ctx.create_pool(name, driver, config, description)

    def delete_pool(self, name: str) -> None:
        """Remove a pool nothing uses (see ``Pool.delete``)."""
        from .views import delete_pool
        delete_pool(self.ctx, name)

    def pools_users(self, pools: Iterable[str]) -> dict[str, list[str]]:
        """``Pool.used_by`` of several pools in one walk over the instances and profiles."""
        from .views import pools_users
        return pools_users(self.ctx, pools)

    # -- networks -----------------------------------------------------------------------------
    @property
    def networks(self) -> Networks:
        """The managed networks (bridges with DHCP/DNS and NAT): ``host.networks["lxdbr0"]``."""
        from .networks import Networks
        return Networks(self.ctx)

    def network_users(self, network: str) -> list[str]:
        """Instances and profiles whose nics use ``network``."""
        from .profile_apply import network_users
        return network_users(self.ctx, network)

    def networks_users(self, networks: Iterable[str]) -> dict[str, list[str]]:
        """``network_users`` of several networks (or host interfaces) in one walk."""
        from .profile_apply import networks_users
        return networks_users(self.ctx, networks)

    def network_forget(self, instance: str) -> None:
        self.ctx.network_forget(instance)

    # -- profiles -----------------------------------------------------------------------------
    def update_profile(self, name: str, *, config: Mapping[str, str] | None = None,
                       devices: Mapping[str, Mapping[str, str]] | None = None,
                       description: str | None = None) -> None:
        """Change a profile and re-apply it to every instance that uses it (see
        ``lxdlib.profile_apply.update_profile``)."""
        from .profile_apply import update_profile
        update_profile(self.ctx, name, config=config, devices=devices, description=description)

    def modify_profile(self, name: str, change: Callable[[ProfileRecord], None]) -> None:
        """Read-modify-write of a profile under its lock, re-applied to its users."""
        from .profile_apply import modify_profile
        modify_profile(self.ctx, name, change)

    def expand(self, profiles: Sequence[str] | None, config: Mapping[str, str],
               devices: Mapping[str, Mapping[str, str]]
               ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """What an instance with these profiles and local settings would get (config, devices):
        ``None`` means the default profile; a missing profile raises NotFound."""
        from .config import expand
        return self.ctx.expand(self.ctx.check_profiles(expand.resolve_profile_list(profiles)),
                               config, devices)

    # -- initialisation -----------------------------------------------------------------------
    def ensure_initialized(self, need_default: bool = True) -> None:
        """Give a fresh root what ``lxd init --auto`` would: default pool, bridge, profile."""
        self.ctx.ensure_initialized(need_default)

    def init_auto(self, *, pool_driver: str = "btrfs", pool_size: str = "5GiB",
                  network: bool = True, network_name: str | None = None) -> None:
        """``lxd init --auto``: a loop-backed pool, a NAT bridge with DHCP, the default profile.
        The bridge is ``network_name``, else ``lxdbr0`` or the first free ``lxdbr<N>`` when
        the host already has an ``lxdbr0`` (see ``Context.default_network_name``)."""
        self.ctx.init_auto(pool_driver=pool_driver, pool_size=pool_size, network=network,
                           network_name=network_name)

    def init_preseed(self, preseed: Mapping[str, Any]) -> None:
        """Apply LXD's preseed shape: ``config``, ``storage_pools``, ``networks``, ``profiles``;
        all of it checked before anything is made, and undone if making a later part fails
        (see ``lxdlib.preseed``)."""
        from .preseed import apply
        apply(self.ctx, preseed)

    # -- instances ----------------------------------------------------------------------------
    def create(self, image: str | None, name: str | None = None, *,
               profiles: Sequence[str] | None = None, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None, pool: str | None = None,
               ephemeral: bool = False, description: str = "", progress: Any = None
               ) -> Instance:
        """``lxc init``: create an instance from an image: a local alias or fingerprint, or
        ``<remote>:<alias>`` (downloaded and cached first; ``progress(done, total)``)."""
        return self.instances.create(image, name, profiles=profiles, config=config,
                                     devices=devices, pool=pool, ephemeral=ephemeral,
                                     description=description, progress=progress)

    init = create

    def publish(self, source: Any, **kw: Any) -> Image:
        """``lxc publish``: see ``Images.publish``."""
        return self.images.publish(source, **kw)

    def launch(self, image: str | None, name: str | None = None, *,
               profiles: Sequence[str] | None = None, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None, pool: str | None = None,
               ephemeral: bool = False, description: str = "", progress: Any = None
               ) -> Instance:
        """``lxc launch``: create and start; if the start fails the instance stays, stopped,
        with the liblxc log in the error — as LXD leaves it. A launch that would cross a host
        limit (bridge ports, ptys: ``HostLimit``) leaves nothing: the start finds it (see
        `hostlimits`: nothing that grows with the instances is read first), and the new
        instance is deleted again.
        """
        inst = self.create(image, name, profiles=profiles, config=config, devices=devices,
                           pool=pool, ephemeral=ephemeral, description=description,
                           progress=progress)
        try:
            inst.start()
        except HostLimit:
            inst.delete(force=True)
            raise
        return inst

    def launch_many(self, items: int | Sequence[str | Mapping[str, Any]], *,
                    image: str | None, prefix: str = "c",
                    profiles: Sequence[str] | None = None,
                    config: Mapping[str, str] | None = None,
                    devices: Mapping[str, Mapping[str, str]] | None = None,
                    pool: str | None = None, ephemeral: bool = False, description: str = "",
                    workers: int | None = None, start: bool = True, keep_going: bool = False,
                    progress: Any = None,
                    on_done: Callable[[str, str | None], None] | None = None
                    ) -> list[Instance]:
        """``launch`` for many instances at once, over ``workers`` processes (default: two
        per CPU, as a start waits on liblxc's processes about half of its time, fewer for a
        small batch; 1 launches here, one after the other).

        ``items``: a count (named ``<prefix>1``, ``<prefix>2``…), or a list of names and/or
        mappings ``{"name": …, "config": …, "devices": …, "profiles": …, "image": …, "pool":
        …}`` whose config and devices are laid over the batch-wide ones. ``start=False`` only
        creates (``init``). Returns the instances in the order given.

        All or report: the whole batch is checked before anything is made (names free and
        unique, profiles, config, devices, the image — a remote one is downloaded once — and
        the host's limits, ``HostLimit``: bridge ports, ptys); a launch that fails
        after that is undone (its instance deleted) and ``BulkError`` says which failed and
        why, with the launched instances in ``.done``. Unless ``keep_going``, no launch is
        begun after the first failure (those are reported as not attempted).
        ``on_done(name, error_or_None)`` is called as each one finishes (from a thread).

        Workers are fresh interpreters, not forks of this process (see ``lxdlib.launcher``);
        the containers outlive them. Their log records go to their stderr."""
        from . import launcher
        specs = launcher.make_specs(items, image=image, prefix=prefix, profiles=profiles,
                                    config=config, devices=devices, pool=pool,
                                    ephemeral=ephemeral, description=description, start=start)
        if not specs:
            return []
        count = launcher.worker_count(len(specs), workers, self.facts().cpus)
        if count == 1:
            specs = launcher.prepare(self.ctx, specs, progress)
            return launcher.run(self.ctx, specs, None, keep_going=keep_going, on_done=on_done)
        with launcher.Workers(self.ctx, count) as pool_:  # starting while the batch is checked
            specs = launcher.prepare(self.ctx, specs, progress)
            return launcher.run(self.ctx, specs, pool_, keep_going=keep_going, on_done=on_done)

    def autostart(self, *, attempts: int = 3, retry_delay: float = 5.0,
                  sleep: Any = None) -> dict[str, str]:
        """Start what LXD starts at boot: ``boot.autostart=true``, or unset with the instance
        running when last seen; by ``boot.autostart.priority`` (high first), then name, waiting
        ``boot.autostart.delay`` seconds after each. Returns name -> "started"/"failed: …".

        Run it from the host's boot (e.g. a systemd unit): unlike ``lxc-autostart`` it mounts the
        pools and brings up the networks the instances need first.
        """
        import time as _time
        wait = sleep or _time.sleep
        todo = []
        failed: dict[str, str] = {}
        from . import journal
        for inst in self.instances.list():
            try:
                if journal.pending(self.paths, inst.name):
                    # an interrupted verb, or a stop from inside (``poweroff``) that the
                    # record, still RUNNING, does not say yet: settled under its lock first
                    inst.settle()
                rec = inst.record()
                cfg, _ = inst.expanded(rec)
            except Exception:
                continue
            auto = cfg.get("boot.autostart", "")
            if auto.lower() in ("false", "0", "no", "off"):
                continue
            if cfg.get("security.protection.start", "").lower() in ("true", "1", "yes", "on"):
                continue
            wanted = auto.lower() in ("true", "1", "yes", "on") or (
                not auto and rec.config.get("volatile.last_state.power") == "RUNNING")
            if wanted and inst.state in ("STOPPED", "ERROR"):  # a broken one is reported
                try:  # a record edited by hand past the validators: that instance fails alone
                    prio = int(cfg.get("boot.autostart.priority") or 0)
                    # LXD's delay is whole seconds, a negative one no wait (time.sleep refuses it)
                    delay = max(0, int(cfg.get("boot.autostart.delay") or 0))
                except ValueError as e:
                    failed[inst.name] = f"failed: invalid boot.autostart value: {e}"
                    continue
                todo.append((-prio, inst.name, delay))
        result: dict[str, str] = dict(failed)
        for _, name, delay in sorted(todo):
            inst = self.instances.get(name)
            for attempt in range(attempts):
                try:
                    inst.start()
                    result[name] = "started"
                    break
                except Exception as e:  # reported, then the next instance
                    result[name] = f"failed: {e}"
                    if attempt + 1 < attempts:
                        wait(retry_delay)
            if result.get(name) == "started" and delay:
                wait(delay)
        return result

    def copy(self, source: str, name: str | None = None, **kw: Any) -> Instance:
        """``lxc copy``: a new instance from an instance or ``instance/snapshot`` (see
        ``lxdlib.copy.copy_instance`` for the options)."""
        from .copy import copy_instance
        return Instance(self.ctx, copy_instance(self.ctx, source, name, **kw).name)

    def move(self, name: str, new_name: str | None = None, *, pool: str | None = None
             ) -> Instance:
        """``lxc move``: rename a stopped instance and/or move it to another storage pool,
        with its snapshots."""
        inst = self.instances.get(name)
        if new_name is not None and new_name != name:
            inst = inst.rename(new_name)
        if pool is not None:
            from .copy import move_to_pool
            inst = Instance(self.ctx, move_to_pool(self.ctx, inst.name, pool).name)
        return inst

    def import_backup(self, path: str | os.PathLike[str], name: str | None = None, *,
                      pool: str | None = None, allow_root_equivalent: bool = False) -> Instance:
        """``lxc import``: an instance (with its snapshots) from an ``export`` tarball. A
        root-equivalent setting in it (``raw.lxc``, privileged, host devices…) is refused
        unless ``allow_root_equivalent``: an archive is hostile input."""
        from .backup import import_backup
        return Instance(self.ctx, import_backup(self.ctx, path, name, pool=pool,
                                                allow_root_equivalent=allow_root_equivalent
                                                ).name)

    def export_backup(self, name: str, path: str | os.PathLike[str] | None = None,
                      **kw: Any) -> Path:
        """``lxc export``: the instance as a backup tarball in LXD's format."""
        from .backup import export_instance
        return export_instance(self.instances.get(name), path, **kw)
