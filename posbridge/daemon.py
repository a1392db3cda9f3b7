"""The composition root: the only place that knows every part. Builds them from the settings, starts them in
order and stops them in reverse.

Start (:meth:`Daemon.start`), each step registering its own stop on one :class:`~contextlib.AsyncExitStack`:

0. the connection guard (TLS files loaded: a bad certificate stops the start before anything is opened);
1. the database: first compared with its marker (:mod:`posbridge.marker`; a missing, emptied, replaced or
   rolled-back file where one existed stops the start, unless ``accept_new_database``), then opened, checked,
   migrated (the writer thread starts), one write tried and the marker written (:mod:`posbridge.dbguard`);
2. the listening socket (bound now, so a taken port fails before anything runs);
3. the cloud client, the outbox, the replayer, the member look-up, the invoice desk, the scan hub;
   the cloud token is checked once (logged; a refused token pauses delivery before it starts);
4. background delivery and the database guard;
5. the keystroke outputs, then the scanners (so the first scan is typed too);
6. the HTTP server, serving the socket;
7. ``READY=1`` to systemd, the watchdog, the maintenance task.

Stop (:meth:`Daemon.stop`, on SIGTERM/SIGINT) runs those stops in reverse: systemd hears ``STOPPING=1``, the
server stops accepting and finishes the requests in flight (``[server] shutdown_grace``), scanners close,
delivery finishes its attempts, inline deliveries still running are cancelled (their invoices stay pending),
pending member-cache writes are made, the writer finishes what was submitted and the file is closed. Nothing
acknowledged is lost: acknowledgements are only given after commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
import socket
import threading
import time
from typing import Any, Awaitable, Callable

import uvicorn

from posbridge import __version__
from posbridge import marker as markers
from posbridge import metrics as metrics_mod
from posbridge.acceptance import InvoiceDesk
from posbridge.api import create_app
from posbridge.api.connections import MAX_HEAD_BYTES, ConnectionGuard
from posbridge.bridge import Bridge
from posbridge.cloud import PROBE_TIMEOUT, CloudClient
from posbridge.config import Settings
from posbridge.db import Database
from posbridge.dbguard import DatabaseGuard
from posbridge.errors import DatabaseNotRecognised, StartupError, StorageError
from posbridge.listener import BACKLOG, bind_problem, ensure_descriptors, listening_socket
from posbridge.members import Members
from posbridge.metrics import Metrics
from posbridge.notify import Notifier, watchdog_loop
from posbridge.outbox import Outbox
from posbridge.outputs import Outputs
from posbridge.replay import Replayer
from posbridge.scanners.hub import ScanHub
from posbridge.scanners.manager import ScannerManager

log = logging.getLogger(__name__)

MAINTENANCE_EVERY = 3600.0
STATUS_EVERY = 10.0
DELIVERY_STOP_WAIT = 6.0


class Daemon:
    """One bridge's lifetime: :meth:`start`, then :meth:`stop` (idempotent). ``bridge`` is set once started.

    ``stop_requested`` is set by whoever wants the daemon to end (a signal handler, an embedding program, a
    test); background tasks watch it too.
    """

    def __init__(self, settings: Settings, cloud_token: str, local_token: str,
                 *, stop: asyncio.Event | None = None, accept_new_database: bool = False) -> None:
        self.settings = settings
        self._accept_new_database = accept_new_database
        self._cloud_token = cloud_token
        self._local_token = local_token
        self.stop_requested = stop if stop is not None else asyncio.Event()
        self.bridge: Bridge | None = None
        self._stack = contextlib.AsyncExitStack()
        self._server_task: asyncio.Task[Any] | None = None

    async def start(self) -> Bridge:
        """Start every part in order; on failure, stop what was started and raise :class:`StartupError`."""
        try:
            return await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> Bridge:
        settings, stack = self.settings, self._stack
        connections = _connection_guard(settings)
        metrics_mod.configure_process()
        with contextlib.suppress(AttributeError, ValueError):
            # a full disk / file-size limit must show up as a write error we answer 503 for, not kill us
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        remembered = self._check_marker()
        try:
            database = Database(settings.storage.path)
        except StorageError as exc:
            raise StartupError(str(exc)) from None
        stack.push_async_callback(database.aclose)
        sock = _bind(settings)
        stack.callback(sock.close)

        metrics = Metrics()
        cloud = await stack.enter_async_context(CloudClient(settings.cloud, self._cloud_token))
        outbox = Outbox(database.writer, database.reader, settings.invoices)
        filled = await asyncio.to_thread(outbox.fill_identities)
        if filled:
            log.info("gave %d invoices stored by an earlier posbridge their sale identity", filled)
        guard = DatabaseGuard(database, settings.storage, lambda: outbox.stats()["depth"])
        guard.remember(remembered)
        await guard.start()
        stack.push_async_callback(guard.aclose)
        replayer = Replayer(outbox, cloud, settings.delivery, on_outcome=metrics.delivery_outcome,
                            writes_failing=lambda: database.writer.last_error)
        members = await stack.enter_async_context(
            Members(cloud, database.writer, database.reader, settings.members))
        desk = InvoiceDesk(outbox, replayer, inline_deadline=settings.server.inline_deadline,
                           on_received=metrics.invoice_received, admit=guard.admit)
        stack.push_async_callback(desk.aclose)
        hub = ScanHub(settings.cards, _counted_lookup(metrics, members))
        bridge = Bridge(settings, database, outbox, cloud, replayer, members, desk, metrics, hub, guard=guard)

        replayer.token_checked(await cloud.probe(timeout=min(PROBE_TIMEOUT, settings.cloud.timeout)))
        self._background(replayer.run(self.stop_requested), "replay", wait=DELIVERY_STOP_WAIT)
        self._background(guard.run(self.stop_requested), "database guard", wait=2)
        bridge.outputs = Outputs(settings.outputs, hub)  # before the scanners: the first scan is typed too
        await bridge.outputs.start()
        stack.push_async_callback(bridge.outputs.stop)
        if settings.scanners:
            bridge.scanners = ScannerManager(settings.scanners, _count_then(metrics, hub.handle))
            await bridge.scanners.start()
            stack.push_async_callback(bridge.scanners.stop)
        await self._serve(bridge, sock, connections)

        log.info("posbridge %s listening on http://%s (cloud %s, database %s)", __version__,
                 settings.server.listen, settings.cloud.base_url, settings.storage.path)
        _freeze_start_up_objects()
        notifier = Notifier()
        notifier.ready()
        notifier.status(bridge.status_line())
        # the watchdog runs until cancelled; systemd times the stop with TimeoutStopSec= instead
        self._background(watchdog_loop(notifier, _healthy(bridge)), "watchdog", wait=0)
        self._background(_maintenance(bridge, notifier, self.stop_requested), "maintenance", wait=1)
        stack.callback(notifier.stopping)  # the first thing a stop does
        self.bridge = bridge
        return bridge

    def _check_marker(self) -> markers.Marker | None:
        """Refuse to start on a database that is not the one the marker remembers (see posbridge/marker.py),
        unless told to accept a new one; returns the marker read (None: none, or set aside)."""
        storage = self.settings.storage
        where = markers.marker_path(storage.path, storage.marker_directory)
        try:
            remembered = markers.read_marker(where)
        except markers.MarkerUnreadable as exc:
            log.warning("%s; a new marker will be written for the database opened now", exc)
            return None
        mismatch = markers.compare(storage.path, markers.inspect_database(storage.path), remembered, where)
        if mismatch is None:
            return remembered
        if not self._accept_new_database:
            raise DatabaseNotRecognised(mismatch.message)
        try:
            kept = markers.set_aside(where)
        except OSError as exc:
            raise StartupError(f"cannot set the old marker {where} aside: {exc.strerror or exc}") from None
        assert remembered is not None
        log.warning("--accept-new-database: %s; starting on it as a new database. The one posbridge last ran on "
                    "was: %s (its marker is kept as %s)", mismatch.problem, remembered.describe(), kept)
        return None

    async def _serve(self, bridge: Bridge, sock: socket.socket, connections: ConnectionGuard) -> None:
        """Serve the local API on ``sock`` through ``connections``; its stop ends the event streams, then lets
        requests in flight finish within ``shutdown_grace``."""
        settings = self.settings
        server = _Server(_server_config(settings, connections, create_app(bridge, self._local_token)))
        task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
        self._server_task = task

        async def stop_serving() -> None:
            log.info("stopping: finishing requests in flight")
            bridge.scan_hub.close()  # ends the POS's event streams, which would otherwise hold the server open
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), settings.server.shutdown_grace + 1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self._stack.push_async_callback(stop_serving)
        while not server.started:
            if task.done():
                task.result()
                raise StartupError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    def _background(self, work: Awaitable[Any], name: str, *, wait: float) -> None:
        """Run ``work`` until stop; at stop it gets ``wait`` seconds to end by itself, then is cancelled."""
        task = asyncio.ensure_future(work)
        task.set_name(name)

        async def finish() -> None:
            self.stop_requested.set()
            if wait > 0:
                with contextlib.suppress(Exception):
                    await asyncio.wait({task}, timeout=wait)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self._stack.push_async_callback(finish)

    async def wait(self) -> None:
        """Until a stop is requested or the HTTP server ends by itself."""
        waiter = asyncio.ensure_future(self.stop_requested.wait())
        watched: set[asyncio.Future[Any]] = {waiter}
        if self._server_task is not None:
            watched.add(self._server_task)
        try:
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    async def stop(self) -> None:
        """Stop every part that was started, in reverse order. Safe to call twice."""
        self.stop_requested.set()
        await self._stack.aclose()
        if self.bridge is not None:
            log.info("stopped cleanly")
            self.bridge = None


async def run(settings: Settings, cloud_token: str, local_token: str,
              *, on_ready: Callable[[Bridge], Awaitable[None] | None] | None = None,
              stop: asyncio.Event | None = None, accept_new_database: bool = False) -> int:
    """Run until SIGTERM/SIGINT, or until ``stop`` is set. Returns the exit code (0 after a clean stop).

    Signal handlers are installed only in the main thread (Python delivers signals there alone); a caller that
    runs the daemon on another thread's event loop (an embedding program, a test) stops it through ``stop``.
    """
    daemon = Daemon(settings, cloud_token, local_token, stop=stop, accept_new_database=accept_new_database)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if threading.current_thread() is threading.main_thread() else ()
    for sig in signals:
        loop.add_signal_handler(sig, daemon.stop_requested.set)
    try:
        bridge = await daemon.start()
        if on_ready is not None:
            result = on_ready(bridge)
            if asyncio.iscoroutine(result):
                await result
        await daemon.wait()
    finally:
        await daemon.stop()
        for sig in signals:
            loop.remove_signal_handler(sig)
    return 0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT and the shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


def _freeze_start_up_objects() -> None:
    """Move every object alive after start-up out of the garbage collector's sight (``gc.freeze``).

    The ~100,000 objects of the started daemon (modules, FastAPI routes, pydantic models) are never garbage,
    yet each full collection walked all of them: 20-45 ms with the event loop stopped, the largest part of the
    invoice acknowledgement's p99 (README, Benchmarks). Frozen, a full collection walks only what was made since.
    """
    gc.collect()
    gc.freeze()


def _connection_guard(settings: Settings) -> ConnectionGuard:
    """posbridge's connection guard in place of uvicorn's HTTP protocol and limits (connection limit,
    header/body deadlines, allow-list, TLS: posbridge/api/connections.py). A TLS certificate or key that cannot
    be used raises ConfigError naming the key and the file, before anything is opened."""
    guard = ConnectionGuard.from_settings(settings.server, str(settings.source or "(built-in defaults)"))
    guard.announce()
    ensure_descriptors(settings.server.max_connections)
    return guard


def _server_config(settings: Settings, guard: ConnectionGuard, app: Any) -> uvicorn.Config:
    """uvicorn for the local API, through ``guard``."""
    server = settings.server
    guard.install_accept_log_throttle(asyncio.get_running_loop())
    return uvicorn.Config(guard.wrap(app), http=guard.protocol(), ws="none", lifespan="off", log_config=None,
                          access_log=False, server_header=False, proxy_headers=False, backlog=BACKLOG,
                          h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                          timeout_keep_alive=server.keepalive_timeout,  # type: ignore[arg-type] # float works
                          timeout_graceful_shutdown=int(max(1, server.shutdown_grace)))


def _bind(settings: Settings) -> socket.socket:
    try:
        return listening_socket(settings.server.host, settings.server.port)
    except OSError as exc:
        what, fix = bind_problem(settings.server.host, settings.server.port, exc)
        raise StartupError(f"{what}; {fix}") from None


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
    """The watchdog is fed only while the event loop runs this and the database answers (reads: a full disk
    or a lost file is not cured by a restart, and the daemon keeps delivering and looking members up)."""

    async def check() -> bool:
        try:
            await asyncio.wait_for(bridge.database.reader.run(lambda c: c.execute("SELECT 1").fetchone()), 5)
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
