"""The rules a config is checked by when the whole of it is only known expanded: an
instance's own keys over its profiles', its own devices beside theirs."""

from __future__ import annotations

import pytest

from lxdlib.config import schema
from lxdlib.config.devices import validate_devices
from lxdlib.errors import InvalidConfig


@pytest.mark.parametrize("config", [
    {"raw.seccomp": "2\ndenylist\n[all]\nkexec_load errno 38\n",
     "security.syscalls.deny": "mkdir"},
    {"security.syscalls.allow": "mkdir", "security.syscalls.deny": "mount"},
])
def test_rules_across_keys_hold_for_an_expanded_config(config: dict[str, str]) -> None:
    """``check_combinations`` on a config no single validator saw whole (a profile's keys
    and the instance's own): the instance's update, create and a profile edit call it."""
    with pytest.raises(InvalidConfig, match="mutually exclusive"):
        schema.check_combinations(config)


def test_rules_across_devices_hold_for_expanded_devices() -> None:
    with pytest.raises(InvalidConfig, match="same path"):
        validate_devices({"d1": {"type": "disk", "source": "/tmp", "path": "/mnt"},
                          "d2": {"type": "disk", "source": "/var/tmp", "path": "/mnt"}})
