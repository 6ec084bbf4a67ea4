#!/usr/bin/python
# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: storage_pool
short_description: Manage lxdlib storage pools
version_added: 0.1.0
description:
  - Creates and deletes a storage pool (btrfs, zfs or dir) of an lxdlib root on the target
    host, and sets its description.
  - A pool's config says where and how its data is kept, so it cannot change once the pool is
    made; a task whose O(config) differs from an existing pool's fails rather than pretending.
author:
  - lxdlib developers (@lxdlib)
extends_documentation_fragment:
  - lxdlib.containers.root
options:
  name:
    description: The pool's name.
    type: str
    required: true
  driver:
    description:
      - The storage driver of a new pool (V(btrfs) when not given).
      - An existing pool's driver cannot change; a task naming another one fails.
    type: str
    choices: [btrfs, zfs, dir]
  config:
    description:
      - The pool's config when it is made (C(size) for a loop-backed pool, C(source) for a
        device, a directory or a dataset). Only the keys given are compared with an existing
        pool.
    type: dict
  description:
    description: The pool's description.
    type: str
  state:
    description: Whether the pool exists. A pool in use cannot be deleted.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
    description: Reports whether the pool would be created, described or deleted.
  diff_mode:
    support: none
    description: No diff is shown; RV(actions) lists what changed.
"""

EXAMPLES = r"""
- name: A 20 GiB loop-backed btrfs pool
  lxdlib.containers.storage_pool:
    name: fast
    driver: btrfs
    config:
      size: 20GiB

- name: A plain directory pool
  lxdlib.containers.storage_pool:
    name: plain
    driver: dir
    config:
      source: /srv/lxdlib-plain
"""

RETURN = r"""
pool:
  description: The pool after the task (empty once deleted).
  returned: always
  type: dict
  contains:
    name:
      description: Its name.
      type: str
    driver:
      description: Its driver.
      type: str
    config:
      description: Its config.
      type: dict
    description:
      description: Its description.
      type: str
    used_by:
      description: What keeps data on it (instances, profiles).
      type: list
      elements: str
  sample:
    name: fast
    driver: btrfs
    config: {"size": "20GiB"}
    description: ""
    used_by: []
actions:
  description: What the task did (create, describe, delete).
  returned: always
  type: list
  elements: str
  sample: [create]
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


def main():
    spec = dict(
        name=dict(type="str", required=True),
        driver=dict(type="str", choices=["btrfs", "zfs", "dir"]),
        config=dict(type="dict"),
        description=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    spec.update(root_argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    host = open_host(module)
    name, check = p["name"], module.check_mode
    wanted = merge_config({}, wanted_config(p["config"]))
    actions = []
    try:
        exists = name in host.pools
        after = host.pools[name].to_dict() if exists else {}
        if p["state"] == "absent":
            if exists:
                actions.append("delete")
                if not check:
                    host.pools.delete(name)
            after = {}
        elif not exists:
            actions.append("create")
            driver = p["driver"] or "btrfs"
            after = {"name": name, "driver": driver, "config": wanted,
                     "description": p["description"] or "", "used_by": []}
            if not check:
                after = host.pools.create(name, driver, wanted,
                                          p["description"] or "").to_dict()
        else:
            if p["driver"] and after["driver"] != p["driver"]:
                module.fail_json(msg="pool %r uses the %s driver, not %s: a pool's driver "
                                     "cannot change" % (name, after["driver"], p["driver"]))
            differ = sorted(k for k, v in wanted.items() if after["config"].get(k) != v)
            if differ:
                module.fail_json(msg="pool %r has other values for %s: a pool's config "
                                     "cannot change once it is made" % (name, ", ".join(differ)),
                                 pool=plain(after))
            if p["description"] is not None and p["description"] != after["description"]:
                actions.append("describe")
                if not check:
                    host.pools[name].update(description=p["description"])
                    after = host.pools[name].to_dict()
                else:
                    after["description"] = p["description"]
    except Exception as e:
        if is_lxdlib_error(e):
            fail(module, e, actions=actions)
        raise
    module.exit_json(changed=bool(actions), actions=actions, pool=plain(after))


if __name__ == "__main__":
    main()
