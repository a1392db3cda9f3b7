"""`posbridge sandbox`: run the Omniwallet-compatible sandbox cloud in the foreground, and
`posbridge sandbox faults`: show or change the faults of a running one (standalone, or embedded in
`posbridge run --sandbox`).

`posbridge sandbox [options]` prints one line on stdout once the port listens (URL, admin URL, account, and the
token when it was generated), then serves until SIGINT/SIGTERM. Fault options set the faults it starts with;
`sandbox faults` (or `POST /sandbox/faults`) changes them while it runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError

from posbridge.cli.common import HELP_MODE, echo_json, fail
from posbridge.cli.humane import paint
from posbridge.cli.root import app

DEFAULT_URL = "http://127.0.0.1:8765"
ENV_URL = "POSBRIDGE_SANDBOX_URL"

sandbox_app = typer.Typer(rich_markup_mode=HELP_MODE, invoke_without_command=True, no_args_is_help=False,
                          help="Run a local Omniwallet-compatible cloud (demo members, points, fault injection); "
                          "`sandbox faults` changes the faults of a running one.")
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.callback()
def sandbox(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
    token: Annotated[
        str | None,
        typer.Option(envvar="POSBRIDGE_SANDBOX_TOKEN", show_default=False,
                     help="API token the sandbox accepts. Default: $POSBRIDGE_SANDBOX_TOKEN, else generated."),
    ] = None,
    account: Annotated[str, typer.Option(help="Account (ow_account) the sandbox answers for.")] = "demo",
    latency_ms: Annotated[int, typer.Option(help="Added before answering every cloud call.")] = 0,
    error_rate: Annotated[float, typer.Option(help="Share (0..1) of cloud calls answered --error-status.")] = 0.0,
    error_status: Annotated[int, typer.Option(help="Status of injected errors.")] = 503,
    retry_after: Annotated[
        int | None, typer.Option(show_default=False, help="Retry-After seconds on injected errors.")
    ] = None,
    reset_rate: Annotated[
        float, typer.Option(help="Share (0..1) of invoice calls recorded, then dropped without an answer.")
    ] = 0.0,
    outage: Annotated[bool, typer.Option("--outage", help="Drop every cloud call without an answer.")] = False,
    auth_fail: Annotated[bool, typer.Option("--auth-fail", help="Answer every cloud call 401.")] = False,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
) -> None:
    """Run a local Omniwallet-compatible cloud (demo members, points, fault injection) until Ctrl+C.

    Without a sub-command it serves; `posbridge sandbox faults` shows or changes the faults of a running one."""
    if ctx.invoked_subcommand is not None:
        return
    generated = not token
    if not token:
        token = secrets.token_urlsafe(18)

    def ready(url: str) -> None:
        line = f"posbridge sandbox: cloud {url}  admin {url}/sandbox  account {account}"
        if generated:
            line += f"  token {token}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        asyncio.run(_serve(host, port, token, account, access_log, ready, {
            "latency_ms": latency_ms, "error_rate": error_rate, "error_status": error_status,
            "retry_after": retry_after, "reset_rate": reset_rate, "outage": outage, "auth_fail": auth_fail,
        }))
    except ValidationError as exc:
        problems = "; ".join(f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        typer.echo(f"posbridge sandbox: {problems}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"posbridge sandbox: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


async def _serve(host: str, port: int, token: str, account: str, access_log: bool,
                 ready: Callable[[str], None], faults: dict[str, object]) -> None:
    from posbridge.sandbox.server import serve  # imported here so `posbridge --help` stays fast

    await serve(host, port, token, account, access_log=access_log,
                log_level="info" if access_log else "warning", on_ready=ready, **faults)


# --- sandbox faults ---------------------------------------------------------------------------------------------

Switch = Annotated[bool | None, typer.Option(show_default=False)]


def sandbox_url(url: str | None, config: Any) -> tuple[str, str]:
    """The running sandbox to talk to, and how it was found: --url, $POSBRIDGE_SANDBOX_URL, the [cloud] base_url
    of the configuration when it points at a sandbox on this machine (``make run`` writes one), else the
    standalone sandbox's default address."""
    from posbridge.config import load_settings

    if url:
        return url.rstrip("/"), "--url"
    if os.environ.get(ENV_URL):
        return os.environ[ENV_URL].rstrip("/"), f"${ENV_URL}"
    try:
        settings = load_settings(config, required=False)
    except Exception:  # noqa: BLE001 - a broken configuration just means "not from there"
        settings = None
    if settings is not None and settings.source is not None and settings.cloud.base_url.startswith(
            ("http://127.", "http://localhost", "http://[::1]")):
        return settings.cloud.base_url, f"[cloud] base_url of {settings.source}"
    return DEFAULT_URL, "the standalone sandbox's default address"


def _describe(faults: dict[str, Any]) -> list[str]:
    healthy = (not faults.get("outage") and not faults.get("auth_fail") and not faults.get("latency_ms")
               and not faults.get("error_rate") and not faults.get("reset_rate"))
    lines = [paint("healthy: no faults", "ok") if healthy else paint("faults active", "warn")]
    lines.append(f"  outage        {'ON: every cloud call is dropped without an answer' if faults.get('outage') else 'off'}")
    lines.append(f"  auth failure  {'ON: every cloud call answers 401' if faults.get('auth_fail') else 'off'}")
    lines.append(f"  latency       {faults.get('latency_ms', 0)} ms before each answer")
    retry = f", Retry-After {faults['retry_after']} s" if faults.get("retry_after") is not None else ""
    lines.append(f"  error rate    {faults.get('error_rate', 0):.0%} of calls answered HTTP "
                 f"{faults.get('error_status', 503)}{retry}")
    lines.append(f"  reset rate    {faults.get('reset_rate', 0):.0%} of invoice calls recorded, then the "
                 "connection dropped")
    return lines


@sandbox_app.command("faults")
def faults(
    url: Annotated[str | None, typer.Option(
        metavar="URL", show_default=False,
        help=f"The sandbox. Default: ${ENV_URL}, else the [cloud] base_url of the configuration when it is a "
        f"sandbox on this machine (export POSBRIDGE_CONFIG as `make run` prints), else {DEFAULT_URL}.")] = None,
    outage: Annotated[bool | None, typer.Option("--outage/--no-outage", show_default=False,
                                                help="Drop every cloud call without an answer (or stop).")] = None,
    auth_fail: Annotated[bool | None, typer.Option("--auth-fail/--no-auth-fail", show_default=False,
                                                   help="Answer every cloud call 401 (or stop).")] = None,
    latency_ms: Annotated[int | None, typer.Option(metavar="MS", show_default=False,
                                                   help="Wait this long before every answer (0: none).")] = None,
    error_rate: Annotated[float | None, typer.Option(metavar="SHARE", show_default=False,
                                                     help="Share of cloud calls (0 to 1) answered with an error.")]
    = None,
    error_status: Annotated[int | None, typer.Option(metavar="STATUS", show_default=False,
                                                     help="HTTP status of those errors (the sandbox's default: 503).")]
    = None,
    retry_after: Annotated[int | None, typer.Option(metavar="SECONDS", show_default=False,
                                                    help="Retry-After header on those errors (-1: none).")] = None,
    reset_rate: Annotated[float | None, typer.Option(metavar="SHARE", show_default=False,
                                                     help="Share of invoice calls (0 to 1) recorded, then the "
                                                     "connection dropped without an answer.")] = None,
    clear: Annotated[bool, typer.Option("--clear", "--reset",
                                        help="Back to a healthy cloud (every fault off) before applying the "
                                        "options given with it.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the faults as JSON.")] = False,
) -> None:
    """Show the faults of a running sandbox cloud, or change them (only the ones given; the rest stay).

    `posbridge sandbox faults --outage` takes the cloud away; `--no-outage` brings it back; `--clear` ends every
    fault. Works against `posbridge sandbox` and against the sandbox embedded in `posbridge run --sandbox`."""
    base, found = sandbox_url(url, None)
    patch: dict[str, Any] = {name: value for name, value in {
        "outage": outage, "auth_fail": auth_fail, "latency_ms": latency_ms, "error_rate": error_rate,
        "error_status": error_status, "reset_rate": reset_rate}.items() if value is not None}
    if retry_after is not None:
        patch["retry_after"] = None if retry_after < 0 else retry_after
    try:
        with httpx.Client(base_url=base, timeout=5.0) as client:
            if clear:
                client.delete("/sandbox/faults").raise_for_status()
            answer = client.post("/sandbox/faults", json=patch) if patch else client.get("/sandbox/faults")
    except httpx.ConnectError:
        fail(f"no sandbox answers at {base} (found from {found}); start one (`posbridge sandbox` or `make run`) "
             "or give --url")
    except httpx.HTTPStatusError as exc:
        fail(f"{base} refused to clear the faults: HTTP {exc.response.status_code}; is that a posbridge sandbox?")
    except httpx.HTTPError as exc:
        fail(f"cannot reach the sandbox at {base}: {exc}")
    if answer.status_code == 400:
        try:
            detail = answer.json().get("detail")
        except ValueError:
            detail = answer.text
        fail(f"the sandbox refused these faults: {detail}", code=2)
    if answer.status_code != 200:
        fail(f"{base}/sandbox/faults answered HTTP {answer.status_code}; is that a posbridge sandbox?")
    try:
        current = answer.json()
    except json.JSONDecodeError:
        fail(f"{base}/sandbox/faults did not answer JSON; is that a posbridge sandbox?")
    if as_json:
        echo_json(current)
        return
    typer.echo(f"sandbox {base}: " + ("changed; now " if patch or clear else "") + _describe(current)[0])
    for line in _describe(current)[1:]:
        typer.echo(line)
