#!/usr/bin/python
# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
module: file
short_description: Push files into, pull files out of, and delete files in lxdlib instances
version_added: 0.1.0
description:
  - Works on one file inside an instance of an lxdlib root on the target host, from the host
    side - the instance needs no Python or shell, and may be stopped.
  - A push or pull that finds the same bytes (and, when given, the same mode and owner)
    changes nothing.
  - To run Ansible's own modules inside an instance instead, use the C(lxdlib.containers.lxdlib)
    connection plugin.
author:
  - lxdlib developers (@lxdlib)
extends_documentation_fragment:
  - lxdlib.containers.root
options:
  instance:
    description: The instance.
    type: str
    required: true
  path:
    description: The file's absolute path inside the instance.
    type: str
    required: true
  state:
    description:
      - V(present) writes O(src) or O(content) to O(path) in the instance (a push).
      - V(pulled) copies O(path) out of the instance to O(dest) on the host (a pull).
      - V(absent) deletes O(path) in the instance.
    type: str
    choices: [present, pulled, absent]
    default: present
  src:
    description: A file on the target host to push.
    type: path
  content:
    description: Text to push, instead of O(src).
    type: str
  dest:
    description: Where on the target host a pulled file goes.
    type: path
  mode:
    description: Permissions of a pushed file, in octal (C(0644)). A new file gets C(0644)
      when not given; an existing one keeps its own.
    type: str
  uid:
    description: Owner of a pushed file (an id inside the instance).
    type: int
  gid:
    description: Group of a pushed file (an id inside the instance).
    type: int
  create_dirs:
    description: Create the missing parent directories of a pushed file.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Compares, but writes or deletes nothing.
  diff_mode:
    support: full
    description: Shows text files of up to 64 KiB before and after a push.
seealso:
  - plugin: lxdlib.containers.lxdlib
    plugin_type: connection
"""

EXAMPLES = r"""
- name: A config file into web1
  lxdlib.containers.file:
    instance: web1
    path: /etc/motd
    content: "managed by Ansible\n"
    mode: "0644"

- name: A log out of it
  lxdlib.containers.file:
    instance: web1
    path: /var/log/messages
    dest: /srv/logs/web1-messages
    state: pulled

- name: Gone
  lxdlib.containers.file:
    instance: web1
    path: /etc/motd
    state: absent
"""

RETURN = r"""
sha256:
  description: The SHA-256 of the file after the task (absent when deleted).
  returned: when the file exists after the task
  type: str
  sample: 9a271f2a916b0b6ee6cecb2426f0b3206ef074578be55d9bc94f6f3fe3ab86aa
size:
  description: Its size in bytes.
  returned: when the file exists after the task
  type: int
  sample: 18
"""

import hashlib
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.lxdlib.containers.plugins.module_utils.common import (
    fail,
    is_lxdlib_error,
    open_host,
    root_argument_spec,
)

DIFF_LIMIT = 64 * 1024


class Hasher(object):
    """A write-only sink that hashes what lxdlib streams out of the instance, keeping the
    first bytes for a diff."""

    def __init__(self):
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = bytearray()

    def write(self, chunk):
        self.digest.update(chunk)
        self.size += len(chunk)
        if len(self.head) <= DIFF_LIMIT:
            self.head.extend(bytes(chunk[:DIFF_LIMIT + 1 - len(self.head)]))
        return len(chunk)


def text_or_none(data):
    if data is None or len(data) > DIFF_LIMIT:
        return None
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return None


def read_head(path):
    with open(path, "rb") as f:
        return f.read(DIFF_LIMIT + 1)


def local_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inside(inst, path):
    """(stat, hasher) of the file in the instance, or (None, None) when it is missing."""
    try:
        st = inst.files.stat(path)
    except Exception as e:
        if type(e).__name__ == "NotFound":
            return None, None
        raise
    if st.type != "file":
        return st, None
    sink = Hasher()
    inst.files.get_to(path, sink)
    return st, sink


def main():
    spec = dict(
        instance=dict(type="str", required=True),
        path=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "pulled", "absent"]),
        src=dict(type="path"),
        content=dict(type="str"),
        dest=dict(type="path"),
        mode=dict(type="str"),
        uid=dict(type="int"),
        gid=dict(type="int"),
        create_dirs=dict(type="bool", default=False),
    )
    spec.update(root_argument_spec())
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           mutually_exclusive=[("src", "content")],
                           required_if=[("state", "pulled", ("dest",))])
    p = module.params
    if p["state"] == "present" and p["src"] is None and p["content"] is None:
        module.fail_json(msg="state=present needs src or content")
    mode = None
    if p["mode"] is not None:
        try:
            mode = int(str(p["mode"]), 8)
        except ValueError:
            module.fail_json(msg="mode %r is not octal (e.g. 0644)" % p["mode"])
    if not p["path"].startswith("/"):
        module.fail_json(msg="path must be absolute inside the instance")
    host = open_host(module)
    check = module.check_mode
    result = {"changed": False, "path": p["path"]}
    try:
        inst = host.instances[p["instance"]]
        st, sink = inside(inst, p["path"])
        if st is not None and sink is None and p["state"] != "absent":
            module.fail_json(msg="%s in %s is a %s, not a file" % (p["path"], inst.name, st.kind))
        if p["state"] == "absent":
            if st is not None:
                result["changed"] = True
                if not check:
                    inst.files.delete(p["path"])
        elif p["state"] == "present":
            if p["content"] is not None:
                data = p["content"].encode("utf-8")
                want, size = hashlib.sha256(data).hexdigest(), len(data)
            else:
                data = None
                want, size = local_sha256(p["src"]), os.path.getsize(p["src"])
            same = sink is not None and sink.digest.hexdigest() == want
            if same:
                same = ((mode is None or st.mode & 0o7777 == mode)
                        and (p["uid"] is None or st.uid == p["uid"])
                        and (p["gid"] is None or st.gid == p["gid"]))
            if not same:
                result["changed"] = True
                if module._diff:
                    new = data if data is not None else read_head(p["src"])
                    before = text_or_none(sink.head if sink is not None else b"")
                    after = text_or_none(new)
                    if before is not None and after is not None:
                        result["diff"] = {"before": before, "after": after,
                                          "before_header": "%s:%s" % (inst.name, p["path"]),
                                          "after_header": p["src"] or "(content)"}
                if not check:
                    if data is not None:
                        inst.files.put(p["path"], data, mode=mode, uid=p["uid"], gid=p["gid"],
                                       parents=p["create_dirs"])
                    else:
                        with open(p["src"], "rb") as f:
                            inst.files.put(p["path"], f, mode=mode, uid=p["uid"],
                                           gid=p["gid"], parents=p["create_dirs"])
            result.update(sha256=want, size=size)
        else:
            if sink is None:
                module.fail_json(msg="%s does not exist in %s" % (p["path"], inst.name))
            want = sink.digest.hexdigest()
            have = local_sha256(p["dest"]) if os.path.isfile(p["dest"]) else None
            if have != want:
                result["changed"] = True
                if not check:
                    folder = os.path.dirname(os.path.abspath(p["dest"]))
                    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lxdlib-pull-")
                    try:
                        with os.fdopen(fd, "wb") as out:
                            inst.files.get_to(p["path"], out)
                        os.chmod(tmp, st.mode & 0o777)
                        os.replace(tmp, p["dest"])
                    except BaseException:
                        if os.path.exists(tmp):
                            os.unlink(tmp)
                        raise
            result.update(sha256=want, size=sink.size, dest=p["dest"])
    except Exception as e:
        if is_lxdlib_error(e):
            fail(module, e)
        raise
    module.exit_json(**result)


if __name__ == "__main__":
    main()
