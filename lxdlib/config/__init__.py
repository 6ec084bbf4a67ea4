"""lxdlib's pure configuration layer: names, units, the instance-option schema, profile
expansion, device validation, snapshot naming/scheduling and cgroup-limit translation.

Nothing here touches the filesystem, liblxc or the kernel: callers pass in host facts (CPU count,
MemTotal, cgroup version) and get back validated values or the writes to make.

The submodules are the API (``from lxdlib.config import expand, limits``); the names re-exported
here are conveniences, loaded from their submodules on first use (``lxdlib.lazyexports``, as
in ``lxdlib.storage``): a command that needs one submodule — ``expand`` to compose an
instance's config for ``exec`` — does not import the others (the device and key validation
alone cost a start ~1 ms). ``expand.expand`` is deliberately *not* re-exported, so that
``lxdlib.config.expand`` stays the module.
"""

from __future__ import annotations

from ..errors import TYPE_CHECKING
from ..lazyexports import exports

if TYPE_CHECKING:
    from .devices import (
        ProxyAddress,
        parse_proxy_address,
        validate_device,
        validate_device_name,
        validate_devices,
        validate_proxy,
    )
    from .expand import (
        ProfileData,
        expand_config,
        expand_devices,
        override_device,
        resolve_profile_list,
        root_disk,
    )
    from .limits import (
        cgroup_settings,
        format_cpuset,
        live_settings,
        parse_cpuset,
        pick_cpus,
        prlimits,
        unset_values,
    )
    from .names import (
        split_snapshot_ref,
        validate_alias_name,
        validate_instance_name,
        validate_profile_name,
        validate_snapshot_name,
    )
    from .schema import (
        KeySpec,
        is_live,
        parse_raw_idmap,
        parse_raw_lxc,
        spec_for,
        validate_instance_config,
        validate_key,
        validate_server_config,
    )
    from .snapshots import next_run, next_snapshot_name, parse_schedule, schedule_due
    from .units import (
        expiry_date,
        format_size,
        parse_bit_rate,
        parse_bool,
        parse_duration_expiry,
        parse_expiry,
        parse_size,
    )

__all__ = [
    "KeySpec",
    "ProfileData",
    "ProxyAddress",
    "cgroup_settings",
    "expand_config",
    "expand_devices",
    "expiry_date",
    "format_cpuset",
    "format_size",
    "is_live",
    "live_settings",
    "next_run",
    "next_snapshot_name",
    "override_device",
    "parse_bit_rate",
    "parse_bool",
    "parse_cpuset",
    "parse_duration_expiry",
    "parse_expiry",
    "parse_proxy_address",
    "parse_raw_idmap",
    "parse_raw_lxc",
    "parse_schedule",
    "parse_size",
    "pick_cpus",
    "prlimits",
    "resolve_profile_list",
    "root_disk",
    "schedule_due",
    "spec_for",
    "split_snapshot_ref",
    "unset_values",
    "validate_alias_name",
    "validate_device",
    "validate_device_name",
    "validate_devices",
    "validate_instance_config",
    "validate_instance_name",
    "validate_key",
    "validate_profile_name",
    "validate_proxy",
    "validate_server_config",
    "validate_snapshot_name",
]

# each public name, by the submodule that defines it
_WHERE = {
    "KeySpec": "schema", "ProfileData": "expand", "ProxyAddress": "devices",
    "cgroup_settings": "limits", "expand_config": "expand", "expand_devices": "expand",
    "expiry_date": "units", "format_cpuset": "limits", "format_size": "units", "is_live": "schema",
    "live_settings": "limits", "next_run": "snapshots", "next_snapshot_name": "snapshots",
    "override_device": "expand", "parse_bit_rate": "units", "parse_bool": "units",
    "parse_cpuset": "limits", "parse_duration_expiry": "units", "parse_expiry": "units",
    "parse_proxy_address": "devices", "parse_raw_idmap": "schema", "parse_raw_lxc": "schema",
    "parse_schedule": "snapshots", "parse_size": "units", "pick_cpus": "limits",
    "prlimits": "limits", "resolve_profile_list": "expand", "root_disk": "expand",
    "schedule_due": "snapshots", "spec_for": "schema", "split_snapshot_ref": "names",
    "unset_values": "limits", "validate_alias_name": "names", "validate_device": "devices",
    "validate_device_name": "devices", "validate_devices": "devices",
    "validate_instance_config": "schema", "validate_instance_name": "names",
    "validate_key": "schema", "validate_profile_name": "names", "validate_proxy": "devices",
    "validate_server_config": "schema", "validate_snapshot_name": "names",
}

__getattr__, __dir__ = exports(__name__, _WHERE, globals())
