"""Talk to systemd's service manager: readiness, status line, watchdog keep-alives (sd_notify(3)).

Pure Python, no libsystemd: one datagram per message on the AF_UNIX socket named by ``$NOTIFY_SOCKET``
(a leading ``@`` means the Linux abstract namespace). This is the protocol systemd documents as stable.

What callers can rely on:

- Without ``$NOTIFY_SOCKET`` (a developer's terminal, tests, Docker) every method is a silent no-op.
- No method ever raises because of the socket: a failed send is logged once at DEBUG and reported by the
  return value, so a notification problem can never take the daemon down.
- :func:`watchdog_loop` pings only while the caller's health check passes. A hung event loop or a failing
  check therefore stops the pings, and systemd restarts the service after ``WatchdogSec=``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger(__name__)

ENV_SOCKET = "NOTIFY_SOCKET"
ENV_WATCHDOG_USEC = "WATCHDOG_USEC"
ENV_WATCHDOG_PID = "WATCHDOG_PID"


class Notifier:
    """Sends notifications to the service manager named by ``$NOTIFY_SOCKET`` (read once, at creation).

    Thread-safe enough for the daemon's use: each message is one ``sendto`` on a datagram socket.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get(ENV_SOCKET, ""))
        self._watchdog_usec = env.get(ENV_WATCHDOG_USEC, "")
        self._watchdog_pid = env.get(ENV_WATCHDOG_PID, "")
        self._sock: socket.socket | None = None
        self._failure_logged = False

    @property
    def enabled(self) -> bool:
        """True when a service manager listens (``$NOTIFY_SOCKET`` is set)."""
        return self._address is not None

    def notify(self, message: str) -> bool:
        """Send one raw message such as ``"READY=1\\nSTATUS=up"``. True when it was handed to the socket."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                # non-blocking: a manager that stops reading (its queue full) must never stall the event loop;
                # the message is dropped instead, like any other failed notification
                self._sock = socket.socket(socket.AF_UNIX,
                                           socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._sock.sendto(message.encode("utf-8"), self._address)
        except BlockingIOError:
            if not self._failure_logged:
                self._failure_logged = True
                log.debug("systemd's notification queue at %r is full; this message was dropped",
                          _printable(self._address))
            return False
        except OSError as exc:
            if not self._failure_logged:
                self._failure_logged = True
                log.debug("could not notify systemd at %r (%s); further failures are not logged",
                          _printable(self._address), exc)
            self.close()
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (database open, API listening). With ``Type=notify`` systemd waits for this."""
        message = "READY=1"
        if status:
            message += "\nSTATUS=" + _one_line(status)
        return self.notify(message)

    def status(self, text: str) -> bool:
        """One line shown by ``systemctl status posbridge`` (newlines are folded into spaces)."""
        return self.notify("STATUS=" + _one_line(text))

    def watchdog(self) -> bool:
        """Keep-alive: "still healthy". Must arrive at least every ``WatchdogSec=``."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """Shutdown has begun; systemd will not treat the coming exit as a crash of a running service."""
        return self.notify("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between keep-alives (half of ``$WATCHDOG_USEC``), or None when no watchdog applies.

        None when there is no notify socket, no or a malformed ``$WATCHDOG_USEC``, or when ``$WATCHDOG_PID``
        names another process (the variables were inherited from a parent).
        """
        if self._address is None:
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec / 2 / 1_000_000

    def close(self) -> None:
        """Release the socket (it is reopened on the next message)."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


async def watchdog_loop(
    notifier: Notifier,
    health_check: Callable[[], Awaitable[bool]],
    *,
    interval: float | None = None,
) -> None:
    """Ping the watchdog every ``interval`` seconds (default: :meth:`Notifier.watchdog_interval`) while
    ``health_check()`` returns True.

    Returns at once when no watchdog is configured; otherwise runs until cancelled. A check that raises,
    returns False or takes longer than one interval counts as a failure: no ping is sent, a warning is logged
    on the change to unhealthy (and an info line on recovery), and systemd restarts the service when the
    failures last longer than ``WatchdogSec=``. Run it on the daemon's event loop, so a blocked loop also
    stops the pings.
    """
    period = interval if interval is not None else notifier.watchdog_interval()
    if period is None or period <= 0:
        return
    healthy_before = True
    while True:
        reason = ""
        try:
            healthy = bool(await asyncio.wait_for(health_check(), timeout=period))
            if not healthy:
                reason = "the health check failed"
        except asyncio.TimeoutError:
            healthy, reason = False, f"the health check did not answer within {period:.1f} s"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken check must not end the loop; it only withholds the ping
            healthy, reason = False, f"the health check raised {type(exc).__name__}: {exc}"
        if healthy:
            notifier.watchdog()
            if not healthy_before:
                log.info("healthy again; watchdog keep-alives resumed")
        elif healthy_before:
            log.warning("watchdog keep-alives withheld: %s; systemd restarts the service if this lasts", reason)
        healthy_before = healthy
        await asyncio.sleep(period)


def _socket_address(value: str) -> str | bytes | None:
    """``$NOTIFY_SOCKET`` -> an address for ``sendto``: a path, or bytes starting with NUL (abstract)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode("utf-8")
    if value.startswith("/"):
        return value
    return None  # systemd only hands out absolute paths and abstract names (vsock needs other code)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _printable(address: str | bytes | None) -> str:
    if isinstance(address, bytes):
        return "@" + address[1:].decode("utf-8", "replace")
    return str(address)
