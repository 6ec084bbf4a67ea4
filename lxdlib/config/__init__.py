"""lxdlib's pure configuration layer: names, units, the instance-option schema, profile
expansion, device validation, snapshot naming/scheduling and cgroup-limit translation.

Nothing here touches the filesystem, liblxc or the kernel: callers pass in host facts (CPU count,
MemTotal, cgroup version) and get back validated values or the writes to make.

The submodules are the API (``from lxdlib.config import expand, limits``); the names re-exported
here are conveniences. ``expand.expand`` is deliberately *not* re-exported, so that
``lxdlib.config.expand`` stays the module.
"""

from __future__ import annotations

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
