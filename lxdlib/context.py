"""The context: what the layers below ``Host`` may know about the root they work in.

``Host`` is the façade users hold; the services and drivers under it (instances, snapshots,
copies, backups, devices, the image cache) receive this object instead. It holds the root's paths
and event log, the stores (profiles, images, remotes) and the lookups they share: a pool driver by
name, the bridge a nic plugs into, the host's facts, one composition of profiles and local
settings. Nothing here imports a service, so the services can import it without a circle.

It is frozen: a context is made once per ``Host`` and passed down; the caches it keeps (pool
drivers, simplestreams clients, the facts, the image store and remotes, made on first use so that
a command that touches no image does not import their code) live in one private holder and never
change what a lookup answers, only how fast.
"""

from __future__ import annotations

import contextlib
import os
from _thread import _local  # ``threading.local`` without threading's import (see ``state``)
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import journal, record
from .config import expand, limits
from .errors import (
    TYPE_CHECKING,
    AlreadyExists,
    CorruptRecord,
    InvalidArgument,
    InvalidConfig,
    LxdlibError,
    NotFound,
)
from .events import Events
from .logs import get_logger
from .profiles import ProfileStore
from .rootdir import imports_pending
from .state import Paths, atomic_write, file_identity, lock, read_record, settled
from .values import Value, assign

if TYPE_CHECKING:
    # loaded where first used (``images``, ``remotes``, ``pool``, ``networks``, ``client``):
    # most commands touch no image and no remote, and the store's modules bring tarfile, gzip
    # and lzma, the remotes' urllib.parse
    from typing import Any

    from . import idmap
    from .idmap import Allocation
    from .imagestore.remotes import Remotes
    from .imagestore.simplestreams import Client
    from .imagestore.store import ImageRecord, ImageStore
    from .network.manager import NetworkManager
    from .storage.base import PoolDriver

log = get_logger(__name__)

DEFAULT_NETWORK = "lxdbr0"
DEFAULT_POOL = "default"

_ADJ = ("able", "bold", "brave", "calm", "clever", "cosmic", "crisp", "eager", "fair", "fast",
        "gentle", "grand", "happy", "immense", "jolly", "keen", "lively", "lucky", "mellow",
        "noble", "proud", "quick", "quiet", "rapid", "sharp", "smart", "steady", "sunny", "swift",
        "tidy", "vivid", "witty")
_NOUN = ("albatross", "badger", "bison", "condor", "cougar", "crane", "dingo", "eagle", "falcon",
         "ferret", "gecko", "heron", "ibex", "jackal", "koala", "lemur", "lynx", "marmot",
         "narwhal", "ocelot", "osprey", "panda", "puffin", "quail", "raven", "salmon", "tapir",
         "toucan", "walrus", "weasel", "yak", "zebra")


class HostFacts(Value, frozen=True):
    """What the machine offers, read once per context: limits and id maps depend on it."""

    _fields = ("cpus", "mem_total", "cgroup_version", "lxcfs", "idmap", "swap_accounting")
    __slots__ = _fields

    cpus: int
    mem_total: int
    cgroup_version: int
    lxcfs: bool
    idmap: idmap.Allocation
    swap_accounting: bool

    def __init__(self, cpus: int, mem_total: int, cgroup_version: int, lxcfs: bool,
                 idmap: Allocation, swap_accounting: bool) -> None:
        assign(self, "cpus", cpus)
        assign(self, "mem_total", mem_total)
        assign(self, "cgroup_version", cgroup_version)
        assign(self, "lxcfs", lxcfs)
        assign(self, "idmap", idmap)
        assign(self, "swap_accounting", swap_accounting)


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _swap_accounting() -> bool:
    """Whether the memory controller has swap files (v1 ``memsw``, v2 ``memory.swap.max``)."""
    return (Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
            or Path("/sys/fs/cgroup/init.scope/memory.swap.max").exists()
            or any(Path("/sys/fs/cgroup").glob("*/memory.swap.max")))


def _lxcfs_running() -> bool:
    with open("/proc/self/mounts") as f:
        return any(" /var/lib/lxcfs " in line and "fuse.lxcfs" in line for line in f)


def read_facts() -> HostFacts:
    from . import idmap, runtime  # here: a context that asks no facts needs neither
    return HostFacts(cpus=os.cpu_count() or 1, mem_total=_mem_total(),
                     cgroup_version=runtime.cgroup_version(), lxcfs=_lxcfs_running(),
                     idmap=idmap.host_allocation(), swap_accounting=_swap_accounting())


class _Caches:
    """The mutable part behind a frozen context: answers computed once, never different ones."""

    def __init__(self) -> None:
        self.facts: HostFacts | None = None
        self.pools: dict[str, PoolDriver] = {}
        self.networks: NetworkManager | None = None
        self.images: ImageStore | None = None
        self.remotes: Remotes | None = None
        self.clients: dict[str, Client] = {}
        self.recovered = False
        self.traversable_checked = False
        self.seccomp_ok = False
        # a profile edit re-applied to its users composes with the edited profile before it is
        # saved: per thread, as one Host may serve many threads
        self.memo = _local()
        # profiles as composition reads them, by name: (file identity, content)
        self.profiles: dict[str, tuple[tuple[int, ...], expand.ProfileData]] = {}


class Context(Value, frozen=True, eq=False):
    """One root's paths, stores and shared lookups, for everything below the ``Host`` façade.

    Its fields never change (what it learns goes into its caches); two contexts are equal only
    when they are the same object: each holds caches of its own."""

    _fields = ("paths", "events", "profiles")
    __slots__ = (*_fields, "_caches")

    paths: Paths
    events: Events
    profiles: ProfileStore
    _caches: _Caches

    def __init__(self, paths: Paths, events: Events, profiles: ProfileStore) -> None:
        assign(self, "paths", paths)
        assign(self, "events", events)
        assign(self, "profiles", profiles)
        assign(self, "_caches", _Caches())

    @classmethod
    def open(cls, paths: Paths) -> Context:
        """The context of an existing root (its layout made complete)."""
        paths.ensure()
        # a profile's delete and rename wait for operations on instances (quiesce_instances),
        # which may have to recover with this context: the closure reads ``ctx`` when called
        ctx = cls(paths=paths, events=Events(paths),
                  profiles=ProfileStore(paths, lambda p: profile_users(paths, p),
                                        lambda: ctx.quiesce_instances(),
                                        all_users=lambda: profiles_users(paths)))
        # what killed image imports left, cleared by any command: the store is loaded only
        # when there is something to clear
        if imports_pending(paths.root):
            ctx.images.cleanup_imports()
        return ctx

    # -- stores loaded on first use -----------------------------------------------------------
    @property
    def images(self) -> ImageStore:
        """The local image store (``<root>/images``)."""
        if self._caches.images is None:
            from .imagestore.store import ImageStore
            self._caches.images = ImageStore(self.paths)
        return self._caches.images

    @property
    def remotes(self) -> Remotes:
        """The image servers and other hosts this root knows by name (``remotes.yaml``)."""
        if self._caches.remotes is None:
            from .imagestore.remotes import Remotes
            self._caches.remotes = Remotes(self.paths)
        return self._caches.remotes

    # -- host facts ---------------------------------------------------------------------------
    def facts(self) -> HostFacts:
        if self._caches.facts is None:
            self._caches.facts = read_facts()
        return self._caches.facts

    def seccomp_policy(self) -> Path:
        """The seccomp policy file every instance of this root points at (written once)."""
        path = self.paths.root / "seccomp.policy"
        if not self._caches.seccomp_ok:
            from .render import SECCOMP_POLICY
            try:
                current = path.read_text()
            except FileNotFoundError:
                current = ""
            if current != SECCOMP_POLICY:
                atomic_write(path, SECCOMP_POLICY.encode(), 0o644)
            self._caches.seccomp_ok = True
        return path

    def check_traversable(self, path: Path) -> None:
        """An unprivileged container's root must be able to walk down to ``path`` (its
        volume's directory, which is its own: mode 0100, see ``storage.base``).

        liblxc fails with a terse "Permission denied" otherwise (e.g. a root under a 0700
        directory such as pytest's or a home directory); this names the directory to fix.
        """
        if self._caches.traversable_checked:
            return
        for parent in [*reversed(path.parents)]:
            try:
                mode = parent.stat().st_mode
            except FileNotFoundError:
                break
            if not mode & 0o001:
                from .errors import WrongState
                raise WrongState(f"{parent} is not searchable by other users (mode "
                                 f"{mode & 0o777:o}): unprivileged containers under it cannot "
                                 "start; chmod o+x it or use a root elsewhere")
        self._caches.traversable_checked = True

    # -- server config ------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, str]:
        """Server keys (``images.*``, ``core.*``) as saved."""
        try:
            data = read_record(self.paths.server_config) or {}
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in (data.get("config") or {}).items()}

    def set_config(self, key: str, value: str | None) -> None:
        """Set a server key (``None`` unsets), under the config's lock."""
        from .config import schema  # here: only a write checks the server's keys
        from .state import write_record
        with lock(self.paths, "host", "config"):
            cfg = self.config
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
            cfg = schema.validate_server_config(cfg)
            write_record(self.paths.server_config, {"config": cfg})
            log.info("server config %s set to %r", key, value)

    # -- storage ------------------------------------------------------------------------------
    def pool(self, name: str) -> PoolDriver:
        """A pool's driver, loaded once per context (its leftovers cleared then)."""
        drv = self._caches.pools.get(name)
        if drv is None:
            from .storage import load_pool
            drv = load_pool(self.paths, name)
            # once per context: remove temporary volumes a killed process left in this pool
            drv.cleanup_leftovers()
            self._caches.pools[name] = drv
        return drv

    def pool_names(self) -> list[str]:
        from .storage import list_pools
        return list_pools(self.paths)

    def create_pool(self, name: str, driver: str, config: Mapping[str, str] | None = None,
                    description: str = "") -> PoolDriver:
        from .storage import create_pool
        drv = create_pool(self.paths, name, driver, config, description)
        self._caches.pools[name] = drv
        return drv

    def forget_pool(self, name: str) -> None:
        self._caches.pools.pop(name, None)

    def instance_pool(self, name: str) -> str:
        """The pool of an instance's root volume ("" when its record is unreadable)."""
        try:
            return record.load(self.paths, name).pool
        except (FileNotFoundError, CorruptRecord):
            return ""

    def ensure_image_volume(self, pool: PoolDriver, fingerprint: str) -> None:
        """The image unpacked once per pool, as the parent instances are cloned from."""
        if pool.volume_exists("images", fingerprint):
            return
        with lock(self.paths, "image-volume", f"{pool.name}.{fingerprint}"):
            if not pool.volume_exists("images", fingerprint):
                # the image's own lock from the check of its record to the volume's rename
                # into place: a delete of the image waits for the volume and then removes it
                # with the image. Without it the delete pulled the file from under the unpack
                # (a bare "No such file or directory"), or ran between the unpack and the
                # rename and left the volume of an image no longer stored
                with lock(self.paths, "image", fingerprint):
                    pool.create_image_volume(
                        fingerprint, lambda path: self.images.unpack(fingerprint, path))

    def delete_image(self, ref: str) -> str:
        """Remove an image, its aliases and its unpacked volume in every pool; its fingerprint."""
        fp = self.images.delete(ref)  # reads no record: a corrupt one is deleted too
        for pname in self.pool_names():
            try:
                self.pool(pname).delete_image_volume(fp)
            except Exception as e:  # an unusable pool must not keep the image listed
                log.warning("image %s: volume in pool %s not removed: %s", fp[:12], pname, e)
        self.events.emit("image-deleted", fp)
        return fp

    def import_image(self, path: str | os.PathLike[str], *, aliases: Sequence[str] = (),
                     **kw: Any) -> ImageRecord:
        """``image import``: a unified tarball, or a split image with ``rootfs_path=``."""
        img = self.images.import_file(path, aliases=aliases, **kw)
        self.events.emit("image-imported", img.fingerprint)
        log.info("image %s imported", img.fingerprint[:12])
        return img

    # -- image servers ------------------------------------------------------------------------
    def client(self, remote: str, *, fresh: bool = False) -> Client:
        """The simplestreams client of a remote (by name or URL); ``fresh`` ignores the
        one-hour catalogue cache (the stale copy is still used if the server is unreachable)."""
        from .imagestore.simplestreams import Client
        if "://" in remote:
            url = remote
        else:
            r = self.remotes.get(remote)
            if r.is_local:
                raise InvalidArgument(f"{remote}: is this host, not an image server")
            url = r.addr
        url = url.rstrip("/")
        cache = self.paths.root / "cache" / "simplestreams"
        import hashlib  # here: OpenSSL's start costs ~2 ms, which no local command needs
        cache = cache / hashlib.sha256(url.encode()).hexdigest()[:16]
        clients = self._caches.clients
        if fresh:
            clients[url] = Client(url, cache, expiry=0)
        elif url not in clients:
            clients[url] = Client(url, cache)
        return clients[url]

    # -- networks -----------------------------------------------------------------------------
    @property
    def networks(self) -> NetworkManager:
        if self._caches.networks is None:
            from .network.manager import NetworkManager
            self._caches.networks = NetworkManager(self.paths)
        return self._caches.networks

    def nic_link(self, dev: Mapping[str, str]) -> str:
        """The bridge a nic device plugs into; a managed network is brought up first."""
        if dev.get("network"):
            net = dev["network"]
            self.networks.ensure_up(net)
            return net
        return self.nic_check(dev)

    def nic_check(self, dev: Mapping[str, str]) -> str:
        """``nic_link`` without bringing a network up: for a creation, a copy or an edit,
        which must fail on an unknown network before they make anything; the instance's start
        brings the network up (``nic_link``: ~1 ms of checks of the bridge, dnsmasq and the
        NAT table, paid where the bridge is needed)."""
        if dev.get("network"):
            net = dev["network"]
            self.networks.get(net)  # NotFound for an unknown network
            return net
        if dev.get("nictype") == "bridged" and dev.get("parent"):
            parent = dev["parent"]
            if Path(f"/sys/class/net/{parent}").exists():
                return parent
            raise NotFound("network", parent, "no such bridge on the host")
        raise InvalidConfig("nictype", "lxdlib supports bridged nics (network= or "
                            "nictype=bridged with parent=)")

    def nic_claim_stale(self, key: str, network: str, hwaddr: str) -> bool:
        """Whether the nic ``key`` (``<instance>/<device>``), which holds ``hwaddr`` on
        ``network``, no longer has it, so another nic may take it (asked by the network,
        under its lock, only when a MAC is wanted that ``key`` holds): its instance is gone
        (a create or copy killed between its nic's render and its record, a rename killed
        before its old name's entries went), or its record as saved gives that device another
        MAC or network (a change killed between its render and its save). Never while that
        instance's lock is held (a change under way decides; a probe, no wait, so no lock
        order is crossed) or an intent of it is pending (its recovery may bring the MAC
        back). One record read: the cost does not grow with the instances."""
        owner, _, dname = key.partition("/")
        try:
            with lock(self.paths, "instance", owner, timeout=0):
                if os.path.lexists(self.paths.instance_dir(owner) / journal.PENDING):
                    return False
                if not record.exists(self.paths, owner):
                    return True
                rec = record.load(self.paths, owner)
                _, devs = self.expand(rec.profiles, rec.config, rec.devices)
        except (LxdlibError, OSError):  # Busy, a record or profile that cannot be read: kept
            return False
        dev = devs.get(dname) or {}
        mac = dev.get("hwaddr") or rec.config.get(f"volatile.{dname}.hwaddr") or ""
        return not (dev.get("type") == "nic" and dev.get("network") == network
                    and mac.lower() == hwaddr.lower())

    def network_forget(self, instance: str) -> None:
        """Drop the DHCP host entries an instance's nics had on managed networks and release
        their leases, so the addresses are free at once (each network looks up only this
        instance's own file: the cost does not grow with the number of instances)."""
        if any(self.paths.networks.glob("*.yaml")):
            self.networks.dhcp_hosts_forget(instance)

    def network_retain(self, instance: str,
                       claims: Mapping[str, Mapping[str, str | None]]) -> None:
        """``network_forget``, but for the entries ``claims`` names (``{network: {key: static
        address or None}}``): those of nics an instance no longer has, or no longer has so."""
        if any(self.paths.networks.glob("*.yaml")):
            self.networks.dhcp_hosts_retain(instance, claims)

    # -- composition: profiles + local settings -----------------------------------------------
    def check_profiles(self, profiles: Sequence[str]) -> list[str]:
        """The profile list validated, each profile present (a fresh root gets its default)."""
        out = expand.resolve_profile_list(profiles)  # not list(): a str would be its letters
        self.ensure_initialized(need_default="default" in out)
        for p in out:
            if not self.profiles.exists(p):
                raise NotFound("profile", p, f"Requested profile {p!r} does not exist")
        return out

    def new_instance_profiles(self, requested: Sequence[str] | None,
                              image: str | None) -> list[str]:
        """The profiles of a new instance, checked (``check_profiles``): those ``requested``;
        when none are (``None``, as opposed to ``[]``), the image's own list (LXD's image
        ``profiles``, ``["default"]`` unless edited); without a local image, ``default``."""
        if requested is None and image is not None:
            # not (yet) a local image: ``default``, and creation says what is wrong with it
            with contextlib.suppress(LxdlibError):
                requested = self.images.get(image).profiles
        return self.check_profiles(expand.resolve_profile_list(requested))

    def profile_memo(self) -> dict[str, expand.ProfileData] | None:
        """This thread's profile overrides during a bulk operation (``None``: none running)."""
        memo: dict[str, expand.ProfileData] | None = getattr(self._caches.memo, "overrides",
                                                             None)
        return memo

    def set_profile_memo(self, value: dict[str, expand.ProfileData] | None) -> None:
        """Start (a dict) or end (``None``) a bulk operation on this thread: the given entries
        are used as they are (e.g. a profile's content before it is saved); every other
        profile is read as usual (see ``profile_data``)."""
        self._caches.memo.overrides = value

    def profile_data(self, name: str) -> expand.ProfileData:
        """A profile as composition needs it, parsed once per context while its file stays the
        same (an unknown one raises ``NotFound``).

        Every operation composes its instance's profiles at least once, and a profile changes
        rarely: reading and parsing its YAML each time was most of what a composition cost.
        The file's identity — device, inode, size, modification and change times, from one
        ``lstat`` — says whether the parsed copy is still the file's content: every write is a
        rename of a new file (``state.atomic_write``), which changes the inode and the times. A
        file changed within the last second is parsed but not kept, since two writes inside one
        tick of the filesystem's clock could otherwise leave equal identities (an inode freed
        and reused at once). Another process's edit is therefore seen by the next composition.
        """
        try:
            st = os.lstat(self.paths.profiles / f"{name}.yaml")
        except (FileNotFoundError, ValueError):  # a bad name: the store says what is wrong
            return self.profiles.data(name)
        ident = file_identity(st)
        cache = self._caches.profiles
        hit = cache.get(name)
        if hit is not None and hit[0] == ident:
            return hit[1]
        data = self.profiles.data(name)
        if settled(st):
            cache[name] = (ident, data)
        else:
            cache.pop(name, None)
        return data

    def expand(self, profiles: Sequence[str], config: Mapping[str, str],
               devices: Mapping[str, Mapping[str, str]]
               ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """The one composition step: profiles in order, then local settings (LXD's rules in
        ``config.expand``). Everything that needs an expanded view calls this once per
        operation and passes the result on."""
        overrides = self.profile_memo() or {}
        datas = [overrides[p] if p in overrides else self.profile_data(p) for p in profiles]
        return expand.expand(datas, config, devices)

    # -- cpu balancing ------------------------------------------------------------------------
    def pick_cpus(self, name: str, cfg: Mapping[str, str]) -> list[int] | None:
        """``limits.cpu: N`` means N CPUs, spread over the least used ones (LXD's balancing)."""
        value = cfg.get("limits.cpu", "")
        if not value.isdigit():
            return None
        usage: dict[int, int] = {}
        for other in record.names(self.paths):
            if other == name:
                continue
            for cpu in self._cpuset_of(other):
                usage[cpu] = usage.get(cpu, 0) + 1
        return limits.pick_cpus(int(value), self.facts().cpus, usage)

    def _cpuset_of(self, name: str) -> list[int]:
        try:
            with open(self.paths.instance_dir(name) / "config") as f:
                for line in f:
                    if line.startswith(("lxc.cgroup.cpuset.cpus", "lxc.cgroup2.cpuset.cpus")):
                        return limits.parse_cpuset(line.split("=", 1)[1].strip())
        except FileNotFoundError:
            pass
        return []

    # -- initialisation -----------------------------------------------------------------------
    def ensure_initialized(self, need_default: bool = True) -> None:
        """Give a fresh root what ``lxd init --auto`` would: default pool, bridge, profile."""
        if not need_default or self.profiles.exists("default"):
            return
        with lock(self.paths, "host", "init"):
            if not self.profiles.exists("default"):
                self.init_auto()

    def default_network_name(self, wanted: str | None = None) -> str:
        """The bridge a fresh root's default profile uses, chosen before anything is made.

        ``wanted`` (``init --network-name``) is used as given: this root's own network, or a
        name no interface of the host has; an interface another LXD or lxdlib root owns is
        refused, naming the ways to choose another. Without it: this root's ``lxdbr<N>`` if it
        has one, else ``lxdbr0`` or, when the host already has that interface, the first free
        ``lxdbr1``, ``lxdbr2``… (logged as a warning, so the command says which).
        """
        from .network import bridge
        own = {n["name"] for n in self.networks.list()}
        if wanted is not None:
            if wanted not in own and bridge.exists(wanted):
                raise InvalidArgument(f"the host already has an interface named {wanted!r} "
                                      "(another LXD or lxdlib root's bridge?): choose another "
                                      "name with `init --auto --network-name <name>` or in "
                                      "`init --preseed`")
            return wanted
        for n in range(100):
            if f"lxdbr{n}" in own:
                return f"lxdbr{n}"
        for n in range(100):
            name = f"lxdbr{n}"
            if not bridge.exists(name):
                if n:
                    log.warning("the host already has an interface named %s (another LXD or "
                                "lxdlib root's bridge): this root's default bridge is %s",
                                DEFAULT_NETWORK, name)
                return name
        raise InvalidArgument("no free default bridge name (lxdbr0 to lxdbr99 exist): choose "
                              "one with `init --auto --network-name <name>` or in "
                              "`init --preseed`")

    def init_auto(self, *, pool_driver: str = "btrfs", pool_size: str = "5GiB",
                  network: bool = True, network_name: str | None = None) -> None:
        """``lxd init --auto``: a loop-backed pool, a NAT bridge with DHCP, the default profile.

        The bridge's name is settled first (see ``default_network_name``) and a pool made here
        is removed again if the bridge cannot be made: a refused init leaves nothing behind.
        """
        devices: dict[str, dict[str, str]] = {}
        net = self.default_network_name(network_name) if network else None
        made_pool = False
        if DEFAULT_POOL not in self.pool_names():
            self.create_pool(DEFAULT_POOL, pool_driver, {"size": pool_size})
            made_pool = True
        devices["root"] = {"type": "disk", "path": "/", "pool": DEFAULT_POOL}
        if net is not None:
            try:
                if not any(n["name"] == net for n in self.networks.list()):
                    self.networks.create(net, {"ipv4.address": "auto", "ipv4.nat": "true"})
            except BaseException:
                if made_pool:
                    self._remove_pool(DEFAULT_POOL)
                raise
            devices["eth0"] = {"type": "nic", "name": "eth0", "network": net}
        with lock(self.paths, "profile", "default"):  # read it under its lock: merged, not lost
            if self.profiles.exists("default"):
                p = self.profiles.get("default")
                merged = {**devices, **p.devices}
                self.profiles.save("default", p.config, merged, p.description)
            else:
                self.profiles.create("default", {}, devices, "Default lxdlib profile")
        log.info("root %s initialised: pool %s, network %s, default profile",
                 self.paths.root, DEFAULT_POOL, net or "none")

    def _remove_pool(self, name: str) -> None:
        """Undo a pool this init made (unmounted, its loop file gone); a failure is logged:
        the error that made the init fail is the one to report."""
        from .storage import delete_pool
        try:
            delete_pool(self.paths, name)
        except Exception as e:
            log.warning("could not remove pool %s after a failed init: %s", name, e)
        self.forget_pool(name)

    # -- leftovers ----------------------------------------------------------------------------
    def recover_leftovers(self) -> None:
        """Finish deletes and undo creates that a killed process left (once per context)."""
        if self._caches.recovered:
            return
        self._caches.recovered = True
        # the first listing of a thousand instances pays this scan: strings, not pathlib
        for name in record.scan(self.paths)[1]:
            try:
                with lock(self.paths, "instance", name, timeout=0):
                    if _unanswering(self.paths.lxcpath, name):
                        log.debug("leftover %s not recovered now: its liblxc monitor does not "
                                  "answer", name)
                        continue
                    journal.recover_leftover(self, name)
            except Exception as e:
                log.debug("leftover %s not recovered now: %s", name, e)

    def recover_leftover(self, name: str) -> None:
        """``recover_leftovers`` for one name: for a verb that makes that name, which needs
        no scan of every instance."""
        try:
            with lock(self.paths, "instance", name, timeout=0):
                journal.recover_leftover(self, name)
        except Exception as e:
            log.debug("leftover %s not recovered now: %s", name, e)

    def quiesce_instances(self) -> None:
        """Return once every operation on an instance that was under way when this was called
        has ended: each instance directory's lock (a creation not yet committed has one too) is
        taken and let go in turn, finishing or undoing what a killed process left on the way.

        The barrier of a delete or rename of a profile, network or volume: an instance change
        checks that what it names exists under the instance's lock only (the lock order —
        profile before instances; an instance before a network or volume — forbids it the
        other lock), so the delete first makes its object unavailable, then waits here; a
        change that checked before has committed by then (and the users read next see it), one
        that checks after finds the object gone. Costs one lock per instance: only deletes and
        renames, which read every user anyway, call it."""
        for name in record.directories(self.paths):
            with lock(self.paths, "instance", name):
                if journal.pending(self.paths, name):
                    journal.recover(self, name)

    def new_name(self) -> str:
        """A random free ``adjective-animal`` name, as LXD gives an unnamed instance."""
        import random  # here: only an unnamed create needs it
        for _ in range(100):
            name = f"{random.choice(_ADJ)}-{random.choice(_NOUN)}"
            if not record.exists(self.paths, name):
                return name
        raise AlreadyExists("instance", "random name")


def profile_users(paths: Paths, profile: str) -> list[str]:
    """The instances whose record names ``profile`` (unreadable records are skipped)."""
    return profiles_users(paths).get(profile, [])


def profiles_users(paths: Paths) -> dict[str, list[str]]:
    """Every profile's users (``profile_users``) from one walk over the instance records:
    a caller wanting several profiles' users (``profile list``) reads each record once, not
    once per profile. Profiles nobody uses are absent."""
    out: dict[str, list[str]] = {}
    for n in record.names(paths):
        try:
            named = record.profiles_of(paths, n)
        except FileNotFoundError:
            continue
        except CorruptRecord as e:
            log.warning("%s", e)  # its profiles are unknown: listed elsewhere as ERROR
            continue
        for p in dict.fromkeys(named):
            out.setdefault(p, []).append(n)
    return out


def _unanswering(lxcpath: Path, name: str) -> bool:
    """Whether ``name``'s liblxc monitor listens but does not answer (stuck in a hook of its
    start). Recovering what a killed verb left on an instance asks liblxc its state, which
    waits for such a monitor for ever with the GIL held: a listing settles the others and
    leaves this one for a later call. Asked with a bound, in a fork
    (``runtime.states_within``), and only where the monitor listens
    (``livestate.monitor_listens``): leftovers are rare, and most are of stopped instances."""
    from . import livestate, runtime  # here: a listing with no leftover needs neither
    if livestate.monitor_listens(lxcpath, name) is False:
        return False
    return runtime.states_within(lxcpath, [name])[name][2] == runtime.NO_ANSWER
