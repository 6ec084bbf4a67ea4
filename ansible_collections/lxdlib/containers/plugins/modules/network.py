#!/usr/bin/python
# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: network
short_description: Manage lxdlib networks (bridges with DHCP, DNS and NAT)
version_added: 0.1.0
description:
  - Creates, changes and deletes a managed network of an lxdlib root on the target host. A
    network that is up takes a change at once.
author:
  - lxdlib developers (@lxdlib)
extends_documentation_fragment:
  - lxdlib.containers.root
options:
  name:
    description: The network's name, which is also the bridge's interface name (at most 15
      characters).
    type: str
    required: true
  state:
    description: Whether the network exists. A network in use cannot be deleted.
    type: str
    choices: [present, absent]
    default: present
  config:
    description:
      - Config keys (C(ipv4.address), C(ipv4.nat), C(ipv6.address), C(dns.domain)...). A null
        value removes a key; keys not named are left alone.
      - C(ipv4.address=auto) and C(ipv6.address=auto) pick a free subnet when the network is
        made; later runs take any address that was picked as meeting C(auto).
    type: dict
  description:
    description: The network's description.
    type: str
attributes:
  check_mode:
    support: full
    description: Reports whether the network would be created, changed or deleted.
  diff_mode:
    support: full
    description: Shows the config and description before and after.
seealso:
  - module: lxdlib.containers.instance
"""

EXAMPLES = r"""
- name: A NATed bridge on a chosen subnet
  lxdlib.containers.network:
    name: lxdbr1
    config:
      ipv4.address: 10.42.0.1/24
      ipv4.nat: true
      ipv6.address: none

- name: Deleted once no instance or profile uses it
  lxdlib.containers.network:
    name: lxdbr1
    state: absent
"""

RETURN = r"""
network:
  description: The network after the task (empty once deleted).
  returned: always
  type: dict
  contains:
    name:
      description: Its name.
      type: str
    config:
      description: Its config, with C(auto) addresses resolved.
      type: dict
    description:
      description: Its description.
      type: str
  sample:
    name: lxdbr1
    config: {"ipv4.address": "10.42.0.1/24", "ipv4.nat": "true", "ipv6.address": "none"}
    description: ""
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
    satisfied,
    wanted_config,
)

RESOLVED = ("ipv4.address", "ipv6.address")


def describe(net):
    rec = net.record()
    return {"name": net.name, "config": dict(rec.get("config") or {}),
            "description": str(rec.get("description") or "")}


def main():
    spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        config=dict(type="dict"),
        description=dict(type="str"),
    )
    spec.update(root_argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    host = open_host(module)
    name, check = p["name"], module.check_mode
    wanted = wanted_config(p["config"])
    changed = False
    try:
        exists = name in host.networks
        before = describe(host.networks[name]) if exists else {}
        after = dict(before)
        if p["state"] == "absent":
            if exists:
                changed = True
                if not check:
                    host.networks.delete(name)
            after = {}
        elif not exists:
            changed = True
            config = merge_config({}, wanted)
            after = {"name": name, "config": config, "description": p["description"] or ""}
            if not check:
                after = describe(host.networks.create(name, config, p["description"] or ""))
        else:
            new_config = None
            if not satisfied(before["config"], wanted, RESOLVED):
                todo = {k: v for k, v in wanted.items()
                        if not (k in RESOLVED and v == "auto"
                                and before["config"].get(k) not in (None, "none"))}
                new_config = merge_config(before["config"], todo)
            description = p["description"]
            if description is not None and description == before["description"]:
                description = None
            if new_config is not None or description is not None:
                changed = True
                if check:
                    if new_config is not None:
                        after["config"] = new_config
                    if description is not None:
                        after["description"] = description
                else:
                    host.networks[name].update(config=new_config, description=description)
                    after = describe(host.networks[name])
    except Exception as e:
        if is_lxdlib_error(e):
            fail(module, e)
        raise
    result = {"changed": changed, "network": plain(after)}
    if module._diff:
        result["diff"] = {"before": plain(before), "after": plain(after)}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
