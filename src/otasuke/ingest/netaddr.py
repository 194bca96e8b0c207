"""社内ネットワーク: which side of a flow is the customer's own PC."""

from __future__ import annotations

import ipaddress
from typing import Any

INTERNAL_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)
"""社内ネットワーク: RFC 1918, loopback, link-local and IPv6 unique-local ranges."""


def is_internal(address: Any) -> bool:
    """True for an address in INTERNAL_NETWORKS."""
    if not isinstance(address, str):
        return False
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in INTERNAL_NETWORKS)


def internal_host(src: Any, dest: Any) -> str | None:
    """The PC side of a flow: private src, else private dest, else dest."""
    for candidate in (src, dest):
        if is_internal(candidate):
            return str(candidate)
    if isinstance(dest, str) and dest:
        return dest
    return src if isinstance(src, str) and src else None
