"""The ``posbridge`` command itself, on which every sub-command module registers its commands."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from posbridge import __version__


def _tidy_help_types() -> None:
    """Help shows no ``<bool>`` after a flag (a flag takes no value) and no ``<str>`` after an argument whose
    metavar already names it (``INVOICE``, ``CARD``); everything else as typer renders it."""
    try:
        from typer.core import TyperArgument, TyperOption
    except ImportError:  # another typer layout: keep its own rendering
        return
    option_type = getattr(TyperOption, "display_type_rich", None)
    argument_type = getattr(TyperArgument, "display_type_rich", None)
    if option_type is None or argument_type is None or getattr(option_type, "_posbridge", False):
        return

    def option_display(self: TyperOption, ctx: object) -> str | None:
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return option_type(self, ctx)

    def argument_display(self: TyperArgument, ctx: object) -> str | None:
        if self.metavar is not None:
            return None
        return argument_type(self, ctx)

    option_display._posbridge = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = option_display  # type: ignore[method-assign]
    TyperArgument.display_type_rich = argument_display  # type: ignore[method-assign]


_tidy_help_types()

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


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"posbridge {__version__} (Python {sys.version.split()[0]}, {sys.executable})")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option(
        "--version", "-V", help="Print the version (and the Python running it) and exit.",
        callback=_print_version, is_eager=True)] = False,
) -> None:
    """Options that come before any command."""
