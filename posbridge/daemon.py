"""The composition root: builds every part from the settings, starts them in order, stops them in reverse.

Start: database (open, check, migrate) -> cloud client -> outbox, replayer, members -> HTTP server listening
-> ``READY=1`` -> scanners. Stop (SIGTERM/SIGINT): stop accepting, let requests in flight finish within
``[server] shutdown_grace``, stop delivery, finish the database writes already submitted, close the file,
exit 0. Nothing that was acknowledged is lost: acknowledgements are only given after commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import uvicorn

from posbridge import __version__
from posbridge.api import create_app
from posbridge.api.connections import MAX_HEAD_BYTES, ConnectionGuard
from posbridge.cloud import CloudClient
from posbridge.config import Settings
from posbridge.db import Reader, Writer, open_database
from posbridge.errors import PosbridgeError, StorageError
from posbridge.listener import BACKLOG, ensure_descriptors, listening_socket
from posbridge.members import Members
from posbridge.metrics import Metrics
from posbridge.notify import Notifier, watchdog_loop
from posbridge.outbox import Outbox
from posbridge.replay import Replayer
from posbridge.scanners.hub import ScanHub
from posbridge.scanners.manager import ScannerManager

log = logging.getLogger(__name__)

MAINTENANCE_EVERY = 3600.0
STATUS_EVERY = 10.0


class StartupError(PosbridgeError):
    """The daemon cannot start (port taken, database unusable). The message says what to change."""


@dataclass
class Bridge:
    """Every running part, for the HTTP routes and the status page."""

    settings: Settings
    writer: Writer
    reader: Reader
    outbox: Outbox
    cloud: CloudClient
    replayer: Replayer
    members: Members
    metrics: Metrics
    scan_hub: ScanHub
    scanners: ScannerManager | None = None
    started_at: float = field(default_factory=time.time)
    background: set[asyncio.Task] = field(default_factory=set)

    def scanner_status(self) -> list[dict[str, Any]]:
        if self.scanners is None:
            return []
        return [s.as_dict() for s in self.scanners.status()]

    def status(self) -> dict[str, Any]:
        """What `/v1/status` shows. Never a token, never a full card number."""
        stats = self.outbox.stats()
        replay = self.replayer.status()
        return {
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "queue": stats["depth"],
            "oldest_pending_age_seconds": stats["oldest_pending_age_seconds"],
            "delivery": {
                "paused": replay["paused"],
                "paused_reason": replay["paused_reason"],
                "paused_since": replay["paused_since"],
                "last_delivery_at": replay["last_delivery_at"],
                "last_delivery_result": replay["last_delivery_result"],
                "next_attempt_not_before": replay["hold_until"],
                "in_flight": replay["in_flight"],
            },
            "cloud": {
                "base_url": self.cloud.base_url,
                "account": self.settings.cloud.account,
                "reachable": replay["cloud_reachable"] is not False and self.members.cloud_reachable,
                "last_failure": replay["last_failure"],
                "auth_problem": replay["paused_reason"] or self.members.auth_problem,
            },
            "members": {"lookups": dict(self.members.counters)},
            "database": {"path": str(self.settings.storage.path), "last_error": self.writer.last_error},
            "scanners": self.scanner_status(),
        }

    def status_line(self) -> str:
        """One line for systemd's STATUS=."""
        stats = self.outbox.stats()
        replay = self.replayer.status()
        oldest = stats["oldest_pending_age_seconds"]
        cloud = "paused: token refused" if replay["paused"] else (
            "cloud unreachable" if replay["cloud_reachable"] is False else "cloud ok")
        age = f", oldest {int(oldest)}s" if oldest is not None else ""
        return f"{stats['depth']['pending']} pending{age}; {cloud}"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT and the shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


def _server_config(settings: Settings, app: Any) -> uvicorn.Config:
    """uvicorn for the local API, with posbridge's connection guard in place of uvicorn's HTTP protocol and
    limits (posbridge/api/connections.py: connection limit, header/body deadlines, allow-list, TLS).
    A TLS certificate or key that cannot be used raises ConfigError naming the key and the file."""
    server = settings.server
    guard = ConnectionGuard.from_settings(server, str(settings.source or "(built-in defaults)"))
    guard.announce()
    ensure_descriptors(server.max_connections)
    guard.install_accept_log_throttle(asyncio.get_running_loop())
    return uvicorn.Config(guard.wrap(app), http=guard.protocol(), ws="none", lifespan="off", log_config=None,
                          access_log=False, server_header=False, proxy_headers=False, backlog=BACKLOG,
                          h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                          timeout_keep_alive=server.keepalive_timeout,  # type: ignore[arg-type] # float works
                          timeout_graceful_shutdown=int(max(1, server.shutdown_grace)))


def _bind(settings: Settings) -> socket.socket:
    host, port = settings.server.host, settings.server.port
    try:
        return listening_socket(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"cannot listen on {settings.server.listen}: the port is used by another program "
                               "(another posbridge?); stop it or change [server] listen") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise StartupError(f"cannot listen on {settings.server.listen}: this machine has no such address; "
                               "fix [server] listen") from None
        if exc.errno == errno.EACCES:
            raise StartupError(f"cannot listen on {settings.server.listen}: permission denied "
                               "(ports below 1024 need privileges; use 8080)") from None
        raise StartupError(f"cannot listen on {settings.server.listen}: {exc.strerror}") from None


async def run(settings: Settings, cloud_token: str, local_token: str,
              *, on_ready: Callable[[Bridge], Awaitable[None] | None] | None = None,
              stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT, or until ``stop`` is set. Returns the exit code (0 after a clean stop).

    Signal handlers are installed only in the main thread (Python delivers signals there alone); a caller that
    runs the daemon on another thread's event loop (an embedding program, a test) stops it through ``stop``.
    """
    with contextlib.suppress(AttributeError, ValueError):
        # a full disk / file-size limit must show up as a write error we answer 503 for, not kill us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        conn = open_database(settings.storage.path)
    except StorageError as exc:
        raise StartupError(str(exc)) from None
    sock = _bind(settings)
    writer = Writer(conn)
    reader = Reader(settings.storage.path)
    metrics = Metrics()
    cloud = CloudClient(settings.cloud, cloud_token)
    outbox = Outbox(writer, reader, settings.invoices)
    replayer = Replayer(outbox, cloud, settings.delivery, on_outcome=metrics.delivery_outcome)
    members = Members(cloud, writer, reader, settings.members)
    hub = ScanHub(settings.cards, _counted_lookup(metrics, members))
    bridge = Bridge(settings, writer, reader, outbox, cloud, replayer, members, metrics, hub)
    app = create_app(bridge, local_token)
    server = _Server(_server_config(settings, app))
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if threading.current_thread() is threading.main_thread() else ()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier()
    tasks: list[asyncio.Task] = []
    watchdog: asyncio.Task | None = None
    server_task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    try:
        while not server.started:
            if server_task.done():
                server_task.result()
                raise StartupError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(replayer.run(stop), name="replay"))
        if settings.scanners:
            bridge.scanners = ScannerManager(settings.scanners, _count_then(metrics, hub.handle))
            await bridge.scanners.start()
        log.info("posbridge %s listening on http://%s (cloud %s, database %s)", __version__,
                 settings.server.listen, settings.cloud.base_url, settings.storage.path)
        notifier.ready()
        notifier.status(bridge.status_line())
        watchdog = asyncio.create_task(watchdog_loop(notifier, _healthy(bridge)), name="watchdog")
        tasks.append(asyncio.create_task(_maintenance(bridge, notifier, stop), name="maintenance"))
        if on_ready is not None:
            result = on_ready(bridge)
            if asyncio.iscoroutine(result):
                await result
        stop_waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({stop_waiter, server_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        notifier.stopping()
        if watchdog is not None:  # it runs until cancelled; systemd times the stop with TimeoutStopSec= instead
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
        log.info("stopping: finishing requests in flight")
        hub.close()  # ends the POS's event streams, which would otherwise hold the server open
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(server_task), settings.server.shutdown_grace + 1)
        if bridge.scanners is not None:
            await bridge.scanners.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 6)
        for task in list(bridge.background) + tasks:
            task.cancel()
        await asyncio.gather(*bridge.background, *tasks, return_exceptions=True)
        try:
            await members.aclose()  # cache writes and look-up counters already decided
        except Exception as exc:  # noqa: BLE001 - losing a counter must not stop the clean shutdown
            log.warning("could not write the last member cache updates: %s", exc)
        await cloud.aclose()
        await asyncio.to_thread(writer.close)
        reader.close()
        conn.close()
        for sig in signals:
            loop.remove_signal_handler(sig)
        log.info("stopped cleanly")
    return 0


def _count_then(metrics: Metrics, handle: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    """Count each scan by source and symbology: the card's AIM prefix names it when the driver cannot."""

    async def on_scan(event: Any) -> Any:
        published = None
        try:
            published = await handle(event)
            return published
        finally:
            symbology = published.get("symbology") if isinstance(published, dict) else None
            metrics.scan(event.source, symbology or event.symbology)

    return on_scan


def _counted_lookup(metrics: Metrics, members: Members) -> Callable[[str], Awaitable[Any]]:
    """Look-ups made for scans count in ``posbridge_member_lookups_total`` like the POS's own."""

    async def lookup(member_id: str) -> Any:
        answer = await members.lookup(member_id)
        metrics.member_lookup(answer.result)
        return answer

    return lookup


def _healthy(bridge: Bridge) -> Callable[[], Awaitable[bool]]:
    """The watchdog is fed only while the event loop runs this and the database answers."""

    async def check() -> bool:
        try:
            await asyncio.wait_for(bridge.reader.run(lambda c: c.execute("SELECT 1").fetchone()), 5)
            return True
        except Exception:  # noqa: BLE001
            return False

    return check


async def _maintenance(bridge: Bridge, notifier: Notifier, stop: asyncio.Event) -> None:
    """STATUS= for systemd every few seconds; member cache purge every hour."""
    last_purge = -math.inf  # the first purge runs at start-up, however recently the machine booted
    while not stop.is_set():
        with contextlib.suppress(Exception):
            notifier.status(await asyncio.to_thread(bridge.status_line))
        if time.monotonic() - last_purge > MAINTENANCE_EVERY:
            last_purge = time.monotonic()
            try:
                purged = await bridge.members.purge()
                if purged:
                    log.info("forgot %d cached member answers unused for the whole max_stale", purged)
            except StorageError as exc:
                log.error("member cache purge failed: %s", exc)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), STATUS_EVERY)
