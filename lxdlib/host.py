"""``Host``: the public entry point — one root directory, its collections, and host facts.

``Host()`` costs a few directory checks; pools, networks and images are touched only when an
operation needs them. A fresh root that lacks a default pool, network or profile gets them on
first use (``init --auto``), so ``Host(root=tmp).launch("busybox", "c1")`` works on its own.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import logging
import os
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from . import idmap, record, runtime
from . import snapshots as _snapshots  # noqa: F401  (registers its journal recoverer)
from .config import expand, limits, names, schema
from .errors import (
    AlreadyExists,
    CorruptRecord,
    InvalidArgument,
    InvalidConfig,
    LxdlibError,
    NotFound,
)
from .events import Events
from .imagestore.store import ImageRecord, ImageStore
from .instance import Instance, create, recover_leftover
from .profiles import Profile, ProfileStore
from .record import InstanceRecord
from .state import Paths, atomic_write, lock, read_yaml, write_yaml
from .storage.base import PoolDriver

if TYPE_CHECKING:
    from .views import Pools
    from .volumes import Volumes

log = logging.getLogger(__name__)

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


@attrs.frozen
class HostFacts:
    cpus: int
    mem_total: int
    cgroup_version: int
    lxcfs: bool
    idmap: idmap.Allocation
    swap_accounting: bool


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


class Instances:
    """The instances of a host: ``host.instances["web"]``, ``in``, iteration, ``list()``."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def names(self) -> list[str]:
        self.host._recover_leftovers()
        return record.names(self.host.paths)

    def get(self, name: str) -> Instance:
        if not record.exists(self.host.paths, name):
            raise NotFound("instance", name)
        return Instance(self.host, name)

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and record.exists(self.host.paths, name)

    def pool_of(self, name: str) -> str:
        """The pool holding an instance's root volume ("" when its record is unreadable)."""
        return self.host._instance_pool(name)

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.names())

    def list(self) -> builtins.list[Instance]:
        return [Instance(self.host, n) for n in self.names()]

    def _ipython_key_completions_(self) -> builtins.list[str]:
        return self.names()

    def _repr_html_(self) -> str:
        from .notebook import instances_html
        return instances_html(self.list())

    def __repr__(self) -> str:
        return f"<Instances {self.names()}>"


class Images:
    """The local image store with LXD's ``image`` verbs, the remotes and the cache rules.

    ``host.images["busybox"]`` (alias, fingerprint or unique prefix), ``import_file``,
    ``copy("images:alpine/3.19")``, ``publish("c1")``, ``refresh``, ``housekeeping``…
    """

    def __init__(self, host: Host) -> None:
        from .imagestore.remotes import Remotes
        self.host = host
        self.store = ImageStore(host.paths)
        self.remotes = Remotes(host.paths)
        self._clients: dict[str, Any] = {}

    def get(self, ref: str) -> ImageRecord:
        return self.store.get(ref)

    __getitem__ = get

    def __contains__(self, ref: object) -> bool:
        if not isinstance(ref, str):
            return False
        try:
            self.store.get(ref)
            return True
        except (NotFound, InvalidArgument):
            return False

    def list(self) -> builtins.list[ImageRecord]:
        return self.store.list()

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.list())

    def __repr__(self) -> str:
        return f"<Images {len(self)} in {self.store.root}>"

    def import_file(self, path: str | os.PathLike[str], *, aliases: Sequence[str] = (),
                    **kw: Any) -> ImageRecord:
        """``image import``: a unified tarball, or a split image with ``rootfs_path=``."""
        img = self.store.import_file(path, aliases=aliases, **kw)
        self.host.events.emit("image-imported", img.fingerprint)
        return img

    def import_url(self, url: str, *, aliases: Sequence[str] = (),
                   properties: Mapping[str, str] | None = None, public: bool = False,
                   progress: Any = None) -> ImageRecord:
        """``image import https://…``: LXD's URL protocol (``LXD-Image-URL``/``-Hash``) or a
        plain download of the tarball."""
        from .imagestore.fetch import download_image
        return download_image(self.host, url, aliases=aliases, properties=properties,
                              public=public, progress=progress)

    def build_busybox(self, alias: str | None = "busybox", *, compression: str = "gzip",
                      busybox: str = "/bin/busybox") -> ImageRecord:
        """Build the self-contained busybox image from the host's busybox-static and import it.

        The build is deterministic, so building again finds the same fingerprint: the existing
        image is returned (and the alias pointed at it).
        """
        import tempfile

        from .errors import AlreadyExists as Exists
        from .imagestore.busybox import build_busybox_image
        with tempfile.TemporaryDirectory(dir=self.host.paths.run, prefix="build-") as tmp:
            out = build_busybox_image(Path(tmp) / "busybox.tar.gz", busybox=busybox,
                                      compression=compression)
            try:
                img = self.import_file(out, aliases=[alias] if alias else [])
            except Exists:
                import hashlib
                h = hashlib.sha256()
                with open(out, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                img = self.store.get(h.hexdigest())
                if alias and alias not in self.store.aliases():
                    self.store.alias_create(alias, img.fingerprint)
                img = self.store.get(img.fingerprint)
        return img

    def build_debian(self, alias: str | None = "debian", *, release: str = "bookworm",
                     variant: str = "minbase", mirror: str = "http://deb.debian.org/debian",
                     compression: str = "xz", progress: Any = None,
                     cache_dir: str | os.PathLike[str] | None = None,
                     packages: Sequence[str] = ()) -> ImageRecord:
        """``image build debian``: debootstrap ``release`` into a systemd image and import it
        (``alias`` moves to the new image if it existed). ``progress(step)`` gets coarse steps;
        ``cache_dir`` reuses an earlier identical debootstrap; ``packages`` are installed into
        the image by the host, e.g. ``["docker.io"]`` (see ``build_debian_image``)."""
        import tempfile

        from .imagestore.debootstrap import build_debian_image
        from .imagestore.store import validate_alias_name
        if alias:
            validate_alias_name(alias)
        with tempfile.TemporaryDirectory(dir=self.host.paths.run, prefix="build-") as tmp:
            out = build_debian_image(Path(tmp) / "debian.tar", release=release,
                                     variant=variant, mirror=mirror, compression=compression,
                                     progress=progress, cache_dir=cache_dir,
                                     packages=packages)
            img = self.import_file(out)
        if alias:
            if alias in self.store.aliases():
                self.store.alias_update(alias, target=img.fingerprint)
            else:
                self.store.alias_create(alias, img.fingerprint)
            img = self.store.get(img.fingerprint)
        return img

    def delete(self, ref: str) -> None:
        """Remove the image, its aliases and its unpacked volumes in every pool."""
        img = self.store.get(ref)
        self.store.delete(img.fingerprint)
        for pname in self.host.pool_names():
            with contextlib.suppress(Exception):
                self.host.pool(pname).delete_image_volume(img.fingerprint)
        self.host.events.emit("image-deleted", img.fingerprint)

    def touch(self, fingerprint: str) -> None:
        self.store.touch(fingerprint)

    def update(self, ref: str, **changes: Any) -> ImageRecord:
        """``image edit``: ``properties``, ``public``, ``auto_update``, ``expires_at``."""
        return self.store.update(ref, **changes)

    def set_properties(self, ref: str, values: Mapping[str, str | None]) -> ImageRecord:
        """Set (``None``: unset) some properties under the image's lock."""
        return self.store.set_properties(ref, values)

    def export(self, ref: str, target: str | os.PathLike[str] = ".") -> builtins.list[Path]:
        """``image export``: the file(s) exactly as imported. Into a directory they are named
        ``<fp><ext>`` (unified) or ``meta-<fp><ext>`` + ``<fp><ext>`` (split), the extension
        judged from the content; to a file path, the metadata goes there and a split image's
        rootfs beside it as ``<path>.root``."""
        from .imagestore import compression
        img = self.store.get(ref)
        fp = img.fingerprint
        sources = [self.store.tarball_path(fp)]
        rootfs = self.store.rootfs_path(fp)
        if rootfs is not None:
            sources.append(rootfs)
        dest = Path(target)
        if dest.is_dir():
            exts = [compression.extension(compression.detect(s)) for s in sources]
            names = ([f"{fp}{exts[0]}"] if rootfs is None
                     else [f"meta-{fp}{exts[0]}", f"{fp}{exts[1]}"])
            outs = [dest / n for n in names]
        else:
            outs = [dest] + ([dest.with_name(dest.name + ".root")] if rootfs is not None else [])
        import shutil
        for src, out in zip(sources, outs, strict=True):
            tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, out)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return outs

    # -- remotes ------------------------------------------------------------------------------
    def client(self, remote: str, *, fresh: bool = False) -> Any:
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
        cache = self.host.paths.root / "cache" / "simplestreams"
        import hashlib
        cache = cache / hashlib.sha256(url.encode()).hexdigest()[:16]
        if fresh:
            client = Client(url, cache, expiry=0)
            self._clients[url] = client
            return client
        if url not in self._clients:
            self._clients[url] = Client(url, cache)
        return self._clients[url]

    def _split(self, ref: str) -> tuple[Any, str]:
        from .imagestore.remotes import split_ref
        name, rest = split_ref(ref, self.remotes.default)
        return self.remotes.get(name), rest

    def remote_list(self, remote: str) -> builtins.list[Any]:
        """``image list <remote>:``: the ``RemoteImage`` objects a server offers."""
        return self.client(remote.rstrip(":")).images()  # type: ignore[no-any-return]

    def remote_get(self, ref: str) -> Any:
        """The ``RemoteImage`` an alias or fingerprint prefix on a remote names."""
        remote, name = self._split(ref)
        image, _ = self.client(remote.name).resolve(name or "default")
        return image

    def copy(self, ref: str, *, aliases: Sequence[str] = (), copy_aliases: bool = False,
             auto_update: bool = False, public: bool = False, progress: Any = None
             ) -> ImageRecord:
        """``image copy <remote>:<alias> local:``: download (once, verified) into the store."""
        from .imagestore import cache
        remote, name = self._split(ref)
        return cache.copy(self.host, remote, name, aliases=aliases, copy_aliases=copy_aliases,
                          auto_update=auto_update, public=public, progress=progress)

    def resolve(self, ref: str, progress: Any = None) -> str:
        """The local reference an instance made from ``ref`` uses: a local alias/fingerprint as
        is; a remote one (``images:alpine/3.19``, ``ubuntu:``) is downloaded and cached first,
        or a cached copy used, by LXD's rules."""
        from .imagestore import cache
        remote, name = self._split(ref)
        if remote.is_local:
            return name
        return cache.for_instance(self.host, remote, name, progress).fingerprint

    def refresh(self, ref: str, progress: Any = None) -> tuple[ImageRecord, bool]:
        """``image refresh``: ask the image's server now; (current image, whether it moved)."""
        from .imagestore import cache
        return cache.refresh(self.host, ref, progress=progress)

    def prune(self, now: Any = None) -> builtins.list[str]:
        """Delete cached images unused for ``images.remote_cache_expiry`` days."""
        from .imagestore import cache
        return cache.prune_expired(self.host, now)

    def housekeeping(self, now: Any = None) -> dict[str, Any]:
        """LXD's timers without a daemon: expiry, then auto-update (safe from cron)."""
        from .imagestore import cache
        return cache.housekeeping(self.host, now)

    def publish(self, source: Any, *, aliases: Sequence[str] = (), compression: str | None = None,
                properties: Mapping[str, str] | None = None, force: bool = False,
                reuse: bool = False, public: bool = False, expires_at: Any = None,
                progress: Any = None) -> ImageRecord:
        """``publish``: an instance (``"c1"``, an ``Instance``) or a snapshot (``"c1/snap0"``)
        as a unified image. See ``lxdlib.imagestore.publish``."""
        from .imagestore.publish import publish
        return publish(self.host, source, aliases=aliases, compression=compression,
                       properties=properties, force=force, reuse=reuse, public=public,
                       expires_at=expires_at, progress=progress)

    def _ipython_key_completions_(self) -> builtins.list[str]:
        return sorted(self.store.aliases())

    def _repr_html_(self) -> str:
        from .notebook import images_html
        return images_html(self.list())


class Host:
    """One lxdlib root: instances, images, profiles, pools and networks that live under it."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *,
                 create: bool = True) -> None:
        """``create=False`` opens only a root that exists (``NotFound`` otherwise): what runs
        on its own later — liblxc's hooks, the ephemeral reaper — must never bring back a
        root that was deleted meanwhile."""
        self.paths = Paths.at(root)
        if not create and not self.paths.lxcpath.is_dir():
            raise NotFound("lxdlib root", str(self.paths.root), "it does not exist")
        self.paths.ensure()
        self.events = Events(self.paths)
        self.instances = Instances(self)
        self.images = Images(self)
        # what killed image imports left, cleared by any command (one small directory)
        self.images.store.cleanup_imports()
        self.profiles = ProfileStore(self.paths, self._profile_users)
        self._pools: dict[str, PoolDriver] = {}
        self._networks: Any = None
        self._recovered = False
        self._traversable_checked = False
        self._seccomp_ok = False
        # profiles read once per bulk operation (update_profile) instead of once per expansion;
        # per thread (one Host may serve many threads), see ``_profile_memo``
        self._memo = threading.local()

    def __repr__(self) -> str:
        return f"<Host root={str(self.paths.root)!r}>"

    def _repr_html_(self) -> str:
        from .notebook import host_html
        return host_html(self)

    # -- facts ------------------------------------------------------------------------------
    @functools.cache  # noqa: B019 - one Host lives as long as its facts are true
    def facts(self) -> HostFacts:
        return HostFacts(cpus=os.cpu_count() or 1, mem_total=_mem_total(),
                         cgroup_version=runtime.cgroup_version(), lxcfs=_lxcfs_running(),
                         idmap=idmap.host_allocation(), swap_accounting=_swap_accounting())

    def seccomp_policy(self) -> Path:
        """The seccomp policy file every instance of this root points at (written once)."""
        path = self.paths.root / "seccomp.policy"
        if not self._seccomp_ok:
            from .render import SECCOMP_POLICY
            try:
                current = path.read_text()
            except FileNotFoundError:
                current = ""
            if current != SECCOMP_POLICY:
                atomic_write(path, SECCOMP_POLICY.encode(), 0o644)
            self._seccomp_ok = True
        return path

    def check_traversable(self, path: Path) -> None:
        """An unprivileged container's root must be able to walk down to ``path`` (its
        volume's directory, which is its own: mode 0100, see ``storage.base``).

        liblxc fails with a terse "Permission denied" otherwise (e.g. a root under a 0700
        directory such as pytest's or a home directory); this names the directory to fix.
        """
        if self._traversable_checked:
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
        self._traversable_checked = True

    # -- server config ----------------------------------------------------------------------
    @property
    def config(self) -> dict[str, str]:
        try:
            data = read_yaml(self.paths.server_config) or {}
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in (data.get("config") or {}).items()}

    def set_config(self, key: str, value: str | None) -> None:
        """Server keys (``images.remote_cache_expiry`` …); ``None`` unsets."""
        with lock(self.paths, "host", "config"):
            cfg = self.config
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
            cfg = schema.validate_server_config(cfg)
            write_yaml(self.paths.server_config, {"config": cfg})

    # -- storage ----------------------------------------------------------------------------
    def pool(self, name: str) -> PoolDriver:
        drv = self._pools.get(name)
        if drv is None:
            from .storage import load_pool
            drv = load_pool(self.paths, name)
            # once per Host: remove temporary volumes a killed process left in this pool
            drv.cleanup_leftovers()
            self._pools[name] = drv
        return drv

    @property
    def pools(self) -> Pools:
        """The storage pools as a collection (``host.pools["default"]``, notebook table)."""
        from .views import Pools
        return Pools(self)

    @property
    def volumes(self) -> Volumes:
        """Custom storage volumes (``storage volume …``)."""
        from .volumes import Volumes
        return Volumes(self)

    def pool_names(self) -> list[str]:
        from .storage import list_pools
        return list_pools(self.paths)

    def create_pool(self, name: str, driver: str, config: Mapping[str, str] | None = None,
                    description: str = "") -> PoolDriver:
        from .storage import create_pool
        drv = create_pool(self.paths, name, driver, dict(config or {}), description)
        self._pools[name] = drv
        return drv

    def delete_pool(self, name: str) -> None:
        from .storage import delete_pool
        users = [n for n in record.names(self.paths) if self._instance_pool(n) == name]
        if users:
            from .errors import InUse
            raise InUse(f"storage pool {name!r} is used by instances: {', '.join(users)}")
        for prof in self.profiles.list():
            for dev in prof.devices.values():
                if dev.get("type") == "disk" and dev.get("path") == "/" and \
                        dev.get("pool") == name:
                    from .errors import InUse
                    raise InUse(f"storage pool {name!r} is used by profile {prof.name!r}")
        delete_pool(self.paths, name)
        self._pools.pop(name, None)

    def _instance_pool(self, name: str) -> str:
        try:
            return record.load(self.paths, name).pool
        except (FileNotFoundError, CorruptRecord):
            return ""

    def _ensure_image_volume(self, pool: PoolDriver, fingerprint: str) -> None:
        if pool.volume_exists("images", fingerprint):
            return
        with lock(self.paths, "image-volume", f"{pool.name}.{fingerprint}"):
            if not pool.volume_exists("images", fingerprint):
                pool.create_image_volume(
                    fingerprint, lambda path: self.images.store.unpack(fingerprint, path))

    # -- networks ---------------------------------------------------------------------------
    @property
    def networks(self) -> Any:
        if self._networks is None:
            from .network.manager import NetworkManager
            self._networks = NetworkManager(self.paths)
        return self._networks

    def _nic_link(self, dev: Mapping[str, str]) -> str:
        """The bridge a nic device plugs into; a managed network is brought up first."""
        if dev.get("network"):
            net = dev["network"]
            self.networks.ensure_up(net)
            return net
        if dev.get("nictype") == "bridged" and dev.get("parent"):
            parent = dev["parent"]
            if Path(f"/sys/class/net/{parent}").exists():
                return parent
            raise NotFound("network", parent, "no such bridge on the host")
        raise InvalidConfig("nictype", "lxdlib supports bridged nics (network= or "
                            "nictype=bridged with parent=)")

    def network_users(self, network: str) -> list[str]:
        users = []
        for n in record.names(self.paths):
            try:
                _, devs = Instance(self, n).expanded()
            except Exception:
                continue
            if any(d.get("type") == "nic" and network in (d.get("network"), d.get("parent"))
                   for d in devs.values()):
                users.append(n)
        for p in self.profiles.list():
            if any(d.get("type") == "nic" and d.get("network") == network
                   for d in p.devices.values()):
                users.append(f"profile:{p.name}")
        return users

    def network_forget(self, instance: str) -> None:
        """Drop the DHCP host entries an instance's nics had on managed networks."""
        if any(self.paths.networks.glob("*.yaml")):
            self.networks.dhcp_hosts_forget(instance)

    # -- profiles ---------------------------------------------------------------------------
    def _profile_users(self, profile: str) -> list[str]:
        out = []
        for n in record.names(self.paths):
            try:
                if profile in record.load(self.paths, n).profiles:
                    out.append(n)
            except FileNotFoundError:
                continue
            except CorruptRecord as e:
                log.warning("%s", e)  # its profiles are unknown: listed elsewhere as ERROR
                continue
        return out

    def update_profile(self, name: str, *, config: Mapping[str, str] | None = None,
                       devices: Mapping[str, Mapping[str, str]] | None = None,
                       description: str | None = None) -> None:
        """Change a profile, then re-apply it to every instance that uses it.

        Like LXD, the profile change is saved first; instances that cannot take it are listed in
        the raised ``ProfileApplyError`` while the others (and the profile) keep the change.
        Live keys reach running instances at once. The profile's lock is held throughout, so
        what is kept of the old profile is what it holds now, not what a caller read earlier.
        """
        with lock(self.paths, "profile", name):
            self._update_profile_locked(name, config, devices, description)

    def modify_profile(self, name: str, change: Callable[[Profile], None]) -> None:
        """Read-modify-write of a profile: ``change`` edits a copy read under the profile's lock
        (config, devices, description), then it is saved and re-applied as ``update_profile``
        does. Concurrent ``profile set``s each keep the others' keys."""
        with lock(self.paths, "profile", name):
            old = self.profiles.get(name)
            draft = Profile(name=name, description=old.description, config=dict(old.config),
                            devices={k: dict(v) for k, v in old.devices.items()})
            change(draft)
            self._update_profile_locked(
                name, draft.config if draft.config != old.config else None,
                draft.devices if draft.devices != old.devices else None,
                draft.description if draft.description != old.description else None)

    def _update_profile_locked(self, name: str, config: Mapping[str, str] | None,
                               devices: Mapping[str, Mapping[str, str]] | None,
                               description: str | None) -> None:
        from . import journal
        from .instance import Instance
        old = self.profiles.get(name)
        failures: dict[str, str] = {}
        with contextlib.ExitStack() as held:
            # every user's lock for the whole change (in name order), each with an intent
            # naming what it ran with: a kill after the profile is saved leaves them to be
            # brought to it by their next call, one before it leaves them as they were
            users = self._lock_profile_users(name, held)
            before = {u: Instance(self, u).expanded() for u in users}
            new_devices = devices if devices is not None else old.devices
            new_data = expand.ProfileData(name, config if config is not None else old.config,
                                          new_devices)
            # every user's new config must pass (liblxc loads it) before the profile is saved
            self._profile_memo = {name: new_data}
            try:
                for u in users:
                    inst = Instance(self, u)
                    try:
                        rec = inst.record()
                    except CorruptRecord:
                        continue  # reported by the re-apply below; it cannot block the others
                    _, devs = inst.expanded(rec)
                    root_name, root = expand.root_disk(devs)
                    if root.get("pool") != rec.pool:
                        raise InvalidConfig(f"devices.{root_name}.pool",
                                            f"instance {u!r} relies on this profile's root "
                                            "disk pool")
                    self._check_user_config(inst, rec)
            finally:
                self._profile_memo = None
            for u in users:
                journal.begin(self.paths, u, "profile-apply", profile=name,
                              before={"config": before[u][0], "devices": before[u][1]})
            try:
                journal.crashpoint("profile.begun")
                self.profiles.save(name, config if config is not None else old.config,
                                   new_devices,
                                   description if description is not None else old.description)
                journal.crashpoint("profile.saved")
                self._profile_memo = {}
                try:
                    self._reapply(users, before, failures)
                finally:
                    self._profile_memo = None
            except BaseException:  # the profile saved or not: each user follows what is on disk
                for u in users:
                    if journal.pending(self.paths, u):
                        journal.recover(self, u)
                raise
        if failures:
            from .errors import ProfileApplyError
            raise ProfileApplyError(failures)

    def _lock_profile_users(self, name: str, held: contextlib.ExitStack) -> list[str]:
        """Take the lock of every instance using profile ``name`` (in name order) and return
        them. The users are read again once locked: an instance that took the profile on in
        between (under its own lock only) is locked and brought to the new content too."""
        from .instance import Instance
        while True:
            users = sorted(self._profile_users(name))
            stack = contextlib.ExitStack()
            try:
                for u in users:
                    stack.enter_context(Instance(self, u)._lock())
                again = sorted(self._profile_users(name))
            except BaseException:
                stack.close()
                raise
            if again == users:
                held.enter_context(stack)
                return users
            stack.close()

    def _check_user_config(self, inst: Instance, rec: InstanceRecord) -> None:
        """The liblxc config ``inst`` would get from the profile change must load in liblxc
        (checked before the profile is saved). Other render failures (a missing disk source,
        a network gone) are left to the re-apply, which reports them per instance."""
        try:
            lines, _, _ = inst._render_lxc_config(rec)
        except InvalidConfig:
            raise
        except LxdlibError:
            return
        try:
            inst._check_lxc_config(rec, lines)
        except InvalidConfig as e:
            raise InvalidConfig(e.key, f"{e.reason} (in instance {inst.name!r})",
                                e.value) from None

    def _reapply(self, users: Sequence[str],
                 before: Mapping[str, tuple[dict[str, str], dict[str, dict[str, str]]]],
                 failures: dict[str, str]) -> None:
        """The caller holds the users' locks."""
        from . import journal
        from .instance import Instance
        for u in users:
            inst = Instance(self, u)
            try:
                rec = inst.record()
                new_cfg, new_devs = inst.expanded(rec)
                inst._apply_quota(new_devs, rec, before[u][1])
                inst._write_lxc_config(rec)
                if inst.state in ("RUNNING", "FROZEN"):
                    inst._apply_live(before[u][0], new_cfg)
                    inst._apply_devices_live(before[u][1], new_devs, rec)
            except Exception as e:  # collected: one instance must not stop the others
                failures[u] = str(e)
            journal.end(self.paths, u)
            journal.crashpoint("profile.applied-one")

    def _check_profiles(self, profiles: Sequence[str]) -> list[str]:
        out = expand.resolve_profile_list(list(profiles))
        self.ensure_initialized(need_default="default" in out)
        for p in out:
            if not self.profiles.exists(p):
                raise NotFound("profile", p, f"Requested profile {p!r} does not exist")
        return out

    @property
    def _profile_memo(self) -> dict[str, expand.ProfileData] | None:
        """This thread's profile overrides during a bulk operation (``None``: none running).
        Setting a dict starts one (its entries are used as given, e.g. a profile's content
        before it is saved); profiles read from disk meanwhile are cached beside it, each only
        while its file is the one it was read from (another process may change it)."""
        memo: dict[str, expand.ProfileData] | None = getattr(self._memo, "overrides", None)
        return memo

    @_profile_memo.setter
    def _profile_memo(self, value: dict[str, expand.ProfileData] | None) -> None:
        self._memo.overrides = value
        self._memo.cache = {} if value is not None else None

    def expand(self, profiles: Sequence[str] | None, config: Mapping[str, str],
               devices: Mapping[str, Mapping[str, str]]
               ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """What an instance with these profiles and local settings would get (config, devices):
        ``None`` means the default profile; a missing profile raises NotFound."""
        return self._expand(self._check_profiles(expand.resolve_profile_list(profiles)),
                            config, devices)

    def _expand(self, profiles: Sequence[str], config: Mapping[str, str],
                devices: Mapping[str, Mapping[str, str]]
                ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        overrides = self._profile_memo
        cache: dict[str, tuple[tuple[int, int, int], expand.ProfileData]] | None = getattr(
            self._memo, "cache", None)
        if overrides is None or cache is None:
            datas = [self.profiles.data(p) for p in profiles]
        else:
            datas = []
            for p in profiles:
                if p in overrides:
                    datas.append(overrides[p])
                    continue
                try:
                    st = os.stat(self.paths.profiles / f"{p}.yaml")
                    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
                except OSError:
                    stamp = (0, 0, 0)
                hit = cache.get(p)
                if hit is None or hit[0] != stamp:
                    hit = cache[p] = (stamp, self.profiles.data(p))
                datas.append(hit[1])
        return expand.expand(datas, config, devices)

    # -- cpu balancing ----------------------------------------------------------------------
    def _pick_cpus(self, name: str, cfg: Mapping[str, str]) -> list[int] | None:
        """``limits.cpu: N`` means N CPUs, spread over the least used ones (LXD's balancing)."""
        value = cfg.get("limits.cpu", "")
        if not value.isdigit():
            return None
        usage: dict[int, int] = {}
        for other in record.names(self.paths):
            if other == name:
                continue
            cpuset = self._cpuset_of(other)
            for cpu in cpuset:
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

    # -- initialisation ---------------------------------------------------------------------
    def ensure_initialized(self, need_default: bool = True) -> None:
        """Give a fresh root what ``lxd init --auto`` would: default pool, bridge, profile."""
        if not need_default or self.profiles.exists("default"):
            return
        with lock(self.paths, "host", "init"):
            if not self.profiles.exists("default"):
                self.init_auto()

    def init_auto(self, *, pool_driver: str = "btrfs", pool_size: str = "5GiB",
                  network: bool = True) -> None:
        """``lxd init --auto``: a loop-backed pool, a NAT bridge with DHCP, the default profile."""
        devices: dict[str, dict[str, str]] = {}
        if DEFAULT_POOL not in self.pool_names():
            self.create_pool(DEFAULT_POOL, pool_driver, {"size": pool_size})
        devices["root"] = {"type": "disk", "path": "/", "pool": DEFAULT_POOL}
        if network:
            if not any(n["name"] == DEFAULT_NETWORK for n in self.networks.list()):
                self.networks.create(DEFAULT_NETWORK, {"ipv4.address": "auto",
                                                       "ipv4.nat": "true"})
            devices["eth0"] = {"type": "nic", "name": "eth0", "network": DEFAULT_NETWORK}
        with lock(self.paths, "profile", "default"):  # read it under its lock: merged, not lost
            if self.profiles.exists("default"):
                p = self.profiles.get("default")
                merged = {**devices, **p.devices}
                self.profiles.save("default", p.config, merged, p.description)
            else:
                self.profiles.create("default", {}, devices, "Default lxdlib profile")

    def init_preseed(self, preseed: Mapping[str, Any]) -> None:
        """Apply LXD's preseed shape: ``config``, ``storage_pools``, ``networks``, ``profiles``."""
        known = {"config", "storage_pools", "networks", "profiles", "cluster", "projects"}
        unknown = set(preseed) - known
        if unknown:
            raise InvalidArgument(f"unknown preseed keys: {', '.join(sorted(unknown))}")
        for key, value in (preseed.get("config") or {}).items():
            self.set_config(str(key), str(value))
        for pool in preseed.get("storage_pools") or []:
            if pool["name"] not in self.pool_names():
                self.create_pool(pool["name"], pool.get("driver", "btrfs"),
                                 {str(k): str(v) for k, v in (pool.get("config") or {}).items()},
                                 pool.get("description", ""))
        for net in preseed.get("networks") or []:
            if net.get("type", "bridge") != "bridge":
                raise InvalidArgument(f"network type {net.get('type')!r} is not supported")
            if not any(n["name"] == net["name"] for n in self.networks.list()):
                self.networks.create(net["name"], {str(k): str(v) for k, v in
                                                   (net.get("config") or {}).items()},
                                     net.get("description", ""))
        for prof in preseed.get("profiles") or []:
            cfg = {str(k): str(v) for k, v in (prof.get("config") or {}).items()}
            devs = {str(k): {str(a): str(b) for a, b in v.items()}
                    for k, v in (prof.get("devices") or {}).items()}
            if self.profiles.exists(prof["name"]):
                self.profiles.save(prof["name"], cfg, devs, prof.get("description", ""))
            else:
                self.profiles.create(prof["name"], cfg, devs, prof.get("description", ""))

    # -- leftovers --------------------------------------------------------------------------
    def _recover_leftovers(self) -> None:
        """Finish deletes and undo creates that a killed process left (once per Host)."""
        if self._recovered:
            return
        self._recovered = True
        try:
            entries = list(self.paths.lxcpath.iterdir())
        except FileNotFoundError:
            return
        for d in entries:
            # a record without an intent file (``journal.PENDING``) is a settled instance
            if not d.is_dir() or ((d / "instance.yaml").exists()
                                  and not os.path.lexists(d / ".pending.yaml")):
                continue
            try:
                with lock(self.paths, "instance", d.name, timeout=0):
                    recover_leftover(self, d.name)
            except Exception:
                continue  # someone is still working on it

    # -- instances --------------------------------------------------------------------------
    def _new_name(self) -> str:
        for _ in range(100):
            name = f"{random.choice(_ADJ)}-{random.choice(_NOUN)}"
            if not record.exists(self.paths, name):
                return name
        raise AlreadyExists("instance", "random name")

    def create(self, image: str | None, name: str | None = None, *,
               profiles: Sequence[str] | None = None, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None, pool: str | None = None,
               ephemeral: bool = False, description: str = "", progress: Any = None
               ) -> Instance:
        """``lxc init``: create an instance from an image: a local alias or fingerprint, or
        ``<remote>:<alias>`` (downloaded and cached first; ``progress(done, total)``)."""
        self._recover_leftovers()
        if name is not None:
            names.validate_instance_name(name)
        if image is not None:
            image = self.images.resolve(image, progress)
        return create(self, name or self._new_name(), image, profiles=profiles, config=config,
                      devices=devices, pool=pool, ephemeral=ephemeral, description=description)

    init = create

    def publish(self, source: Any, **kw: Any) -> ImageRecord:
        """``lxc publish``: see ``Images.publish``."""
        return self.images.publish(source, **kw)

    def launch(self, image: str | None, name: str | None = None, *,
               profiles: Sequence[str] | None = None, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None, pool: str | None = None,
               ephemeral: bool = False, description: str = "", progress: Any = None
               ) -> Instance:
        """``lxc launch``: create and start; if the start fails the instance stays, stopped,
        with the liblxc log in the error — as LXD leaves it."""
        inst = self.create(image, name, profiles=profiles, config=config, devices=devices,
                           pool=pool, ephemeral=ephemeral, description=description,
                           progress=progress)
        inst.start()
        return inst

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
        for inst in self.instances.list():
            try:
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
                prio = int(cfg.get("boot.autostart.priority") or 0)
                todo.append((-prio, inst.name, float(cfg.get("boot.autostart.delay") or 0)))
        result: dict[str, str] = {}
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
        return copy_instance(self, source, name, **kw)

    def move(self, name: str, new_name: str | None = None, *, pool: str | None = None
             ) -> Instance:
        """``lxc move``: rename a stopped instance and/or move it to another storage pool,
        with its snapshots."""
        inst = self.instances.get(name)
        if new_name is not None and new_name != name:
            inst = inst.rename(new_name)
        if pool is not None:
            from .copy import move_to_pool
            inst = move_to_pool(self, inst.name, pool)
        return inst

    def import_backup(self, path: str | os.PathLike[str], name: str | None = None, *,
                      pool: str | None = None) -> Instance:
        """``lxc import``: an instance (with its snapshots) from an ``export`` tarball."""
        from .backup import import_backup
        return import_backup(self, path, name, pool=pool)

    def export_backup(self, name: str, path: str | os.PathLike[str] | None = None,
                      **kw: Any) -> Path:
        """``lxc export``: the instance as a backup tarball in LXD's format."""
        from .backup import export_instance
        return export_instance(self.instances.get(name), path, **kw)
