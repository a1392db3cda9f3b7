"""Running the sandbox cloud: `serve()` in the foreground (the CLI) or `EmbeddedSandbox` in a thread.

Both bind the listening socket themselves before uvicorn starts, so port 0 picks a free port and the real
URL is known (and connectable: the kernel queues connections) before the first request is served.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import uvicorn

from posbridge.listener import listening_socket, socket_url
from posbridge.sandbox.app import create_app
from posbridge.sandbox.state import Faults, Member, SandboxState

log = logging.getLogger("posbridge.sandbox")


def _config(app: Any, *, access_log: bool, log_level: str, configure_logging: bool) -> uvicorn.Config:
    kwargs: dict[str, Any] = {}
    if not configure_logging:
        kwargs["log_config"] = None  # embedded: leave the host process's logging alone
    return uvicorn.Config(
        app, access_log=access_log, log_level=log_level, lifespan="off", http="h11",
        timeout_graceful_shutdown=2, **kwargs,
    )


async def serve(
    host: str,
    port: int,
    token: str,
    account: str,
    *,
    members: Iterable[Member | Mapping[str, Any]] | None = None,
    access_log: bool = False,
    log_level: str = "warning",
    on_ready: Callable[[str], None] | None = None,
    **faults: Any,
) -> None:
    """Serve a sandbox cloud until SIGINT/SIGTERM (or cancellation).

    `faults` are `Faults` fields (latency_ms, error_rate, error_status, retry_after, reset_rate, outage,
    auth_fail); unknown names raise `pydantic.ValidationError` before anything is bound. `on_ready` is
    called with the base URL once the socket listens.
    """
    initial = Faults.model_validate(faults)
    app = create_app(token, account, members=members, faults=initial)
    sock = listening_socket(host, port)
    try:
        if on_ready is not None:
            on_ready(socket_url(sock))
        server = uvicorn.Server(_config(app, access_log=access_log, log_level=log_level, configure_logging=True))
        await server.serve(sockets=[sock])
    finally:
        sock.close()


class EmbeddedSandbox:
    """A sandbox cloud running in a background thread of this process (for `posbridge run --sandbox`).

    `start()` returns once the server accepts requests; `url` is then e.g. `http://127.0.0.1:43121`.
    `stop()` is idempotent. Usable as a context manager. `state` gives direct access to members,
    invoices and faults without HTTP.
    """

    def __init__(
        self,
        token: str,
        account: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        members: Iterable[Member | Mapping[str, Any]] | None = None,
        faults: Faults | Mapping[str, Any] | None = None,
        access_log: bool = False,
    ) -> None:
        self.token = token
        self.account = account
        self.host = host
        self.port = port
        self.app = create_app(token, account, members=members, faults=faults)
        self._access_log = access_log
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._url: str | None = None
        self._error: BaseException | None = None

    @property
    def state(self) -> SandboxState:
        state: SandboxState = self.app.state.sandbox
        return state

    @property
    def url(self) -> str:
        """Base URL of the running sandbox; raises `RuntimeError` before `start()`."""
        if self._url is None:
            raise RuntimeError("the sandbox is not started")
        return self._url

    @property
    def admin_url(self) -> str:
        return f"{self.url}/sandbox"

    def start(self, timeout: float = 10.0) -> EmbeddedSandbox:
        """Bind, start uvicorn in a daemon thread and wait until it serves. Raises `RuntimeError` on failure."""
        if self._thread is not None:
            return self
        self._sock = listening_socket(self.host, self.port)
        self._url = socket_url(self._sock)
        self._server = uvicorn.Server(
            _config(self.app, access_log=self._access_log, log_level="warning", configure_logging=False)
        )
        self._thread = threading.Thread(target=self._run, name="posbridge-sandbox", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"the sandbox did not start within {timeout:.0f} s: {self._error!r}")
        log.info("sandbox cloud listening on %s", self._url)
        return self

    def _run(self) -> None:
        assert self._server is not None and self._sock is not None
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported by start(); a thread cannot raise to its creator
            self._error = exc

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit, wait for the thread (at most `timeout` s) and close the socket."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._server = None

    def __enter__(self) -> EmbeddedSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["EmbeddedSandbox", "serve"]
