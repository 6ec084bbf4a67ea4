#!/usr/bin/python
# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: storage_volume
short_description: Manage lxdlib custom storage volumes
version_added: 0.1.0
description:
  - Creates, changes and deletes a custom volume in a storage pool of an lxdlib root on the
    target host, and attaches it to instances as a disk device.
author:
  - lxdlib developers (@lxdlib)
extends_documentation_fragment:
  - lxdlib.containers.root
options:
  pool:
    description: The pool holding the volume.
    type: str
    required: true
  name:
    description: The volume's name.
    type: str
    required: true
  state:
    description: Whether the volume exists. A volume in use cannot be deleted.
    type: str
    choices: [present, absent]
    default: present
  config:
    description:
      - Volume config (C(size) sets its quota, changed at once). A null value removes a key;
        keys not named are left alone.
    type: dict
  description:
    description: The volume's description.
    type: str
  attach:
    description:
      - Instances that must have the volume mounted - each C(instance) and C(path) inside it,
        and optionally the C(device) name (default - the volume's name). Attachments not named
        are left alone.
    type: list
    elements: dict
    default: []
attributes:
  check_mode:
    support: full
    description: Reports what would be created, changed, attached or deleted.
  diff_mode:
    support: full
    description: Shows the config and description before and after.
"""

EXAMPLES = r"""
- name: A 1 GiB data volume mounted at /data in web1
  lxdlib.containers.storage_volume:
    pool: default
    name: web1-data
    config:
      size: 1GiB
    attach:
      - instance: web1
        path: /data
"""

RETURN = r"""
volume:
  description: The volume after the task (empty once deleted).
  returned: always
  type: dict
  contains:
    name:
      description: Its name.
      type: str
    config:
      description: Its config.
      type: dict
    description:
      description: Its description.
      type: str
    used_by:
      description: The instances and profiles naming it.
      type: list
      elements: str
  sample:
    name: web1-data
    config: {"size": "1GiB"}
    description: ""
    used_by: [/1.0/instances/web1]
actions:
  description: What the task did, in order.
  returned: always
  type: list
  elements: str
  sample: [create, attach web1]
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
    wanted_config,
)


def describe(vol):
    rec = vol.record()
    return {"name": vol.name, "pool": vol.pool, "config": dict(rec.get("config") or {}),
            "description": str(rec.get("description") or ""),
            "used_by": list(rec.get("used_by") or [])}


def strip(desc):
    """What the diff shows."""
    return {k: v for k, v in desc.items() if k in ("config", "description")}


def attached(host, instance, pool, name, path):
    """Whether the instance has a disk device for this volume at ``path``."""
    devices = host.instances[instance].devices
    return any(d.get("type") == "disk" and d.get("pool") == pool and d.get("source") == name
               and d.get("path") == path for d in devices.values())


def main():
    spec = dict(
        pool=dict(type="str", required=True),
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        config=dict(type="dict"),
        description=dict(type="str"),
        attach=dict(type="list", elements="dict", default=[]),
    )
    spec.update(root_argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    host = open_host(module)
    key, check = "%s/%s" % (p["pool"], p["name"]), module.check_mode
    wanted = wanted_config(p["config"])
    for item in p["attach"]:
        if not item.get("instance") or not item.get("path"):
            module.fail_json(msg="each attach item needs instance and path")
    actions = []
    try:
        exists = key in host.volumes
        before = describe(host.volumes[key]) if exists else {}
        after = dict(before)
        if p["state"] == "absent":
            if exists:
                actions.append("delete")
                if not check:
                    host.volumes[key].delete()
            after = {}
        else:
            if not exists:
                actions.append("create")
                config = merge_config({}, wanted)
                after = {"name": p["name"], "pool": p["pool"], "config": config,
                         "description": p["description"] or "", "used_by": []}
                if not check:
                    after = describe(host.volumes.create(key, config, p["description"] or ""))
            else:
                new_config = merge_config(before["config"], wanted)
                change = {}
                if new_config != before["config"]:
                    change["config"] = new_config
                if p["description"] is not None and p["description"] != before["description"]:
                    change["description"] = p["description"]
                if change:
                    actions.append("update")
                    if check:
                        after.update(change)
                    else:
                        host.volumes[key].update(**change)
                        after = describe(host.volumes[key])
            for item in p["attach"]:
                if exists and attached(host, item["instance"], p["pool"], p["name"],
                                       item["path"]):
                    continue
                actions.append("attach " + item["instance"])
                if not check:
                    host.volumes[key].attach(item["instance"], item["path"], item.get("device"))
            if actions and not check:
                after = describe(host.volumes[key])
    except Exception as e:
        if is_lxdlib_error(e):
            fail(module, e, actions=actions)
        raise
    result = {"changed": bool(actions), "actions": actions, "volume": plain(after)}
    if module._diff:
        result["diff"] = {"before": plain(strip(before)), "after": plain(strip(after))}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
