"""One keystroke output: takes each published scan, decides whether and what to type, and types it.

A concrete output (:class:`~posbridge.outputs.uinput.UinputOutput`,
:class:`~posbridge.outputs.gadget.HidGadgetOutput`) only opens, closes and writes its device; everything a
cashier relies on lives here:

- ``when = "validated"`` types only members the cloud or the cache confirmed (HTTP 2xx, not a provisional
  answer); an unknown, rejected or unparseable card types nothing, and ``status()`` says why;
- every character is checked against the till's layout before the first key (never half an id);
- scans are typed one after another, in the order they were published; a scan that arrives while the device is
  missing is not kept for later (typing an old card into whatever field has focus later would be worse), it is
  counted and logged;
- a missing or failing device is reopened with backoff (1 s doubling to 30 s), with one log line per new problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from posbridge.config import OutputSettings
from posbridge.errors import OutputError, UntypableText
from posbridge.logs import mask_member
from posbridge.outputs.keystrokes import Key, plan

log = logging.getLogger("posbridge.outputs")

REOPEN_INITIAL = 1.0
REOPEN_MAX = 30.0
MAX_TYPED = 256  # characters: a card URL fits many times; garbage must not hold the keyboard for seconds


def choose_text(scan: dict[str, Any], settings: OutputSettings) -> tuple[str | None, str]:
    """(text to type, why) for one published scan; text None means type nothing, and ``why`` says why not."""
    member_id = scan.get("member_id")
    if settings.when == "validated":
        if member_id is None:
            return None, f"not a member card: {scan.get('error') or 'no member id'}"
        member = scan.get("member")
        if not isinstance(member, dict):
            return None, f"member not validated: {scan.get('error') or 'no look-up'}"
        status = member.get("status")
        if not isinstance(status, int) or not 200 <= status < 300:
            return None, f"member not confirmed (HTTP {status}{': ' + scan['error'] if scan.get('error') else ''})"
        data = member.get("data")
        if isinstance(data, dict) and data.get("provisional") is True:
            return None, "member not confirmed: provisional answer while the cloud is unreachable"
    if settings.what == "member_id":
        if not member_id:
            return None, f"no member id to type: {scan.get('error') or 'not a member card'}"
        return str(member_id), "member id"
    text = scan.get("text")
    if not isinstance(text, str) or not text:
        return None, "the scan has no text"
    return text, "scanned text"


class KeyboardOutput:
    """Base of the two outputs. Subclasses implement :meth:`open_device`, :meth:`close_device`, :meth:`press`."""

    kind = "keyboard"

    def __init__(self, settings: OutputSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.connected = False
        self.problem: str | None = None
        self.typed = 0
        self.skipped = 0
        self.failed = 0
        self.last: dict[str, Any] | None = None
        self._next_open = 0.0
        self._backoff = REOPEN_INITIAL
        self._logged_problem: str | None = None

    # -- device (blocking; run in a worker thread) --

    def open_device(self) -> None:
        """Open the device; raise :class:`OutputError` saying what is wrong and the fix."""
        raise NotImplementedError

    def close_device(self) -> None:
        raise NotImplementedError

    def press(self, keys: list[Key]) -> None:
        """Type ``keys`` (press and release each, ``key_delay`` between keys). Raise :class:`OutputError`."""
        raise NotImplementedError

    # -- life cycle --

    async def open(self) -> bool:
        """Try to open the device now; True when it is open. Failures are logged once per distinct problem."""
        try:
            await asyncio.to_thread(self.open_device)
        except OutputError as exc:
            self._trouble(str(exc))
            return False
        self.connected = True
        self.problem = None
        self._backoff = REOPEN_INITIAL
        if self._logged_problem is not None:
            log.info("output %s: %s is open again", self.name, self.settings.device)
        else:
            log.info("output %s: typing into %s (%s layout)", self.name, self.settings.device, self.settings.layout)
        self._logged_problem = None
        return True

    async def close(self) -> None:
        if self.connected:
            self.connected = False
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.close_device)

    def _trouble(self, problem: str) -> None:
        self.connected = False
        self.problem = problem
        self._next_open = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, REOPEN_MAX)
        if problem != self._logged_problem:
            log.error("output %s: %s", self.name, problem)
            self._logged_problem = problem

    async def run(self, subscription: Any) -> None:
        """Type every scan of ``subscription`` until it closes (the daemon stops) or the task is cancelled."""
        try:
            while True:
                if not self.connected and time.monotonic() >= self._next_open:
                    await self.open()
                timeout = None if self.connected else max(0.05, self._next_open - time.monotonic())
                try:
                    scan = await subscription.get(timeout=timeout)
                except StopAsyncIteration:
                    return
                if scan is not None:
                    await self.handle(scan)
        finally:
            await subscription.aclose()
            await self.close()

    async def handle(self, scan: dict[str, Any]) -> str:
        """Type one scan if it should be; returns the outcome (``typed``, ``skipped``, ``refused``, ``failed``)."""
        text, why = choose_text(scan, self.settings)
        if text is None:
            return self._record("skipped", why, scan)
        if len(text) > MAX_TYPED:
            log.error("output %s: scan from %s is %d characters long; at most %d are typed, so none were",
                      self.name, scan.get("source"), len(text), MAX_TYPED)
            return self._record("refused", f"too long to type ({len(text)} characters; at most {MAX_TYPED})", scan)
        try:
            keys = plan(text, self.settings.layout, self.settings.prefix, self.settings.suffix)
        except UntypableText as exc:
            log.error("output %s: scan from %s: %s", self.name, scan.get("source"), exc)
            return self._record("refused", str(exc), scan)
        if not self.connected and not await self.open():
            return self._record("failed", f"not typed: {self.problem}", scan)
        try:
            await asyncio.to_thread(self.press, keys)
        except OutputError as exc:
            await self.close()
            self._trouble(str(exc))
            return self._record("failed", f"not (completely) typed: {exc}", scan)
        return self._record("typed", why, scan)

    def _record(self, result: str, reason: str, scan: dict[str, Any]) -> str:
        if result == "typed":
            self.typed += 1
        elif result == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
        who = mask_member(scan.get("member_id")) if scan.get("member_id") else "-"
        if result == "typed":
            log.info("output %s: typed member %s", self.name, who)
        elif result == "skipped":
            log.info("output %s: typed nothing for member %s: %s", self.name, who, reason)
        self.last = {"result": result, "reason": reason, "member_id": scan.get("member_id"),
                     "scan_at": scan.get("at"), "at": time.time()}
        return result

    def status(self) -> dict[str, Any]:
        """What `/v1/status` and the counter screen show. No card text, only the masked or full member id."""
        return {
            "name": self.name,
            "type": self.settings.type,
            "device": self.settings.device,
            "layout": self.settings.layout,
            "connected": self.connected,
            "problem": self.problem,
            "typed": self.typed,
            "skipped": self.skipped,
            "failed": self.failed,
            "last": self.last,
        }
