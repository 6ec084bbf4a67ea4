"""``lxc copy`` and ``lxc move``: new instances from instances or snapshots, renames, and moves
between pools — each with one commit point and an intent record for the way back.

A copy gets the source's config, devices and profiles (or the snapshot's), its snapshots unless
``instance_only``, and fresh identity: a new ``volatile.uuid``, new MAC addresses, a new isolated
idmap block where ``security.idmap.isolated`` asks for one, and the ``copy`` template trigger for
its first start. The volumes move as :mod:`lxdlib.transfer` sees fit (clones, send/receive
streams, or files). The new instance's record is the commit point, as for a create.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence

from . import journal, record
from .background import beside
from .config import devices as devcfg
from .config import expand, names, schema
from .config.ids import random_uuid
from .config.text import check_description, check_flag
from .config.units import parse_size
from .errors import (
    TYPE_CHECKING,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    WrongState,
)
from .instance import (
    InstanceCore,
    PreparedCommit,
    choose_idmap,
    expand_with_root,
    fresh_mac,
    frozen_meanwhile,
    new_instance_dir,
    prepare_commit,
    read_metadata,
    truthy,
)
from .instance import recover_leftover as _recover_dir
from .record import InstanceRecord, SnapshotRecord
from .recovery import pool_or_none, record_or_none
from .state import lock, on_behalf, remove_tree

if TYPE_CHECKING:
    from typing import Any

    from .context import Context
    from .storage.base import PoolDriver

@contextlib.contextmanager
def locked(ctx: Context, *instance_names: str) -> Iterator[None]:
    """Hold several instance locks (in name order: two copies a→b and b→a cannot deadlock),
    finishing what a killed process left on each."""
    with contextlib.ExitStack() as stack:
        for n in sorted(set(instance_names)):
            stack.enter_context(lock(ctx.paths, "instance", n))
            if record.exists(ctx.paths, n):
                if journal.pending(ctx.paths, n):
                    journal.recover(ctx, n)
            else:
                _recover_dir(ctx, n)
        yield


def disk_base(pool: PoolDriver, config: Mapping[str, str]) -> int:
    """The host uid that container root owns files as on disk in ``pool``."""
    if truthy(config.get("security.privileged")) or pool.supports_idmapped_mounts:
        return 0
    return int(config.get("volatile.idmap.base", "0"))


def source_disk_base(inst: InstanceCore, rec: InstanceRecord, pool: PoolDriver) -> int:
    """``disk_base`` of a copy's source; its profiles are read only where the pool stores
    ownership shifted (no idmapped mounts), the one case where its config matters."""
    if pool.supports_idmapped_mounts:
        return 0
    return disk_base(pool, {**inst.expanded(rec)[0], **rec.config})


def frozen_for_copy(ctx: Context, name: str) -> contextlib.AbstractContextManager[None]:
    """A running source frozen while its files are read (the caller holds its lock); thawed
    by the next call if this one is killed meanwhile (``frozen_meanwhile``)."""
    return frozen_meanwhile(ctx.paths, name)


def fresh_identity(ctx: Context, name: str, config: dict[str, str],
                    exp_cfg: Mapping[str, str], exp_devs: Mapping[str, Mapping[str, str]]
                    ) -> None:
    """Drop the source's volatile keys (all but ``volatile.base_image``) and give ``config`` a
    new uuid, new MACs and, where the instance is isolated, a new idmap block."""
    for key in [k for k in config if k.startswith("volatile.") and k != "volatile.base_image"]:
        del config[key]
    config["volatile.uuid"] = random_uuid()
    # a copy is another machine to cloud-init: it runs its first-boot steps again (as LXD)
    config["volatile.cloud-init.instance-id"] = random_uuid()
    for dname, dev in exp_devs.items():
        if dev.get("type") == "nic" and not dev.get("hwaddr"):
            config[f"volatile.{dname}.hwaddr"] = fresh_mac(ctx, dev)
    if not truthy(exp_cfg.get("security.privileged")):
        base, size = choose_idmap(ctx, name, exp_cfg, ctx.facts().idmap)
        config["volatile.idmap.base"] = str(base)
        config["volatile.idmap.size"] = str(size)


def snapshot_copy(snap: SnapshotRecord, identity: Mapping[str, str]) -> SnapshotRecord:
    """The copy's own record of a copied snapshot: the snapshot's settings, the copy's
    identity (a restore must not bring the source's MAC or idmap back)."""
    cfg = {k: v for k, v in snap.config.items()
           if not k.startswith("volatile.") or k == "volatile.base_image"}
    cfg.update({k: v for k, v in identity.items() if k != "volatile.apply_template"})
    return SnapshotRecord(name=snap.name, created_at=snap.created_at,
                          expires_at=snap.expires_at, stateful=snap.stateful,
                          description=snap.description, config=cfg,
                          devices={k: dict(v) for k, v in snap.devices.items()},
                          profiles=list(snap.profiles))


def copy_instance(ctx: Context, source: str, target: str | None = None, *,
                  instance_only: bool = False, ephemeral: bool = False,
                  profiles: Sequence[str] | None = None,
                  config: Mapping[str, str] | None = None,
                  devices: Mapping[str, Mapping[str, str]] | None = None,
                  pool: str | None = None, refresh: bool = False,
                  description: str | None = None) -> InstanceCore:
    """``lxc copy <source> [<target>]``: ``source`` is an instance or ``instance/snapshot``.

    ``profiles`` replaces the source's list, ``config`` sets keys on top of its local config,
    ``devices`` adds or replaces whole local devices, ``pool`` puts the root disk elsewhere.
    ``refresh`` brings an existing copy up to date (its identity kept) instead of failing.
    """
    # what killed processes left on the two names is settled under their locks (``locked``);
    # other instances' leftovers are not this copy's to scan for
    src_name, src_snap = names.split_snapshot_ref(source)
    if src_snap is not None and instance_only:
        raise InvalidArgument("--instance-only can't be used when the source is a snapshot")
    if src_snap is not None and refresh:
        raise InvalidArgument("--refresh can't be used when the source is a snapshot")
    if target is None:
        target = ctx.new_name()
    names.validate_instance_name(target)
    if target == src_name:
        raise AlreadyExists("instance", target)
    if description is not None:
        check_description(description)
    check_flag(ephemeral, "ephemeral")
    extra_cfg = schema.validate_instance_config(
        {k: v for k, v in (config or {}).items() if not k.startswith("volatile.")})
    extra_devs = {n: devcfg.validate_device(n, d) for n, d in (devices or {}).items()}
    paths = ctx.paths
    with locked(ctx, src_name, target):
        src_inst = InstanceCore(ctx, src_name)
        src_rec = src_inst.record()
        if src_snap is not None:
            snap = src_rec.snapshot(src_snap)
            if snap is None:
                raise NotFound("snapshot", source)
            base_cfg, base_devs, base_profiles = snap.config, snap.devices, snap.profiles
            snapshots: list[SnapshotRecord] = []
        else:
            base_cfg, base_devs, base_profiles = src_rec.config, src_rec.devices, \
                src_rec.profiles
            snapshots = [] if instance_only else list(src_rec.snapshots)
        prof = ctx.check_profiles(profiles if profiles is not None else base_profiles)
        new_cfg = {**base_cfg, **extra_cfg}
        if extra_cfg:  # the source's own config was checked when it was saved
            new_cfg = {**schema.validate_instance_config(
                {k: v for k, v in new_cfg.items() if not k.startswith("volatile.")}),
                       **{k: v for k, v in new_cfg.items() if k.startswith("volatile.")}}
        new_devs = {**{n: dict(d) for n, d in base_devs.items()}, **extra_devs}
        exp_cfg, exp_devs, root = expand_with_root(ctx, prof, new_cfg, new_devs, pool)
        dst_pool_name = root["pool"]
        for dev in exp_devs.values():
            if dev.get("type") == "nic":
                ctx.nic_check(dev)  # fails early (the render brings it up)
        if refresh and record.exists(paths, target):
            return _refresh(ctx, src_inst, src_rec, target, prof, new_cfg, new_devs,
                            dst_pool_name, snapshots, description)
        if record.exists(paths, target) or paths.instance_dir(target).exists():
            raise AlreadyExists("instance", target)
        src_pool = src_inst._pool(src_rec)
        dst_pool = ctx.pool(dst_pool_name)
        size = parse_size(root["size"]) if root.get("size") else None
        with new_instance_dir(ctx, target, dst_pool, spare_intent=False):
            fresh_identity(ctx, target, new_cfg, exp_cfg, exp_devs)
            shift = disk_base(dst_pool, {**exp_cfg, **new_cfg}) - \
                source_disk_base(src_inst, src_rec, src_pool)
            # An intent says what a killed copy made besides the new volume (its snapshots,
            # temporary volumes, a received stream cut short). A lone clone into place makes
            # nothing else, and the new directory without a record already means "remove the
            # volume of this name" to the next call (``recover_leftover``): no intent to write,
            # nor a file made for it (the copy's first intent makes one).
            lone = not (snapshots or shift or src_pool.name != dst_pool.name
                        or not dst_pool.clones_in_place)
            if not lone:
                journal.begin(paths, target, "copy",
                              pools=sorted({src_pool.name, dst_pool.name}),
                              target_pool=dst_pool.name)
            # the copy's metadata is its source's text (the same bytes, read before the copy
            # is made), parsed when its source was made
            meta = read_metadata(src_pool.volume_path(
                "containers", src_name) if src_snap is None else src_pool.volume_path(
                "containers-snapshots", f"{src_name}/{src_snap}"), paths.metadata_memos)
            if meta.get("templates"):
                new_cfg["volatile.apply_template"] = "copy"
            identity = {k: v for k, v in new_cfg.items() if k.startswith("volatile.")}
            rec = InstanceRecord(
                name=target, architecture=src_rec.architecture, created_at=record.now(),
                pool=dst_pool_name, profiles=prof, config=new_cfg, devices=new_devs,
                description=src_rec.description if description is None else description,
                ephemeral=ephemeral,
                snapshots=[snapshot_copy(s, identity) for s in snapshots])
            from . import transfer
            # a lone btrfs clone is a transaction commit without the GIL: the liblxc config is
            # rendered and the record written meanwhile, on a thread, and named once the
            # volume exists
            with beside(on_behalf(lambda: prepare_commit(ctx, rec)),
                        lone and dst_pool.snapshots_overlap, PreparedCommit.discard) as prepared:
                transfer.copy_volume(src_pool, src_name, dst_pool, target,
                                     snapshots=[s.name for s in snapshots],
                                     from_snapshot=src_snap, shift=shift,
                                     running=lambda: src_inst.state != "STOPPED",
                                     freeze=lambda: frozen_for_copy(ctx, src_name))
            commit = prepared.result()
            try:
                volume = dst_pool.volume_path("containers", target)
                remove_tree(volume / journal.STATE_DIR)
                if size is not None:
                    dst_pool.set_quota("containers", target, size)
            except BaseException:
                commit.discard()
                raise
            inst = commit.commit()
    ctx.events.emit("instance-created", target, origin=source)
    return inst


# -- refresh ---------------------------------------------------------------------------------------

def refresh_volume(target: str) -> str:
    return f"refresh-{os.getpid()}-{target}"


def _refresh(ctx: Context, src_inst: InstanceCore, src_rec: InstanceRecord, target: str,
             prof: list[str], new_cfg: dict[str, str], new_devs: dict[str, dict[str, str]],
             dst_pool_name: str, snapshots: list[SnapshotRecord],
             description: str | None) -> InstanceCore:
    """Bring an existing (stopped) copy up to date: a complete new volume is built beside the
    target's, then swapped in; the target keeps its identity (uuid, MACs, idmap)."""
    paths = ctx.paths
    dst = InstanceCore(ctx, target)
    dst_rec = dst.record()
    if dst.state != "STOPPED":
        raise WrongState(f"The instance {target!r} must be stopped to be refreshed")
    if dst_rec.pool != dst_pool_name:
        raise InvalidArgument(f"instance {target!r} is on pool {dst_rec.pool!r}: a refresh "
                              "cannot move it")
    dst_pool = ctx.pool(dst_rec.pool)
    src_pool = src_inst._pool(src_rec)
    identity = {k: v for k, v in dst_rec.config.items() if k.startswith("volatile.")}
    cfg = {**{k: v for k, v in new_cfg.items() if not k.startswith("volatile.")}, **identity}
    if "volatile.base_image" in new_cfg:
        cfg["volatile.base_image"] = new_cfg["volatile.base_image"]
    rec = InstanceRecord(
        name=target, architecture=src_rec.architecture, created_at=dst_rec.created_at,
        pool=dst_rec.pool, profiles=prof, config=cfg, devices=new_devs,
        description=src_rec.description if description is None else description,
        ephemeral=dst_rec.ephemeral, last_used_at=dst_rec.last_used_at,
        snapshots=[snapshot_copy(s, identity) for s in snapshots])
    tmp = refresh_volume(target)
    journal.begin(paths, target, "refresh", stage="transfer", volume=tmp,
                  record=rec.to_dict())
    try:
        shift = disk_base(dst_pool, {**dst.expanded(rec)[0], **cfg}) - \
            source_disk_base(src_inst, src_rec, src_pool)
        from . import transfer
        transfer.copy_volume(src_pool, src_inst.name, dst_pool, tmp,
                             snapshots=[s.name for s in snapshots], shift=shift,
                             running=lambda: src_inst.state != "STOPPED",
                             freeze=lambda: frozen_for_copy(ctx, src_inst.name))
    except BaseException:
        journal.recover(ctx, target)
        raise
    journal.begin(paths, target, "refresh", stage="swap", volume=tmp, record=rec.to_dict())
    finish_refresh(ctx, target, journal.read(paths, target) or {})
    journal.end(paths, target)
    ctx.events.emit("instance-updated", target, origin=src_inst.name)
    return dst


def finish_refresh(ctx: Context, name: str, op: Mapping[str, Any]) -> None:
    """Before the swap a refresh is undone (its new volume dropped), after it finished."""
    rec_data = op.get("record")
    tmp = str(op.get("volume") or "")
    if not rec_data or not tmp:
        return
    rec = InstanceRecord.from_dict(dict(rec_data))
    pool = ctx.pool(rec.pool)
    if op.get("stage") != "swap":
        pool.delete_instance_volume(tmp)
        pool.cleanup_leftovers()
        return
    if pool.volume_exists("containers", tmp):
        pool.delete_instance_volume(name)
        pool.rename_instance_volume(tmp, name)
    remove_tree(pool.volume_path("containers", name) / journal.STATE_DIR)
    inst = InstanceCore(ctx, name)
    _, devs = inst.expanded(rec)
    inst._apply_quota(devs, rec)
    inst._write_lxc_config(rec)
    record.save(ctx.paths, rec)
    pool.cleanup_leftovers()


# -- rename ----------------------------------------------------------------------------------------

def rename_instance(inst: InstanceCore, new: str) -> InstanceCore:
    """``lxc move old new``: a stopped instance with its snapshots, under both names' locks."""
    ctx = inst.ctx
    paths = ctx.paths
    old = inst.name
    names.validate_instance_name(new)
    with locked(ctx, old, new):
        rec = inst.record()
        if record.exists(paths, new) or paths.instance_dir(new).exists():
            raise AlreadyExists("instance", new)
        if inst.state != "STOPPED":
            raise WrongState("Renaming of running instance not allowed", state=inst.state)
        pool = inst._pool(rec)
        journal.begin(paths, old, "rename", old=old, new=new, pool=rec.pool)
        try:
            journal.crashpoint("rename.begun")
            pool.rename_instance_volume(old, new)
            journal.crashpoint("rename.volume")
            try:
                os.rename(paths.instance_dir(old), paths.instance_dir(new))
            except BaseException:
                pool.rename_instance_volume(new, old)
                raise
        except BaseException:
            journal.end(paths, old)
            raise
        journal.crashpoint("rename.directory")
        finish_rename(ctx, new, old, new, rec.pool)
        journal.crashpoint("rename.saved")
        journal.end(paths, new)
    ctx.events.emit("instance-renamed", new, old_name=old)
    inst.name = new
    return InstanceCore(ctx, new)


def finish_rename(ctx: Context, here: str, old: str, new: str, pool_name: str) -> None:
    """Forward once the directory carries the new name, back before that."""
    paths = ctx.paths
    pool = ctx.pool(pool_name) if pool_name else None
    if here == old:
        if pool is not None and pool.volume_exists("containers", new) and \
                not pool.volume_exists("containers", old):
            pool.rename_instance_volume(new, old)
        return
    rec = record.load(paths, new)
    if pool is not None and pool.volume_exists("containers", old) and \
            not pool.volume_exists("containers", new):
        pool.rename_instance_volume(old, new)
    if rec.name != new:
        rec.name = new
        if pool is not None and read_metadata(pool.volume_path("containers", new)).get(
                "templates"):
            rec.config["volatile.apply_template"] = "rename"
        record.save(paths, rec)
    with contextlib.suppress(FileNotFoundError):
        ctx.network_forget(old)
    InstanceCore(ctx, new)._write_lxc_config(rec)


# -- move between pools ----------------------------------------------------------------------------

def move_to_pool(ctx: Context, name: str, pool: str) -> InstanceCore:
    """``lxc move <name> -s <pool>``: a stopped instance and its snapshots to another pool.

    The copy on the new pool is complete before the record names it (the commit point); the
    old pool's volumes are removed after.
    """
    paths = ctx.paths
    inst = InstanceCore(ctx, name)
    with locked(ctx, name):
        rec = inst.record()
        if rec.pool == pool:
            raise InvalidArgument(f"instance {name!r} is already on storage pool {pool!r}")
        if inst.state != "STOPPED":
            raise WrongState("Moving a running instance between storage pools is not "
                             "allowed: stop it first")
        src_pool = inst._pool(rec)
        dst_pool = ctx.pool(pool)
        devices = {k: dict(v) for k, v in rec.devices.items()}
        exp_cfg, exp_devs, _ = expand_with_root(ctx, rec.profiles, rec.config, devices, pool)
        _, root = expand.root_disk(exp_devs)
        size = parse_size(root["size"]) if root.get("size") else None
        shift = disk_base(dst_pool, {**exp_cfg, **rec.config}) - \
            disk_base(src_pool, {**exp_cfg, **rec.config})
        journal.begin(paths, name, "move-pool", source=rec.pool, target=pool)
        try:
            from . import transfer
            transfer.copy_volume(src_pool, name, dst_pool, name,
                                 snapshots=[s.name for s in rec.snapshots], shift=shift)
            if size is not None:
                dst_pool.set_quota("containers", name, size)
            new = InstanceRecord.from_dict(rec.to_dict())
            new.pool = pool
            new.devices = devices
            inst._write_lxc_config(new)
            record.save(paths, new)  # commit point
        except BaseException:
            with contextlib.suppress(Exception):
                inst._write_lxc_config(rec)
            journal.recover(ctx, name)
            raise
        src_pool.delete_instance_volume(name)
        journal.end(paths, name)
    ctx.events.emit("instance-updated", name, pool=pool)
    return inst


def _recover_rename(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """An instance rename: forward once the directory moved, back before that."""
    finish_rename(ctx, name, str(op["old"]), str(op["new"]), str(op.get("pool") or ""))


def _recover_move_pool(ctx: Context, name: str, op: dict[str, Any]) -> None:
    """The record names the pool that holds the instance; the other one's copy goes."""
    rec = record_or_none(ctx, name)
    src, dst = str(op["source"]), str(op["target"])
    current = rec.pool if rec is not None else src
    other = dst if current == src else src
    pool = pool_or_none(ctx, other)
    if pool is not None:
        pool.delete_instance_volume(name)
        pool.cleanup_leftovers()
    here = pool_or_none(ctx, current)
    if here is not None:
        here.cleanup_leftovers()
    if rec is not None:  # the liblxc config may already name the other pool's volume
        InstanceCore(ctx, name)._write_lxc_config(rec)


def _recover_refresh(ctx: Context, name: str, op: dict[str, Any]) -> None:
    finish_refresh(ctx, name, op)


journal.register("rename", _recover_rename)
journal.register("move-pool", _recover_move_pool)
journal.register("refresh", _recover_refresh)
