"""The scan hub and its HTTP face: real uvicorn on 127.0.0.1, real httpx clients, a real serial pty upstream."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn

from posbridge.api import create_app
from posbridge.config import CardSettings, SerialScanner
from posbridge.scanners import ScanEvent
from posbridge.scanners.hub import MemberLookup, ScanHub
from posbridge.scanners.manager import ScannerManager
from tests.support.pty import PtyScanner

TOKEN = "local-test-token"
MEMBERS = {"OW7K2M9Q": {"id": "OW7K2M9Q", "name": "Ana", "points": 120}}


async def lookup(member_id: str) -> MemberLookup:
    """Stands in for the cloud: members.py is tested on its own; the hub only needs its answers."""
    if member_id == "BROKEN01":
        raise RuntimeError("cloud client exploded")
    if member_id in MEMBERS:
        return MemberLookup(200, "fresh", MEMBERS[member_id])
    return MemberLookup(404, None, {"error": "not_found"})


def _event(text: str, source: str = "front", symbology: str | None = None) -> ScanEvent:
    return ScanEvent(text=text, raw=text.encode(), symbology=symbology, source=source, at=1_700_000_000.25)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


@asynccontextmanager
async def serving(hub: ScanHub, keepalive: float = 15.0) -> AsyncIterator[httpx.AsyncClient]:
    """The daemon's app (create_app) on a real socket, with a client pointed at it."""
    app = create_app(SimpleNamespace(scan_hub=hub), TOKEN)
    app.state.sse_keepalive = keepalive
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        hub.close()
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def _sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs, and ("comment", text) for comment lines, as a browser's parser splits them."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            yield event, "\n".join(data)
            event, data = "message", []


async def _wait_subscribed(hub: ScanHub, count: int = 1) -> None:
    for _ in range(500):
        if hub.subscribers >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the stream never subscribed")


def test_an_sse_client_receives_each_validated_scan_as_a_scan_event() -> None:
    async def main() -> None:
        hub = ScanHub(CardSettings(), lookup)
        async with serving(hub) as client:
            async with client.stream("GET", "/v1/events", params={"_token": TOKEN}) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                await _wait_subscribed(hub)
                await hub.handle(_event("]Q1https://mystore.omniwallet.cloud/c/OW7K2M9Q"))
                await hub.handle(_event("NOBODY99", source="door"))
                received = []
                async for kind, data in _sse_events(response):
                    if kind == "scan":
                        received.append(json.loads(data))
                    if len(received) == 2:
                        break
        first, second = received
        assert first == {"source": "front", "text": "]Q1https://mystore.omniwallet.cloud/c/OW7K2M9Q",
                         "symbology": "qr", "member_id": "OW7K2M9Q",
                         "member": {"status": 200, "cache": "fresh", "data": MEMBERS["OW7K2M9Q"]},
                         "error": None, "at": "2023-11-14T22:13:20.250Z"}
        assert second["member"]["status"] == 404 and second["source"] == "door"

    run(main)


def test_the_stream_sends_keep_alive_comments_and_needs_the_local_token() -> None:
    async def main() -> None:
        hub = ScanHub(CardSettings(), lookup)
        async with serving(hub, keepalive=0.2) as client:
            refused = await client.get("/v1/events")
            assert refused.status_code == 401 and refused.json()["error"] == "missing_token"
            wrong = await client.get("/v1/events", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with client.stream("GET", "/v1/events", headers=headers) as response:
                comments = []
                async for kind, text in _sse_events(response):
                    comments.append(text)
                    if comments.count("keep-alive") == 2:
                        break
            assert comments[0] == "connected"

    run(main)


def test_a_client_that_disconnects_is_unsubscribed_and_closing_the_hub_ends_open_streams() -> None:
    async def main() -> None:
        hub = ScanHub(CardSettings(), lookup)
        async with serving(hub, keepalive=0.1) as client:
            async with client.stream("GET", "/v1/events", params={"_token": TOKEN}) as response:
                await _wait_subscribed(hub)
                async for _ in response.aiter_lines():
                    break
            for _ in range(300):  # noticed at the next keep-alive at the latest
                if hub.subscribers == 0:
                    break
                await asyncio.sleep(0.01)
            assert hub.subscribers == 0

            async with client.stream("GET", "/v1/events", params={"_token": TOKEN}) as response:
                await _wait_subscribed(hub)
                hub.close()
                lines = [line async for line in response.aiter_lines()]  # ends: the server finished the body
            assert lines[:2] == ["retry: 2000", ": connected"]

    run(main)


def test_scans_last_is_204_before_any_scan_and_then_the_last_published_scan() -> None:
    async def main() -> None:
        hub = ScanHub(CardSettings(), lookup)
        async with serving(hub) as client:
            params = {"_token": TOKEN}
            assert (await client.get("/v1/scans/last", params=params)).status_code == 204
            assert (await client.get("/v1/scans/last")).status_code == 401
            await hub.handle(_event("OW7K2M9Q"))
            await hub.handle(_event("not a card at all!"))
            last = (await client.get("/v1/scans/last", params=params)).json()
            assert last["text"] == "not a card at all!" and last["member_id"] is None and last["error"]

    run(main)


def test_a_failing_member_lookup_becomes_the_error_of_that_scan() -> None:
    async def main() -> None:
        hub = ScanHub(CardSettings(), lookup)
        published = await hub.handle(_event("BROKEN01"))
        assert published["member_id"] == "BROKEN01" and published["member"] is None
        assert published["error"] == "member look-up failed: cloud client exploded"
        assert (await hub.handle(_event("OW7K2M9Q")))["member"]["status"] == 200

    run(main)


def test_a_lookup_may_answer_with_a_data_method_like_members_answer() -> None:
    async def answer(member_id: str) -> Any:
        return SimpleNamespace(status=200, cache="stale", data=lambda: {"id": member_id})

    async def main() -> None:
        hub = ScanHub(CardSettings(), answer)
        published = await hub.handle(_event("OW7K2M9Q"))
        assert published["member"] == {"status": 200, "cache": "stale", "data": {"id": "OW7K2M9Q"}}

    run(main)


def test_a_slow_subscriber_loses_its_oldest_events_and_never_blocks_the_scanners() -> None:
    async def main() -> None:
        hub = ScanHub(CardSettings(), None, queue_size=10)
        slow = hub.subscribe()
        for number in range(25):
            await asyncio.wait_for(hub.handle(_event(f"MEMBER{number:02d}")), 1)
        got = [await slow.get(timeout=0.1) for _ in range(10)]
        assert [g["member_id"] for g in got if g] == [f"MEMBER{n:02d}" for n in range(15, 25)]
        assert slow.dropped == 15
        assert await slow.get(timeout=0.05) is None
        await slow.aclose()
        assert hub.subscribers == 0

    run(main)


def test_member_ids_are_masked_in_info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "posbridge.scans")

    async def main() -> None:
        await ScanHub(CardSettings(), lookup).handle(_event("https://mystore.omniwallet.cloud/c/OW7K2M9Q"))

    run(main)
    assert "member ****2M9Q" in caplog.text
    assert "OW7K2M9Q" not in caplog.text


def test_garbage_from_a_serial_scanner_gives_error_events_blank_lines_none_and_the_next_good_scan_goes_through(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        hub = ScanHub(CardSettings(), lookup)
        with PtyScanner() as pty:
            config = SerialScanner.model_validate(
                {"name": "front", "type": "serial", "port": pty.path, "debounce": 0, "max_length": 20_000})
            manager = ScannerManager([config], hub.handle, backoff_initial=0.05)
            async with serving(hub) as client:
                async with client.stream("GET", "/v1/events", params={"_token": TOKEN}) as response:
                    await _wait_subscribed(hub)
                    await manager.start()
                    while not manager.status()[0].connected:
                        await asyncio.sleep(0.01)
                    garbage = [random.Random(7).randbytes(200).replace(b"\r", b"").replace(b"\n", b""),
                               b"\x01\x02\x1b[2J\x7f\x08", b"Z" * 10_000]
                    blank = [b"\x00" * 64, b"   \t", b"\x02\x03"]  # padding, whitespace, framing: no scan
                    for junk in [garbage[0], blank[0], garbage[1], blank[1], garbage[2], blank[2]]:
                        pty.write(junk + b"\r\n")
                    pty.scan("]Q1https://mystore.omniwallet.cloud/c/OW7K2M9Q")
                    scans = []
                    async for kind, data in _sse_events(response):
                        if kind == "scan":
                            scans.append(json.loads(data))
                            if scans[-1]["member_id"] == "OW7K2M9Q":
                                break
                    await manager.stop()
        errors, good = scans[:-1], scans[-1]
        assert len(errors) == len(garbage)
        assert all(e["error"] and e["member_id"] is None and e["member"] is None for e in errors)
        assert any(e["error"].startswith("too long") for e in errors)
        assert good["member"] == {"status": 200, "cache": "fresh", "data": MEMBERS["OW7K2M9Q"]}
        assert good["error"] is None
        assert manager.status()[0].scans == len(garbage) + 1

    run(main)


def test_a_member_answer_with_a_lone_surrogate_still_streams_and_serves_as_valid_json() -> None:
    async def odd(member_id: str) -> MemberLookup:
        return MemberLookup(200, "fresh", json.loads('{"name": "Ana \\ud800"}'))

    async def main() -> None:
        hub = ScanHub(CardSettings(), odd)
        async with serving(hub) as client:
            async with client.stream("GET", "/v1/events", params={"_token": TOKEN}) as response:
                await _wait_subscribed(hub)
                await hub.handle(_event("OW7K2M9Q"))
                async for kind, data in _sse_events(response):
                    if kind == "scan":
                        assert json.loads(data)["member"]["data"]["name"] == "Ana \ud800"
                        break
            last = await client.get("/v1/scans/last", params={"_token": TOKEN})
            assert last.status_code == 200 and last.json()["member_id"] == "OW7K2M9Q"

    run(main)


@pytest.mark.parametrize("text", ["", "   ", "\r\n", "\x00" * 56, "\x02\x03", "\t\x1d "])
def test_a_blank_read_is_never_published_and_never_replaces_the_last_scan(text: str) -> None:
    async def main() -> None:
        hub = ScanHub(CardSettings(), lookup)
        listener = hub.subscribe()
        async with serving(hub) as client:
            await hub.handle(_event("OW7K2M9Q"))
            assert await hub.handle(_event(text)) is None
            last = (await client.get("/v1/scans/last", params={"_token": TOKEN})).json()
            assert last["member_id"] == "OW7K2M9Q"
            assert [(await listener.get(timeout=0.1) or {}).get("member_id") for _ in range(2)] == ["OW7K2M9Q", None]
            assert hub.published == 1

    run(main)


def test_a_camera_gs1_code_is_published_with_the_member_id_of_its_ai_8018() -> None:
    async def main() -> None:
        hub = ScanHub(CardSettings(), lookup)
        event = ScanEvent(text="8018123456789012345675", raw=b"8018123456789012345675", symbology="qr",
                          source="till-cam", at=1_700_000_000.25, aim="]Q3")
        published = await hub.handle(event)
        assert published is not None
        assert (published["member_id"], published["symbology"], published["member"]["status"]) == \
            ("123456789012345675", "qr", 404)

    run(main)
