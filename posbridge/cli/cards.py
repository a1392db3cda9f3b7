"""`posbridge cards ...`: see what a scan or a typed id becomes, exactly as the daemon would read it.

For technicians at the till: paste what the scanner typed into a terminal (or pipe a file of scans) and read
the member id, the symbology, every repair made, or the reason the text was rejected.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from posbridge.cards import parse_card, unescape
from posbridge.cli.common import ConfigOption, command_group, echo_json, fail, load_settings

cards_app = command_group(
    "cards",
    "Loyalty card text -> member id: check what a scan becomes (AIM prefixes, GS1 codes, card URLs, layout "
    "repair).",
)


def _inputs(texts: list[str]) -> Iterator[str]:
    """The texts in order; ``-`` stands for one text per line of stdin (undecodable bytes are kept as
    lone surrogates, so the parser reports them instead of the CLI crashing)."""
    for text in texts:
        if text != "-":
            yield text
            continue
        for raw in sys.stdin.buffer:
            yield raw.decode("utf-8", "surrogateescape").removesuffix("\n")


@cards_app.command("parse")
def parse(
    texts: Annotated[
        list[str],
        typer.Argument(help="Text as it reached the bridge; '-' reads one text per line from stdin.",
                       metavar="TEXT", show_default=False),
    ],
    config: ConfigOption = None,
    escapes: Annotated[
        bool,
        typer.Option("--escapes", help="Interpret backslash escapes as in card-payloads.tsv: "
                     "\\r \\n \\t \\0 \\\\ \\xNN \\uNNNN."),
    ] = False,
    aim: Annotated[
        str | None,
        typer.Option("--aim", help="The AIM ID the device reported apart from the text, as a camera or a HID POS "
                     "scanner does (]Q3: a GS1 QR code; ]C1: GS1-128).", metavar="]XY"),
    ] = None,
    symbology: Annotated[
        str | None,
        typer.Option("--symbology", help="The symbology the device reported (qr, aztec, pdf417, code128, "
                     "gs1-128...)."),
    ] = None,
) -> None:
    """Print one JSON object per input: input, member_id, symbology, gs1_ai, repairs, error.

    gs1_ai names the GS1 Application Identifier the member id came from (GS1 codes: a GS1 AIM ID, GS
    separators written \\x1d with --escapes, or "(8018)..."). Exit status 0 when every input gave a member id,
    1 when any was rejected, 2 for a malformed --aim.
    """
    if aim is not None and not re.fullmatch(r"\][A-Za-z][0-9A-Za-z]", aim):
        fail(f"--aim must be an AIM ID such as ]Q3 (']', a letter, a digit or letter), not {aim!r}", code=2)
    settings = load_settings(config, required=False)
    rejected = False
    for text in _inputs(texts):
        read = parse_card(unescape(text) if escapes else text, settings.cards, symbology=symbology, aim=aim)
        echo_json(read.as_dict())
        rejected = rejected or read.member_id is None
    if rejected:
        raise typer.Exit(1)
