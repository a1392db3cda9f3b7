"""A tiny hostile cloud: the faults the sandbox cannot inject, over real HTTP on 127.0.0.1.

The sandbox is a well-behaved ASGI app: it cannot trickle an answer one byte at a time below the HTTP layer,
send a body of 100 MB, or echo the request URL (with the API token in it) in an error page. This server speaks
just enough HTTP/1.1 by hand to do exactly that, one thread per connection, and counts what it received:

- ``behaviour(route)`` says what the next answer to a route (``"invoices"`` or ``"member"``) is;
  ``set(route, Behaviour(...))`` changes it at any time (the change applies to requests that arrive later);
- ``deliveries[key]``: invoice requests received in full, by ``Idempotency-Key``; ``accepted[key]``: those
  answered 200 in the well-behaved mode ("ok"), i.e. counted by the cloud;
- ``bytes_sent``: body bytes each hostile answer managed to push before the client went away.

It is meant for tests only: no keep-alive (``Connection: close`` on every answer), bodies by Content-Length.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["ok", "trickle", "huge", "echo_url"]


@dataclass(frozen=True)
class Behaviour:
    """What the cloud answers.

    - ``ok``: 200 JSON (invoices: ``{"invoice": key, "accepted": true}``; members: a demo member);
    - ``trickle``: ``status`` with a declared ``Content-Length: size`` and one byte every ``interval`` s;
    - ``huge``: ``status`` with ``size`` bytes of JSON-ish filler, as fast as the client reads
      (``declare_length=False``: no Content-Length, the body ends when the connection closes);
    - ``echo_url``: ``status`` with an error body that quotes the request line, token included, as some
      frameworks' debug pages do.
    """

    mode: Mode = "ok"
    status: int = 200
    size: int = 1000
    interval: float = 0.5
    declare_length: bool = True


@dataclass
class Received:
    route: str
    target: str
    key: str | None
    mode: Mode
    at: float = field(default_factory=time.monotonic)


class HostileCloud:
    """Start with ``with HostileCloud() as cloud: ...``; ``cloud.url`` is the base URL for ``[cloud] base_url``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._behaviour: dict[str, Behaviour] = {"invoices": Behaviour(), "member": Behaviour()}
        self.received: list[Received] = []
        self.deliveries: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.bytes_sent: list[int] = []
        self._stop = threading.Event()
        cloud = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                cloud._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="hostile-cloud", daemon=True)

    # -- control --

    def __enter__(self) -> "HostileCloud":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def set(self, route: str, behaviour: Behaviour) -> None:
        with self._lock:
            self._behaviour[route] = behaviour

    def behaviour(self, route: str) -> Behaviour:
        with self._lock:
            return self._behaviour[route]

    def count(self, route: str, mode: Mode | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.received if r.route == route and (mode is None or r.mode == mode))

    # -- one connection --

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            request = _read_request(conn)
        except (OSError, ValueError):
            return
        if request is None:
            return
        method, target, headers, body = request
        route = "invoices" if target.startswith("/agora/invoices") else "member"
        behaviour = self.behaviour(route)
        key = headers.get("idempotency-key")
        with self._lock:
            self.received.append(Received(route, target, key, behaviour.mode))
            if route == "invoices" and key is not None:
                self.deliveries[key] += 1
        try:
            if behaviour.mode == "ok":
                if route == "invoices" and key is not None:
                    with self._lock:
                        self.accepted[key] += 1
                    answer = {"invoice": key, "accepted": True, "points_awarded": 12}
                else:
                    answer = {"id": target.rsplit("/", 1)[-1].split("?")[0], "name": "Ana", "points": 7}
                _answer(conn, 200, json.dumps(answer).encode())
            elif behaviour.mode == "echo_url":
                page = {"error": "bad_request", "detail": f"cannot process {method} {target}",
                        "request": {"url": f"https://api.omniwallet.cloud{target}"}}
                _answer(conn, behaviour.status, json.dumps(page).encode())
            elif behaviour.mode == "trickle":
                self._trickle(conn, behaviour)
            elif behaviour.mode == "huge":
                self._huge(conn, behaviour)
        except OSError:
            pass

    def _trickle(self, conn: socket.socket, behaviour: Behaviour) -> None:
        conn.sendall(_head(behaviour.status, behaviour.size))
        sent = 0
        try:
            for _ in range(behaviour.size):
                if self._stop.wait(behaviour.interval):
                    return
                conn.sendall(b" ")
                sent += 1
        finally:
            with self._lock:
                self.bytes_sent.append(sent)

    def _huge(self, conn: socket.socket, behaviour: Behaviour) -> None:
        conn.sendall(_head(behaviour.status, behaviour.size if behaviour.declare_length else None))
        chunk = (b'{"filler": "' + b"x" * 65500 + b'"}\n')[:65536]
        sent = 0
        try:
            while sent < behaviour.size and not self._stop.is_set():
                piece = chunk[: behaviour.size - sent]
                conn.sendall(piece)
                sent += len(piece)
        finally:
            with self._lock:
                self.bytes_sent.append(sent)


def _read_request(conn: socket.socket) -> tuple[str, str, dict[str, str], bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > 1 << 20:
            raise ValueError("head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return method, target, headers, rest[:length]


def _head(status: int, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} Hostile", "Content-Type: application/json", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(conn: socket.socket, status: int, body: bytes) -> None:
    conn.sendall(_head(status, len(body)) + body)


__all__ = ["Behaviour", "HostileCloud"]
