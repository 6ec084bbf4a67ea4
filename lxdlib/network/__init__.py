"""Managed networks: Linux bridges with DHCP/DNS (dnsmasq) and NAT (nftables).

`NetworkManager` is the entry point; `validate_config`, `parse_spec` and the subnet pickers are
the pure rules behind it.
"""

from __future__ import annotations

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
