"""The ``Host`` header check of the whole local API: a defence against DNS rebinding.

A web page on the internet can make a browser on the shop's LAN send requests to ``http://evil.example:8080``
after pointing ``evil.example`` at the bridge's address; the browser then treats the answers as that site's
own and hands them to the page (``/metrics``, the counter screen). Such requests carry the attacker's name in
``Host``. So a request is answered only when its ``Host`` (without the port) is one of the bridge's own names:

- loopback: ``localhost``, ``127.0.0.0/8``, ``::1``;
- the host of ``[server] listen``; when that is a wildcard (``0.0.0.0`` or ``::``) every address of this machine
  (looked up again, at most every few seconds, when an unknown address arrives: DHCP may change them), its host
  name, ``hostname.local`` (mDNS) and its fully qualified name;
- the names and addresses listed in ``[server] hostnames``.

Refused requests get **421 Misdirected Request** with ``{"error": "host_not_allowed", "detail": ...}`` (421:
this server is not the one for that name). A request *without* a ``Host`` header is answered: browsers always
send one, so it cannot be a rebinding attempt, and HTTP/1.0 POS clients may omit it (HTTP/1.1 requests without
it are refused by the HTTP server itself with 400). The port is not compared (port forwarding may change it).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REFRESH_MIN_INTERVAL = 5.0
WILDCARDS = {"0.0.0.0", "::", ""}


def host_of(header: str) -> str | None:
    """``"Till-3.local:8080"`` -> ``"till-3.local"``, ``"[::1]:8080"`` -> ``"::1"``; None when malformed."""
    value = header.strip().lower()
    if not value or any(c.isspace() or c in "/@\\?#" for c in value):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1:]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        return host
    host, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return host.rstrip(".") or None


def _machine_addresses() -> set[str]:
    """Every IPv4/IPv6 address configured on this machine's interfaces (Linux), plus what the hostname resolves to."""
    found: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]).split("%")[0])
    except OSError:
        pass
    try:  # IPv6: /proc/net/if_inet6, one address per line as 32 hex digits
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    except (OSError, ValueError, IndexError):
        pass
    try:  # IPv4: /proc/net/fib_trie lists local addresses as "/32 host LOCAL"
        previous = ""
        for line in Path("/proc/net/fib_trie").read_text().splitlines():
            if "/32 host LOCAL" in line and previous:
                found.add(previous.split()[-1])
            previous = line
    except (OSError, IndexError):
        pass
    return {address for address in found if _is_ip(address)}


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _machine_names() -> set[str]:
    names: set[str] = set()
    for name in (socket.gethostname(), socket.getfqdn()):
        name = name.lower().rstrip(".")
        if name:
            names.add(name)
            names.add(name.split(".")[0] + ".local")
    return names


class AllowedHosts:
    """The names and addresses this bridge answers to. Thread-safe; refreshes the machine's addresses lazily."""

    def __init__(self, listen_host: str, extra: Iterable[str] = ()) -> None:
        self.listen_host = listen_host.lower().strip("[]")
        self.wildcard = self.listen_host in WILDCARDS
        self.fixed = {"localhost", "::1", *(h.lower().strip("[]") for h in extra)}
        if not self.wildcard:
            self.fixed.add(self.listen_host)
        self._machine: set[str] = set()
        self._refreshed = -1e9
        self._lock = threading.Lock()
        if self.wildcard:
            self.refresh()

    def refresh(self) -> None:
        with self._lock:
            self._machine = _machine_addresses() | _machine_names()
            self._refreshed = time.monotonic()

    def allows(self, host: str) -> bool:
        if host in self.fixed:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None and address.is_loopback:
            return True
        if not self.wildcard:
            return False
        if host in self._machine:
            return True
        if time.monotonic() - self._refreshed >= REFRESH_MIN_INTERVAL:
            self.refresh()
            return host in self._machine
        return False

    def describe(self) -> str:
        names = sorted(self.fixed | (self._machine if self.wildcard else set()))
        return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")


class HostCheck:
    """ASGI middleware: refuse HTTP requests whose ``Host`` is not one of ``allowed`` (421, JSON error)."""

    def __init__(self, app: Any, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"]
        if not values:
            await self.app(scope, receive, send)
            return
        host = host_of(values[0]) if len(values) == 1 else None
        if host is not None and self.allowed.allows(host):
            await self.app(scope, receive, send)
            return
        shown = values[0][:100] if len(values) == 1 else f"{len(values)} Host headers"
        detail = (f"this bridge does not answer to the name {shown!r} (a DNS rebinding attempt, or a name not yet "
                  "configured): use one of its own names or addresses, or add the name to [server] hostnames")
        body = json.dumps({"error": "host_not_allowed", "detail": detail}, ensure_ascii=True).encode()
        await send({"type": "http.response.start", "status": 421,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})
