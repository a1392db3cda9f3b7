"""Options and helpers shared by the sub-command modules."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from posbridge import config as config_mod
from posbridge.cli.root import app
from posbridge.errors import ConfigError, StorageError

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="TOML configuration file. Default: $POSBRIDGE_CONFIG, then /etc/posbridge/posbridge.toml.",
        show_default=False,
    ),
]


# One name per kind of argument, in every command's help.
INVOICE_METAVAR = "INVOICE"  # an invoice's id (42) or key (T1-1042)
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON; times as epoch seconds).")]

HELP_MODE = "markdown"  # help paragraphs are reflowed to the terminal's width (rich mode keeps line breaks)


def command_group(name: str, help: str) -> typer.Typer:
    """A ``posbridge NAME ...`` group of sub-commands, registered on the main command."""
    group = typer.Typer(rich_markup_mode=HELP_MODE, help=help, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


def load_settings(path: Path | None, *, required: bool = True) -> config_mod.Settings:
    """Load the configuration; on error print it (file, key, problem) and exit 2."""
    try:
        return config_mod.load_settings(path, required=required)
    except ConfigError as exc:
        fail(str(exc), code=2)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"posbridge: {message}", err=True)
    raise typer.Exit(code)


def echo_json(value: Any) -> None:
    """One JSON document per line on stdout (UTF-8, not ASCII-escaped)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def open_storage(settings: config_mod.Settings, *, missing: str | None = None) -> Iterator[tuple[Any, Any]]:
    """The database's ``(Writer, Reader)`` for one command, closed after it; storage errors exit 1 with the cause.

    ``missing``: when given, a database that does not exist yet is not created; the command fails with
    ``no database at PATH (<missing>)`` instead.
    """
    from posbridge.db import Database

    path = settings.storage.path
    if missing is not None and not path.exists():
        fail(f"no database at {path} ({missing}; or a different [storage] path: use --config)")
    try:
        database = Database(path)
    except StorageError as exc:
        fail(str(exc))
    try:
        yield database.writer, database.reader
    except StorageError as exc:
        fail(str(exc))
    finally:
        database.close()


def body_text(body: bytes | None) -> str | None:
    """A stored body for printing: its UTF-8 text, or ``base64:...`` when it is not UTF-8."""
    if body is None:
        return None
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(body).decode()
