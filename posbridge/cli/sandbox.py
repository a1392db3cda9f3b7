"""`posbridge sandbox`: run the Omniwallet-compatible sandbox cloud in the foreground.

Prints one line on stdout once the port listens (URL, admin URL, account, and the token when it was
generated), then serves until SIGINT/SIGTERM. Fault options set the faults it starts with; they can be
changed later through `POST /sandbox/faults`.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Callable
from typing import Annotated

import typer
from pydantic import ValidationError

from posbridge.cli.root import app


@app.command("sandbox")
def sandbox(
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
    """Run a local Omniwallet-compatible cloud (demo members, points, fault injection)."""
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
