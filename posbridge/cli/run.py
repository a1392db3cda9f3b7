"""`posbridge run`: start the daemon (under systemd, or in a terminal with ``--sandbox``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from posbridge.cli.common import ConfigOption, fail, load_settings
from posbridge.cli.root import app
from posbridge.config import Settings, StdinScanner
from posbridge.errors import ConfigError, DatabaseNotRecognised, PosbridgeError, TokenMissing

log = logging.getLogger("posbridge")

SANDBOX_ACCOUNT = "demo"


def _sandbox_tokens(state_dir: Path) -> dict[str, str]:
    """Tokens of the embedded sandbox, kept in the state directory so URLs pasted into a POS stay valid."""
    from posbridge.secrets import generate_local_token

    path = state_dir / "sandbox-tokens.json"
    try:
        tokens = json.loads(path.read_text())
        if isinstance(tokens, dict) and tokens.get("cloud") and tokens.get("local"):
            return tokens
    except (OSError, ValueError):
        pass
    tokens = {"cloud": "sbx-" + generate_local_token(), "local": generate_local_token()}
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(tokens, handle)
    return tokens


def _sandbox_settings(base: Settings, cloud_url: str, state_dir: Path) -> Settings:
    storage = base.storage.model_copy(update={"path": (state_dir / "posbridge.db").resolve()})
    cloud = base.cloud.model_copy(update={"base_url": cloud_url, "account": SANDBOX_ACCOUNT})
    scanners = list(base.scanners)
    if not scanners:
        scanners.append(StdinScanner(type="stdin", name="terminal", debounce=0))
    return base.model_copy(update={"storage": storage, "cloud": cloud, "scanners": scanners})


SANDBOX_CONFIG = "posbridge.toml"


def _write_sandbox_config(state_dir: Path, settings: Settings) -> Path:
    """The sandbox daemon's configuration, next to its state, so the CLI in another terminal
    (``export POSBRIDGE_CONFIG=...``) looks at this daemon: its database, its listen address, its sandbox.

    Starts from the ``--config`` file when one was given (comments kept), with the keys the sandbox changes.
    Rewritten at every start (the embedded sandbox's port changes)."""
    import tomlkit

    path = (state_dir / SANDBOX_CONFIG).resolve()
    base = settings.source
    document = tomlkit.parse(base.read_text(encoding="utf-8")) if base is not None and base != path \
        else tomlkit.document()
    if base is None or base == path:
        document.add(tomlkit.comment("Written by `posbridge run --sandbox` at each start; edits are overwritten."))
        document.add(tomlkit.comment(f"Use it from another terminal: export POSBRIDGE_CONFIG={path}"))
    for section, values in {
        "server": {"listen": settings.server.listen},
        "cloud": {"base_url": settings.cloud.base_url, "account": settings.cloud.account},
        "storage": {"path": str(settings.storage.path)},
    }.items():
        table = document.get(section)
        if table is None:
            table = tomlkit.table()
            document[section] = table
        for key, value in values.items():
            table[key] = value
    state_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(tomlkit.dumps(document), encoding="utf-8")
    os.replace(temporary, path)
    return path


def _banner(settings: Settings, local_token: str, cloud_url: str, config_path: Path | None = None) -> str:
    base = f"http://{settings.server.listen}"
    return "\n".join([
        "",
        "posbridge is running against the embedded sandbox cloud (demo data, nothing leaves this machine).",
        "",
        "Paste these into Ágora > Integration Services:",
        f"  participant validation: {base}/agora/member/{{member_id}}?_token={local_token}",
        f"  purchase submission:    {base}/agora/invoices?_token={local_token}",
        "",
        f"Counter screen (live scans, bridge state, invoices that need a person): {base}/?_token={local_token}",
        "",
        "Try it:",
        f"  curl -s '{base}/agora/member/OW7K2M9Q?_token={local_token}'",
        "  curl -s -X POST -H 'Content-Type: application/json' \\",
        "       --data '{\"Serie\":\"T1\",\"Number\":1,\"Loyalty\":{\"MemberId\":\"OW7K2M9Q\"},"
        "\"Totals\":{\"GrossAmount\":12.5}}' \\",
        f"       '{base}/agora/invoices?_token={local_token}'",
        f"  curl -s '{base}/v1/status?_token={local_token}'",
        "",
        f"Sandbox cloud: {cloud_url} (what it received: {cloud_url}/sandbox/invoices)",
        f"State: {settings.storage.path}",
        *([
            "",
            "The command line against this daemon, from another terminal:",
            f"  export POSBRIDGE_CONFIG={config_path}",
            "  posbridge status; posbridge queue status; posbridge queue show ID",
            "  posbridge sandbox faults --outage      (and --no-outage, --latency-ms 800, --auth-fail, --clear)",
        ] if config_path is not None else []),
        "Virtual scanner: type or paste a card here (e.g. OW7K2M9Q, or a card URL) and press Enter.",
        "Stop with Ctrl+C.",
        "",
    ])


async def _print_scans(bridge: Any) -> None:
    """In a terminal, show each scan's result as the POS would see it."""

    async def follow() -> None:
        async for scan in bridge.scan_hub.subscribe():
            member = scan.get("member") or {}
            data = member.get("data") if isinstance(member, dict) else None
            if scan.get("error"):
                line = f"scan {scan.get('text')!r}: {scan['error']}"
            elif isinstance(data, dict) and data.get("name"):
                line = (f"scan -> member {scan['member_id']}: {data.get('name')}, {data.get('points')} points "
                        f"({member.get('cache') or 'policy'})")
            else:
                line = f"scan -> member {scan.get('member_id')}: HTTP {member.get('status')}"
            print(line, flush=True)

    task = asyncio.create_task(follow(), name="print-scans")  # ends when the daemon closes the scan hub
    _printing.add(task)
    task.add_done_callback(_printing.discard)


_printing: set[asyncio.Task[None]] = set()  # a strong reference while the task runs (asyncio keeps weak ones)


@app.command("run")
def run(
    config: ConfigOption = None,
    sandbox: Annotated[bool, typer.Option(
        "--sandbox", help="Run against an embedded sandbox cloud with demo members and generated tokens "
        "(no account, no internet needed). Prints the URLs to paste into Ágora.")] = False,
    state_dir: Annotated[Path, typer.Option(
        metavar="DIR", help="With --sandbox: where the database, the generated tokens and the configuration for "
        "the command line are kept.")] = Path("state"),
    log_format: Annotated[str | None, typer.Option(
        "--log-format", metavar="FORMAT", show_default=False,
        help="text, json or journald (default: [logging] format, auto-detected).")] = None,
    log_level: Annotated[str | None, typer.Option("--log-level", metavar="LEVEL", show_default=False,
                                                  help="debug, info, warning or error.")] = None,
    accept_new_database: Annotated[bool, typer.Option(
        "--accept-new-database", help="Start even though the database is missing, empty, replaced or lacks its "
        "latest invoices compared with the marker posbridge keeps beside the state directory. Only when the "
        "invoices of the old database are known to be delivered or re-entered: they are forgotten.")] = False,
) -> None:
    """Start the daemon: local API for the POS, outbox delivery, member cache, scanners."""
    settings = load_settings(config, required=not sandbox)
    from posbridge import daemon
    from posbridge.logs import setup_logging
    from posbridge.redaction import register_secret
    from posbridge.secrets import load_cloud_token, load_local_token

    if log_format not in (None, "text", "json", "journald", "auto"):
        fail(f"--log-format must be text, json or journald, not {log_format!r}", code=2)
    if log_level not in (None, "debug", "info", "warning", "error"):
        fail(f"--log-level must be debug, info, warning or error, not {log_level!r}", code=2)
    setup_logging(log_level or settings.logging.level, log_format or settings.logging.format)
    embedded = None
    on_ready = None
    if sandbox:
        from posbridge.sandbox.server import EmbeddedSandbox

        tokens = _sandbox_tokens(state_dir)
        cloud_token, local_token = tokens["cloud"], tokens["local"]
        embedded = EmbeddedSandbox(cloud_token, SANDBOX_ACCOUNT)
        embedded.start()
        settings = _sandbox_settings(settings, embedded.url, state_dir)
        try:
            config_path: Path | None = _write_sandbox_config(state_dir, settings)
        except OSError as exc:
            log.warning("could not write the sandbox's configuration in %s (%s); the command line will not "
                        "find this daemon", state_dir, exc.strerror or exc)
            config_path = None
        banner = _banner(settings, local_token, embedded.url, config_path)

        async def on_ready(bridge: Any) -> None:
            print(banner, flush=True)
            await _print_scans(bridge)
    else:
        try:
            cloud_token = load_cloud_token().value
            local_token = load_local_token().value
        except TokenMissing as exc:
            fail(str(exc), code=1)
    register_secret(cloud_token)
    register_secret(local_token)
    try:
        code = asyncio.run(daemon.run(settings, cloud_token, local_token, on_ready=on_ready,
                                      accept_new_database=accept_new_database))
    except ConfigError as exc:  # e.g. a TLS file named in the config cannot be used: exit 2, as for any config error
        fail(str(exc), code=2)
    except DatabaseNotRecognised as exc:  # a person must decide; systemd does not restart exit 3
        fail(str(exc), code=3)
    except PosbridgeError as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        code = 0
    finally:
        if embedded is not None:
            embedded.stop()
    sys.exit(code)
