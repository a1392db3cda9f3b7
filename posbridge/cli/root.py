"""The ``posbridge`` command itself, on which every sub-command module registers its commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    rich_markup_mode="markdown",
    name="posbridge",
    help="Point-of-sale bridge: loyalty card scanners, offline member validation and a durable invoice "
    "outbox between the till and the Omniwallet cloud.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
