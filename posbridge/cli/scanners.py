"""`posbridge scanners ...`: find scanners, watch them live, decode captured USB reports.

For the technician at the till, in this order: ``scanners list`` (is it there, in which mode, which ids to put
in the configuration), ``scanners watch`` (scan a card, see what the bridge reads), ``scanners decode`` (a
capture of raw HID reports from a customer's site, decoded exactly as the driver would).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack, suppress
from typing import Annotated, Any, Literal

import typer

from posbridge.cli.common import ConfigOption, command_group, echo_json, fail, load_settings
from posbridge.config import LAYOUTS, StdinScanner

scanners_app = command_group("scanners", "Find scanners, watch their scans live, decode captured USB HID reports.")


@scanners_app.command("list")
def list_devices(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of text.")] = False,
) -> None:
    """USB HID devices (HID POS or keyboard mode), serial ports and cameras on this machine."""
    from posbridge.scanners.discovery import discover, format_report

    report = discover()
    if as_json:
        echo_json(report)
    else:
        typer.echo(format_report(report))


@scanners_app.command("watch")
def watch(
    config: ConfigOption = None,
    names: Annotated[list[str] | None, typer.Option(
        "--scanner", help="Only this configured scanner (repeat for several). Default: all enabled ones.")] = None,
    stdin: Annotated[bool, typer.Option(
        "--stdin", help="Also take one scan per line typed or piped on standard input.")] = False,
    lookup: Annotated[bool, typer.Option(
        "--lookup", help="Also validate each member with the cloud (and the daemon's cache), as the daemon does.")]
    = False,
) -> None:
    """Start the configured scanners and print each scan as JSON, live. Stop the daemon first.

    A USB scanner can be claimed by one program at a time. Card parsing is applied; member look-ups only with
    --lookup."""
    from posbridge.logs import setup_logging

    settings = load_settings(config, required=not stdin)
    scanners: list[Any] = [s for s in settings.scanners if not names or s.name in names]
    unknown = sorted(set(names or ()) - {s.name for s in settings.scanners})
    if unknown:
        fail(f"no scanner named {', '.join(unknown)} in the configuration", code=2)
    if stdin:
        scanners.append(StdinScanner(name="stdin", type="stdin", debounce=0))
    if not scanners:
        fail("no scanners configured: add a [[scanners]] section (see config/posbridge.example.toml) or use --stdin",
             code=2)
    setup_logging(settings.logging.level, "text")
    with suppress(KeyboardInterrupt):
        asyncio.run(_watch(settings, scanners, lookup))


async def _watch(settings: Any, scanners: list[Any], with_lookup: bool) -> None:
    from posbridge.scanners.hub import ScanHub
    from posbridge.scanners.manager import ScannerManager

    async with AsyncExitStack() as stack:
        member_lookup = await _members(settings, stack) if with_lookup else None
        hub = ScanHub(settings.cards, member_lookup)

        async def on_scan(event: Any) -> None:
            echo_json(await hub.handle(event))

        manager = ScannerManager(scanners, on_scan)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await manager.start()
        finished = asyncio.create_task(manager.join())  # every source ended (stdin at end of input)
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        await manager.stop()


async def _members(settings: Any, stack: AsyncExitStack) -> Any:
    """The daemon's member look-up (cloud first, then the local cache), with what it needs opened on ``stack``."""
    from posbridge.cloud import CloudClient
    from posbridge.db import Database
    from posbridge.errors import PosbridgeError
    from posbridge.members import Members
    from posbridge.redaction import register_secret
    from posbridge.secrets import load_cloud_token

    try:
        token = load_cloud_token().value
        register_secret(token)
        database = Database(settings.storage.path)
    except PosbridgeError as exc:
        fail(f"--lookup needs the cloud token and the database: {exc}")
    stack.push_async_callback(database.aclose)
    cloud = await stack.enter_async_context(CloudClient(settings.cloud, token))
    members = await stack.enter_async_context(Members(cloud, database.writer, database.reader, settings.members))
    return members.lookup


def _lines(source: str) -> Iterator[str]:
    if source == "-":
        yield from sys.stdin
        return
    try:
        with open(source, encoding="utf-8", errors="replace") as handle:
            yield from handle
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror}", code=2)


@scanners_app.command("decode")
def decode(
    source: Annotated[str, typer.Argument(
        help="File of hex-encoded reports, one per line (spaces/colons allowed, # comments); '-' for stdin.",
        metavar="FILE|-")],
    report_format: Annotated[str, typer.Option(
        "--format", help="hid-pos (64-byte scanned-data reports) or hid-keyboard (8-byte boot reports).")],
    layout: Annotated[str, typer.Option(
        help=f"With hid-keyboard: the layout the scanner is set to ({', '.join(LAYOUTS)}).")] = "us",
    variant: Annotated[str, typer.Option(
        help="With hid-pos: auto, honeywell, shifted-aim or newland (auto finds the AIM ID).")] = "auto",
    config: ConfigOption = None,
) -> None:
    """Decode captured USB HID reports exactly as the driver does; print one JSON scan per line.

    Each line names the capture line that completed the scan, the text, symbology, AIM ID, and what the card
    parser makes of it. Exit status 1 when a line is not hex or a report is impossible (named on stderr).
    """
    from posbridge.cards import parse_card
    from posbridge.scanners.hidreports import (
        DecodedScan,
        HidPosDecoder,
        KeyboardDecoder,
        ReportError,
        parse_hex_lines,
    )

    if report_format not in ("hid-pos", "hid-keyboard"):
        fail(f"--format must be hid-pos or hid-keyboard, not {report_format!r}", code=2)
    if layout not in LAYOUTS:
        fail(f"--layout must be one of {', '.join(LAYOUTS)}, not {layout!r}", code=2)
    if variant not in ("auto", "honeywell", "shifted-aim", "newland"):
        fail(f"--variant must be auto, honeywell, shifted-aim or newland, not {variant!r}", code=2)
    settings = load_settings(config, required=False)
    pos = HidPosDecoder(variant)  # type: ignore[arg-type]
    keyboard = KeyboardDecoder(layout, gap=float("inf"))  # a capture has no timing: scans end at Enter/Tab/EOF
    where = "stdin" if source == "-" else source
    bad = False

    def emit(scan: DecodedScan, line: int | Literal["end"]) -> None:
        card = parse_card(scan.text, settings.cards, symbology=scan.symbology)
        echo_json({"line": line, "text": scan.text, "symbology": card.symbology, "aim": scan.aim,
                   "member_id": card.member_id, "error": card.error})

    try:
        for number, report in parse_hex_lines(_lines(source)):
            try:
                if report_format == "hid-pos":
                    scans = [s for s in [pos.feed(report)] if s is not None]
                else:
                    scans = keyboard.feed(report, 0.0)
            except ReportError as exc:
                typer.echo(f"posbridge: {where} line {number}: {exc}", err=True)
                bad = True
                continue
            for scan in scans:
                emit(scan, number)
    except ReportError as exc:
        fail(f"{where} {exc}")
    for scan in keyboard.flush():
        emit(scan, "end")
    if pos.pending:
        typer.echo(f"posbridge: {where}: the capture ends in the middle of a code (continued flag set)", err=True)
        bad = True
    if bad:
        raise typer.Exit(1)

