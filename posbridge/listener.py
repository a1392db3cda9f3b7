"""The listening TCP socket of the local API and of the sandbox cloud.

Both bind before uvicorn starts, so a taken port is a clear start-up error and port 0 picks a free port whose
number is known at once. The socket is created with ``IPPROTO_TCP`` on purpose: asyncio sets ``TCP_NODELAY`` on
accepted connections only when the listening socket names its protocol, and without it every answer on a
kept-alive connection waits ~40 ms for Nagle's algorithm and the peer's delayed ACK.
"""

from __future__ import annotations

import errno
import logging
import resource
import socket

log = logging.getLogger(__name__)

BACKLOG = 512
"""Connections the kernel queues before the daemon accepts them (uvicorn is given the same number)."""
RESERVED_DESCRIPTORS = 256
"""File descriptors the daemon needs besides its HTTP connections: database, cloud connections, scanners."""


def listening_socket(host: str, port: int, *, backlog: int = BACKLOG) -> socket.socket:
    """A non-blocking TCP socket listening on ``host:port``. Raises ``OSError`` (errno intact) on failure."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


#: errno of a failed bind -> (what is wrong, what the technician does); ``{host}``/``{port}`` filled in.
_BIND_PROBLEMS = {
    errno.EADDRINUSE: ("the port is used by another program (another posbridge?)",
                       "stop it (sudo ss -ltnp 'sport = :{port}' names it) or change [server] listen"),
    errno.EADDRNOTAVAIL: ("this machine has no address {host}",
                          "fix [server] listen: 127.0.0.1 for a POS on this machine, 0.0.0.0 for the network"),
    errno.EACCES: ("permission denied", "ports below 1024 need privileges; use 8080"),
}


def bind_problem(host: str, port: int, exc: OSError) -> tuple[str, str]:
    """Why ``host:port`` cannot be listened on, and the fix: what the daemon's start-up error and
    ``posbridge doctor`` both say."""
    what, fix = _BIND_PROBLEMS.get(exc.errno or 0, (exc.strerror or str(exc), "fix [server] listen"))
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"cannot listen on {listen}: {what.format(host=host, port=port)}", fix.format(host=host, port=port)


def socket_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def ensure_descriptors(max_connections: int) -> int:
    """Make room for ``max_connections`` open connections plus the daemon's own files: raise the soft
    ``RLIMIT_NOFILE`` towards the hard one when it is lower than needed. Returns the soft limit in force.

    Under the shipped unit the limit comes from ``LimitNOFILE=`` (its system call filter forbids setrlimit);
    when it is too low, one warning names the two ways out instead of "Too many open files" under load.
    """
    needed = max_connections + RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning("only %d file descriptors may be open, but [server] max_connections = %d needs about %d: "
                    "raise LimitNOFILE= in the unit or lower max_connections", soft, max_connections, needed)
    return soft


__all__ = ["BACKLOG", "bind_problem", "ensure_descriptors", "listening_socket", "socket_url"]
