"""A lean HTTP/1.1 load generator for the benchmarks: keep-alive connections over asyncio streams.

Why not httpx here: on a 2-core machine the load generator shares the CPU with the daemon it measures, and an
httpx request costs the client about 0.8 ms of CPU, more than the daemon spends answering ``/healthz``. With 16
closed-loop httpx clients the measured latency was mostly the client's own queue (``/healthz`` p99 43 ms). This
client sends pre-built request bytes and reads the answer by its ``Content-Length``: a few microseconds each.

What callers may rely on: :func:`closed_loop` runs ``clients`` connections, each sending its requests one after
the other (the next one as soon as the answer is read, as a till waiting on its answer does), and returns every
request's latency in seconds with the wall time; an answer of 300 or more raises (a benchmark of errors is
worthless).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from urllib.parse import urlsplit


def get(url: str, path: str) -> bytes:
    """A GET request's bytes."""
    host = urlsplit(url).netloc
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def post(url: str, path: str, body: bytes, content_type: str = "application/json") -> bytes:
    """A POST request's bytes."""
    host = urlsplit(url).netloc
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _client(url: str, requests: Sequence[bytes], latencies: list[float]) -> None:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        for request in requests:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    raise RuntimeError("chunked answers are not expected from the daemon")
            body = await reader.readexactly(length) if length else b""
            latencies.append(time.perf_counter() - started)
            status = int(head.split(b" ", 2)[1])
            if status >= 300:
                raise RuntimeError(f"unexpected HTTP {status}: {body[:200]!r}")
    finally:
        writer.close()


async def _run(url: str, per_client: Sequence[Sequence[bytes]]) -> tuple[list[float], float]:
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(_client(url, requests, latencies) for requests in per_client))
    return latencies, time.perf_counter() - started


def closed_loop(url: str, per_client: Sequence[Sequence[bytes]]) -> tuple[list[float], float]:
    """One connection per entry of ``per_client``, all at once; (latencies in seconds, wall seconds)."""
    return asyncio.run(_run(url, per_client))
