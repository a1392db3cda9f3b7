"""`posbridge status`: the bridge on one screen, for the technician and the shop.

It asks the running daemon (``GET /v1/status`` and ``/v1/scans/last`` with the local token, 2 s at most) and,
when no daemon answers, reads the database alone and says so. What it shows: whether the cloud is reachable
(and since when, when the daemon knows), whether delivery is paused and why, queue depth and the oldest pending
invoice, invoices that need a person, scanners and outputs, the last scan. Times read "4 min ago"; ``--json``
prints the same facts with epoch numbers.

Exit status: 0 the daemon runs and nothing needs a person; 1 it runs but something does (delivery paused, cloud
unreachable, rejected invoices, a scanner not connected); 3 no daemon answers (as ``systemctl status``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import httpx
import typer

from posbridge.cli.common import ConfigOption, echo_json, load_settings
from posbridge.cli.humane import ago, paint, span
from posbridge.cli.root import app
from posbridge.config import Settings
from posbridge.errors import PosbridgeError, StorageError, TokenMissing

DAEMON_TIMEOUT = 2.0
EXIT_ATTENTION = 1
EXIT_NOT_RUNNING = 3


def daemon_url(settings: Settings) -> str:
    """Where this machine reaches its own daemon: a wildcard listen address is asked on loopback."""
    host, port = settings.server.host, settings.server.port
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _sandbox_local_token(settings: Settings) -> str | None:
    """The local token of a `posbridge run --sandbox` daemon, kept next to the configuration it writes."""
    if settings.source is None:
        return None
    try:
        tokens = json.loads((settings.source.parent / "sandbox-tokens.json").read_text())
    except (OSError, ValueError):
        return None
    local = tokens.get("local") if isinstance(tokens, dict) else None
    return local if isinstance(local, str) and local else None


def ask_daemon(settings: Settings) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str | None]:
    """``(status, last_scan, None)`` from the running daemon, or ``(None, None, why_not)``."""
    from posbridge.secrets import load_local_token

    url = daemon_url(settings)
    token = _sandbox_local_token(settings)
    if token is None:
        try:
            token = load_local_token().value
        except TokenMissing:
            return None, None, ("no local token readable here, so the daemon cannot be asked; run it as root "
                                "(sudo posbridge status) or store the token (posbridge token generate --local)")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=DAEMON_TIMEOUT) as client:
            answer = client.get("/v1/status")
            if answer.status_code in (401, 403):
                return None, None, (f"the daemon at {url} refused this machine's local token (it was changed "
                                    "since the daemon started? sudo systemctl restart posbridge)")
            if answer.status_code != 200:
                return None, None, f"{url}/v1/status answered HTTP {answer.status_code}; is that posbridge?"
            status = answer.json()
            scan = client.get("/v1/scans/last")
            last = scan.json() if scan.status_code == 200 else None
    except httpx.ConnectError:
        return None, None, f"no daemon answers at {url} (not running: sudo systemctl start posbridge)"
    except httpx.TimeoutException:
        return None, None, f"the daemon at {url} did not answer within {DAEMON_TIMEOUT:.0f} s"
    except (httpx.HTTPError, ValueError) as exc:
        return None, None, f"{url} did not answer like posbridge does ({exc})"
    if not isinstance(status, dict) or "queue" not in status:
        return None, None, f"{url}/v1/status is not posbridge's status"
    return status, last if isinstance(last, dict) else None, None


def read_database(settings: Settings) -> dict[str, Any]:
    """Queue facts from the database alone (the daemon is not running). Never raises: problems are in ``error``."""
    from posbridge.db import Reader
    from posbridge.outbox import Outbox

    path = settings.storage.path
    facts: dict[str, Any] = {"path": str(path)}
    if not path.exists():
        facts["error"] = f"no database at {path} (the daemon has not run yet)"
        return facts
    try:
        reader = Reader(path)
    except (StorageError, OSError) as exc:
        facts["error"] = f"cannot open {path}: {exc}"
        return facts
    try:
        outbox = Outbox(None, reader, settings.invoices)  # type: ignore[arg-type]  # reads only
        stats = outbox.stats()
        facts["queue"] = stats["depth"]
        facts["oldest_pending_age_seconds"] = stats["oldest_pending_age_seconds"]
        facts["rejected"] = [i.summary() for i in outbox.list("rejected", 5)]
    except (StorageError, PosbridgeError, OSError) as exc:
        facts["error"] = f"cannot read {path}: {exc}"
    except Exception as exc:  # noqa: BLE001 - an unreadable file (permissions, not a database) is reported
        facts["error"] = f"cannot read {path}: {exc}"
    finally:
        reader.close()
    return facts


# --- the screen ---------------------------------------------------------------------------------------------

def _line(label: str, text: str) -> str:
    return f"{label:<15} {text}"


def _iso_epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _cloud_lines(status: dict[str, Any]) -> tuple[list[str], bool]:
    cloud = status.get("cloud") or {}
    delivery = status.get("delivery") or {}
    reachable = cloud.get("reachable")
    where = f"{cloud.get('base_url', '?')}, account {cloud.get('account') or '(none set)'}"
    since = cloud.get("since")  # when reachability last changed (None: not contacted yet)
    since_text = f" since {ago(since)}".replace(" since in", " since") if since else ""
    last = delivery.get("last_delivery_at")
    lines = []
    if reachable is False:
        reason = cloud.get("last_failure") or "no answer"
        lines.append(_line("cloud", paint(f"UNREACHABLE{since_text}", "bad") + f" ({where}): {reason}"))
    else:
        lines.append(_line("cloud", paint(f"reachable{since_text}", "ok") + f" ({where})"))
    attention = reachable is False
    if delivery.get("paused"):
        attention = True
        lines.append(_line("delivery", paint(f"PAUSED {ago(delivery.get('paused_since'))}", "bad")
                           + f": {delivery.get('paused_reason') or 'the cloud refused the API token'}"))
        lines.append(_line("", "fix: sudo posbridge token set --system (a new API token), then "
                               "sudo systemctl restart posbridge"))
    else:
        result = delivery.get("last_delivery_result")
        text = (f"running; last delivery {ago(last)}" + (f" ({result})" if result else "") if last
                else "running; nothing delivered since the daemon started")
        if delivery.get("next_attempt_not_before"):
            text += f"; cloud asked to wait, next try {ago(delivery['next_attempt_not_before'])}"
        lines.append(_line("delivery", text))
    return lines, attention


def _queue_lines(queue: dict[str, Any], oldest_age: float | None) -> tuple[list[str], bool]:
    pending, sent, rejected = queue.get("pending", 0), queue.get("sent", 0), queue.get("rejected", 0)
    text = f"{pending} pending"
    if pending and oldest_age is not None:
        text += f" (oldest received {span(oldest_age)} ago)"
    text += f", {sent} sent, {rejected} rejected"
    lines = [_line("queue", paint(text, "warn") if pending else text)]
    if rejected:
        lines.append(_line("needs a person", paint(f"{rejected} rejected invoice{'s' if rejected != 1 else ''}", "bad")
                           + ": posbridge queue list --state rejected, then queue show ID"))
    else:
        lines.append(_line("needs a person", paint("nothing", "ok")))
    return lines, bool(rejected)


def _device_lines(status: dict[str, Any]) -> tuple[list[str], bool]:
    lines: list[str] = []
    attention = False
    scanners = status.get("scanners") or []
    for index, scanner in enumerate(scanners):
        if not isinstance(scanner, dict):
            continue
        name = f"{scanner.get('name', '?')} ({scanner.get('type', '?')})"
        if scanner.get("connected"):
            state = paint("connected", "ok")
        else:
            attention = True
            state = paint("NOT connected", "bad") + (f": {scanner['last_error']}" if scanner.get("last_error") else "")
        count = scanner.get("scans", 0)
        last = f", last {ago(scanner['last_scan_at'])}" if scanner.get("last_scan_at") else ""
        lines.append(_line("scanners" if index == 0 else "", f"{name}: {state}, {count} scans{last}"))
    if not lines:
        lines.append(_line("scanners", paint("none configured", "warn")
                           + " ([[scanners]] in the configuration, or sudo posbridge setup)"))
    outputs = status.get("outputs")
    if isinstance(outputs, list):
        for index, output in enumerate(outputs):
            if not isinstance(output, dict):
                continue
            name = f"{output.get('name', '?')} ({output.get('type', '?')})"
            healthy = output.get("connected", output.get("ready", output.get("ok")))
            state = (paint("ready", "ok") if healthy else paint("NOT ready", "bad")) if healthy is not None else "-"
            if output.get("last_error") and not healthy:
                state += f": {output['last_error']}"
            lines.append(_line("outputs" if index == 0 else "", f"{name}: {state}"))
        if not outputs:
            lines.append(_line("outputs", "none"))
    return lines, attention


def _scan_line(scan: dict[str, Any] | None) -> str:
    if not scan:
        return _line("last scan", "none since the daemon started")
    at = ago(_iso_epoch(scan.get("at")))
    source = scan.get("source") or "?"
    member = scan.get("member") if isinstance(scan.get("member"), dict) else None
    data = member.get("data") if member else None
    if scan.get("error"):
        what = paint(str(scan["error"]), "warn")
    elif isinstance(data, dict) and data.get("name"):
        what = f"{scan.get('member_id')} -> {data.get('name')}, {data.get('points')} points"
        if member and member.get("cache"):
            what += f" (from the {member['cache']} cache)"
    elif member:
        what = f"{scan.get('member_id')} -> HTTP {member.get('status')}"
    else:
        what = str(scan.get("member_id") or scan.get("text"))
    return _line("last scan", f"{what} ({at}, {source})")


def render(status: dict[str, Any], last_scan: dict[str, Any] | None, url: str) -> tuple[str, bool]:
    """The one-screen text for a running daemon, and whether something needs attention."""
    lines = [paint(f"posbridge {status.get('version', '?')}", "bold")
             + f": daemon running for {span(status.get('uptime_seconds'))} at {url}"]
    cloud, a1 = _cloud_lines(status)
    queue, a2 = _queue_lines(status.get("queue") or {}, status.get("oldest_pending_age_seconds"))
    devices, a3 = _device_lines(status)
    database = status.get("database") or {}
    lines += cloud + queue + devices + [_scan_line(last_scan)]
    if database.get("last_error"):
        lines.append(_line("database", paint(f"WRITE FAILED: {database['last_error']}", "bad")))
    return "\n".join(lines), a1 or a2 or a3 or bool(database.get("last_error"))


def render_offline(facts: dict[str, Any], why: str) -> str:
    lines = [paint("posbridge: the daemon is not answering", "bad") + f": {why}",
             _line("", "what follows is read from the database alone:"),
             _line("database", facts["path"])]
    if facts.get("error"):
        lines.append(_line("", paint(facts["error"], "warn")))
        return "\n".join(lines)
    queue, _ = _queue_lines(facts["queue"], facts.get("oldest_pending_age_seconds"))
    lines += queue
    for invoice in facts.get("rejected", []):
        lines.append(_line("", f"#{invoice['id']} {invoice['key']}: {invoice.get('last_error') or 'rejected'}"))
    lines.append(_line("cloud", "unknown (only the daemon asks it)"))
    return "\n".join(lines)


@app.command("status")
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="The same facts as JSON (times as epoch seconds).")]
    = False,
) -> None:
    """The bridge on one screen: cloud, delivery, queue, invoices needing a person, scanners, last scan.

    Asks the running daemon; when none answers, reads the database and says so. Exit status 0: all is well;
    1: something needs attention; 3: the daemon is not running.
    """
    settings = load_settings(config, required=False)
    url = daemon_url(settings)
    daemon, last_scan, why = ask_daemon(settings)
    if daemon is not None:
        text, attention = render(daemon, last_scan, url)
        if as_json:
            echo_json({"source": "daemon", "url": url, "status": daemon, "last_scan": last_scan})
        else:
            typer.echo(text)
        raise typer.Exit(EXIT_ATTENTION if attention else 0)
    facts = read_database(settings)
    if as_json:
        echo_json({"source": "database", "url": url, "daemon_error": why, "database": facts})
    else:
        typer.echo(render_offline(facts, why or "unknown"))
    raise typer.Exit(EXIT_NOT_RUNNING)


__all__ = ["ask_daemon", "daemon_url", "read_database", "render", "render_offline"]
