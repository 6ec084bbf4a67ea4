"""Managed networks: Linux bridges with DHCP/DNS (dnsmasq) and NAT (nftables).

`NetworkManager` is the entry point; `validate_config`, `parse_spec` and the subnet pickers are
the pure rules behind it.
"""

from __future__ import annotations

from ..errors import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

    from .manager import (
        NetworkManager,
        NetworkSpec,
        parse_spec,
        pick_ipv4_subnet,
        pick_ipv6_subnet,
        validate_config,
        validate_name,
    )

__all__ = [
    "NetworkManager",
    "NetworkSpec",
    "parse_spec",
    "pick_ipv4_subnet",
    "pick_ipv6_subnet",
    "validate_config",
    "validate_name",
]


def __getattr__(name: str) -> Any:
    """The manager is imported on first use: a hook or a proxy forwarder that needs only
    ``nat``, ``tc`` or ``filtering`` does not pay for it (about 90 ms of start-up)."""
    if name in __all__:
        from . import manager
        return getattr(manager, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
