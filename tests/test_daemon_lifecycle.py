"""The daemon's life as systemd sees it: READY, STATUS and watchdog keep-alives, and a clean stop on SIGTERM.

systemd is stood in for by what it is on the wire: an AF_UNIX datagram socket named by ``$NOTIFY_SOCKET``
(abstract, so no path length limit), with ``$WATCHDOG_USEC`` set. The blocked-loop test runs the daemon in this
process, on its own thread and event loop, and blocks that loop from outside: the product has no test hooks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import secrets
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from posbridge import daemon as daemon_mod
from posbridge.config import from_dict
from tests.support.daemon import DaemonProcess, free_port, invoice
from tests.support.sandbox import SandboxProcess

WATCHDOG_USEC = 1_000_000  # pings every 0.5 s


@dataclass
class FakeSystemd:
    """The notify socket: every datagram with the monotonic time it arrived."""

    name: str = field(default_factory=lambda: f"@posbridge-test-{secrets.token_hex(6)}")
    messages: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name[1:].encode())
        self.sock.settimeout(0.1)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def snapshot(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.messages)

    def pings(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [at for at, text in self.snapshot() if "WATCHDOG=1" in text.split("\n") and since <= at <= until]

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "message"):  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate(self.snapshot())
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no {what} from the daemon within {timeout} s; got {self.snapshot()!r}")

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    fake = FakeSystemd()
    yield fake
    fake.close()


def test_daemon_process_reports_ready_status_pings_the_watchdog_and_stops_promptly(
        sandbox: SandboxProcess, tmp_path: Path, systemd: FakeSystemd) -> None:
    bridge = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account,
                           env={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
    bridge.env["NOTIFY_SOCKET"] = systemd.name  # DaemonProcess drops an inherited one, after applying env=
    bridge.start()
    try:
        ready = systemd.wait_for(lambda ms: [t for t, m in ms if "READY=1" in m.split("\n")], what="READY=1")
        systemd.wait_for(lambda ms: [m for _, m in ms if m.startswith("STATUS=") and "pending" in m], what="STATUS=")
        time.sleep(2.0)
        pings = systemd.pings(since=ready[0])
        assert len(pings) >= 3, systemd.snapshot()
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < WATCHDOG_USEC / 1e6  # sent about every half of it: never a gap systemd would act on
        asked = time.monotonic()
        assert bridge.terminate() == 0
        assert time.monotonic() - asked < 4, "the watchdog task must not hold up the stop"
    finally:
        bridge.stop()
    assert any(m == "STOPPING=1" for _, m in systemd.snapshot())


@dataclass
class InProcessDaemon:
    """``daemon.run`` on its own thread and event loop, stopped through ``stop`` (signals need the main thread)."""

    settings: object
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    ready: threading.Event = field(default_factory=threading.Event)
    stop: asyncio.Event | None = None
    result: list[object] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._main, name="daemon-under-test", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> int:
            self.stop = asyncio.Event()
            return await daemon_mod.run(self.settings, "cloud-token-unused", "local-token-unused",  # type: ignore[arg-type]
                                        stop=self.stop, on_ready=lambda _: self.ready.set())

        try:
            self.result.append(self.loop.run_until_complete(main()))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.result.append(exc)
        finally:
            self.loop.close()

    def start(self) -> "InProcessDaemon":
        self.thread.start()
        assert self.ready.wait(20), f"the daemon did not start: {self.result}"
        return self

    def shutdown(self) -> object:
        if self.thread.is_alive() and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the daemon did not stop"
        return self.result[0]


def test_a_blocked_event_loop_withholds_the_watchdog_and_pings_resume_after(
        tmp_path: Path, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.name)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    settings = from_dict({"server": {"listen": f"127.0.0.1:{free_port()}"},
                          "cloud": {"base_url": f"http://127.0.0.1:{free_port()}"},
                          "storage": {"path": str(tmp_path / "posbridge.db")}})
    daemon = InProcessDaemon(settings).start()
    try:
        systemd.wait_for(lambda ms: len([m for _, m in ms if m == "WATCHDOG=1"]) >= 2, what="two pings")
        blocked: dict[str, float] = {}

        def block() -> None:
            blocked["from"] = time.monotonic()
            time.sleep(3)
            blocked["until"] = time.monotonic()

        daemon.loop.call_soon_threadsafe(block)
        systemd.wait_for(lambda _: "until" in blocked, timeout=10, what="the end of the block")
        assert systemd.pings(since=blocked["from"] + 0.05, until=blocked["until"]) == []
        resumed = systemd.wait_for(lambda _: systemd.pings(since=blocked["until"]), timeout=3, what="pings resumed")
        assert resumed[0] - blocked["until"] < 1.5
    finally:
        code = daemon.shutdown()
    assert code == 0


def test_sigterm_during_a_burst_keeps_every_acknowledged_invoice_and_exits_cleanly(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    sandbox.faults(outage=True)  # everything queues: the database is the only place the invoices are
    bridge = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account)
    bridge.start()
    acknowledged: set[str] = set()
    lock = threading.Lock()
    numbers = iter(range(1, 100_000))
    stopping = threading.Event()

    def till(lane: int) -> int:
        """Post until the daemon stops answering; returns how many it posted."""
        posted = 0
        with httpx.Client(base_url=bridge.url, timeout=15) as http:
            while True:
                with lock:
                    number = next(numbers)
                body = json.dumps(invoice(number, serie=f"L{lane}")).encode()
                try:
                    response = http.post("/agora/invoices", content=body, params={"_token": bridge.local_token},
                                         headers={"Content-Type": "application/json"})
                except httpx.HTTPError:
                    if stopping.is_set():
                        return posted
                    continue
                posted += 1
                if 200 <= response.status_code < 300:
                    with lock:
                        acknowledged.add(f"L{lane}-{number}")
                elif stopping.is_set():
                    return posted

    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            lanes = [pool.submit(till, lane) for lane in range(16)]
            bridge.wait_for(lambda: len(acknowledged) >= 100, what="a burst under way")
            stopping.set()
            assert bridge.proc is not None
            bridge.proc.send_signal(signal.SIGTERM)
            code = bridge.proc.wait(30)
            for lane in lanes:
                lane.result(timeout=30)
    finally:
        bridge.stop()
    assert code == 0, bridge.log()
    with sqlite3.connect(f"file:{bridge.db_path}?mode=ro", uri=True) as conn:
        stored = {f"{doc['Serie']}-{doc['Number']}" for doc in (json.loads(row[0]) for row in
                                                                 conn.execute("SELECT body FROM invoices"))}
    missing = acknowledged - stored
    assert not missing, f"{len(missing)} acknowledged invoices are not in the database: {sorted(missing)[:10]}"
    assert len(acknowledged) >= 100
    log = bridge.log()
    assert "stopping: finishing requests in flight" in log and "stopped cleanly" in log
    assert "Traceback" not in log


def test_run_outside_the_main_thread_installs_no_signal_handlers(tmp_path: Path) -> None:
    """Signals stay with whoever owns the main thread (the embedding program, pytest)."""
    before = signal.getsignal(signal.SIGTERM)
    settings = from_dict({"server": {"listen": f"127.0.0.1:{free_port()}"},
                          "cloud": {"base_url": f"http://127.0.0.1:{free_port()}"},
                          "storage": {"path": str(tmp_path / "posbridge.db")}})
    daemon = InProcessDaemon(settings).start()
    try:
        assert signal.getsignal(signal.SIGTERM) is before
        assert httpx.get(f"http://{settings.server.listen}/healthz").status_code == 200
    finally:
        assert daemon.shutdown() == 0
    assert os.path.exists(tmp_path / "posbridge.db")
