"""The scan path end to end: bytes from a serial scanner (a pseudo-terminal) reach a POS listening on
``/v1/events`` through the daemon process, as a validated member."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import DaemonProcess
from tests.support.pty import PtyScanner


class EventListener:
    """A POS plugin's EventSource: reads ``/v1/events`` in a thread, one dict per ``scan`` event."""

    def __init__(self, url: str, token: str) -> None:
        self.events: queue.Queue[dict] = queue.Queue()
        self.connected = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(url, token), daemon=True)
        self._thread.start()
        assert self.connected.wait(10), "could not connect to /v1/events"

    def _run(self, url: str, token: str) -> None:
        try:
            self._listen(url, token)
        except httpx.HTTPError:
            if not self._stop:  # the daemon going away after close() is expected
                raise

    def _listen(self, url: str, token: str) -> None:
        with httpx.Client(timeout=httpx.Timeout(5, read=None)) as http:
            with http.stream("GET", f"{url}/v1/events", params={"_token": token}) as response:
                assert response.status_code == 200
                self.connected.set()
                kind = None
                for line in response.iter_lines():
                    if self._stop:
                        return
                    if line.startswith("event:"):
                        kind = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and kind == "scan":
                        self.events.put(json.loads(line.split(":", 1)[1]))

    def next(self, timeout: float = 10.0) -> dict:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        self._stop = True


@pytest.fixture
def scanner():
    with PtyScanner() as pty:
        yield pty


@pytest.fixture
def bridge(sandbox, scanner, tmp_path: Path):
    daemon = DaemonProcess(tmp_path, sandbox.url, sandbox.token, sandbox.account, scanners=[
        {"name": "counter", "type": "serial", "port": scanner.path, "framing": "eol", "debounce": 0.5,
         "max_length": 512},
    ])
    daemon.start()
    daemon.wait_for(lambda: any(s["connected"] for s in daemon.status()["scanners"]), what="scanner open")
    yield daemon
    daemon.stop()


def test_serial_scan_reaches_the_event_stream_as_a_validated_member(bridge, scanner):
    listener = EventListener(bridge.url, bridge.local_token)
    scanner.scan("]Q1https://mystore.omniwallet.cloud/c/OW7K2M9Q")
    event = listener.next()
    listener.close()
    assert event["source"] == "counter"
    assert event["member_id"] == "OW7K2M9Q"
    assert event["symbology"] == "qr"
    assert event["member"]["status"] == 200
    assert event["member"]["cache"] == "fresh"
    assert event["member"]["data"]["name"]
    assert event["error"] is None


def test_last_scan_is_available_to_a_polling_pos(bridge, scanner):
    assert bridge.client.get("/v1/scans/last", params={"_token": bridge.local_token}).status_code == 204
    scanner.scan("4000123456789")
    last = bridge.wait_for(lambda: (r := bridge.client.get("/v1/scans/last", params={"_token": bridge.local_token}))
                           .status_code == 200 and r.json(), what="last scan")
    assert last["member_id"] == "4000123456789"


def test_a_megabyte_of_garbage_then_a_good_code_still_arrives(bridge, scanner):
    listener = EventListener(bridge.url, bridge.local_token)
    scanner.write(os.urandom(1024 * 1024))
    # A real scanner ends every read with its suffix; the garbage's last partial
    # "line" ends here, so the good code is a frame of its own.
    scanner.write(b"\r\n")
    scanner.scan("OW7K2M9Q")
    deadline = time.monotonic() + 30
    while True:
        event = listener.next(timeout=max(0.1, deadline - time.monotonic()))
        if event["member_id"] == "OW7K2M9Q":
            break
    listener.close()
    assert event["member"]["status"] == 200
    assert bridge.client.get("/healthz").status_code == 200


def test_event_stream_needs_the_local_token(bridge):
    response = bridge.client.get("/v1/events")
    assert response.status_code == 401
    assert response.json()["error"] == "missing_token"
