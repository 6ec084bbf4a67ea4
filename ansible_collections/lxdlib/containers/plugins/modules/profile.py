#!/usr/bin/python
# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: profile
short_description: Manage lxdlib profiles
version_added: 0.1.0
description:
  - Creates, changes and deletes a profile of an lxdlib root on the target host.
  - A change is applied to every instance that uses the profile, live where lxdlib applies
    live (as C(lxdlib profile edit) does).
author:
  - lxdlib developers (@lxdlib)
extends_documentation_fragment:
  - lxdlib.containers.root
options:
  name:
    description: The profile's name.
    type: str
    required: true
  state:
    description: Whether the profile exists. C(default) and profiles in use cannot be deleted.
    type: str
    choices: [present, absent]
    default: present
  config:
    description:
      - Config keys the profile sets. A null value removes the key; keys not named are left
        alone unless O(purge).
    type: dict
  devices:
    description:
      - Devices by name, each a mapping of its settings. A named device is replaced whole; a
        null value removes it; devices not named are left alone unless O(purge).
    type: dict
  purge:
    description: Make O(config) and O(devices) the profile's whole config and device set.
    type: bool
    default: false
  description:
    description: The profile's description.
    type: str
attributes:
  check_mode:
    support: full
    description: Reports whether the profile would be created, changed or deleted.
  diff_mode:
    support: full
    description: Shows the config, devices and description before and after.
seealso:
  - module: lxdlib.containers.instance
"""

EXAMPLES = r"""
- name: A profile that caps memory and mounts a shared directory
  lxdlib.containers.profile:
    name: web
    description: web servers
    config:
      limits.memory: 256MiB
    devices:
      shared:
        type: disk
        source: /srv/shared
        path: /shared
        readonly: true

- name: Exactly this config, nothing else
  lxdlib.containers.profile:
    name: web
    purge: true
    config:
      limits.cpu: 1

- name: Removed (refused while an instance uses it)
  lxdlib.containers.profile:
    name: web
    state: absent
"""

RETURN = r"""
profile:
  description: The profile after the task (empty once deleted).
  returned: always
  type: dict
  contains:
    name:
      description: Its name.
      type: str
    config:
      description: Its config.
      type: dict
    devices:
      description: Its devices.
      type: dict
    description:
      description: Its description.
      type: str
    used_by:
      description: The instances using it.
      type: list
      elements: str
  sample:
    name: web
    config: {"limits.memory": "256MiB"}
    devices: {}
    description: web servers
    used_by: [web1]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lxdlib.containers.plugins.module_utils.common import (
    fail,
    is_lxdlib_error,
    open_host,
    plain,
    root_argument_spec,
)
from ansible_collections.lxdlib.containers.plugins.module_utils.merge import (
    merge_config,
    merge_devices,
    wanted_config,
    wanted_devices,
)


def describe(profile):
    return {"name": profile.name, "config": profile.config, "devices": profile.devices,
            "description": profile.description, "used_by": profile.used_by}


def diffable(desc):
    return {k: v for k, v in desc.items() if k != "used_by"}


def main():
    spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        config=dict(type="dict"),
        devices=dict(type="dict"),
        purge=dict(type="bool", default=False),
        description=dict(type="str"),
    )
    spec.update(root_argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    try:
        config = wanted_config(p["config"])
        devices = wanted_devices(p["devices"])
    except ValueError as e:
        module.fail_json(msg=str(e))
    host = open_host(module)
    name, check = p["name"], module.check_mode
    changed = False
    try:
        exists = name in host.profiles
        before = describe(host.profiles[name]) if exists else {}
        after = dict(before)
        if p["state"] == "absent":
            if exists:
                changed = True
                if not check:
                    host.profiles.delete(name)
            after = {}
        elif not exists:
            changed = True
            after = {"name": name, "config": merge_config({}, config),
                     "devices": merge_devices({}, devices),
                     "description": p["description"] or "", "used_by": []}
            if not check:
                after = describe(host.profiles.create(name, after["config"], after["devices"],
                                                      after["description"]))
        else:
            change = {}
            new_config = merge_config(before["config"], config, p["purge"])
            new_devices = merge_devices(before["devices"], devices, p["purge"])
            if new_config != before["config"]:
                change["config"] = new_config
            if new_devices != before["devices"]:
                change["devices"] = new_devices
            if p["description"] is not None and p["description"] != before["description"]:
                change["description"] = p["description"]
            if change:
                changed = True
                if check:
                    after.update(change)
                else:
                    host.profiles.update(name, **change)
                    after = describe(host.profiles[name])
    except Exception as e:
        if is_lxdlib_error(e):
            fail(module, e)
        raise
    result = {"changed": changed, "profile": plain(after)}
    if module._diff:
        result["diff"] = {"before": plain(diffable(before)), "after": plain(diffable(after))}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
