"""Invoice path benchmark: what durability costs the till, and how fast a backlog drains.

    .venv/bin/python bench/invoices.py [--quick]

Starts the sandbox cloud and the daemon as processes (as in production: real HTTP on 127.0.0.1) and prints:

1. ack latency p50/p99 and throughput of POST /agora/invoices with 1, 4 and 16 concurrent POS clients, next to
   GET /healthz on the same server in the same run. Two invoice rows: cloud up (the POS gets the cloud's answer
   inline, so the cloud round trip is included) and cloud down (stored and answered 202: the pure cost of a
   durable commit). The ratio column is invoice p50 / healthz p50 at the same concurrency.
2. the drain time of a 10,000-invoice backlog into the sandbox with 0 ms and 50 ms injected latency, at the
   default delivery concurrency, and at ``[delivery] concurrency = 16`` for the slow cloud.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.timing import percentile  # noqa: E402
from tests.support.daemon import DaemonProcess, invoice  # noqa: E402
from tests.support.sandbox import running_sandbox  # noqa: E402


async def load(url: str, make_request, total: int, concurrency: int) -> tuple[list[float], float]:
    """``total`` requests from ``concurrency`` clients; returns per-request seconds and the wall time."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            for number in counter:
                started = time.perf_counter()
                response = await make_request(http, number)
                latencies.append(time.perf_counter() - started)
                if response.status_code >= 300:
                    raise RuntimeError(f"unexpected {response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def post_maker(token: str, serie: str):
    async def post(http: httpx.AsyncClient, number: int) -> httpx.Response:
        body = json.dumps(invoice(number, serie=serie)).encode()
        return await http.post("/agora/invoices", content=body, params={"_token": token},
                               headers={"Content-Type": "application/json"})
    return post


async def healthz(http: httpx.AsyncClient, _: int) -> httpx.Response:
    return await http.get("/healthz")


def row(label: str, concurrency: int, latencies: list[float], wall: float, base_p50: float | None) -> str:
    p50 = statistics.median(latencies) * 1000
    p99 = percentile(latencies, 0.99) * 1000
    rate = len(latencies) / wall
    ratio = f"{p50 / base_p50:5.1f}x" if base_p50 else "     -"
    return f"| {label:<28} | {concurrency:>3} | {p50:8.2f} | {p99:8.2f} | {rate:8.0f} | {ratio} |"


def wait_sent(daemon: DaemonProcess, expected: int, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if daemon.status()["queue"]["sent"] >= expected:
            return time.perf_counter() - started
        time.sleep(0.2)
    raise RuntimeError(f"backlog not drained in {timeout} s: {daemon.status()['queue']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests and a 2,000-invoice backlog")
    args = parser.parse_args()
    per_client = 50 if args.quick else 150
    backlog = 2000 if args.quick else 10_000
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}")
    lines = ["| request                      |   c |  p50 ms  |  p99 ms  |  req/s   | ratio  |",
             "| ---------------------------- | --: | -------: | -------: | -------: | -----: |"]
    with running_sandbox() as sandbox, tempfile.TemporaryDirectory() as tmp:
        daemon = DaemonProcess(Path(tmp), sandbox.url, sandbox.token, sandbox.account,
                               overrides={"logging": {"level": "warning"}})
        daemon.start()
        try:
            for concurrency in (1, 4, 16):
                total = per_client * concurrency
                base, base_wall = asyncio.run(load(daemon.url, healthz, total, concurrency))
                base_p50 = statistics.median(base) * 1000
                lines.append(row("GET /healthz", concurrency, base, base_wall, None))
                sandbox.faults(outage=False)
                up, up_wall = asyncio.run(load(daemon.url, post_maker(daemon.local_token, f"U{concurrency}"),
                                               total, concurrency))
                lines.append(row("POST invoice, cloud up", concurrency, up, up_wall, base_p50))
                sandbox.faults(outage=True)
                down, down_wall = asyncio.run(load(daemon.url, post_maker(daemon.local_token, f"D{concurrency}"),
                                                   total, concurrency))
                lines.append(row("POST invoice, cloud down", concurrency, down, down_wall, base_p50))
                # the next rows must not compete with draining this backlog
                sandbox.faults(outage=False)
                wait_sent(daemon, daemon.status()["queue"]["sent"] + daemon.status()["queue"]["pending"], 300)
                print(f"  concurrency {concurrency} done", file=sys.stderr, flush=True)
        finally:
            daemon.stop()
        print("\n".join(lines))

        print(f"\n| backlog drain ({backlog:,} invoices) | injected latency | seconds | invoices/s |")
        print("| --- | --: | --: | --: |")
        default = drain_concurrency()
        for latency, concurrency in ((0, default), (50, default), (50, 16)):
            workdir = Path(tmp) / f"drain-{latency}-{concurrency}"
            workdir.mkdir()
            drain = DaemonProcess(workdir, sandbox.url, sandbox.token, sandbox.account,
                                  overrides={"logging": {"level": "warning"},
                                             "delivery": {"concurrency": concurrency}})
            drain.start()
            try:
                sandbox.faults(outage=True, latency_ms=0)
                print(f"  building a backlog of {backlog} (cloud down)...", file=sys.stderr, flush=True)
                asyncio.run(load(drain.url, post_maker(drain.local_token, f"B{latency}"), backlog, 16))
                assert drain.status()["queue"]["pending"] == backlog
                sandbox.faults(outage=False, latency_ms=latency)
                seconds = wait_sent(drain, backlog, 900)
            finally:
                drain.stop()
            label = f"delivery concurrency {concurrency}" + (" (default)" if concurrency == default else "")
            print(f"| {label} | {latency} ms | {seconds:.1f} | {backlog / seconds:.0f} |")
        accepted = [entry["accepted"] for entry in sandbox.invoices()]
        print(f"\nsandbox: {len(accepted)} invoices, max accepted per invoice = {max(accepted)}")


def drain_concurrency() -> int:
    from posbridge.config import DeliverySettings

    return DeliverySettings().concurrency


if __name__ == "__main__":
    main()
