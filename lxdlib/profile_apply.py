"""Profiles as users hold them — ``Profile`` and ``host.profiles`` (``Profiles``) — and the
changes that reach their users: ``update_profile`` and ``modify_profile``.

A profile is a record in ``ProfileStore``; what makes an edit more than a file write is that every
instance using the profile must be able to take it (checked before saving), and then takes it —
live where LXD applies live — with an intent per instance so a kill leaves each either as it was
or brought to the saved profile. That needs the instance engine, hence a service of its own; and
so every public way to change a profile (``Profile.update``, ``host.profiles.update``,
``Host.update_profile``) goes through it.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from . import journal, record
from .config import expand, names
from .context import Context, profile_users
from .errors import TYPE_CHECKING, CorruptRecord, InvalidConfig, LxdlibError, NotFound
from .instance import InstanceCore
from .logs import get_logger
from .model import Collection, RootModel
from .profiles import ProfileRecord
from .record import InstanceRecord
from .state import lock

if TYPE_CHECKING:
    from typing import Any

log = get_logger(__name__)


def update_profile(ctx: Context, name: str, *, config: Mapping[str, str] | None = None,
                   devices: Mapping[str, Mapping[str, str]] | None = None,
                   description: str | None = None) -> None:
    """Change a profile, then re-apply it to every instance that uses it.

    Like LXD, the profile change is saved first; instances that cannot take it are listed in
    the raised ``ProfileApplyError`` while the others (and the profile) keep the change.
    Live keys reach running instances at once. The profile's lock is held throughout, so
    what is kept of the old profile is what it holds now, not what a caller read earlier.
    """
    with lock(ctx.paths, "profile", name):
        _update_locked(ctx, name, config, devices, description)


def modify_profile(ctx: Context, name: str, change: Callable[[ProfileRecord], None]) -> None:
    """Read-modify-write of a profile: ``change`` edits a copy read under the profile's lock
    (config, devices, description), then it is saved and re-applied as ``update_profile``
    does. Concurrent ``profile set``s each keep the others' keys."""
    with lock(ctx.paths, "profile", name):
        old = ctx.profiles.read(name)
        draft = ProfileRecord(name=name, description=old.description, config=dict(old.config),
                        devices={k: dict(v) for k, v in old.devices.items()})
        change(draft)
        _update_locked(ctx,
            name, draft.config if draft.config != old.config else None,
            draft.devices if draft.devices != old.devices else None,
            draft.description if draft.description != old.description else None)

def _update_locked(ctx: Context, name: str, config: Mapping[str, str] | None,
                           devices: Mapping[str, Mapping[str, str]] | None,
                           description: str | None) -> None:
    old = ctx.profiles.read(name)  # its content only: who uses it is read once, below
    new_config = config if config is not None else old.config
    new_devices = devices if devices is not None else old.devices
    new_description = description if description is not None else old.description
    # what the store would refuse is refused before any user's intent is written: an intent
    # left by a refused edit would be "recovered" (and fail, and be kept) by later commands
    new_config, new_devices = ctx.profiles.check(new_config, new_devices, new_description)
    failures: dict[str, str] = {}
    with contextlib.ExitStack() as held:
        # every user's lock for the whole change (in name order), each with an intent
        # naming what it ran with: a kill after the profile is saved leaves them to be
        # brought to it by their next call, one before it leaves them as they were
        users = _lock_users(ctx, name, held)
        before = {u: InstanceCore(ctx, u).expanded() for u in users}
        new_data = expand.ProfileData(name, new_config, new_devices)
        # every user's new config must pass (liblxc loads it) before the profile is saved
        ctx.set_profile_memo({name: new_data})
        try:
            for u in users:
                inst = InstanceCore(ctx, u)
                try:
                    rec = inst.record()
                except CorruptRecord:
                    continue  # reported by the re-apply below; it cannot block the others
                cfg, devs = inst.expanded(rec)
                _check_user_rules(u, (cfg, devs), before[u])
                root_name, root = expand.root_disk(devs)
                if root.get("pool") != rec.pool:
                    raise InvalidConfig(f"devices.{root_name}.pool",
                                        f"instance {u!r} relies on this profile's root "
                                        "disk pool")
                _check_user_config(inst, rec, devs, before[u][1])
        finally:
            ctx.set_profile_memo(None)
        for u in users:
            journal.begin(ctx.paths, u, "profile-apply", profile=name,
                          before={"config": before[u][0], "devices": before[u][1]})
        try:
            journal.crashpoint("profile.begun")
            ctx.profiles.save(name, new_config, new_devices, new_description)
            journal.crashpoint("profile.saved")
            ctx.set_profile_memo({})
            try:
                _reapply(ctx, users, before, failures)
            finally:
                ctx.set_profile_memo(None)
        except BaseException:  # the profile saved or not: each user follows what is on disk
            for u in users:
                if journal.pending(ctx.paths, u):
                    journal.recover(ctx, u)
            raise
    if failures:
        from .errors import ProfileApplyError
        raise ProfileApplyError(failures)

def _lock_users(ctx: Context, name: str, held: contextlib.ExitStack) -> list[str]:
    """Take the lock of every instance using profile ``name`` (in name order) and return
    them. The users are read again once locked: an instance that took the profile on in
    between (under its own lock only) is locked and brought to the new content too.

    The second walk is what that race needs, and all of this change's reading of other
    instances: nothing else here asks who uses the profile. It loads only the records
    changed since the first (``record.profiles_of``); the others cost a ``stat``. (A
    stored profile→instances index would spare even the first walk, but every way an
    instance comes to name a profile — create, copy, import, receive, rename, restore,
    edit — would have to keep it true under kill -9, for a saving of one read each.)"""
    while True:
        users = sorted(profile_users(ctx.paths, name))
        stack = contextlib.ExitStack()
        try:
            for u in users:
                stack.enter_context(InstanceCore(ctx, u)._lock())
            again = sorted(profile_users(ctx.paths, name))
        except BaseException:
            stack.close()
            raise
        if again == users:
            held.enter_context(stack)
            return users
        stack.close()


def _check_user_rules(name: str, new: tuple[dict[str, str], dict[str, dict[str, str]]],
                      old: tuple[dict[str, str], dict[str, dict[str, str]]]) -> None:
    """The rules across keys and across devices (``instance.update``'s) on a user's expanded
    config and devices after the change: a profile's ``raw.seccomp`` beside an instance's
    ``security.syscalls.deny`` (the deny list then silently not applied), two disks on one
    path, two nics of one name. Refused only when the change broke them: a user broken
    already (made before these checks) must not make the profile unrepairable."""
    from .config import devices as devcfg
    from .config import schema
    checks: tuple[tuple[Callable[[Any], object], int], ...] = (
        (schema.check_combinations, 0), (devcfg.validate_devices, 1))
    for check, part in checks:
        try:
            check(new[part])
        except InvalidConfig as e:
            try:
                check(old[part])
            except InvalidConfig:
                continue
            err = InvalidConfig(e.key, f"{e.reason} (in instance {name!r})", e.value)
            err.args = (f"{e.args[0]} (in instance {name!r})",)
            raise err from None


def _check_user_config(inst: InstanceCore, rec: InstanceRecord,
                       devs: Mapping[str, Mapping[str, str]],
                       old_devs: Mapping[str, Mapping[str, str]]) -> None:
    """The liblxc config ``inst`` would get from the profile change (expanded devices
    ``devs``; ``old_devs`` before it) must be valid and load in liblxc (checked before the
    profile is saved). Other render failures (a missing disk source, a network gone) are
    left to the re-apply, which reports them per instance.

    Every device is rendered even when one fails, so one bad device (a missing source)
    hides no other's invalid value. A device's invalid value refuses the change only if the
    change made that device (added or altered it): one the instance already had, which
    turned invalid since (its network's gateway moved onto its address), must not make the
    profile unrepairable — removing a device is always possible when what is left is valid
    by these rules."""
    errors: dict[str, LxdlibError] = {}
    try:
        lines, _, _ = inst._render_lxc_config(rec, device_errors=errors)
    except InvalidConfig:
        raise
    except LxdlibError:
        lines = None  # outside any device: left to the re-apply, as the devices' own below
    for dname, e in sorted(errors.items()):
        if isinstance(e, InvalidConfig) and devs.get(dname) != old_devs.get(dname):
            raise e
    if lines is None:
        return
    try:
        inst._check_lxc_config(rec, lines)
    except InvalidConfig as e:
        raise InvalidConfig(e.key, f"{e.reason} (in instance {inst.name!r})",
                            e.value) from None

def _reapply(ctx: Context, users: Sequence[str],
             before: Mapping[str, tuple[dict[str, str], dict[str, dict[str, str]]]],
             failures: dict[str, str]) -> None:
    """The caller holds the users' locks."""
    for u in users:
        inst = InstanceCore(ctx, u)
        try:
            rec = inst.record()
            new_cfg, new_devs = inst.expanded(rec)
            inst._apply_quota(new_devs, rec, before[u][1])
            inst._write_lxc_config(rec, (new_cfg, new_devs))  # composed once, used throughout
            if inst.state in ("RUNNING", "FROZEN"):
                inst._apply_live(before[u][0], new_cfg)
                inst._apply_devices_live(before[u][1], new_devs, rec, new_cfg)
            inst._keep_dhcp(new_devs, since=before[u][1])  # a nic the profile took away
        except Exception as e:  # collected: one instance must not stop the others
            failures[u] = str(e)
        journal.end(ctx.paths, u)
        journal.crashpoint("profile.applied-one")


def network_users(ctx: Context, network: str) -> list[str]:
    """The instances (by expanded devices) and profiles whose nics use ``network``."""
    return networks_users(ctx, [network])[network]


def networks_users(ctx: Context, networks: Iterable[str]) -> dict[str, list[str]]:
    """``network_users`` of each of ``networks`` in one pass over the instances and profiles
    (a listing of every network pays for one walk, not one per network)."""
    wanted: dict[str, list[str]] = {n: [] for n in networks}

    def used(devs: Mapping[str, Mapping[str, str]]) -> set[str]:
        out: set[str] = set()
        for d in devs.values():
            if d.get("type") == "nic":
                out.update(v for v in (d.get("network"), d.get("parent")) if v in wanted)
        return out

    for n in record.names(ctx.paths):
        inst = InstanceCore(ctx, n)
        try:
            rec = inst.record()
        except NotFound:
            continue
        except CorruptRecord as e:
            log.warning("%s", e)  # its devices are unknown: listed elsewhere as ERROR
            continue
        try:
            _, devs = inst._expanded_present(rec)
            nets = used(devs)
        except Exception:
            # an instance that cannot be expanded (a profile unreadable) still uses what
            # its own devices or any readable profile of it name: counted, never skipped
            nets = used(rec.devices).union(*(used(_profile_devices(ctx, p))
                                             for p in rec.profiles))
        for net in sorted(nets):
            wanted[net].append(n)
    for p in ctx.profiles.contents():  # what they hold: no walk over the instances per profile
        for net in sorted({d["network"] for d in p.devices.values()
                           if d.get("type") == "nic" and d.get("network") in wanted}):
            wanted[net].append(f"profile:{p.name}")
    return wanted


def _profile_devices(ctx: Context, name: str) -> dict[str, dict[str, str]]:
    try:
        return ctx.profiles.read(name).devices
    except Exception:
        return {}


# -- what users hold ---------------------------------------------------------------------------

class Profile(RootModel[Context]):
    """One profile: ``host.profiles["web"]``. Attributes are read from its file when asked;
    ``update``/``modify`` re-apply the change to every instance using it (live where LXD
    applies live), as ``Host.update_profile`` does."""

    kind = "profile"

    def _repr_html_(self) -> str:
        from .notebook import profile_html
        return profile_html(self.record())

    def record(self) -> ProfileRecord:
        """The profile as stored now, with ``used_by`` (reads every instance record)."""
        return self._ctx.profiles.get(self._name)

    def to_dict(self) -> dict[str, Any]:
        """LXD's shape: name, description, config, devices, used_by (instance names)."""
        return self.record().to_dict()

    @property
    def exists(self) -> bool:
        return self._ctx.profiles.exists(self._name)

    @property
    def description(self) -> str:
        return self._ctx.profiles.read(self._name).description

    @property
    def config(self) -> dict[str, str]:
        return dict(self._ctx.profiles.read(self._name).config)

    @property
    def devices(self) -> dict[str, dict[str, str]]:
        return {k: dict(v) for k, v in self._ctx.profiles.read(self._name).devices.items()}

    @property
    def used_by(self) -> builtins.list[str]:
        """The instances whose record names this profile."""
        self._ctx.profiles.read(self._name)  # NotFound for a deleted profile
        return profile_users(self._ctx.paths, self._name)

    def update(self, *, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None,
               description: str | None = None) -> None:
        """Replace the config, devices and/or description (``None`` keeps that part), then
        re-apply to every instance using the profile; see ``update_profile`` for what happens
        when some cannot take it."""
        update_profile(self._ctx, self._name, config=config, devices=devices,
                       description=description)

    def modify(self, change: Callable[[ProfileRecord], None]) -> None:
        """Read-modify-write under the profile's lock, re-applied like ``update``."""
        modify_profile(self._ctx, self._name, change)

    def set_config(self, key: str, value: str) -> None:
        self.modify(lambda p: p.config.__setitem__(key, value))

    def unset_config(self, key: str) -> None:
        def change(p: ProfileRecord) -> None:
            if key not in p.config:
                from .errors import NotFound
                raise NotFound("config key", key, f"not set in profile {self._name!r}")
            del p.config[key]
        self.modify(change)

    def delete(self) -> None:
        """Refused for ``default`` and while an instance uses the profile (LXD's rules)."""
        self._ctx.profiles.delete(self._name)

    def rename(self, new: str) -> Profile:
        """Refused for ``default`` and while an instance uses the profile."""
        self._ctx.profiles.rename(self._name, new)
        return Profile(self._ctx, new)


class Profiles(Collection[Profile]):
    """The profiles of a root: ``host.profiles["web"]``, ``in``, iteration, ``create``."""

    kind = "profile"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def names(self) -> builtins.list[str]:
        return self.ctx.profiles.names()

    def _exists(self, name: str) -> bool:
        names.validate_profile_name(name)  # no path outside the profiles directory
        return self.ctx.profiles.exists(name)

    def _model(self, name: str) -> Profile:
        return Profile(self.ctx, name)

    def exists(self, name: str) -> bool:
        return name in self

    def create(self, name: str, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None,
               description: str = "") -> Profile:
        """A new profile (validated: a config liblxc would refuse is refused now)."""
        self.ctx.profiles.create(name, config, devices, description)
        return Profile(self.ctx, name)

    def update(self, name: str, *, config: Mapping[str, str] | None = None,
               devices: Mapping[str, Mapping[str, str]] | None = None,
               description: str | None = None) -> None:
        """``Profile.update`` by name: saved, then re-applied to the instances using it."""
        update_profile(self.ctx, name, config=config, devices=devices, description=description)

    def modify(self, name: str, change: Callable[[ProfileRecord], None]) -> None:
        modify_profile(self.ctx, name, change)

    def delete(self, name: str) -> None:
        self.ctx.profiles.delete(name)

    def rename(self, old: str, new: str) -> Profile:
        self.ctx.profiles.rename(old, new)
        return Profile(self.ctx, new)

    def _repr_html_(self) -> str:
        from .notebook import profiles_html
        return profiles_html(self.ctx.profiles.list())
