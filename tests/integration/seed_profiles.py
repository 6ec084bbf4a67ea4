"""The seed article's profiles, verbatim apart from indentation, for every test that uses them."""

from __future__ import annotations

import textwrap

#: ``lxc profile edit docker`` from the seed's last section ("LXD runs docker").
DOCKER_PROFILE = textwrap.dedent("""\
    config:
      linux.kernel_modules: overlay, nf_nat
      security.nesting: "true"
    description: Profile supporting docker in containers
    devices:
      aadisable:
        path: /sys/module/apparmor/parameters/enabled
        source: /dev/null
        type: disk
    name: docker
""")
