#!/usr/bin/python
# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: instance
short_description: Create, configure, start, stop and delete lxdlib instances
version_added: 0.1.0
description:
  - Brings one system container of an lxdlib root on the target host to the state a task
    describes, through the lxdlib Python library (no daemon is involved).
  - Only what the task names is compared and changed, so a second run of the same task
    reports C(changed=false).
  - The image (O(source)), storage pool and O(ephemeral) are used when the instance is made;
    an existing instance is never re-created to match them.
author:
  - lxdlib developers (@lxdlib)
extends_documentation_fragment:
  - lxdlib.containers.root
options:
  name:
    description: The instance's name.
    type: str
    required: true
  state:
    description:
      - V(present) makes sure the instance exists (created stopped when missing) and leaves its
        power state alone.
      - V(started), V(stopped) and V(frozen) also bring it to that power state. V(frozen) starts
        a stopped instance first.
      - V(restarted) restarts a running instance and starts a stopped one; it always reports a
        change.
      - V(absent) deletes the instance with its snapshots (a running one is stopped first).
    type: str
    choices: [present, started, stopped, frozen, restarted, absent]
    default: started
  source:
    description:
      - The image to make the instance from when it does not exist - a local alias or
        fingerprint, or C(<remote>:<alias>) of a simplestreams remote (downloaded and cached).
      - Required to create an instance.
    type: str
    aliases: [image]
  profiles:
    description:
      - The profiles, in the order they apply. When not given, a new instance gets C(default)
        and an existing one keeps its own.
    type: list
    elements: str
  config:
    description:
      - Instance config keys (C(limits.memory), C(user.*), C(environment.*)...). Values are
        stored as strings; YAML booleans become C(true)/C(false).
      - A key with a null value is removed. Keys not named are left alone unless O(purge).
    type: dict
  devices:
    description:
      - Devices by name, each a mapping of its settings (C(type), C(path), C(source)...). A named
        device is replaced whole; a null value removes the device.
    type: dict
  purge:
    description:
      - Make O(config) and O(devices) the whole local config and device set, removing the keys
        and devices the task does not name (C(volatile.*) and C(image.*) keys are kept).
    type: bool
    default: false
  description:
    description: The instance's description.
    type: str
  ephemeral:
    description:
      - Make a new instance ephemeral - deleted when it stops. Used at creation only.
      - O(state=stopped) therefore deletes an ephemeral instance.
    type: bool
    default: false
  pool:
    description: The storage pool for a new instance's root volume (default - the profile's).
    type: str
  force_stop:
    description: Kill the instance instead of asking its init to halt (stop, restart, delete).
    type: bool
    default: false
  timeout:
    description: Seconds to wait for a graceful stop before failing.
    type: int
    default: 30
  wait_for_ipv4:
    description:
      - After the instance is running, wait until it has a global IPv4 address (from DHCP),
        for at most O(timeout) seconds.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports what would be created, changed, started or stopped.
  diff_mode:
    support: full
    description: Shows the config, devices, profiles, description and state before and after.
seealso:
  - module: lxdlib.containers.profile
  - module: lxdlib.containers.snapshot
  - plugin: lxdlib.containers.lxdlib
    plugin_type: connection
"""

EXAMPLES = r"""
- name: A running web container with 512 MiB of memory
  lxdlib.containers.instance:
    name: web1
    source: busybox
    profiles: [default, web]
    config:
      limits.memory: 512MiB
      user.role: web

- name: Stop it, killing it if it does not halt within 10 s
  lxdlib.containers.instance:
    name: web1
    state: stopped
    timeout: 10

- name: Give it a data disk and drop a device it had
  lxdlib.containers.instance:
    name: web1
    devices:
      data:
        type: disk
        source: /srv/web1
        path: /data
      oldnic: null

- name: Gone, with its snapshots
  lxdlib.containers.instance:
    name: web1
    state: absent
    force_stop: true
"""

RETURN = r"""
instance:
  description: The instance as it is after the task (or would be, in check mode); empty once
    deleted.
  returned: always
  type: dict
  contains:
    name:
      description: Its name.
      type: str
    status:
      description: Running, Stopped or Frozen.
      type: str
    profiles:
      description: Its profiles in order.
      type: list
      elements: str
    config:
      description: Local config (C(volatile.*) keys included).
      type: dict
    devices:
      description: Local devices.
      type: dict
    ephemeral:
      description: Whether it is deleted when it stops.
      type: bool
    ipv4:
      description: Global IPv4 addresses inside the instance.
      type: list
      elements: str
  sample:
    name: web1
    status: Running
    profiles: [default]
    config: {"limits.memory": "512MiB"}
    devices: {}
    ephemeral: false
    ipv4: ["10.81.3.17"]
actions:
  description: What the task did (or would do), in order.
  returned: always
  type: list
  elements: str
  sample: [create, start]
"""

import time

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

STATUS = {"RUNNING": "Running", "STOPPED": "Stopped", "FROZEN": "Frozen"}


def kept_key(key):
    """Keys a purge never removes: lxdlib's own state and the image's description."""
    return key.startswith(("volatile.", "image."))


def describe(inst):
    """The instance as returned and diffed."""
    rec = inst.record()
    state = inst.state
    out = {
        "name": rec.name,
        "status": STATUS.get(state, state.title()),
        "profiles": list(rec.profiles),
        "config": dict(rec.config),
        "devices": {k: dict(v) for k, v in rec.devices.items()},
        "description": rec.description,
        "ephemeral": rec.ephemeral,
        "ipv4": [],
    }
    if state in ("RUNNING", "FROZEN"):
        try:
            out["ipv4"] = inst.addresses("inet")
        except Exception:  # an address read is informative only
            out["ipv4"] = []
    return out


def diffable(desc):
    """What the diff shows: no volatile keys (they change on every start)."""
    if not desc:
        return {}
    return {
        "status": desc["status"],
        "profiles": desc["profiles"],
        "config": {k: v for k, v in desc["config"].items() if not k.startswith("volatile.")},
        "devices": desc["devices"],
        "description": desc["description"],
    }


def power_actions(status, state):
    """The verbs that take an instance in ``status`` to ``state``."""
    if state == "started":
        return {"Stopped": ["start"], "Frozen": ["resume"]}.get(status, [])
    if state == "stopped":
        return {"Running": ["stop"], "Frozen": ["resume", "stop"]}.get(status, [])
    if state == "frozen":
        return {"Stopped": ["start", "freeze"], "Running": ["freeze"]}.get(status, [])
    if state == "restarted":
        return {"Stopped": ["start"], "Running": ["restart"],
                "Frozen": ["resume", "restart"]}.get(status, [])
    return []


AFTER = {"start": "Running", "resume": "Running", "restart": "Running", "stop": "Stopped",
         "freeze": "Frozen"}


def run_power(module, inst, verb):
    p = module.params
    if verb in ("start", "resume"):
        inst.start()
    elif verb == "stop":
        inst.stop(force=p["force_stop"], timeout=p["timeout"])
    elif verb == "freeze":
        inst.pause()
    elif verb == "restart":
        inst.restart(force=p["force_stop"], timeout=p["timeout"])


def wait_ipv4(module, inst):
    deadline = time.monotonic() + module.params["timeout"]
    while time.monotonic() < deadline:
        if inst.addresses("inet"):
            return
        time.sleep(0.5)
    module.fail_json(msg="instance %r got no IPv4 address within %ss"
                     % (inst.name, module.params["timeout"]))


def main():
    spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="started",
                   choices=["present", "started", "stopped", "frozen", "restarted", "absent"]),
        source=dict(type="str", aliases=["image"]),
        profiles=dict(type="list", elements="str"),
        config=dict(type="dict"),
        devices=dict(type="dict"),
        purge=dict(type="bool", default=False),
        description=dict(type="str"),
        ephemeral=dict(type="bool", default=False),
        pool=dict(type="str"),
        force_stop=dict(type="bool", default=False),
        timeout=dict(type="int", default=30),
        wait_for_ipv4=dict(type="bool", default=False),
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
    name, state, check = p["name"], p["state"], module.check_mode
    actions = []
    try:
        exists = name in host.instances
        inst = host.instances.get(name) if exists else None
        before = describe(inst) if exists else {}
        after = dict(before)
        if state == "absent":
            if exists:
                if before["status"] != "Stopped" and not p["force_stop"]:
                    actions.append("stop")
                    if not check:
                        if before["status"] == "Frozen":
                            inst.start()
                        inst.stop(timeout=p["timeout"])
                actions.append("delete")
                if not check and inst.exists:  # an ephemeral one went with its stop
                    inst.delete(force=True)
            after = {}
        else:
            if not exists:
                if not p["source"]:
                    module.fail_json(msg="instance %r does not exist: give source (an image) "
                                         "to create it" % name)
                new_config = merge_config({}, config)
                new_devices = merge_devices({}, devices)
                actions.append("create")
                after = {"name": name, "status": "Stopped",
                         "profiles": p["profiles"] if p["profiles"] is not None
                         else ["default"],
                         "config": new_config, "devices": new_devices,
                         "description": p["description"] or "",
                         "ephemeral": p["ephemeral"], "ipv4": []}
                if not check:
                    inst = host.create(p["source"], name, profiles=p["profiles"],
                                       config=new_config, devices=new_devices, pool=p["pool"],
                                       ephemeral=p["ephemeral"],
                                       description=p["description"] or "")
                    after = describe(inst)
            else:
                local = {k: v for k, v in before["config"].items()
                         if not k.startswith("volatile.")}
                new_config = merge_config(local, config, p["purge"], kept_key)
                new_devices = merge_devices(before["devices"], devices, p["purge"])
                change = {}
                if new_config != local:
                    change["config"] = new_config
                if new_devices != before["devices"]:
                    change["devices"] = new_devices
                if p["profiles"] is not None and list(p["profiles"]) != before["profiles"]:
                    change["profiles"] = list(p["profiles"])
                if p["description"] is not None and p["description"] != before["description"]:
                    change["description"] = p["description"]
                if change:
                    actions.append("update")
                    if check:
                        after = dict(before)
                        after.update(change)
                        if "config" in change:
                            volatile = {k: v for k, v in before["config"].items()
                                        if k.startswith("volatile.")}
                            after["config"] = dict(new_config, **volatile)
                    else:
                        inst.update(**change)
                        after = describe(inst)
            status = after["status"]
            for verb in power_actions(status, state):
                actions.append(verb)
                if not check:
                    run_power(module, inst, verb)
                status = AFTER[verb]
            if not check and inst is not None and inst.exists:
                if p["wait_for_ipv4"] and status == "Running":
                    wait_ipv4(module, inst)
                after = describe(inst)
            elif check:
                after = dict(after, status=status)
            else:
                after = {}  # an ephemeral instance deleted by its stop
    except Exception as e:
        if is_lxdlib_error(e):
            fail(module, e, actions=actions)
        raise
    result = {"changed": bool(actions), "actions": actions, "instance": plain(after)}
    if module._diff:
        result["diff"] = {"before": plain(diffable(before)), "after": plain(diffable(after))}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
