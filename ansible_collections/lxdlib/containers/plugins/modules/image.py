#!/usr/bin/python
# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: image
short_description: Import, build, copy, alias and delete lxdlib images
version_added: 0.1.0
description:
  - Puts an image into the image store of an lxdlib root on the target host and points
    aliases at it, or deletes images.
  - An image's identity is its fingerprint (the SHA-256 of its files), so importing a file
    that is already stored changes nothing; only the aliases are moved if they point
    elsewhere.
author:
  - lxdlib developers (@lxdlib)
extends_documentation_fragment:
  - lxdlib.containers.root
options:
  aliases:
    description:
      - Aliases that must name the image. An alias that names another image is moved to this
        one.
      - With O(state=absent), the images these aliases name are deleted.
    type: list
    elements: str
    default: []
  fingerprint:
    description:
      - An image already in the store (full fingerprint or a unique prefix) to give
        O(aliases) or O(properties) to, or to delete.
    type: str
  source:
    description:
      - Where the image comes from when it is not stored yet.
      - A path on the target host to a unified image tarball (or, with O(rootfs), a split
        image's metadata tarball).
      - An C(http://) or C(https://) URL of an image tarball (LXD's image URL protocol or a
        plain download).
      - C(<remote>:<alias>) of a simplestreams remote, to copy the image from it.
      - For a URL or a remote, an image already holding all O(aliases) is kept unless
        O(refresh).
    type: str
  rootfs:
    description: The rootfs tarball of a split image whose metadata tarball is O(source).
    type: path
  build:
    description:
      - Build an image on the target host instead - C(busybox) makes lxdlib's self-contained
        busybox image from the host's busybox-static. The build is reproducible, so a second
        run finds the same fingerprint and changes nothing.
    type: str
    choices: [busybox]
  refresh:
    description: Fetch a URL or remote image again even when its aliases exist.
    type: bool
    default: false
  properties:
    description: Image properties to set (a null value removes one); others are left alone.
    type: dict
  public:
    description: Whether the image may be served to others.
    type: bool
  state:
    description: Whether the image exists.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
    description: A file or build is fingerprinted but not imported; a URL or remote is not
      fetched (assumed to change when its aliases are missing).
  diff_mode:
    support: none
    description: The image module shows no diff; RV(actions) lists what changed.
notes:
  - Building needs Debian's C(busybox-static) on the target host.
seealso:
  - module: lxdlib.containers.instance
"""

EXAMPLES = r"""
- name: lxdlib's busybox image, as busybox
  lxdlib.containers.image:
    build: busybox
    aliases: [busybox]

- name: An image tarball copied to the host
  lxdlib.containers.image:
    source: /var/cache/images/debian-12.tar.xz
    aliases: [debian/12, debian]
    properties:
      description: Debian 12 with our tools

- name: Copied from an image server
  lxdlib.containers.image:
    source: images:alpine/3.19
    aliases: [alpine]

- name: Deleted, with every alias it had
  lxdlib.containers.image:
    aliases: [debian/12]
    state: absent
"""

RETURN = r"""
image:
  description: The image after the task (empty when deleted, or not yet fetched in check
    mode).
  returned: always
  type: dict
  contains:
    fingerprint:
      description: Its SHA-256.
      type: str
    aliases:
      description: The aliases naming it.
      type: list
      elements: str
    properties:
      description: Its properties (os, release, description...).
      type: dict
    size:
      description: Bytes stored.
      type: int
  sample:
    fingerprint: 2e3b0d0ecbabdb664fb73019d829aa2ae1fddbc65b13fc01263a5439e43c08b9
    aliases: [busybox]
    properties: {"os": "busybox", "release": "1.35.0"}
    size: 1033677
actions:
  description: What the task did, in order (import, alias, properties, delete).
  returned: always
  type: list
  elements: str
  sample: [import, "alias busybox"]
"""

import hashlib
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lxdlib.containers.plugins.module_utils.common import (
    fail,
    lxdlib,
    is_lxdlib_error,
    open_host,
    plain,
    root_argument_spec,
)
from ansible_collections.lxdlib.containers.plugins.module_utils.merge import wanted_config


def sha256_files(paths):
    """The fingerprint lxdlib gives these files: the SHA-256 of their bytes in order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def describe(host, fingerprint):
    rec = host.images[fingerprint].record()
    return {"fingerprint": rec.fingerprint, "aliases": [a["name"] for a in rec.aliases],
            "properties": dict(rec.properties), "size": rec.size, "public": rec.public}


def is_remote(source):
    return (":" in source and not source.startswith(("http://", "https://", "/"))
            and not os.path.exists(source))


class ImageTask(object):
    """One run: finds or brings in the image, then aligns its aliases and properties."""

    def __init__(self, module, host):
        self.module = module
        self.host = host
        self.params = module.params
        self.check = module.check_mode
        self.actions = []

    def alias_targets(self):
        return {name: entry["target"] for name, entry in self.host.images.store.aliases().items()}

    def held(self, aliases):
        """The fingerprint all of ``aliases`` name, when they name one and the same image."""
        table = self.alias_targets()
        targets = set(table.get(a) for a in aliases)
        if len(targets) == 1 and None not in targets:
            return targets.pop()
        return None

    def import_files(self, paths, rootfs):
        """Import a file unless its fingerprint is stored; returns the fingerprint."""
        fingerprint = sha256_files(paths)
        if fingerprint not in self.host.images:
            self.actions.append("import")
            if not self.check:
                self.host.images.import_file(paths[0], rootfs_path=rootfs)
        return fingerprint

    def build_busybox(self):
        from lxdlib.imagestore.busybox import build_busybox_image
        tmp = tempfile.mkdtemp(prefix="lxdlib-ansible-")
        try:
            out = build_busybox_image(os.path.join(tmp, "busybox.tar.gz"))
            return self.import_files([str(out)], None)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def fetch(self, source, aliases):
        """A URL or remote image: kept when the aliases already name one, unless refresh."""
        have = self.held(aliases) if aliases else None
        if have is not None and not self.params["refresh"]:
            return have
        self.actions.append("import" if not is_remote(source) else "copy")
        if self.check:
            return have
        before = set(self.host.images.names())
        try:
            if is_remote(source):
                fingerprint = self.host.images.copy(source).fingerprint
            else:
                fingerprint = self.host.images.import_url(source).fingerprint
        except lxdlib.AlreadyExists as e:  # fetched again and found stored: the same image
            if e.kind != "image":
                raise
            fingerprint = e.name
        if fingerprint in before:
            self.actions.pop()  # nothing new came in
        return fingerprint

    def present(self):
        p = self.params
        aliases = list(p["aliases"])
        if p["build"]:
            fingerprint = self.build_busybox()
        elif p["source"]:
            src = p["source"]
            if src.startswith(("http://", "https://")) or is_remote(src):
                fingerprint = self.fetch(src, aliases)
            else:
                if not os.path.isfile(src):
                    self.module.fail_json(msg="source %r is not a file on the target host"
                                              % src)
                paths = [src] + ([p["rootfs"]] if p["rootfs"] else [])
                fingerprint = self.import_files(paths, p["rootfs"])
        elif p["fingerprint"]:
            fingerprint = self.host.images[p["fingerprint"]].fingerprint
        elif aliases:
            fingerprint = self.held(aliases)
            if fingerprint is None:
                self.module.fail_json(msg="no image holds the aliases %s: give source, build "
                                          "or fingerprint" % ", ".join(aliases))
        else:
            self.module.fail_json(msg="give source, build, fingerprint or aliases")
        table = self.alias_targets()
        for alias in aliases:
            if table.get(alias) == fingerprint and fingerprint is not None:
                continue
            self.actions.append("alias " + alias)
            if self.check:
                continue
            if alias in table:
                self.host.images.store.alias_update(alias, target=fingerprint)
            else:
                self.host.images.store.alias_create(alias, fingerprint)
        if fingerprint is None or (self.check and fingerprint not in self.host.images):
            return {"fingerprint": fingerprint or "", "aliases": aliases, "properties": {}}
        props = wanted_config(p["properties"])
        current = self.host.images[fingerprint].properties
        todo = {k: v for k, v in props.items() if current.get(k) != v}
        if todo:
            self.actions.append("properties")
            if not self.check:
                self.host.images.set_properties(fingerprint, todo)
        if p["public"] is not None and self.host.images[fingerprint].public != p["public"]:
            self.actions.append("public")
            if not self.check:
                self.host.images.update(fingerprint, public=p["public"])
        return describe(self.host, fingerprint)

    def absent(self):
        p = self.params
        targets = set()
        table = self.alias_targets()
        for alias in p["aliases"]:
            if alias in table:
                targets.add(table[alias])
        if p["fingerprint"] and p["fingerprint"] in self.host.images:
            targets.add(self.host.images[p["fingerprint"]].fingerprint)
        for fingerprint in sorted(targets):
            self.actions.append("delete " + fingerprint[:12])
            if not self.check:
                self.host.images.delete(fingerprint)
        return {}


def main():
    spec = dict(
        aliases=dict(type="list", elements="str", default=[]),
        fingerprint=dict(type="str"),
        source=dict(type="str"),
        rootfs=dict(type="path"),
        build=dict(type="str", choices=["busybox"]),
        refresh=dict(type="bool", default=False),
        properties=dict(type="dict"),
        public=dict(type="bool"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
    )
    spec.update(root_argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           mutually_exclusive=[("source", "build")],
                           required_by={"rootfs": "source"})
    host = open_host(module)
    task = ImageTask(module, host)
    try:
        image = task.present() if module.params["state"] == "present" else task.absent()
    except Exception as e:
        if is_lxdlib_error(e):
            fail(module, e, actions=task.actions)
        raise
    module.exit_json(changed=bool(task.actions), actions=task.actions, image=plain(image))


if __name__ == "__main__":
    main()
