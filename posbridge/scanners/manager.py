"""All configured scanners, each under its own supervisor task.

The daemon and ``posbridge scanners watch`` build one :class:`ScannerManager` from ``settings.scanners`` and an
``on_scan`` callback (usually :meth:`posbridge.scanners.hub.ScanHub.handle`). Callers rely on:

* one scanner that cannot be built (camera support missing, a driver bug in its constructor) is reported in its
  :class:`ScannerStatus` and logged; the others start anyway;
* drivers are imported when a scanner of that type is configured, so a till with one serial scanner never
  imports OpenCV, and a broken camera module cannot stop a serial scanner;
* ``stop()`` returns within a few seconds with every device closed.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from posbridge.config import ScannerBase
from posbridge.scanners import ScanEvent, ScanSource
from posbridge.scanners.supervisor import BACKOFF_INITIAL, BACKOFF_MAX, ScannerStatus, supervise

log = logging.getLogger("posbridge.scanners")

ScannerConfig = ScannerBase  # any of posbridge.config.SCANNER_TYPES
OnScan = Callable[[ScanEvent], Awaitable[Any]]
STOP_TIMEOUT = 5.0


def load(reference: str, what: str) -> Any:
    """The object a ``"module:name"`` reference of :data:`posbridge.config.SCANNER_TYPES` names.

    Raises RuntimeError saying which part of the installation is missing.
    """
    module_name, _, attribute = reference.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"{what} is not available in this installation ({exc}); reinstall posbridge with its "
                           "dependencies") from exc


def build_source(config: ScannerConfig) -> ScanSource:
    """The driver for one configured scanner, the one its settings class names.

    Raises when the driver cannot be imported or refuses the configuration.
    """
    source: ScanSource = load(type(config).driver, f"the {config.type} scanner driver")(config)
    return source


class ScannerManager:
    """Starts, watches and stops the scanners of one configuration."""

    def __init__(self, scanners: Sequence[ScannerConfig], on_scan: OnScan, *,
                 build: Callable[[ScannerConfig], ScanSource] = build_source,
                 backoff_initial: float = BACKOFF_INITIAL, backoff_max: float = BACKOFF_MAX) -> None:
        self._configs = [c for c in scanners if c.enabled]
        for config in scanners:
            if not config.enabled:
                log.info("scanner %s is disabled in the configuration (enabled = false)", config.name)
        self._on_scan = on_scan
        self._build = build
        self._backoff = (backoff_initial, backoff_max)
        self._status = {c.name: ScannerStatus(name=c.name, type=c.type) for c in self._configs}
        self.sources: dict[str, ScanSource] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    async def start(self) -> None:
        """Build every enabled scanner and start its supervisor. Never raises for a scanner's sake."""
        self._stop.clear()
        for config in self._configs:
            status = self._status[config.name]
            try:
                source = self._build(config)
            except Exception as exc:  # noqa: BLE001 - one bad scanner must not keep the others from starting
                status.last_error = f"cannot start: {exc}"
                log.error("scanner %s (%s): cannot start: %s", config.name, config.type, exc)
                continue
            self.sources[config.name] = source
            task = asyncio.create_task(
                supervise(source, self._on_scan, debounce=config.debounce, stop=self._stop, status=status,
                          backoff_initial=self._backoff[0], backoff_max=self._backoff[1]),
                name=f"scanner-{config.name}")
            task.add_done_callback(self._ended)
            self._tasks.append(task)

    @staticmethod
    def _ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:  # supervise() catches everything; belt and braces
            log.error("%s ended unexpectedly", task.get_name(), exc_info=task.exception())

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask every supervisor to stop, wait up to ``timeout`` s, then cancel what is left. Devices end closed."""
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def join(self) -> None:
        """Wait until every supervisor has ended (sources that were exhausted, like stdin at end of file)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def status(self) -> list[ScannerStatus]:
        """One entry per enabled scanner, in configuration order (live objects: read, do not modify)."""
        return [self._status[c.name] for c in self._configs]
