"""sd_notify over a real AF_UNIX datagram socket bound by the test, standing in for systemd."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from posbridge.notify import Notifier, watchdog_loop


class FakeManager:
    """The receiving end systemd would own: a bound SOCK_DGRAM socket."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def receive(self) -> str:
        return self.sock.recv(4096).decode("utf-8")

    def pending(self) -> list[str]:
        messages = []
        self.sock.setblocking(False)
        try:
            while True:
                messages.append(self.sock.recv(4096).decode("utf-8"))
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(2.0)
        return messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def path_manager(tmp_path: Path) -> Iterator[tuple[FakeManager, str]]:
    address = str(tmp_path / "notify.sock")
    manager = FakeManager(address)
    yield manager, address
    manager.close()


@pytest.fixture
def abstract_manager() -> Iterator[tuple[FakeManager, str]]:
    name = f"posbridge-test-{uuid.uuid4().hex}"
    manager = FakeManager(b"\0" + name.encode())
    yield manager, "@" + name
    manager.close()


def test_ready_status_watchdog_and_stopping_arrive_on_a_path_socket(path_manager: tuple[FakeManager, str]) -> None:
    manager, address = path_manager
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready()
    assert manager.receive() == "READY=1"
    assert notifier.status("replaying 3 invoices")
    assert manager.receive() == "STATUS=replaying 3 invoices"
    assert notifier.watchdog()
    assert manager.receive() == "WATCHDOG=1"
    assert notifier.stopping()
    assert manager.receive() == "STOPPING=1"


def test_leading_at_sign_means_the_abstract_namespace(abstract_manager: tuple[FakeManager, str]) -> None:
    manager, address = abstract_manager
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.ready(status="listening on 127.0.0.1:8080")
    assert manager.receive() == "READY=1\nSTATUS=listening on 127.0.0.1:8080"


def test_status_text_is_folded_onto_one_line(path_manager: tuple[FakeManager, str]) -> None:
    manager, address = path_manager
    Notifier({"NOTIFY_SOCKET": address}).status("cloud unreachable\nretrying\tin 5 s")
    assert manager.receive() == "STATUS=cloud unreachable retrying in 5 s"


def test_without_notify_socket_everything_is_a_silent_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.watchdog_interval() is None


def test_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch,
                                                   path_manager: tuple[FakeManager, str]) -> None:
    manager, address = path_manager
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert Notifier().watchdog()
    assert manager.receive() == "WATCHDOG=1"


def test_a_vanished_socket_never_raises_and_is_logged_once_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level(logging.DEBUG, logger="posbridge.notify"):
        assert notifier.ready() is False
        assert notifier.watchdog() is False
        assert notifier.status("still no manager") is False
    records = [r for r in caplog.records if r.name == "posbridge.notify"]
    assert len(records) == 1
    assert records[0].levelno == logging.DEBUG


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    assert Notifier(env).watchdog_interval() == 15.0


def test_watchdog_interval_applies_when_watchdog_pid_is_ours() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env).watchdog_interval() == 15.0


def test_watchdog_interval_is_none_when_watchdog_pid_names_another_process() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(env).watchdog_interval() is None


@pytest.mark.parametrize("usec", ["", "0", "-5", "thirty"])
def test_watchdog_interval_is_none_without_a_usable_watchdog_usec(usec: str) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": usec}).watchdog_interval() is None


def test_watchdog_loop_pings_only_while_the_health_check_passes(
    path_manager: tuple[FakeManager, str], caplog: pytest.LogCaptureFixture
) -> None:
    manager, address = path_manager
    notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "40000"})  # ping every 20 ms
    state = {"healthy": True}

    async def check() -> bool:
        return state["healthy"]

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        task = asyncio.create_task(watchdog_loop(notifier, check))
        await asyncio.sleep(0.15)
        healthy = manager.pending()
        state["healthy"] = False
        await asyncio.sleep(0.03)  # let a ping that was already due go out
        manager.pending()
        await asyncio.sleep(0.15)
        unhealthy = manager.pending()
        state["healthy"] = True
        await asyncio.sleep(0.15)
        recovered = manager.pending()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return healthy, unhealthy, recovered

    with caplog.at_level(logging.INFO, logger="posbridge.notify"):
        healthy, unhealthy, recovered = asyncio.run(scenario())
    assert len(healthy) >= 2 and set(healthy) == {"WATCHDOG=1"}
    assert unhealthy == []
    assert len(recovered) >= 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "health check failed" in warnings[0].getMessage()


def test_watchdog_loop_treats_a_raising_or_hanging_check_as_unhealthy(path_manager: tuple[FakeManager, str]) -> None:
    manager, address = path_manager
    notifier = Notifier({"NOTIFY_SOCKET": address})

    async def raising() -> bool:
        raise RuntimeError("database is locked")

    async def hanging() -> bool:
        await asyncio.sleep(3600)
        return True

    async def scenario() -> None:
        for check in (raising, hanging):
            task = asyncio.create_task(watchdog_loop(notifier, check, interval=0.02))
            await asyncio.sleep(0.12)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert manager.pending() == []


def test_watchdog_loop_returns_at_once_without_a_watchdog() -> None:
    async def check() -> bool:
        raise AssertionError("must not be called")

    asyncio.run(asyncio.wait_for(watchdog_loop(Notifier({}), check), timeout=1))


def test_a_manager_that_stops_reading_never_blocks_the_sender(path_manager: tuple[FakeManager, str]) -> None:
    manager, address = path_manager
    notifier = Notifier({"NOTIFY_SOCKET": address})
    # far more than any datagram queue holds: with a blocking socket this call would never return
    sent = [notifier.watchdog() for _ in range(5000)]
    assert sent[0] is True
    assert False in sent  # the queue filled up and the rest were dropped, not waited for
    assert manager.pending()[0] == "WATCHDOG=1"
