"""`posbridge members ...`: what the POS would see for a card, and the state of the offline member cache.

``lookup`` runs the daemon's own code in this process (``cards.parse_card``, then ``members.Members`` against
the configured cloud and the same database), so a technician sees the answer and where it came from even
when the daemon is stopped. Its look-ups refresh the cache like the daemon's do, but are not counted in the
look-up counters (those describe the POS's traffic). It does not see the daemon's in-memory 404 memory.

``cache`` and ``purge`` open the database directly (SQLite's locking keeps them safe next to the daemon).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Annotated, Any

import typer

from posbridge.cli.common import ConfigOption, body_text, command_group, echo_json, fail, load_settings, open_storage
from posbridge.cli.humane import span, when
from posbridge.config import Settings
from posbridge.errors import TokenMissing

members_app = command_group("members", "Look a member up as the POS would; inspect or purge the offline member cache.")

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output (one JSON object; times as "
                                                           "epoch seconds).")]

SOURCES = {
    "cloud": "cloud (answered now)",
    "cache": "cache (the cloud could not be asked)",
    "policy": "policy ([members] unknown_offline; nothing usable in the cache)",
}


async def _ask(settings: Settings, token: str, member_id: str) -> Any:
    from posbridge.cloud import CloudClient
    from posbridge.members import Members

    with open_storage(settings) as (writer, reader):
        async with CloudClient(settings.cloud, token) as cloud, \
                Members(cloud, writer, reader, settings.members, record_stats=False) as members:
            return await members.lookup(member_id)


@members_app.command("lookup")
def lookup(
    member: Annotated[str, typer.Argument(help="Member id, card number or card URL, as the POS would send it.",
                                          metavar="CARD", show_default=False)],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """What the POS would get for CARD: status, the headers that matter, where it came from, and the body.

    Exit status 0 for a 2xx answer, 1 otherwise.
    """
    from posbridge.cards import parse_card
    from posbridge.redaction import register_secret
    from posbridge.secrets import load_cloud_token

    settings = load_settings(config, required=False)
    logging.getLogger("posbridge.members").setLevel(logging.ERROR)  # the reason is printed with the answer
    card = parse_card(member, settings.cards)
    view: dict[str, Any] = {"input": card.as_dict()["input"], "member_id": card.member_id,
                            "repairs": list(card.repairs)}
    if card.member_id is None:
        view.update(status=400, source="bridge", result="invalid", reason=card.error,
                    headers={"Content-Type": "application/json"},
                    body=json.dumps({"error": "invalid_member_id",
                                     "detail": f"this is not a card the bridge can read: {card.error}"}))
    else:
        try:
            token = load_cloud_token().value
        except TokenMissing as exc:
            fail(str(exc))
        register_secret(token)
        answer = asyncio.run(_ask(settings, token, card.member_id))
        headers = answer.http_headers()
        if card.repairs:
            headers["X-Posbridge-Card-Repairs"] = "; ".join(card.repairs)
        view.update(status=answer.status, source=answer.source, result=answer.result, reason=answer.reason,
                    headers=headers, body=body_text(answer.body))
    if as_json:
        echo_json(view)
    else:
        typer.echo(f"card:     {card.member_id or '-'}" + (f"  (repairs: {'; '.join(card.repairs)})"
                                                          if card.repairs else ""))
        typer.echo(f"status:   {view['status']}  ({view['result']})")
        typer.echo(f"source:   {SOURCES.get(view['source'], view['source'])}")
        if view["reason"]:
            typer.echo(f"why:      {view['reason']}")
        for index, (name, value) in enumerate(view["headers"].items()):
            typer.echo(f"{'headers:' if index == 0 else '':<10}{name}: {value}")
        typer.echo("body:")
        typer.echo(view["body"])
    if not 200 <= view["status"] < 300:
        raise typer.Exit(1)


@members_app.command("cache")
def cache(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """How many members are cached, how old the answers are, and the daemon's look-up counters."""
    from posbridge.members import cache_summary

    settings = load_settings(config, required=False)
    with open_storage(settings, missing="the daemon has not run yet") as (_, reader):
        summary = reader.query(cache_summary)
    summary["database"] = str(settings.storage.path)
    summary["max_stale_seconds"] = settings.members.max_stale
    if as_json:
        echo_json(summary)
        return
    counters = summary["counters"]
    typer.echo(f"cached members:   {summary['entries']}  (served while the cloud is unreachable, "
               f"up to {span(settings.members.max_stale)} after the cloud's answer)")
    typer.echo(f"oldest answer:    {when(summary['oldest_fetched_at'])}")
    typer.echo(f"newest answer:    {when(summary['newest_fetched_at'])}")
    typer.echo(f"least used:       {when(summary['least_recently_used_at'])}")
    typer.echo("look-ups counted by the daemon:")
    typer.echo(f"  cloud answered: fresh {counters['fresh']}, not found {counters['not_found']}, "
               f"other 4xx {counters['rejected']}")
    typer.echo(f"  hits:           {summary['hits']}  (stale {counters['stale']}, "
               f"remembered 404 {counters['not_found_cached']})")
    typer.echo(f"  misses:         {summary['misses']}  (refused {counters['miss']}, "
               f"provisional {counters['provisional']})")
    typer.echo(f"  last counted:   {when(summary['counters_updated_at'])}")
    typer.echo(f"database:         {summary['database']}")


@members_app.command("purge")
def purge(
    config: ConfigOption = None,
    everything: Annotated[bool, typer.Option("--all", help="Forget every cached member, not only old ones.")]
    = False,
) -> None:
    r"""Forget cached members unused for \[members] max_stale (the daemon also does this every hour)."""
    from posbridge.members import purge_rows

    settings = load_settings(config, required=False)
    cutoff = None if everything else time.time() - settings.members.max_stale
    with open_storage(settings, missing="the daemon has not run yet") as (writer, _):
        count = writer.call(lambda conn: purge_rows(conn, cutoff))
    what = "every cached member" if everything else f"unused for {span(settings.members.max_stale)}"
    typer.echo(f"purged {count} cached member{'s' if count != 1 else ''} ({what})")
