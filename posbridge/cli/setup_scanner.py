"""The scanner steps of `posbridge setup`: pick a device among what `posbridge scanners list` finds (its code,
imported, not copied), then a test scan that shows the member the cloud knows.

What callers rely on: :func:`scanner_step` changes ``[[scanners]]`` only when the technician picks something other
than what is configured; :func:`test_scan_step` asks for the scan only once a scanner is open, never writes
anything, and returns after one member was shown or the technician gives up.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import typer

from posbridge.cli.common import fail
from posbridge.cli.humane import paint
from posbridge.cli.setup_config import ConfigEdit, scanner_entry

if TYPE_CHECKING:
    from posbridge.cli.setup import Wizard


def scanner_options() -> tuple[list[tuple[str, Any]], list[str]]:
    """What `posbridge scanners list` finds, as choices: ``(label, [[scanners]] table)``."""
    from posbridge.scanners.discovery import discover

    report = discover()
    options: list[tuple[str, Any]] = []
    for device in report["usb"]:
        if not device["likely_scanner"]:
            continue
        mode = "pos" if any(i["kind"] == "hid-pos" for i in device["interfaces"]) else "keyboard"
        label = " ".join(x for x in (device["maker"] or device["manufacturer"], device["product"]) if x) or "USB"
        options.append((f"USB scanner {label} {device['vid']}:{device['pid']} ({mode} mode)",
                        scanner_entry(f"hid:{device['vid']}:{device['pid']}:{mode}")))
    for port in report["serial"]:
        if port["vid"]:
            path = port["by_id"][0] if port["by_id"] else port["device"]
            options.append((f"serial scanner {port['description'] or ''} {path}".replace("  ", " "),
                            scanner_entry(f"serial:{path}")))
    for video in report["video"]:
        source = video["by_id"][0] if video["by_id"] else video["device"]
        options.append((f"camera {video['name'] or ''} {source}".replace("  ", " "), scanner_entry(f"camera:{source}")))
    return options, report["notes"]


def scanner_step(wizard: "Wizard", edit: ConfigEdit, choice: str | None) -> list[dict[str, Any]]:
    current = edit.scanners()
    enabled = [s for s in current if s.get("enabled", True)]
    if choice is None and wizard.interactive:
        options, notes = scanner_options()
        for note in notes:
            wizard.note(paint(note, "dim"))
        choices = list(options)
        if enabled:
            names = ", ".join(f"{s.get('name')} ({s.get('type')})" for s in enabled)
            choices.insert(0, (f"keep the configured scanner{'s' if len(enabled) > 1 else ''}: {names}", "keep"))
        choices.append(("another device (type its path or ids)", "other"))
        choices.append(("no scanner (the POS only sends invoices and looks members up)", "none"))
        picked = wizard.choose("Which scanner reads the cards?", choices, default=1)
        if picked == "other":
            while True:
                spec = wizard.ask("Device (serial:/dev/ttyUSB0, hid:VID:PID[:keyboard] or camera:/dev/video0)",
                                  None, flag="--scanner")
                try:
                    picked = scanner_entry(spec)
                    break
                except ValueError as exc:
                    typer.echo(f"  {exc}")
    else:
        picked = choice or "keep"
        if picked not in ("keep", "none"):
            try:
                picked = scanner_entry(picked)
            except ValueError as exc:
                fail(f"--scanner {exc}", code=2)
    if picked == "keep":
        disabled = len(current) - len(enabled)
        wizard.say("scanner", "kept: " + (", ".join(str(s.get("name")) for s in enabled) if enabled else "none")
                   + (f" ({disabled} disabled in the file)" if disabled else ""))
        return enabled
    scanners = [] if picked == "none" else [picked]
    changed = edit.replace_scanners(scanners)
    what = "none" if not scanners else ", ".join(f"{k} = {v!r}" for k, v in picked.items() if k != "name")
    replaced = f" (replaces {len(current)} configured)" if changed and current else ""
    wizard.say("scanner", f"{what}{replaced} ({'changed' if changed else 'unchanged'})")
    return scanners


OPEN_TIMEOUT = 10.0


async def _one_scan(settings: Any, timeout: float) -> Any:
    """The first scan of the configured scanners; the technician is asked to scan only once one is open."""
    from posbridge.scanners.manager import ScannerManager

    loop = asyncio.get_running_loop()
    found: asyncio.Future[Any] = loop.create_future()

    async def on_scan(event: Any) -> None:
        if not found.done():
            found.set_result(event)

    manager = ScannerManager(settings.scanners, on_scan)
    await manager.start()
    try:
        deadline = loop.time() + OPEN_TIMEOUT
        while not any(s.connected for s in manager.status()) and loop.time() < deadline and not found.done():
            await asyncio.sleep(0.05)
        if not any(s.connected for s in manager.status()) and not found.done():
            for status in manager.status():
                typer.echo(f"  {status.name}: cannot be opened: {status.last_error or 'no answer'}")
            return None
        typer.echo(f"  Scan a loyalty card now (waiting up to {timeout:.0f} s)...")
        return await asyncio.wait_for(found, timeout)
    except asyncio.TimeoutError:
        return None
    finally:
        await manager.stop()


async def _member(settings: Any, token: str, member_id: str) -> str:
    from posbridge.cloud import CloudClient
    from posbridge.errors import CloudError

    client = CloudClient(settings.cloud, token)
    try:
        answer = await client.get_member(member_id, timeout=10.0)
    except CloudError as exc:
        return paint(f"the cloud could not be asked: {exc}", "bad")
    finally:
        await client.aclose()
    if answer.status == 404:
        return paint(f"{member_id}: not a member of this account (HTTP 404)", "warn")
    if not 200 <= answer.status < 300:
        return paint(f"{member_id}: the cloud answered HTTP {answer.status}", "bad")
    try:
        data = json.loads(answer.body)
        data = data.get("data", data) if isinstance(data, dict) else {}
    except ValueError:
        data = {}
    name = data.get("name") if isinstance(data, dict) else None
    points = data.get("points") if isinstance(data, dict) else None
    return paint(f"member {member_id}: {name or '(no name)'}" + (f", {points} points" if points is not None else ""),
                 "ok")


def test_scan_step(wizard: "Wizard", edit: ConfigEdit, token: str, timeout: float) -> None:
    from posbridge.cards import parse_card
    from posbridge.logs import setup_logging

    settings = edit.settings()
    if not settings.scanners:
        wizard.say("test scan", "skipped (no scanner)")
        return
    setup_logging("error", "text")
    while True:
        typer.echo("  Opening the scanner...")
        try:
            event = asyncio.run(_one_scan(settings, timeout))
        except KeyboardInterrupt:
            event = None
        if event is None:
            wizard.say("test scan", f"no scan within {timeout:.0f} s; check the cable and `posbridge scanners list`",
                       "warn")
        else:
            card = parse_card(event.text, settings.cards, symbology=event.symbology)
            if card.member_id is None:
                wizard.say("test scan", f"read {event.text[:60]!r} from {event.source}: not a card ({card.error})",
                           "warn")
            else:
                wizard.say("test scan", f"read from {event.source}: " + asyncio.run(_member(settings, token,
                                                                                           card.member_id)))
                return
        if not wizard.confirm("Try again?", default=True):
            return
