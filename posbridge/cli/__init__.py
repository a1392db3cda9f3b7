"""posbridge's command line. Each sub-command group lives in its own module of this package."""

from __future__ import annotations

import sys

import typer

from posbridge.cli.root import app  # noqa: I001 - the order below is the order of `posbridge --help`
from posbridge.errors import ConfigError

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
from posbridge.cli import gadget as _gadget  # noqa: E402,F401
from posbridge.cli import tls as _tls  # noqa: E402,F401
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
