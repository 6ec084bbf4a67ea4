#!/usr/bin/python
# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: migrate
short_description: Copy or move an lxdlib instance to another root or another host
version_added: 0.1.0
description:
  - Streams an instance from the root of the target host to another lxdlib root on the same
    machine (O(target_root)), or to another host through one of the root's SSH remotes
    (O(target_remote), as made by C(lxdlib remote add NAME ssh://...)).
  - The receiving side checks the stream as it would a hostile backup and makes the instance
    visible only once all of it arrived; a move deletes the source only after that.
  - A copy that finds the target instance already there changes nothing (unless O(refresh));
    a move that finds the source gone and the target there changes nothing, so a playbook
    that moves an instance can run again.
author:
  - lxdlib developers (@lxdlib)
extends_documentation_fragment:
  - lxdlib.containers.root
options:
  name:
    description: The instance to copy or move.
    type: str
    required: true
  new_name:
    description: Its name on the target (default O(name)).
    type: str
  target_root:
    description: Another lxdlib root on the same machine.
    type: path
  target_remote:
    description: An SSH remote of this root (C(lxdlib remote list)).
    type: str
  state:
    description:
      - V(copied) leaves the source; V(moved) deletes it once the target has committed.
    type: str
    choices: [copied, moved]
    default: copied
  refresh:
    description: When the target exists, send what changed since the last copy.
    type: bool
    default: false
  instance_only:
    description: Leave the snapshots behind.
    type: bool
    default: false
  stateless:
    description: A running instance is copied from a snapshot of it, or (move) stopped, sent
      and started on the target.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Says what would be sent, sends nothing.
  diff_mode:
    support: none
    description: A transfer has no before and after to show.
"""

EXAMPLES = r"""
- name: web1 to the second host, which runs it from now on
  lxdlib.containers.migrate:
    name: web1
    target_remote: host2
    state: moved
    stateless: true

- name: A copy into another root of the same machine, kept up to date
  lxdlib.containers.migrate:
    name: db1
    target_root: /srv/lxdlib-standby
    refresh: true
"""

RETURN = r"""
sent_bytes:
  description: How many bytes the transfer streamed (0 when nothing was sent).
  returned: always
  type: int
  sample: 1048576
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lxdlib.containers.plugins.module_utils.common import (
    fail,
    is_lxdlib_error,
    open_host,
    root_argument_spec,
)


def main():
    spec = dict(
        name=dict(type="str", required=True),
        new_name=dict(type="str"),
        target_root=dict(type="path"),
        target_remote=dict(type="str"),
        state=dict(type="str", default="copied", choices=["copied", "moved"]),
        refresh=dict(type="bool", default=False),
        instance_only=dict(type="bool", default=False),
        stateless=dict(type="bool", default=False),
    )
    spec.update(root_argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           required_one_of=[("target_root", "target_remote")],
                           mutually_exclusive=[("target_root", "target_remote")])
    p = module.params
    host = open_host(module)
    new_name = p["new_name"] or p["name"]
    try:
        import lxdlib
        from lxdlib.migrate import copy_between, local_argv
        if p["target_root"]:
            argv = local_argv(p["target_root"])
            far = lxdlib.Host(p["target_root"])
        else:
            from lxdlib.sshhost import ssh_command
            remote = host.images.remotes.get(p["target_remote"])
            argv = ssh_command(remote)
            far = lxdlib.connect(remote)
        try:
            there = new_name in far.instances
        finally:
            close = getattr(far, "close", None)
            if close is not None:
                close()
        here = p["name"] in host.instances
        moving = p["state"] == "moved"
        if not here:
            if there and moving:
                module.exit_json(changed=False, sent_bytes=0)
            module.fail_json(msg="instance %r not found" % p["name"], error="NotFound")
        if there and not p["refresh"]:
            if moving:
                module.fail_json(msg="instance %r already exists on the target" % new_name,
                                 error="AlreadyExists")
            module.exit_json(changed=False, sent_bytes=0)
        if module.check_mode:
            module.exit_json(changed=True, sent_bytes=0)
        out = copy_between(host.ctx, None, argv, p["name"], new_name, move=moving,
                           refresh=there and p["refresh"], instance_only=p["instance_only"],
                           stateless=p["stateless"])
    except Exception as e:  # lxdlib's typed errors fail the task; anything else is a bug
        if is_lxdlib_error(e):
            fail(module, e)
        raise
    module.exit_json(changed=True, sent_bytes=out.sent_bytes)


if __name__ == "__main__":
    main()
