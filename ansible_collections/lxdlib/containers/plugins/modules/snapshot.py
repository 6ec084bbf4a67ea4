#!/usr/bin/python
# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot
short_description: Take, expire, restore and delete snapshots of lxdlib instances
version_added: 0.1.0
description:
  - Manages one snapshot of an instance of an lxdlib root on the target host. A running
    instance is snapshotted without being stopped.
author:
  - lxdlib developers (@lxdlib)
extends_documentation_fragment:
  - lxdlib.containers.root
options:
  instance:
    description: The instance.
    type: str
    required: true
  name:
    description: The snapshot's name.
    type: str
    required: true
  state:
    description:
      - V(present) takes the snapshot when it does not exist, and sets its expiry.
      - V(restored) makes the instance what it was at the snapshot (a running instance is
        stopped, restored and started again). A restore always reports a change, as nothing
        tells whether the instance has moved on since.
      - V(absent) deletes it.
    type: str
    choices: [present, absent, restored]
    default: present
  expires_in:
    description:
      - When the snapshot expires, counted from when it was taken - C(30m), C(12h), C(7d),
        C(2w). Counting from the snapshot's own time keeps later runs from moving it.
    type: str
  expires_at:
    description: When the snapshot expires, as an ISO 8601 time (UTC when no zone is given).
    type: str
  no_expiry:
    description:
      - The snapshot never expires, whatever the instance's C(snapshots.expiry) says.
    type: bool
    default: false
  stateful:
    description:
      - Save the running processes too (CRIU), or, with V(restored), bring them back.
    type: bool
    default: false
  description:
    description: The description of a new snapshot.
    type: str
attributes:
  check_mode:
    support: full
    description: Reports what would be taken, changed, restored or deleted.
  diff_mode:
    support: none
    description: No diff is shown; RV(actions) lists what changed.
notes:
  - Without O(expires_in), O(expires_at) or O(no_expiry), a new snapshot gets the expiry of the
    instance's C(snapshots.expiry) and an existing one keeps its own.
seealso:
  - module: lxdlib.containers.instance
"""

EXAMPLES = r"""
- name: A snapshot before an upgrade, kept a week
  lxdlib.containers.snapshot:
    instance: web1
    name: before-upgrade
    expires_in: 7d

- name: Back to it
  lxdlib.containers.snapshot:
    instance: web1
    name: before-upgrade
    state: restored

- name: Dropped
  lxdlib.containers.snapshot:
    instance: web1
    name: before-upgrade
    state: absent
"""

RETURN = r"""
snapshot:
  description: The snapshot after the task (empty once deleted).
  returned: always
  type: dict
  contains:
    name:
      description: Its name.
      type: str
    created_at:
      description: When it was taken.
      type: str
    expires_at:
      description: When it expires, or null.
      type: str
    stateful:
      description: Whether it holds the processes too.
      type: bool
  sample:
    name: before-upgrade
    created_at: "2026-12-04T18:30:00+00:00"
    expires_at: "2026-12-11T18:30:00+00:00"
    stateful: false
actions:
  description: What the task did (create, expiry, restore, delete).
  returned: always
  type: list
  elements: str
  sample: [create]
"""

import datetime

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lxdlib.containers.plugins.module_utils.common import (
    fail,
    is_lxdlib_error,
    open_host,
    parse_duration,
    parse_time,
    plain,
    root_argument_spec,
)


def describe(snap):
    rec = snap.record()
    return {"name": rec.name, "created_at": rec.created_at, "expires_at": rec.expires_at,
            "stateful": rec.stateful, "description": rec.description}


def main():
    spec = dict(
        instance=dict(type="str", required=True),
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent", "restored"]),
        expires_in=dict(type="str"),
        expires_at=dict(type="str"),
        no_expiry=dict(type="bool", default=False),
        stateful=dict(type="bool", default=False),
        description=dict(type="str"),
    )
    spec.update(root_argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           mutually_exclusive=[("expires_in", "expires_at", "no_expiry")])
    p = module.params
    try:
        span = parse_duration(p["expires_in"])
        at = parse_time(p["expires_at"])
    except ValueError as e:
        module.fail_json(msg=str(e))
    host = open_host(module)
    check = module.check_mode
    actions = []
    try:
        inst = host.instances[p["instance"]]
        snaps = inst.snapshots
        exists = p["name"] in snaps
        after = describe(snaps[p["name"]]) if exists else {}
        if p["state"] == "absent":
            if exists:
                actions.append("delete")
                if not check:
                    snaps.delete(p["name"])
            after = {}
        elif p["state"] == "restored":
            if not exists:
                module.fail_json(msg="instance %r has no snapshot %r"
                                     % (p["instance"], p["name"]))
            actions.append("restore")
            if not check:
                snaps.restore(p["name"], stateful=p["stateful"])
        else:
            if not exists:
                actions.append("create")
                now = datetime.datetime.now(datetime.timezone.utc)
                expires = now + span if span is not None else at
                after = {"name": p["name"], "created_at": now, "expires_at": expires,
                         "stateful": p["stateful"], "description": p["description"] or ""}
                if not check:
                    made = snaps.create(p["name"], stateful=p["stateful"],
                                        no_expiry=p["no_expiry"],
                                        description=p["description"] or "")
                    rec = made.record()
                    if span is not None or at is not None:
                        made.update(expires_at=rec.created_at + span if span is not None
                                    else at)
                    after = describe(made)
            else:
                if span is not None:
                    want = after["created_at"] + span
                elif at is not None:
                    want = at
                elif p["no_expiry"]:
                    want = None
                else:
                    want = after["expires_at"]
                if want != after["expires_at"]:
                    actions.append("expiry")
                    after["expires_at"] = want
                    if not check:
                        snaps[p["name"]].update(expires_at=want)
                        after = describe(snaps[p["name"]])
    except Exception as e:
        if is_lxdlib_error(e):
            fail(module, e, actions=actions)
        raise
    module.exit_json(changed=bool(actions), actions=actions, snapshot=plain(after))


if __name__ == "__main__":
    main()
