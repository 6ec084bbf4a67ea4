# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
name: lxdlib
short_description: The instances of lxdlib hosts as an inventory
version_added: 0.1.0
description:
  - Lists the instances of every configured lxdlib root - on the machine Ansible runs on, or
    on other hosts over SSH - by running C(lxdlib list --format json) there, and adds each
    instance as a host reached through the C(lxdlib.containers.lxdlib) connection plugin.
  - Host variables - C(lxdlib_status), C(lxdlib_ipv4), C(lxdlib_ipv6), C(lxdlib_profiles),
    C(lxdlib_image) (the C(image.*) keys without their prefix), C(lxdlib_user) (the C(user.*)
    keys likewise), C(lxdlib_ephemeral), C(lxdlib_source), plus what the connection needs
    (C(lxdlib_instance), C(lxdlib_root), C(lxdlib_host), C(lxdlib_command)).
  - Groups - C(lxdlib) (all), C(lxdlib_source_<source>), C(lxdlib_profile_<profile>),
    C(lxdlib_os_<image os>), C(lxdlib_status_<running|stopped|frozen|error>). Each source's
    group carries C(lxdlib_inventory_ms), how long listing that source took.
  - The inventory file's name must end in C(lxdlib.yml) or C(lxdlib.yaml).
author:
  - lxdlib developers (@lxdlib)
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin, which makes the file this plugin's.
    type: str
    required: true
    choices: [lxdlib.containers.lxdlib]
  sources:
    description:
      - The roots to list. Each item has C(name) (a label, used in group and host names),
        C(root) (the lxdlib root on that host; lxdlib's default when left out), C(ssh) (the
        SSH destination C([user@]host); left out for this machine), and optionally
        C(command) (the lxdlib command there) and C(ssh_args).
    type: list
    elements: dict
    required: true
  command:
    description: The lxdlib command, for sources that do not name their own.
    type: str
    default: lxdlib
  ssh_command:
    description: The SSH client for sources with C(ssh).
    type: str
    default: ssh
  hostname:
    description:
      - How an instance's inventory name is made, from C({source}) and C({instance}).
        Instances of different sources with the same name need C({source}) in it; a name
        already taken is skipped with a warning.
    type: str
    default: "{instance}"
  status:
    description: List only instances in these states (C(running), C(stopped), C(frozen)).
    type: list
    elements: str
    default: []
  strict_sources:
    description: Fail when a source cannot be listed, instead of warning and going on.
    type: bool
    default: false
  timeout:
    description: Seconds one source's listing may take.
    type: int
    default: 120
"""

EXAMPLES = r"""
# fleet.lxdlib.yml
plugin: lxdlib.containers.lxdlib
sources:
  - name: local
    root: /var/lib/lxdlib
  - name: node2
    ssh: root@node2.example
hostname: "{source}-{instance}"
status: [running]
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"
keyed_groups:
  - key: lxdlib_user.role | default('none')
    prefix: role
"""

import json
import re
import shlex
import subprocess
import time

from ansible.errors import AnsibleParserError
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible.utils.unsafe_proxy import wrap_var

CONNECTION = "lxdlib.containers.lxdlib"


def group_name(*parts):
    """A group name Ansible accepts: letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts)).lower()


def addresses(entry, family):
    """Global addresses of a family in ``lxdlib list --format json``'s state.network."""
    out = []
    network = ((entry.get("state") or {}).get("network")) or {}
    for ifname, iface in sorted(network.items()):
        if ifname == "lo":
            continue
        for addr in iface.get("addresses") or []:
            if addr.get("family") == family and addr.get("scope") == "global":
                out.append(addr.get("address"))
    return out


def prefixed(config, prefix):
    return {k[len(prefix):]: v for k, v in sorted(config.items()) if k.startswith(prefix)}


class InventoryModule(BaseInventoryPlugin, Constructable):

    NAME = "lxdlib.containers.lxdlib"

    def verify_file(self, path):
        return (super(InventoryModule, self).verify_file(path)
                and path.endswith(("lxdlib.yml", "lxdlib.yaml")))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache=cache)
        self._read_config_data(path)
        self.inventory.add_group("lxdlib")
        for index, source in enumerate(self.get_option("sources")):
            if not isinstance(source, dict):
                raise AnsibleParserError("%s: sources[%d] is not a mapping" % (path, index))
            self._add_source(source, index)

    def _list_command(self, source):
        command = shlex.split(source.get("command") or self.get_option("command"))
        if source.get("root"):
            command += ["--root", source["root"]]
        command += ["list", "--format", "json"]
        if not source.get("ssh"):
            return command
        ssh = shlex.split(self.get_option("ssh_command"))
        ssh += shlex.split(source.get("ssh_args") or "")
        return ssh + [source["ssh"], "--", " ".join(shlex.quote(a) for a in command)]

    def _listing(self, source):
        """The JSON listing of one source, and how long it took (ms)."""
        command = self._list_command(source)
        start = time.monotonic()
        try:
            proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=self.get_option("timeout"), check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise AnsibleParserError("cannot list %s: %s" % (source.get("name"), to_native(e)))
        took = (time.monotonic() - start) * 1000.0
        if proc.returncode != 0:
            raise AnsibleParserError("listing %s failed (%s): %s" % (
                source.get("name"), proc.returncode, to_native(proc.stderr).strip()))
        try:
            data = json.loads(to_text(proc.stdout))
        except ValueError as e:
            raise AnsibleParserError("listing %s is not JSON: %s" % (source.get("name"), e))
        if not isinstance(data, list):
            raise AnsibleParserError("listing %s is not a list" % source.get("name"))
        return data, took

    def _add_source(self, source, index):
        label = str(source.get("name") or source.get("ssh") or "local%d" % index)
        try:
            entries, took = self._listing(dict(source, name=label))
        except AnsibleParserError as e:
            if self.get_option("strict_sources"):
                raise
            self.display.warning(to_native(e))
            return
        source_group = self.inventory.add_group(group_name("lxdlib_source", label))
        self.inventory.add_child("lxdlib", source_group)
        self.inventory.set_variable(source_group, "lxdlib_inventory_ms", round(took, 1))
        wanted = set(s.lower() for s in self.get_option("status"))
        for entry in entries:
            status = str(entry.get("status") or "Error")
            if wanted and status.lower() not in wanted:
                continue
            self._add_instance(entry, label, source, source_group, status)

    def _add_instance(self, entry, label, source, source_group, status):
        # everything the listing says is the listed host's word (an SSH source may be
        # compromised) or an image's (``image.*`` keys are its properties): marked unsafe, so
        # that Ansible before 2.19, which renders a variable's "{{ ... }}" where it is used,
        # never runs a lookup one of them carries on the controller
        entry = wrap_var(entry)
        status = wrap_var(status)
        instance = entry["name"]
        host = self.get_option("hostname").format(source=label, instance=instance)
        if host in self.inventory.hosts:
            self.display.warning("lxdlib inventory: %s of %s is named %s, which is taken; "
                                 "skipped (put {source} in the hostname option)"
                                 % (instance, label, host))
            return
        self.inventory.add_host(host, group=source_group)
        config = entry.get("expanded_config") or entry.get("config") or {}
        variables = {
            "ansible_connection": CONNECTION,
            "lxdlib_instance": instance,
            "lxdlib_root": source.get("root") or "",
            "lxdlib_host": source.get("ssh") or "",
            "lxdlib_command": source.get("command") or self.get_option("command"),
            "lxdlib_source": label,
            "lxdlib_status": status,
            "lxdlib_profiles": list(entry.get("profiles") or []),
            "lxdlib_ipv4": addresses(entry, "inet"),
            "lxdlib_ipv6": addresses(entry, "inet6"),
            "lxdlib_image": prefixed(config, "image."),
            "lxdlib_user": prefixed(config, "user."),
            "lxdlib_ephemeral": bool(entry.get("ephemeral")),
            "lxdlib_pool": entry.get("pool") or "",
        }
        if source.get("ssh_args"):
            variables["lxdlib_ssh_args"] = source["ssh_args"]
        if self.get_option("ssh_command") != "ssh":
            variables["lxdlib_ssh_command"] = self.get_option("ssh_command")
        for key, value in variables.items():
            self.inventory.set_variable(host, key, value)
        groups = [group_name("lxdlib_status", status)]
        groups += [group_name("lxdlib_profile", p) for p in variables["lxdlib_profiles"]]
        if variables["lxdlib_image"].get("os"):
            groups.append(group_name("lxdlib_os", variables["lxdlib_image"]["os"]))
        for group in groups:
            self.inventory.add_group(group)
            self.inventory.add_host(host, group=group)
        strict = self.get_option("strict")
        hostvars = self.inventory.get_host(host).get_vars()
        self._set_composite_vars(self.get_option("compose"), hostvars, host, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), hostvars, host,
                                          strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, host,
                                       strict=strict)
