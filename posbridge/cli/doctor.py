"""`posbridge doctor`: check config, tokens, cloud, database, disk, listen address, scanners, outputs and clock.

Exit 0 when nothing failed (warnings allowed), 1 otherwise, so it can gate an install script. Output never
contains a token: every line goes through the log redaction, which knows the tokens doctor has read.
"""

from __future__ import annotations

import textwrap
from typing import Annotated

import typer

from posbridge.cli.common import ConfigOption, echo_json
from posbridge.cli.root import app

DETAIL_WIDTH = 60
FIX_WIDTH = 52
SHOWN = {"ok": "ok", "warn": "warn", "fail": "FAIL"}


def render_table(checks: list) -> str:
    """``check | status | detail | fix`` with long cells wrapped inside their column."""
    rows = [("check", "status", "detail", "fix")] + [(c.check, SHOWN[c.status], c.detail, c.fix) for c in checks]
    width = max(len(r[0]) for r in rows)
    lines = []
    for index, (name, status, detail, fix) in enumerate(rows):
        details = textwrap.wrap(detail, DETAIL_WIDTH, break_long_words=False, break_on_hyphens=False) or [""]
        fixes = textwrap.wrap(fix, FIX_WIDTH, break_long_words=False, break_on_hyphens=False) or [""]
        for line in range(max(len(details), len(fixes))):
            cells = (name if line == 0 else "", status if line == 0 else "",
                     details[line] if line < len(details) else "", fixes[line] if line < len(fixes) else "")
            lines.append(f"{cells[0]:<{width}} | {cells[1]:<6} | {cells[2]:<{DETAIL_WIDTH}} | {cells[3]}".rstrip())
        if index == 0:
            lines.append(f"{'-' * width}-+-{'-' * 6}-+-{'-' * DETAIL_WIDTH}-+-{'-' * FIX_WIDTH}")
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    lines.append("")
    lines.append(f"{len(checks)} checks: {len(checks) - failed - warned} ok, {warned} warning"
                 f"{'' if warned == 1 else 's'}, {failed} failed")
    return "\n".join(lines)


@app.command("doctor")
def doctor(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list of {check, status, detail, fix}.")] = False,
) -> None:
    """Check this till: config, tokens, cloud, clock, database, disk, listen address, scanners, keystroke outputs. Exit 0 if all pass.

    Tokens are named by their source only, never shown. Scanner checks name the group and the udev rule to fix
    a permission problem, and warn when ModemManager may grab a scanner's serial port."""
    from posbridge.doctor import Check, passed, run_checks
    from posbridge.logs import setup_logging
    from posbridge.redaction import redact_text

    setup_logging("warning", "text")
    checks = [Check(c.check, c.status, redact_text(c.detail), redact_text(c.fix)) for c in run_checks(config)]
    if as_json:
        echo_json([c.as_dict() for c in checks])
    else:
        typer.echo(render_table(checks))
    raise typer.Exit(0 if passed(checks) else 1)
