"""Member look-up latency, next to ``/healthz`` on the same daemon in the same run.

    .venv/bin/python bench/members.py [--requests 1000] [--keepalive-requests 100]

Starts the sandbox cloud and the daemon as subprocesses (as the tests do) and times sequential requests:

- ``/healthz``: the floor (HTTP + routing, no database, no cloud);
- the sandbox directly: what the cloud alone costs here (0 ms injected latency);
- a member look-up passed through to the cloud (cloud first: every look-up asks the sandbox);
- a member look-up answered from the cache while the cloud is down (sandbox outage: connections reset);
- ``/healthz`` again while the cloud is down.

Two client modes, because they measure different things on this daemon:

- ``new connection``: one TCP connection per request (connect included), the cost of each path;
- ``keep-alive``: one connection for all requests, as a POS that reuses its connection. While the daemon's
  listening socket lacks TCP_NODELAY (its accepted sockets have ``proto=0``, so asyncio does not set it),
  every response after the first on a connection waits ~40 ms for the client's delayed ACK (Nagle); the
  table flags it. The sandbox has the same socket issue, which the daemon's pool to it meets on every
  pass-through; the table flags that too.

Prints n, p50/p99/mean in milliseconds and the ratios to ``/healthz`` of the same mode. Each row stops after
``--budget`` seconds (default 6), so the run stays under two minutes whatever the latencies.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.timing import percentile  # noqa: E402
from tests.support.daemon import DaemonProcess  # noqa: E402
from tests.support.sandbox import running_sandbox  # noqa: E402

MEMBER = "OW7K2M9Q"
STALL_MS = 30.0


@dataclass
class Target:
    """One kind of request and what its answer must look like (a benchmark of errors is worthless)."""

    name: str
    port: int
    path: str
    expect: Callable[[http.client.HTTPResponse], bool]


class Client:
    """Plain http.client: the least client overhead, the same for every row."""

    def __init__(self, keepalive: bool) -> None:
        self.keepalive = keepalive
        self._conns: dict[int, http.client.HTTPConnection] = {}

    def get(self, target: Target) -> None:
        conn = self._conns.get(target.port) if self.keepalive else None
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=10)
            if self.keepalive:
                self._conns[target.port] = conn
        try:
            conn.request("GET", target.path)
            response = conn.getresponse()
            body = response.read()
            if not target.expect(response):
                raise SystemExit(f"{target.name}: unexpected answer {response.status} "
                                 f"{dict(response.getheaders())}: {body[:200]!r}")
        finally:
            if not self.keepalive:
                conn.close()

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()


def measure(client: Client, target: Target, count: int, warmup: int, budget: float) -> list[float]:
    """Up to ``count`` timed requests, fewer when ``budget`` seconds run out (at least 20)."""
    ends = time.monotonic() + budget / 4
    for _ in range(warmup):
        client.get(target)
        if time.monotonic() > ends:
            break
    samples: list[float] = []
    ends = time.monotonic() + budget
    for _ in range(count):
        started = time.perf_counter()
        client.get(target)
        samples.append(time.perf_counter() - started)
        if len(samples) >= 20 and time.monotonic() > ends:
            break
    return samples


def print_table(title: str, rows: list[tuple[str, list[float]]]) -> None:
    floor_p50 = statistics.median(rows[0][1])
    floor_p99 = percentile(rows[0][1], 0.99)
    print(f"\n{title}\n")
    print(f"{'scenario':<34} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'p50/healthz':>12} "
          f"{'p99/healthz':>12}")
    for name, samples in rows:
        p50, p99 = statistics.median(samples), percentile(samples, 0.99)
        print(f"{name:<34} {len(samples):>5} {p50 * 1000:>8.2f} {p99 * 1000:>8.2f} "
              f"{statistics.fmean(samples) * 1000:>8.2f} {p50 / floor_p50:>11.1f}x {p99 / floor_p99:>11.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="timed requests per row, new connections")
    parser.add_argument("--keepalive-requests", type=int, default=100, help="timed requests per row, keep-alive")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests before each row")
    parser.add_argument("--budget", type=float, default=6.0, help="seconds at most per row (then fewer requests)")
    args = parser.parse_args()
    modes = [("new connection", Client(keepalive=False), args.requests),
             ("keep-alive", Client(keepalive=True), args.keepalive_requests)]
    results: dict[str, list[tuple[str, list[float]]]] = {mode: [] for mode, _, _ in modes}
    with running_sandbox() as sandbox, tempfile.TemporaryDirectory(prefix="posbridge-bench-") as tmp:
        daemon = DaemonProcess(Path(tmp), sandbox.url, sandbox.token, sandbox.account).start()
        try:
            member_path = f"/agora/member/{MEMBER}?{urlencode({'_token': daemon.local_token})}"
            cloud_port = urlsplit(sandbox.url).port
            assert cloud_port is not None
            cache = lambda value: lambda r: r.status == 200 and r.getheader("X-Posbridge-Cache") == value  # noqa: E731
            ok = lambda r: r.status == 200  # noqa: E731
            online = [
                Target("/healthz", daemon.port, "/healthz", ok),
                Target("sandbox directly (no bridge)", cloud_port,
                       f"/agora/member/{MEMBER}?{urlencode(sandbox.params)}", ok),
                Target("member, cloud pass-through", daemon.port, member_path, cache("fresh")),
            ]
            offline = [
                Target("member, cache hit (cloud down)", daemon.port, member_path, cache("stale")),
                Target("/healthz (cloud down)", daemon.port, "/healthz", ok),
            ]
            for phase, targets in (("online", online), ("outage", offline)):
                if phase == "outage":
                    sandbox.faults(outage=True)
                for mode, client, count in modes:
                    for target in targets:
                        results[mode].append((target.name, measure(client, target, count, args.warmup, args.budget)))
                        print(f"  measured {target.name} ({mode})", file=sys.stderr)
        finally:
            for _, client, _ in modes:
                client.close()
            daemon.stop()
    for mode, rows in results.items():
        print_table(f"member look-ups, sequential requests, {mode}", rows)
    keepalive = dict(results["keep-alive"])
    if statistics.median(keepalive["/healthz"]) * 1000 > STALL_MS:
        print(f"\nnote: keep-alive /healthz p50 is {statistics.median(keepalive['/healthz']) * 1000:.0f} ms: "
              "responses wait for the client's delayed ACK (the daemon's listening socket lacks TCP_NODELAY; "
              "see this file's docstring).")
    if statistics.median(keepalive["sandbox directly (no bridge)"]) * 1000 > STALL_MS:
        print("note: the sandbox (uvicorn, same socket issue) stalls the same way on the daemon's keep-alive "
              "connection pool, so 'cloud pass-through' includes ~40 ms a real cloud would not add; compare "
              "'sandbox directly' with new connections for the cloud's own cost here.")


if __name__ == "__main__":
    main()
