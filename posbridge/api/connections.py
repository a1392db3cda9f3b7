"""The local API's connections: a limit, read deadlines, the allow-list and TLS, so that a crowded or hostile
LAN cannot take the till down.

Why not uvicorn's own options (checked in uvicorn 0.54's ``protocols/http/h11_impl.py``):

- uvicorn arms no timer on a new connection. Its only timer is the keep-alive one, armed after a response, so a
  client that connects and sends its request head a byte at a time (or nothing) holds a connection forever.
- ``limit_concurrency`` counts every open connection, those still sending their head included, and answers
  503 to the next *complete* request: a slowloris that fills the count makes uvicorn refuse the POS, not itself.
- its TLS handshake runs in asyncio before any protocol code, for asyncio's fixed 60 s, outside any count.

So the HTTP protocol is uvicorn's h11 protocol with a guard around it. A connection goes through phases:

    handshake (TLS only) -> head -> body -> busy (the app has the request) -> idle (keep-alive) -> head ...

- handshake + head must arrive within ``[server] header_timeout`` of the connection (then: 408 and close);
- the body within ``body_timeout`` of the head: an app waiting for it gets a ``408`` through
  :class:`BodyDeadline`; a client still sending after ``body_timeout + BODY_GRACE`` (a body nobody reads) is cut;
- idle keep-alive connections are closed after ``keepalive_timeout`` (uvicorn's own timer);
- at most ``max_connections`` are open. A new one beyond that takes the place of the oldest connection that is
  not being served — refused ones first, then those still sending their head, then idle keep-alive ones, then
  the longest-running body upload — so slow or idle clients can never lock the POS out. Only when every
  connection is being served (the app works on it or streams events) is the newcomer refused: ``503`` JSON
  with ``Retry-After``;
- a peer outside ``[server] allow`` gets ``403`` JSON naming its address and is closed, before its request is read.

Refusals are written as soon as the connection is ready and followed by a lingering close (the client's unread
request is drained for up to ``LINGER`` seconds), so the client reads the answer instead of a reset.
Every log line here, uvicorn's own warnings on these connections and asyncio's "out of file descriptors"
accept error go through :class:`LogThrottle`: at most one line per kind per minute, with a count of the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections import Counter, OrderedDict
from http import HTTPStatus
from typing import Any

import h11
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from posbridge.api.allow import AllowList, is_loopback_host
from posbridge.api.deadlines import BodyDeadline
from posbridge.api.throttle import ThrottledLogger
from posbridge.logs import LogThrottle
from posbridge.api.tls import tls_context
from posbridge.config import ServerSettings

log = logging.getLogger(__name__)

BODY_GRACE = 5.0
"""Seconds after ``body_timeout`` before a connection still sending a body is cut (the app answers 408 first)."""
LINGER = 2.0
"""Seconds a refused connection is drained before it is closed, so the client reads the answer."""
MAX_HEAD_BYTES = 16 * 1024
"""Largest request head (request line + headers); bigger ones get uvicorn's 400 (h11's limit, stated here)."""

_EVICTABLE = ("refused", "head", "idle", "body")  # eviction order: the first non-empty bucket gives the victim
_BUCKET = {"refused": "refused", "handshake": "head", "head": "head", "idle": "idle", "body": "body"}


class ConnectionGuard:
    """The shared state of one server's connections: the count, who may be evicted, the allow-list, TLS."""

    def __init__(self, settings: ServerSettings, tls: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.allow = AllowList(settings.allow)
        self.tls = tls
        self.limit = settings.max_connections
        self.open: set[GuardedH11Protocol] = set()
        self._waiting: dict[str, OrderedDict[GuardedH11Protocol, None]] = {b: OrderedDict() for b in _EVICTABLE}
        self.counters: Counter[str] = Counter()
        self.throttle = LogThrottle()
        self.uvicorn_logger = ThrottledLogger(self.throttle, logging.getLogger("uvicorn.error"))

    @classmethod
    def from_settings(cls, settings: ServerSettings, source: str = "(built-in defaults)") -> "ConnectionGuard":
        """A guard with the TLS context loaded. A certificate or key that cannot be used is a ConfigError
        naming the key and the file, raised before anything listens."""
        return cls(settings, tls_context(settings, source))

    def announce(self) -> None:
        """At start: a warning when the bridge listens beyond this machine with neither an allow-list nor TLS
        (any device on the LAN can reach it, and read the POS's local token on the wire), else one line
        saying which protections are on."""
        listen = self.settings.listen
        if is_loopback_host(self.settings.host):
            return
        if not self.allow and self.tls is None:
            log.warning("listening on %s: any device on the network can reach the bridge, and the POS's local "
                        "token travels in clear text. Set [server] allow = [\"<your LAN>/24\"] and/or "
                        "tls_cert/tls_key (`posbridge tls generate`); see README \"Exposed on the shop's "
                        "network\"", listen)
            return
        protections = []
        if self.allow:
            protections.append(f"only {self.allow.describe()} allowed")
        if self.tls is not None:
            protections.append(f"TLS ({self.settings.tls_cert})")
        log.info("listening on %s with %s", listen, " and ".join(protections))

    def protocol(self) -> type["GuardedH11Protocol"]:
        """The protocol class for uvicorn's ``Config(http=...)``, bound to this guard."""
        return type("PosbridgeHTTPProtocol", (GuardedH11Protocol,), {"guard": self})

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` with the body deadline (:class:`BodyDeadline`) in front."""
        return BodyDeadline(app, self.settings.body_timeout)

    def install_accept_log_throttle(self, loop: asyncio.AbstractEventLoop) -> None:
        """asyncio logs "socket.accept() out of system resource" with a traceback on every retry while the
        process is out of file descriptors; send those through the throttle, everything else on as before."""
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if context.get("message") == "socket.accept() out of system resource":
                exc = context.get("exception")
                self.throttle.log(log, logging.ERROR,
                                  "cannot accept connections: %s; raise LimitNOFILE= in the unit or lower "
                                  "[server] max_connections (%d)", exc, self.limit, key="accept")
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)

    # -- bookkeeping, called by the protocol --

    def admit(self, conn: "GuardedH11Protocol") -> str | None:
        """Count a new connection. Returns None (serve it), ``"forbidden"`` or ``"busy"`` (refuse it). Makes
        room by evicting the oldest connection that is not being served, when there is one."""
        verdict = None if self.allow.permits(conn.peer_host) else "forbidden"
        if len(self.open) >= self.limit:
            victim = self._oldest_waiting()
            if victim is not None:
                victim.evict()
            elif verdict is None:
                verdict = "busy"
        self.open.add(conn)
        return verdict

    def moved(self, conn: "GuardedH11Protocol", old: str, new: str) -> None:
        if old in _BUCKET:
            self._waiting[_BUCKET[old]].pop(conn, None)
        if new in _BUCKET:
            self._waiting[_BUCKET[new]][conn] = None

    def closed(self, conn: "GuardedH11Protocol") -> None:
        self.open.discard(conn)
        for bucket in self._waiting.values():
            bucket.pop(conn, None)

    def lingering(self) -> int:
        return len(self._waiting["refused"])

    def note(self, kind: str, level: int, msg: str, *args: Any) -> None:
        self.counters[kind] += 1
        self.throttle.log(log, level, msg, *args, key=kind)

    def _oldest_waiting(self) -> "GuardedH11Protocol | None":
        for name in _EVICTABLE:
            bucket = self._waiting[name]
            if bucket:
                return next(iter(bucket))
        return None


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with phases, deadlines, the limit, the allow-list and TLS (module docstring)."""

    guard: ConnectionGuard  # set on the subclass made by ConnectionGuard.protocol()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = self.guard.uvicorn_logger  # type: ignore[assignment]
        self.peer_host: str | None = None
        self._phase = "new"
        self._timer: asyncio.TimerHandle | None = None
        self._raw: asyncio.BaseTransport | None = None
        self._started = False  # uvicorn's connection_made has run (on the TLS transport, when TLS is on)
        self._refusal: str | None = None
        self._handshake: asyncio.Task[None] | None = None

    # -- asyncio protocol interface --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self._raw = transport
        peer = transport.get_extra_info("peername")
        self.peer_host = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None
        self._refusal = self.guard.admit(self)
        if self.guard.tls is None:
            self._ready(transport)
            return
        transport.pause_reading()  # the handshake starts on a later loop turn; no byte may reach h11 before it
        self._enter("handshake")
        self._handshake = self.loop.create_task(self._start_tls(transport))

    def data_received(self, data: bytes) -> None:
        if self._phase in ("refused", "closed"):
            return  # drained: a refused or evicted client's request is never parsed
        super().data_received(data)
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._phase != "closed":
            self._phase = "closed"
            self.guard.closed(self)
        if self._started:
            super().connection_lost(exc)

    # -- TLS --

    async def _start_tls(self, raw: asyncio.BaseTransport) -> None:
        assert self.guard.tls is not None
        try:
            transport = await self.loop.start_tls(
                raw, self, self.guard.tls, server_side=True,  # type: ignore[arg-type]
                ssl_handshake_timeout=self.guard.settings.header_timeout)
        except asyncio.CancelledError:
            raw.abort()  # type: ignore[attr-defined]
            self._forget()
            raise
        except Exception as exc:  # noqa: BLE001 - any failed handshake ends this connection only
            if self._phase != "closed":
                self.guard.note("tls_failed", logging.INFO, "TLS handshake with %s failed: %s", self.peer_host,
                                _tls_reason(exc))
            raw.abort()  # type: ignore[attr-defined]
            self._forget()
            return
        if self._phase == "closed" or transport is None:
            if transport is not None:
                transport.abort()
            return
        self._ready(transport)

    # -- phases --

    def _ready(self, transport: asyncio.BaseTransport) -> None:
        """The connection can speak HTTP (TCP accepted, or TLS handshake done)."""
        super().connection_made(transport)  # type: ignore[arg-type]
        self._started = True
        if self._refusal is not None:
            self._refuse(self._refusal)
        else:
            self._track()

    def _track(self) -> None:
        """Work out the phase from h11's view of the client, after every event that can change it."""
        if self._phase in ("refused", "closed") or self.transport.is_closing():
            return
        their = self.conn.their_state
        if their is h11.SEND_BODY:
            phase = "body"
        elif their is h11.IDLE:
            if self.cycle is None:
                phase = "head"
            elif self.cycle.response_complete:
                phase = "head" if self.conn.trailing_data[0] else "idle"
            else:
                phase = "busy"
        else:
            phase = "busy"
        self._enter(phase)

    def _enter(self, phase: str) -> None:
        old = self._phase
        if phase == old:
            return
        self._phase = phase
        self.guard.moved(self, old, phase)
        if old == "handshake" and phase == "head":
            return  # one deadline covers the handshake and the head
        self._cancel_timer()
        settings = self.guard.settings
        if phase in ("handshake", "head"):
            self._timer = self.loop.call_later(settings.header_timeout, self._expired, phase)
        elif phase == "body":
            self._timer = self.loop.call_later(settings.body_timeout + BODY_GRACE, self._expired, phase)

    def _expired(self, phase: str) -> None:
        self._timer = None
        current = self._phase
        if current != phase and not (phase == "handshake" and current == "head"):
            return
        settings = self.guard.settings
        if current == "handshake":
            self.guard.note("head_timeout", logging.INFO, "closed a connection from %s: no TLS handshake within "
                            "%g s ([server] header_timeout)", self.peer_host, settings.header_timeout)
            self._forget()
            self._end(graceful=False)
        elif current == "head":
            self._forget()
            if self.conn.trailing_data[0]:
                self.guard.note("head_timeout", logging.INFO, "closed a connection from %s: its request head did "
                                "not arrive within %g s ([server] header_timeout)", self.peer_host,
                                settings.header_timeout)
                self.transport.write(_answer(408, "request_timeout", f"the request head did not arrive within "
                                             f"{settings.header_timeout:g} s ([server] header_timeout)"))
                self._end(graceful=True)
            else:  # a browser's speculative connection, or a client that went quiet: no answer, no log
                self.guard.counters["idle_closed"] += 1
                self._end(graceful=True, linger=False)
        elif current == "body":
            self.guard.note("body_timeout", logging.WARNING, "cut a connection from %s: still sending a request "
                            "body %g s after its head ([server] body_timeout)", self.peer_host,
                            settings.body_timeout + BODY_GRACE)
            self._forget()
            self._end(graceful=False)

    def evict(self) -> None:
        """Close this connection to make room for a new one (the guard chose it: it is not being served)."""
        phase = self._phase
        self.guard.note("evicted", logging.WARNING, "connection limit reached (%d open, [server] max_connections): "
                        "closed the oldest connection not being served (%s, from %s) to let a new one in",
                        self.guard.limit, phase, self.peer_host)
        self._forget()
        self._cancel_timer()
        self._end(graceful=phase == "idle")  # idle: nothing unread, a clean close; else a reset

    def shutdown(self) -> None:
        """uvicorn's graceful stop. An idle TLS connection is dropped at once: closing TLS waits up to 30 s for
        the client's close_notify, which an idle POS never sends, and the stop would wait for it."""
        if self._started and self.guard.tls is not None and (self.cycle is None or self.cycle.response_complete):
            self._forget()
            self._end(graceful=False)
            return
        super().shutdown()

    # -- refusing --

    def _refuse(self, reason: str) -> None:
        settings = self.guard.settings
        if reason == "forbidden":
            self.guard.note("forbidden", logging.WARNING, "refused a connection from %s: not in [server] allow (%s)",
                            self.peer_host, self.guard.allow.describe())
            data = _answer(403, "forbidden", f"this bridge does not serve {self.peer_host}: add it to [server] "
                           f"allow in the bridge's posbridge.toml (allowed now: {self.guard.allow.describe()})")
        else:
            self.guard.note("busy", logging.WARNING, "all %d connections are being served ([server] "
                            "max_connections): answered 503 to %s", settings.max_connections, self.peer_host)
            data = _answer(503, "too_many_connections", f"the bridge is serving its limit of "
                           f"{settings.max_connections} connections ([server] max_connections); try again "
                           "in a moment", retry_after=1)
        self._enter("refused")
        self._cancel_timer()
        self.transport.write(data)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.guard.lingering() > settings.max_connections:
            self._forget()  # a flood of refusals: no draining, the slots matter more
            self._end(graceful=True, linger=False)
        else:
            self._timer = self.loop.call_later(LINGER, self._end_refused)

    def _end_refused(self) -> None:
        self._timer = None
        self._forget()
        self._end(graceful=True, linger=False)

    # -- helpers --

    def _end(self, *, graceful: bool, linger: bool = True) -> None:
        """Close the transport. Graceful on plain TCP is a close after what was written (a FIN); on TLS a
        graceful close would wait up to 30 s for the client's close_notify, so what was written gets ``LINGER``
        seconds to leave and the connection is then dropped. Not graceful: dropped now (a reset)."""
        transport = self.transport if self._started else self._raw
        if transport is None or transport.is_closing():
            return
        if not graceful:
            transport.abort()  # type: ignore[attr-defined]
        elif self.guard.tls is None or not self._started:
            transport.close()
        elif linger:
            self.loop.call_later(LINGER, transport.abort)  # type: ignore[attr-defined]
        else:
            transport.abort()  # type: ignore[attr-defined]

    def _forget(self) -> None:
        """Leave the count now (the transport's connection_lost comes a loop turn later)."""
        if self._phase != "closed":
            self._phase = "closed"
            self.guard.closed(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _answer(status: int, code: str, detail: str, *, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 answer in the API's JSON error shape, written without h11 (nothing was parsed)."""
    body = json.dumps({"error": code, "detail": detail}).encode()
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: application/json",
             f"content-length: {len(body)}", "connection: close"]
    if retry_after is not None:
        lines.append(f"retry-after: {retry_after}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "no handshake in time"
    return str(exc) or type(exc).__name__


__all__ = ["BODY_GRACE", "ConnectionGuard", "GuardedH11Protocol", "MAX_HEAD_BYTES"]
