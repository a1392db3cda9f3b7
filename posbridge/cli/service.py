"""`posbridge service install|uninstall`: set the bridge up as a systemd service (see systemd/README.md).

Each step prints one line ("...: changed", "...: already done", "would ..."), so a technician can run it
again after a failure and see what is left. Exit 0 when every step succeeded, 1 when one failed, 2 on wrong
usage (not root, purge without confirmation).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from posbridge.cli.common import command_group, fail
from posbridge.errors import InstallError
from posbridge.service import UNIT_NAME, Installer, StepResult, check_not_packaged, find_sources

service_app = command_group(
    "service",
    "Install or remove posbridge as a systemd service (Debian, Ubuntu, Raspberry Pi OS).",
)

DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")
]
RootOption = Annotated[
    Path | None,
    typer.Option(
        "--root",
        help="Install the files under this directory instead of / (image building, tests). Users, systemctl "
        "and udevadm are skipped.",
        file_okay=False,
    ),
]
SourceOption = Annotated[
    Path | None,
    typer.Option(
        "--source",
        help="Checkout holding systemd/, config/ and drivers/. Default: the directory above the package.",
        file_okay=False,
    ),
]


def _print(step: StepResult) -> None:
    typer.echo(step.line(), err=step.outcome == "failed")


def _prepare(source: Path | None, root: Path | None, dry_run: bool, *, removing: bool = False) -> Installer:
    if root is None and not dry_run and os.geteuid() != 0:
        fail(f"installing a service needs root: sudo {sys.argv[0]} {' '.join(sys.argv[1:])}", code=2)
    try:
        check_not_packaged(root, removing=removing)
        sources = find_sources(source)
    except InstallError as exc:
        fail(str(exc))
    return Installer(sources, root=root.absolute() if root else None, dry_run=dry_run, report=_print)


def _finish(installer: Installer) -> None:
    failed = [s for s in installer.results if s.outcome == "failed"]
    if failed:
        fail(f"{len(failed)} step(s) failed (see above); fix the cause and run the same command again")


@service_app.command("install")
def install(dry_run: DryRunOption = False, root: RootOption = None, source: SourceOption = None) -> None:
    """Create the user, /etc/posbridge, the unit and the udev rules; enable the service (does not start it)."""
    installer = _prepare(source, root, dry_run)
    try:
        installer.install()
    except InstallError as exc:
        fail(str(exc))
    _finish(installer)
    if not dry_run and root is None:
        typer.echo(
            "\nnext: put the tokens in place, then start the service:\n"
            "  sudo posbridge token set --system              (cloud API token from Omniwallet)\n"
            "  sudo posbridge token generate --local --system (token for the POS's URLs)\n"
            f"  sudo systemctl start {UNIT_NAME} && journalctl -u posbridge -f"
        )


@service_app.command("uninstall")
def uninstall(
    dry_run: DryRunOption = False,
    root: RootOption = None,
    source: SourceOption = None,
    purge: Annotated[
        bool,
        typer.Option("--purge", help="Also delete /etc/posbridge (tokens included), /var/lib/posbridge (the "
                     "database: unsent invoices are lost) and the posbridge user."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before --purge deletes data.")] = False,
) -> None:
    """Stop, disable and remove the service and its udev rules. Configuration and data stay unless --purge."""
    installer = _prepare(source, root, dry_run, removing=True)
    if purge and not dry_run and not yes:
        if not sys.stdin.isatty():
            fail("--purge deletes the configuration, the tokens and any unsent invoices; add --yes to confirm",
                 code=2)
        if not typer.confirm("Delete /etc/posbridge, /var/lib/posbridge (unsent invoices too) and the user?"):
            fail("nothing removed", code=1)
    installer.uninstall(purge=purge)
    _finish(installer)
