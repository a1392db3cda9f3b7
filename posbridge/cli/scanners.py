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
from pathlib import Path
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
            published = await hub.handle(event)
            if published is not None:  # a blank read is no scan
                echo_json(published)

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
        help="File of hex-encoded reports, one per line (spaces/colons allowed, # comments, an optional leading "
        "capture time in seconds such as 0.125); '-' for stdin.", metavar="FILE|-")],
    report_format: Annotated[str, typer.Option(
        "--format", help="hid-pos (HID POS scanned-data reports) or hid-keyboard (8-byte boot reports, Alt codes "
        "included).")],
    descriptor: Annotated[Path | None, typer.Option(
        help="With hid-pos: the scanner's HID report descriptor as hex (lsusb -v, /sys/.../report_descriptor | xxd "
        "-p). Without it the known layouts are guessed from the bytes.", metavar="FILE")] = None,
    layout: Annotated[str, typer.Option(
        help=f"With hid-keyboard: the layout the scanner is set to ({', '.join(LAYOUTS)}).")] = "us",
    oem_code_page: Annotated[int, typer.Option(
        help="With hid-keyboard: the scanner's OEM code page for Alt+nnn codes (437 or 850).")] = 850,
    variant: Annotated[str, typer.Option(
        help="With hid-pos and no --descriptor: auto, honeywell, shifted-aim or newland (auto finds the AIM ID).")]
    = "auto",
    idle_gap: Annotated[float, typer.Option(
        help="Seconds without a report that end a code, for captures with times (as the driver's idle_gap).")]
    = 0.1,
    config: ConfigOption = None,
) -> None:
    """Decode captured USB HID reports exactly as the driver does; print one JSON scan per line.

    Each line names the capture line that completed the scan, the text, symbology, AIM ID, and what the card
    parser makes of it (member id, GS1 AI used, or the error). Exit status 1 when a line is not hex or a report is
    impossible (named on stderr), 2 for bad options or an unreadable descriptor.
    """
    from posbridge.cards import parse_card
    from posbridge.errors import DescriptorError, ReportError
    from posbridge.scanners.hiddescriptor import parse_hex, pos_layout
    from posbridge.scanners.hidreports import VARIANTS, DecodedScan, HidPosDecoder, parse_hex_lines
    from posbridge.scanners.keyboard import KeyboardDecoder

    if report_format not in ("hid-pos", "hid-keyboard"):
        fail(f"--format must be hid-pos or hid-keyboard, not {report_format!r}", code=2)
    if layout not in LAYOUTS:
        fail(f"--layout must be one of {', '.join(LAYOUTS)}, not {layout!r}", code=2)
    if variant not in VARIANTS:
        fail(f"--variant must be auto, honeywell, shifted-aim or newland, not {variant!r}", code=2)
    if oem_code_page not in (437, 850):
        fail(f"--oem-code-page must be 437 or 850, not {oem_code_page}", code=2)
    if not idle_gap > 0:
        fail(f"--idle-gap must be more than 0 seconds, not {idle_gap}", code=2)
    settings = load_settings(config, required=False)
    where = "stdin" if source == "-" else source
    if report_format == "hid-pos":
        if descriptor is not None:
            try:
                pos_layout_found = pos_layout(parse_hex(_read_text(descriptor), where=str(descriptor)))
            except DescriptorError as exc:
                fail(f"{descriptor}: {exc}", code=2)
            typer.echo(f"posbridge: decoding with the report descriptor in {descriptor}: "
                       f"{pos_layout_found.describe()}", err=True)
            decoder: Any = HidPosDecoder(pos_layout_found, gap=idle_gap)
        else:
            typer.echo("posbridge: no --descriptor given: guessing each code's layout from its bytes among the "
                       f"known ones ({variant}); a report the guess cannot tell apart is refused", err=True)
            decoder = HidPosDecoder(variant=variant, gap=idle_gap)  # type: ignore[arg-type]
    else:
        decoder = KeyboardDecoder(layout, gap=idle_gap, oem_code_page=oem_code_page)
    bad = False

    def emit(scan: DecodedScan, line: int | Literal["end"]) -> None:
        card = parse_card(scan.text, settings.cards, symbology=scan.symbology, aim=scan.aim)
        if scan.unfinished:
            typer.echo(f"posbridge: {where}: a code never got its last report (continued flag still set); ended "
                       f"as the driver ends it, after {idle_gap:g} s without a report (noticed at line {line})",
                       err=True)
        echo_json({"line": line, "text": scan.text, "symbology": card.symbology, "aim": scan.aim,
                   "member_id": card.member_id, "gs1_ai": card.gs1_ai, "error": card.error})

    untimed = float("inf")  # without capture times, reports are back to back: only Enter/Tab/flags end a code
    decoder.gap = idle_gap
    try:
        for number, at, report in parse_hex_lines(_lines(source)):
            if at is None:
                decoder.gap, at = untimed, 0.0
            else:
                decoder.gap = idle_gap
            try:
                scans = decoder.feed(report, at)
            except ReportError as exc:
                typer.echo(f"posbridge: {where} line {number}: {exc}", err=True)
                bad = True
                continue
            for scan in scans:
                emit(scan, number)
    except ReportError as exc:
        fail(f"{where} {exc}")
    for scan in decoder.flush():
        emit(scan, "end")
    if bad:
        raise typer.Exit(1)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", code=2)
