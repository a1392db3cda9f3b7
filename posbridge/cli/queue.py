"""`posbridge queue ...`: look at the invoice outbox and act on it (retry a rejected invoice, release a held one,
drop either, export).

These commands open the database directly (the daemon may be running: SQLite's locking keeps both safe).
A retried or released invoice is picked up by the running daemon within a second.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from posbridge.cli.common import (
    INVOICE_METAVAR,
    ConfigOption,
    JsonFlag,
    body_text,
    command_group,
    echo_json,
    fail,
    load_settings,
    open_storage,
)
from posbridge.cli.humane import ago, paint, span, when
from posbridge.outbox import HELD, STATES, Invoice, Outbox

MAX_LIMIT = 1_000_000
STATE_TONES = {"pending": "warn", "sent": "ok", "rejected": "bad", "held": "bad"}

InvoiceArgument = Annotated[str, typer.Argument(
    help="Invoice id (42) or key (doc:Serie=T1;Number=1042), as `queue list` shows them.", metavar=INVOICE_METAVAR)]

queue_app = command_group("queue", "Look at the invoice outbox; retry, release, drop or export invoices.")


@contextmanager
def _outbox(config: Path | None) -> Iterator[Outbox]:
    settings = load_settings(config, required=False)
    with open_storage(settings, missing="nothing queued yet") as (writer, reader):
        yield Outbox(writer, reader, settings.invoices)


def _full(invoice: Invoice) -> dict:
    view = invoice.summary()
    view.update({
        "content_type": invoice.content_type,
        "body_sha256": invoice.body_sha256,
        "cloud_answer": {"status": invoice.cloud_status, "content_type": invoice.cloud_content_type,
                         "body": body_text(invoice.cloud_body)} if invoice.cloud_status is not None else None,
        "body": body_text(invoice.body),
    })
    return view


def _find(outbox: Outbox, ident: str) -> Invoice:
    invoice = outbox.find(ident)
    if invoice is None:
        fail(f"no invoice with id or key {ident!r} (see `posbridge queue list`)")
    return invoice


@queue_app.command("status")
def status(config: ConfigOption = None, as_json: JsonFlag = False) -> None:
    """How many invoices are pending, sent, rejected and held, and how old the oldest pending one is."""
    with _outbox(config) as outbox:
        stats = outbox.stats()
    if as_json:
        echo_json(stats)
        return
    depth = stats["depth"]
    oldest = stats["oldest_pending_age_seconds"]
    typer.echo(f"pending:  {depth['pending']}" + (f" (oldest received {span(oldest)} ago)" if oldest is not None
                                                 else ""))
    typer.echo(f"sent:     {depth['sent']}")
    typer.echo(f"rejected: {paint(str(depth['rejected']), 'bad') if depth['rejected'] else 0}"
               + ("  <- needs a person: `posbridge queue list --state rejected`" if depth["rejected"] else ""))
    typer.echo(f"held:     {paint(str(depth['held']), 'bad') if depth['held'] else 0}"
               + ("  <- needs a person: `posbridge queue list --state held`" if depth["held"] else ""))


@queue_app.command("list")
def list_invoices(
    config: ConfigOption = None,
    state: Annotated[Optional[str], typer.Option(metavar="STATE", help="pending, sent, rejected or held")] = None,
    limit: Annotated[int, typer.Option(metavar="N", help=f"At most this many rows (1 to {MAX_LIMIT}).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line (times as epoch seconds).")]
    = False,
) -> None:
    """Invoices oldest first, one line each."""
    if state is not None and state not in STATES:
        fail(f"--state must be one of {', '.join(STATES)}, not {state!r}", code=2)
    if not 1 <= limit <= MAX_LIMIT:
        fail(f"--limit must be between 1 and {MAX_LIMIT}, not {limit}", code=2)
    with _outbox(config) as outbox:
        invoices = outbox.list(state, limit)
    if as_json:
        for invoice in invoices:
            echo_json(invoice.summary())
        return
    if not invoices:
        typer.echo("no invoices" + (f" in state {state}" if state else ""))
        return
    typer.echo(f"{'id':>6}  {'key':<44} {'state':<9} {'tries':>5}  {'received':<13}  last error")
    for inv in invoices:
        state_text = paint(f"{inv.state:<9}", STATE_TONES.get(inv.state))  # type: ignore[arg-type]
        note = inv.last_error or (f"same sale id as invoice {inv.conflict_of}, different content"
                                  if inv.state == HELD else "")
        typer.echo(f"{inv.id:>6}  {inv.key[:44]:<44} {state_text} {inv.attempts:>5}  {ago(inv.received_at):<13}"
                   f"  {note[:80]}")


@queue_app.command("show")
def show(
    ident: InvoiceArgument,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON even in a terminal (times as epoch seconds).")]
    = False,
) -> None:
    """Everything about one invoice: its bytes, its state, and the cloud's last answer.

    In a terminal it reads as a page for a person; piped (or with --json) it is one JSON object."""
    with _outbox(config) as outbox:
        invoice = _find(outbox, ident)
    if as_json or not sys.stdout.isatty():
        echo_json(_full(invoice))
        return
    typer.echo(_page(invoice))


def _page(invoice: Invoice) -> str:
    """``queue show`` for a person: human times, the state in colour, the bodies as text."""
    view = _full(invoice)
    lines = [f"invoice {invoice.id}  key {invoice.key}  "
             + paint(invoice.state, STATE_TONES.get(invoice.state)),  # type: ignore[arg-type]
             f"received:      {when(invoice.received_at)}",
             f"member:        {invoice.member_id or '-'}    amount: {invoice.amount if invoice.amount is not None else '-'}",
             f"attempts:      {invoice.attempts}"]
    if invoice.state == "pending":
        lines.append(f"next attempt:  {when(view.get('next_attempt_at'))}")
    if invoice.sent_at:
        lines.append(f"delivered:     {when(invoice.sent_at)}")
    if invoice.last_error:
        lines.append(f"last error:    {paint(invoice.last_error, 'warn')}")
    answer = view.get("cloud_answer")
    if answer:
        lines.append(f"cloud answer:  HTTP {answer['status']} ({answer['content_type'] or 'no Content-Type'})")
        lines.append(f"  {answer['body']}")
    if invoice.state == "rejected":
        lines.append(f"what now:      fix it in the cloud, then `posbridge queue retry {invoice.id}`; "
                     f"or `posbridge queue drop {invoice.id}`")
    if invoice.state == HELD:
        lines.append(f"what now:      it has the sale id of invoice {invoice.conflict_of} with other content; compare "
                     f"(`posbridge queue show {invoice.conflict_of}`), then `posbridge queue release {invoice.id}` "
                     f"(a sale of its own) or `posbridge queue drop {invoice.id}`")
    lines.append(f"body ({invoice.content_type}, sha256 {invoice.body_sha256[:12]}...):")
    lines.append(view["body"] or "")
    return "\n".join(lines)


@queue_app.command("retry")
def retry(ident: InvoiceArgument, config: ConfigOption = None) -> None:
    """Send a rejected invoice again (after the cause was fixed in the cloud)."""
    with _outbox(config) as outbox:
        invoice = _find(outbox, ident)
        if invoice.state == "sent":
            fail(f"invoice {invoice.id} ({invoice.key}) was already delivered; nothing to retry")
        if invoice.state == HELD:
            fail(f"invoice {invoice.id} is held: it has the same sale id as invoice {invoice.conflict_of} with "
                 f"different content. Compare them (`posbridge queue show {invoice.conflict_of}`), then "
                 f"`posbridge queue release {invoice.id}` to deliver it as a sale of its own, or "
                 f"`posbridge queue drop {invoice.id}`")
        outbox.retry(invoice.id)
    typer.echo(f"invoice {invoice.id} ({invoice.key}) is pending again; the daemon sends it within seconds")


@queue_app.command("release")
def release(ident: InvoiceArgument, config: ConfigOption = None) -> None:
    """Deliver a held invoice as a sale of its own, under its own derived key.

    An invoice is held when the POS sent it with the id of an earlier sale (GlobalId, or workplace, series
    and number) but different content: a till whose counter was reset, or a corrected re-post. Compare it
    with the earlier one first (`queue show`); if it is the same sale corrected, drop one of them instead.
    """
    with _outbox(config) as outbox:
        invoice = _find(outbox, ident)
        if invoice.state != HELD:
            fail(f"invoice {invoice.id} ({invoice.key}) is {invoice.state}, not held; nothing to release"
                 + (" (a rejected invoice is sent again with `queue retry`)" if invoice.state == "rejected" else ""))
        outbox.release(invoice.id)
    typer.echo(f"invoice {invoice.id} released: it is delivered as its own sale under the key {invoice.key} "
               "within seconds")


@queue_app.command("drop")
def drop(
    ident: InvoiceArgument,
    config: ConfigOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete one invoice for good (export it first if in doubt)."""
    with _outbox(config) as outbox:
        invoice = _find(outbox, ident)
        if invoice.state == "pending" and not yes:
            fail(f"invoice {invoice.id} is still pending delivery; add --yes to drop it anyway", code=1)
        if not yes and sys.stdin.isatty():
            typer.confirm(f"Drop invoice {invoice.id} ({invoice.key}, {invoice.state}) for good?", abort=True)
        outbox.drop(invoice.id)
    typer.echo(f"dropped invoice {invoice.id} ({invoice.key})")


@queue_app.command("export")
def export(
    config: ConfigOption = None,
    state: Annotated[Optional[str], typer.Option(metavar="STATE", help="Only this state: pending, sent or rejected "
                                                 "(default: all).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE",
                                                   help="File to write (default: stdout).")] = None,
) -> None:
    """Every invoice as JSON lines: bytes, state, cloud answer. For a person, an accountant, or a re-drive."""
    if state is not None and state not in STATES:
        fail(f"--state must be one of {', '.join(STATES)}, not {state!r}", code=2)
    with _outbox(config) as outbox:
        invoices = outbox.list(state, limit=10**9)
    try:
        handle = output.open("w", encoding="utf-8") if output else sys.stdout
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    try:
        for invoice in invoices:
            handle.write(json.dumps(_full(invoice), ensure_ascii=False) + "\n")
    finally:
        if output:
            handle.close()
            typer.echo(f"exported {len(invoices)} invoices to {output}", err=True)

