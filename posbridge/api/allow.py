"""``[server] allow``: which machines of the LAN may talk to the bridge at all.

The check is made per connection, before a single byte of the request is read (see
:mod:`posbridge.api.connections`): a refused peer gets ``403 {"error": "forbidden", ...}`` naming its address
and the key to change, and the connection is closed. A clear answer beats a silent close here: the usual
"attacker" is a second till or a new POS terminal the technician forgot to add, and the 403 tells them why.

What callers may rely on:

- an empty list allows everyone (the default; the daemon warns at start when it listens beyond loopback
  without an allow-list or TLS);
- loopback (127.0.0.0/8, ::1) is always allowed: it is this machine — the till's own POS, ``posbridge doctor``,
  a technician's ``curl`` — and refusing it would only lock the technician out;
- IPv4 peers seen through an IPv6 socket (``::ffff:192.168.1.20``) are checked as the IPv4 address they are.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class AllowList:
    """Networks from ``[server] allow`` (already validated by the config); ``permits(host)`` per connection."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries)

    def __bool__(self) -> bool:
        """True when the list restricts anything (a non-empty ``allow``)."""
        return bool(self.networks)

    def permits(self, host: str | None) -> bool:
        """Whether a peer at ``host`` (as the socket reports it) may connect. Unknown peers (no address, a
        Unix socket) are refused when a list is configured."""
        if not self.networks:
            return True
        address = peer_address(host)
        if address is None:
            return False
        if address.is_loopback:
            return True
        return any(address in network for network in self.networks if network.version == address.version)

    def describe(self) -> str:
        """``"192.168.1.0/24, 10.0.0.5/32 and loopback"`` for logs and error messages."""
        return ", ".join(str(n) for n in self.networks) + " and loopback"


def peer_address(host: str | None) -> Address | None:
    """The peer's address, IPv4-mapped IPv6 unwrapped and any ``%zone`` dropped; None when it is not an IP."""
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback_host(host: str) -> bool:
    """Whether ``[server] listen``'s host keeps the bridge on this machine (``127.0.0.1``, ``::1``,
    ``localhost``). Wildcards and LAN addresses are not loopback."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    address = peer_address(host)
    return address is not None and address.is_loopback


__all__ = ["AllowList", "is_loopback_host", "peer_address"]
