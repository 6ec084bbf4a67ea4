# Copyright: lxdlib developers
# Apache License 2.0 (see the repository's LICENSE)
"""The option every lxdlib module shares: which lxdlib root on the target host to manage."""

from __future__ import annotations


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  root:
    description:
      - The lxdlib root (state directory) on the target host to work on.
      - When not set, lxdlib's own default is used, C($LXDLIB_ROOT) or C(/var/lib/lxdlib).
      - A root that is named must already exist (C(lxdlib --root PATH init --auto) sets one up).
    type: path
requirements:
  - lxdlib importable by the Python interpreter Ansible uses on the target host
    (set C(ansible_python_interpreter) to the environment lxdlib is installed in).
  - root on the target host (lxdlib manages containers, loop devices and bridges).
notes:
  - The modules run on the host that holds the lxdlib root, never inside an instance; to work
    inside instances use the C(lxdlib.containers.lxdlib) connection plugin.
"""
