"""Options and helpers shared by the sub-command modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from posbridge import config as config_mod
from posbridge.errors import ConfigError

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML configuration file. Default: $POSBRIDGE_CONFIG, then /etc/posbridge/posbridge.toml.",
        show_default=False,
    ),
]


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
