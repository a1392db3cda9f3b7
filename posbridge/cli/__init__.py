"""posbridge's command line. Each sub-command group lives in its own module of this package."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from posbridge import __version__
from posbridge.errors import ConfigError



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


# Each module registers its commands on `app` when imported.
from posbridge.cli import run as _run  # noqa: E402,F401
from posbridge.cli import queue as _queue  # noqa: E402,F401
from posbridge.cli import token as _token  # noqa: E402,F401
from posbridge.cli import service as _service  # noqa: E402,F401
from posbridge.cli import cards as _cards  # noqa: E402,F401
from posbridge.cli import sandbox as _sandbox  # noqa: E402,F401
from posbridge.cli import scanners as _scanners  # noqa: E402,F401
from posbridge.cli import members as _members  # noqa: E402,F401
from posbridge.cli import doctor as _doctor  # noqa: E402,F401
from posbridge.cli import status as _status  # noqa: E402,F401
from posbridge.cli import setup as _setup  # noqa: E402,F401


def main() -> None:
    """Console entry point: configuration problems exit 2 with the file and key named."""
    try:
        app()
    except ConfigError as exc:
        typer.echo(f"posbridge: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
