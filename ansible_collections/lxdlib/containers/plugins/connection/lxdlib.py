# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
name: lxdlib
short_description: Run tasks inside lxdlib instances
version_added: 0.1.0
description:
  - Runs commands in, and copies files into and out of, a system container managed by
    lxdlib, so that a play can configure the instances themselves.
  - It drives the C(lxdlib) command of the host that holds the instance - C(lxdlib exec) for
    commands, C(lxdlib file push) and C(lxdlib file pull) for files.
  - When O(lxdlib_host) is set, that command runs on the host over SSH (C(ssh HOST lxdlib ...));
    otherwise it runs where Ansible runs. Nothing listens on any host; trust is SSH's.
  - Instances need a POSIX shell for Ansible's bookkeeping and a Python for its modules;
    C(ansible.builtin.raw) needs only the shell.
author:
  - lxdlib developers (@lxdlib)
extends_documentation_fragment:
  - connection_pipelining
options:
  remote_addr:
    description:
      - The instance's name on its host. Defaults to the inventory name.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: lxdlib_instance
  lxdlib_root:
    description:
      - The lxdlib root holding the instance on its host. When not set, the host's lxdlib
        uses its own default (C($LXDLIB_ROOT) or C(/var/lib/lxdlib)).
    type: str
    vars:
      - name: lxdlib_root
    env:
      - name: LXDLIB_ROOT
  lxdlib_host:
    description:
      - The SSH destination (C([user@]host)) of the host that holds the instance. Empty means
        the instance is on the machine Ansible runs on.
    type: str
    default: ""
    vars:
      - name: lxdlib_host
  lxdlib_command:
    description: The lxdlib command on the instance's host (a path where it is not on PATH).
    type: str
    default: lxdlib
    vars:
      - name: lxdlib_command
  ssh_command:
    description: The SSH client used to reach O(lxdlib_host).
    type: str
    default: ssh
    vars:
      - name: lxdlib_ssh_command
  ssh_args:
    description:
      - Extra arguments for the SSH client (C(-p 2222 -i ~/.ssh/fleet)), split as a shell
        would split them.
    type: str
    default: ""
    vars:
      - name: lxdlib_ssh_args
  timeout:
    description: Seconds a single command or transfer may take before it is abandoned.
    type: int
    default: 600
    vars:
      - name: lxdlib_timeout
notes:
  - Commands run as root inside the instance; use C(become) for another user.
  - Set C(ansible_python_interpreter) for instances whose Python is not where Ansible looks.
  - The inventory plugin C(lxdlib.containers.lxdlib) sets C(ansible_connection),
    C(lxdlib_instance), C(lxdlib_root), C(lxdlib_host) and C(lxdlib_command) for every
    instance it lists.
"""

EXAMPLES = r"""
# inventory (INI): an instance on the controller, one on a remote host
# web1 ansible_connection=lxdlib.containers.lxdlib lxdlib_root=/var/lib/lxdlib
# db1  ansible_connection=lxdlib.containers.lxdlib lxdlib_host=root@node2.example

- hosts: web1
  gather_facts: false
  tasks:
    - name: Runs inside web1
      ansible.builtin.command: uname -a
"""

import os
import shlex
import subprocess
import tempfile

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()


def _umask():
    """The process's umask (read by setting it, then put back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class Connection(ConnectionBase):
    """Each operation is one run of the host's ``lxdlib`` command, locally or over SSH."""

    transport = "lxdlib.containers.lxdlib"
    has_pipelining = True
    default_user = "root"

    def _connect(self):
        if not self._connected:
            display.vvv("ESTABLISH LXDLIB CONNECTION TO %s%s" % (
                self._instance(), " ON " + self.get_option("lxdlib_host")
                if self.get_option("lxdlib_host") else ""), host=self._instance())
            self._connected = True
        return self

    # -- how a command is built -------------------------------------------------------------
    def _instance(self):
        return self.get_option("remote_addr")

    def _lxdlib(self, *args):
        """The lxdlib command line, with the root when one is set."""
        argv = shlex.split(self.get_option("lxdlib_command"))
        root = self.get_option("lxdlib_root")
        if root:
            argv += ["--root", root]
        return argv + list(args)

    def _on_host(self, argv):
        """``argv`` as run on the instance's host: as is, or through SSH (which hands the
        remote shell one string, hence the quoting)."""
        host = self.get_option("lxdlib_host")
        if not host:
            return argv
        ssh = shlex.split(self.get_option("ssh_command")) + shlex.split(self.get_option("ssh_args"))
        return ssh + [host, "--", " ".join(shlex.quote(a) for a in argv)]

    def _run(self, argv, stdin=None, in_data=None, stdout=subprocess.PIPE):
        cmd = self._on_host(argv)
        display.vvvv("LXDLIB RUN %s" % " ".join(shlex.quote(a) for a in cmd),
                     host=self._instance())
        try:
            proc = subprocess.Popen(cmd, stdin=stdin if stdin is not None else subprocess.PIPE,
                                    stdout=stdout, stderr=subprocess.PIPE)
        except OSError as e:
            raise AnsibleConnectionFailure("cannot run %s: %s" % (cmd[0], to_native(e)))
        try:
            out, err = proc.communicate(in_data if stdin is None else None,
                                        timeout=self.get_option("timeout"))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AnsibleConnectionFailure("%s did not finish within %ss"
                                           % (" ".join(argv[:4]), self.get_option("timeout")))
        return proc.returncode, out or b"", err or b""

    # -- the connection's verbs ---------------------------------------------------------------
    def exec_command(self, cmd, in_data=None, sudoable=True):
        super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv("EXEC %s" % cmd, host=self._instance())
        argv = self._lxdlib("exec", "-T", self._instance(), "--", "/bin/sh", "-c",
                            to_text(cmd, errors="surrogate_or_strict"))
        rc, out, err = self._run(argv, in_data=to_bytes(in_data) if in_data else b"")
        if rc == 255 and self.get_option("lxdlib_host") and not out:
            # ssh's own failure, not the command's exit status
            raise AnsibleConnectionFailure("ssh to %s failed: %s"
                                           % (self.get_option("lxdlib_host"), to_native(err)))
        if rc == 1 and not out and err.strip() in (
                b"Error: Instance not found",  # as lxc says it (lxdlib since its LXD wording)
                to_bytes("Error: instance %r not found" % self._instance())):  # older lxdlib
            # lxdlib's own word that there is no such instance: the host is unreachable,
            # which Ansible reports as such rather than as a failed command
            raise AnsibleConnectionFailure("no instance %r in lxdlib root %s" % (
                self._instance(), self.get_option("lxdlib_root") or "(default)"))
        return rc, out, err

    def _target(self, path):
        path = to_text(path, errors="surrogate_or_strict")
        if not path.startswith("/"):
            path = "/" + path
        return "%s%s" % (self._instance(), path)

    def put_file(self, in_path, out_path):
        super(Connection, self).put_file(in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self._instance())
        local = to_bytes(in_path, errors="surrogate_or_strict")
        if not os.path.isfile(local):
            raise AnsibleFileNotFound("file or module does not exist: %s" % to_native(in_path))
        if self.get_option("lxdlib_host"):
            with open(local, "rb") as f:
                rc, out, err = self._run(self._lxdlib("file", "push", "-", self._target(out_path)),
                                         stdin=f)
        else:
            rc, out, err = self._run(self._lxdlib("file", "push", to_text(in_path),
                                                  self._target(out_path)), in_data=b"")
        if rc != 0:
            raise AnsibleError("failed to put %s into %s: %s"
                               % (in_path, self._target(out_path), to_native(err).strip()))

    def fetch_file(self, in_path, out_path):
        super(Connection, self).fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self._instance())
        dest = to_bytes(out_path, errors="surrogate_or_strict")
        if self.get_option("lxdlib_host"):
            # beside the destination under a random name, created exclusively: a link planted
            # at a fixed name in a shared directory would be followed (and written through)
            fd, tmp = tempfile.mkstemp(prefix=os.path.basename(dest) + b".",
                                       suffix=b".lxdlib-part",
                                       dir=os.path.dirname(dest) or b".")
            try:
                with os.fdopen(fd, "wb") as f:
                    rc, out, err = self._run(self._lxdlib("file", "pull", self._target(in_path),
                                                          "-"), in_data=b"", stdout=f)
                if rc == 0:
                    os.chmod(tmp, 0o666 & ~_umask())
                    os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            rc, out, err = self._run(self._lxdlib("file", "pull", self._target(in_path),
                                                  to_text(out_path)), in_data=b"")
        if rc != 0:
            raise AnsibleError("failed to fetch %s from %s: %s"
                               % (in_path, self._instance(), to_native(err).strip()))

    def close(self):
        self._connected = False

    def reset(self):
        self.close()
