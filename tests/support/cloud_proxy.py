"""A cloud in front of the sandbox that can answer one invoice differently from the others.

The sandbox injects faults for every call alike; some behaviours need a cloud that treats one invoice key
differently (a ``Retry-After`` of an hour for one invoice only) or sends a header the sandbox cannot (a
``Retry-After: ²``). ``CloudProxy`` listens on 127.0.0.1, counts every invoice attempt per
``Idempotency-Key``, and either answers from ``rule(key)`` or forwards the request to the sandbox unchanged,
so deliveries are still counted (and de-duplicated) where every other test counts them.
"""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import httpx

#: ``rule(key)`` -> None (forward to the sandbox) or ``(status, headers, body)`` to answer instead.
Rule = Callable[[str], "tuple[int, dict[str, str], bytes] | None"]


class CloudProxy:
    def __init__(self, upstream: str, rule: Rule) -> None:
        self.upstream = upstream
        self.rule = rule
        self.attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                answer = None
                if method == "POST" and self.path.startswith("/agora/invoices"):
                    key = self.headers.get("idempotency-key", "")
                    with proxy._lock:
                        proxy.attempts[key] += 1
                    answer = proxy.rule(key)
                if answer is None:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("host", "content-length", "connection")}
                    with httpx.Client(timeout=30) as http:
                        upstream = http.request(method, proxy.upstream + self.path, content=body, headers=headers)
                    answer = (upstream.status_code,
                              {"Content-Type": upstream.headers.get("content-type", "application/json")},
                              upstream.content)
                status, headers, content = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self._relay("POST")

            def do_GET(self) -> None:  # noqa: N802
                self._relay("GET")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="cloud-proxy", daemon=True)

    def __enter__(self) -> "CloudProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, key: str) -> int:
        with self._lock:
            return self.attempts[key]

    def total(self) -> int:
        with self._lock:
            return sum(self.attempts.values())
