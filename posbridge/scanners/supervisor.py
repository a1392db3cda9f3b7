"""Keep one scanner running for as long as the daemon runs.

A :class:`~posbridge.scanners.ScanSource` is a plain blocking loop over one device. This module owns everything
around it: the worker thread, reopening after an unplug, backoff, one log line per distinct problem (not one per
retry), debouncing repeated reads of the same code, and the :class:`ScannerStatus` that ``/v1/status`` and the
metrics show. Callers rely on three promises:

* A blank read (:func:`~posbridge.scanners.is_blank`: whitespace, padding, framing only) is never a scan.
* ``supervise`` only returns when ``stop`` is set, when the source says it has ended for good
  (:class:`SourceExhausted`, e.g. stdin at end of file), or when it is cancelled. No exception from a driver or
  from ``on_scan`` ends it.
* The device is closed on every way out, cancellation included, and never while a worker thread is still inside
  ``read`` (drivers bound their reads to about a second, so this wait is short).
* Each distinct failure reason is logged once at WARNING, with the driver's reason and fix; a recovery is logged
  once at INFO. A cable that stays unplugged all night writes two lines, not thousands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from posbridge.scanners import ScanEvent, ScannerGone, ScannerUnavailable, ScanSource, SourceExhausted, is_blank

log = logging.getLogger("posbridge.scanners")

T = TypeVar("T")

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
# A device that stayed open this long was working: its next failure is logged even if the reason repeats.
HEALTHY_AFTER = 5.0
# How long cancellation waits for a worker thread still inside open/read before closing anyway.
_DRAIN_TIMEOUT = 5.0


@dataclass
class ScannerStatus:
    """What the daemon knows about one configured scanner, for ``/v1/status``, the status page and metrics.

    The supervisor is the only writer; readers get a consistent enough view from the event loop thread.
    """

    name: str
    type: str
    connected: bool = False
    last_error: str | None = None
    scans: int = 0
    reconnects: int = 0
    last_scan_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy (times are epoch seconds)."""
        return asdict(self)


class Debouncer:
    """Same text from one source within ``window`` seconds of the last time it was seen is the same scan.

    The window slides: a phone held under the scanner for ten seconds, re-read every 300 ms, is one scan.
    Times are ``time.monotonic()`` values so a wall-clock jump cannot merge or split scans.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: dict[str, float] = {}

    def is_new(self, text: str, now: float) -> bool:
        """Record ``text`` at ``now``; True when it starts a new scan."""
        if len(self._seen) > 64:  # forget codes not seen for a while so the table stays small
            self._seen = {t: at for t, at in self._seen.items() if now - at < self.window}
        last = self._seen.get(text)
        self._seen[text] = now
        return last is None or now - last >= self.window


async def _in_thread(func: Callable[[], T]) -> T:
    """Run a blocking driver call in a worker thread.

    On cancellation the thread cannot be interrupted, so wait (bounded) for it to return before re-raising:
    the caller's ``close()`` must not race a ``read()`` still running on the same device.
    """
    future = asyncio.ensure_future(asyncio.to_thread(func))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # silence a late driver error
        await asyncio.wait({future}, timeout=_DRAIN_TIMEOUT)
        raise


def _describe(exc: BaseException, during: str) -> str:
    """The log/status text for a failure: the driver's own message for expected errors, else a bug report."""
    if isinstance(exc, (ScannerUnavailable, ScannerGone)):
        return str(exc) or type(exc).__name__
    return (
        f"driver error during {during}: {type(exc).__name__}: {exc} "
        "(a posbridge bug or an unexpected device; it will be retried; please report this log line)"
    )


async def supervise(
    source: ScanSource,
    on_scan: Callable[[ScanEvent], Awaitable[Any]],
    *,
    debounce: float,
    stop: asyncio.Event,
    status: ScannerStatus,
    backoff_initial: float = BACKOFF_INITIAL,
    backoff_max: float = BACKOFF_MAX,
) -> None:
    """Open, read and reopen ``source`` until ``stop`` is set; deliver each new scan to ``on_scan``.

    Backoff starts at ``backoff_initial`` seconds, doubles up to ``backoff_max``, and starts again from the
    beginning after every successful open. ``on_scan`` is awaited in order, one scan at a time per source.
    """
    name = source.name
    debouncer = Debouncer(debounce)
    backoff = backoff_initial
    logged_reason: str | None = None  # the last problem logged; the same one again stays quiet
    announced = False  # "connected" was logged since that problem (a flapping device says it once)
    ever_connected = False

    def problem(exc: BaseException, during: str) -> None:
        nonlocal logged_reason, announced
        reason = _describe(exc, during)
        status.connected = False
        status.last_error = reason
        if reason != logged_reason:
            logged_reason, announced = reason, False
            unexpected = not isinstance(exc, (ScannerUnavailable, ScannerGone))
            log.warning("scanner %s: %s", name, reason, exc_info=exc if unexpected else None)

    def finished(exc: SourceExhausted) -> None:
        log.info("scanner %s: %s; no longer reading it", name, exc or "input ended")
        status.last_error = str(exc) or "input ended"

    try:
        while not stop.is_set():
            try:
                await _in_thread(source.open)
            except asyncio.CancelledError:
                raise
            except SourceExhausted as exc:
                finished(exc)
                return
            except Exception as exc:  # noqa: BLE001 - a driver bug must not end supervision
                problem(exc, "open")
            else:
                opened_at = time.monotonic()
                if ever_connected:
                    status.reconnects += 1
                status.connected, status.last_error = True, None
                backoff = backoff_initial
                if not announced:
                    log.info("scanner %s: connected%s", name, " again" if ever_connected else "")
                    announced = True
                ever_connected = True
                try:
                    await _read_until_error(source, on_scan, debouncer, stop, status)
                except asyncio.CancelledError:
                    raise
                except SourceExhausted as exc:
                    finished(exc)
                    return
                except Exception as exc:  # noqa: BLE001
                    if time.monotonic() - opened_at >= HEALTHY_AFTER:
                        logged_reason = None  # it worked for a while: this failure is news even if it looks old
                    problem(exc, "read")
            await _close(source)
            if stop.is_set():
                break
            await _wait(stop, backoff)
            backoff = min(backoff * 2, backoff_max)
    finally:
        status.connected = False
        await _close(source)


async def _read_until_error(
    source: ScanSource,
    on_scan: Callable[[ScanEvent], Awaitable[Any]],
    debouncer: Debouncer,
    stop: asyncio.Event,
    status: ScannerStatus,
) -> None:
    """The read loop of one open device. Returns when ``stop`` is set; raises what the driver raises."""
    while not stop.is_set():
        events = await _in_thread(source.read)
        for event in events:
            if is_blank(event.text):  # a terminator or padding on its own: never a scan (drivers drop it too)
                log.debug("scanner %s: blank read ignored (%d bytes)", source.name, len(event.raw))
                continue
            if not debouncer.is_new(event.text, time.monotonic()):
                log.debug("scanner %s: repeated read of the same code within %ss ignored", source.name,
                          debouncer.window)
                continue
            status.scans += 1
            status.last_scan_at = event.at
            try:
                await on_scan(event)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bad scan must not stop the scanner
                log.exception("scanner %s: handling a scan failed; the scanner keeps running", source.name)


async def _close(source: ScanSource) -> None:
    """``close()`` in a worker thread; a driver that raises here is logged, never propagated."""
    try:
        await _in_thread(source.close)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001
        log.warning("scanner %s: close() failed (ignored)", source.name, exc_info=True)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set, whichever comes first."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
