"""`posbridge token ...`: put the cloud and local tokens in place, check them, remove them.

Nothing here ever prints the cloud token. The local token is printed exactly once, by ``token generate``,
because the technician must paste it into the POS's URLs. Exit codes: 0 success, 1 the action failed (no
keyring, token refused, cloud unreachable), 2 wrong usage or configuration.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer

from posbridge.cli.common import ConfigOption, command_group, fail, load_settings
from posbridge.cloud import SENTINEL_MEMBER, probe_cloud
from posbridge.errors import InvalidToken, TokenMissing, TokenStoreUnavailable
from posbridge.redaction import redact_url
from posbridge.secrets import (
    CREDENTIAL_NAMES,
    TokenKind,
    credentials_dir,
    delete_token,
    find_tokens,
    generate_local_token,
    load_token,
    store_token,
    write_credential_file,
)

CHECK_MEMBER = SENTINEL_MEMBER
INSTALLED_UNIT = Path("/etc/systemd/system/posbridge.service")

token_app = command_group("token", "Store, check and remove the cloud API token and the POS's local token.")

LocalOption = Annotated[
    bool, typer.Option("--local", help="The local token the POS presents, instead of the cloud API token.")
]
SystemOption = Annotated[
    bool,
    typer.Option(
        "--system",
        help="Use the service's credential file (/etc/posbridge/credentials, root only) instead of the "
        "keyring. This is what a till running under systemd needs.",
    ),
]


def _kind(local: bool) -> TokenKind:
    return "local" if local else "cloud"


def _label(kind: TokenKind) -> str:
    return "local token" if kind == "local" else "cloud token"


def _note(message: str) -> None:
    typer.echo(message, err=True)


def keyring_usable() -> bool:
    """Whether this machine has a keyring backend at all (a headless till has none)."""
    try:
        import keyring

        keyring.get_password("posbridge", "__posbridge_probe__")
    except Exception:  # noqa: BLE001 - NoKeyringError, no D-Bus, locked...: not usable
        return False
    return True


def _set_command(kind: TokenKind, source: str = "") -> str:
    """The command that stores a new token where this machine's service will read it: the credential file
    (``--system``), unless the token in use came from a keyring that works here."""
    local = " --local" if kind == "local" else ""
    if source.startswith("system keyring") and keyring_usable():
        return f"posbridge token set{local}"
    return f"sudo posbridge token set{local} --system"


def _read_value(kind: TokenKind) -> str:
    """One token from the terminal without echo, or one line from a pipe (``printf %s TOKEN | ...``)."""
    if sys.stdin is not None and sys.stdin.isatty():
        value = typer.prompt(f"Paste the {_label(kind)} (not shown)", hide_input=True, prompt_suffix=": ")
    else:
        value = sys.stdin.readline() if sys.stdin is not None else ""
    if not value.strip():
        fail(f"no {_label(kind)} given: type it at the prompt or pipe it on standard input")
    return value


def _save(kind: TokenKind, value: str, system: bool) -> str:
    """Store ``value``; returns the source name :func:`find_tokens` will report for it. Exits 1 with a
    message that says what to do when it cannot store it."""
    try:
        if system:
            return f"credential file {write_credential_file(kind, value)}"
        return store_token(kind, value)
    except InvalidToken as exc:
        fail(f"that is not a usable {_label(kind)}: {exc}")
    except TokenStoreUnavailable as exc:
        fail(str(exc))
    except PermissionError:
        fail(f"cannot write to {credentials_dir()}: permission denied; run it as root (sudo posbridge token ...)")
    except OSError as exc:
        fail(f"cannot write the credential file in {credentials_dir()}: {exc.strerror or exc}")


def _warn_if_shadowed(kind: TokenKind, stored_at: str) -> None:
    """Point out a token that wins over the one just stored, and a keyring the service cannot read."""
    found = find_tokens(kind)
    if found and found[0].source != stored_at:
        _note(f"note: the {found[0].source} comes first and is the one in use; remove it to use the new one")
    if stored_at.startswith("system keyring") and INSTALLED_UNIT.exists():
        _note("note: the installed service runs as user posbridge and cannot read this keyring; "
              "for the service, store it with --system")


@token_app.command("set")
def set_token(local: LocalOption = False, system: SystemOption = False) -> None:
    """Store the cloud API token (or --local the POS token): prompted without echo, or read from stdin."""
    kind = _kind(local)
    value = _read_value(kind)
    where = _save(kind, value, system)
    typer.echo(f"{_label(kind)} stored in the {where}")
    _warn_if_shadowed(kind, where)
    typer.echo("restart the service to use it: sudo systemctl restart posbridge")


@token_app.command("check")
def check_token(
    local: LocalOption = False,
    config: ConfigOption = None,
) -> None:
    """Say where the token comes from (never its value); for the cloud token, ask the cloud whether it works.

    Exit 0 only when the cloud accepts the token (for --local: when a local token is configured).
    """
    kind = _kind(local)
    try:
        token = load_token(kind)
    except TokenMissing as exc:
        fail(str(exc))
    typer.echo(f"{_label(kind)}: from the {token.source}")
    for other in find_tokens(kind)[1:]:
        typer.echo(f"  also present, not used: {other.source}")
    if kind == "local":
        return
    settings = load_settings(config, required=False)
    params = {"_token": token.value}
    if settings.cloud.account:
        params["ow_account"] = settings.cloud.account
    else:
        _note("warning: no [cloud] account in the configuration; the cloud may refuse a request without it")
    url = f"{settings.cloud.base_url}/agora/member/{CHECK_MEMBER}"
    typer.echo(f"asking GET {redact_url(httpx.URL(url, params=params), token.value)}")
    # the daemon's own client: same timeouts, headers and error classes as the look-ups the POS will make
    probe = asyncio.run(probe_cloud(settings.cloud, token.value, timeout=settings.cloud.timeout, want_date=False))
    if probe.outcome == "unreachable":
        fail(f"{probe.detail} (check the network and [cloud] base_url = {settings.cloud.base_url!r})")
    if probe.outcome == "refused":
        fail(f"{probe.detail}. Get a new API token from Omniwallet and store it with "
             f"`{_set_command(kind, token.source)}`, then `sudo systemctl restart posbridge`")
    if probe.outcome == "ok":
        typer.echo(probe.detail)
        return
    fail(f"{probe.detail}; try again later")


@token_app.command("delete")
def delete(local: LocalOption = False, system: SystemOption = False) -> None:
    """Remove the token from the keyring (or --system: the service's credential file)."""
    kind = _kind(local)
    if system:
        base = credentials_dir() / CREDENTIAL_NAMES[kind]
        removed = []
        for path in (base, Path(f"{base}.cred")):
            try:
                path.unlink()
                removed.append(str(path))
            except FileNotFoundError:
                pass
            except PermissionError:
                fail(f"cannot remove {path}: permission denied; run it as root (sudo posbridge token delete ...)")
        if not removed:
            typer.echo(f"no {_label(kind)} credential file in {credentials_dir()}; nothing to delete")
            return
        typer.echo(f"deleted {', '.join(removed)}; restart the service: sudo systemctl restart posbridge")
        return
    try:
        deleted = delete_token(kind)
    except TokenStoreUnavailable as exc:
        if not keyring_usable():
            local = " --local" if kind == "local" else ""
            path = credentials_dir() / CREDENTIAL_NAMES[kind]
            fail(f"this machine has no keyring (a headless till), so its tokens are credential files: "
                 f"`sudo posbridge token delete{local} --system` removes {path} (by hand: `sudo rm {path}`)")
        fail(str(exc))
    if deleted:
        typer.echo(f"{_label(kind)} deleted from the system keyring")
    else:
        typer.echo(f"no {_label(kind)} in the system keyring; nothing to delete")
    remaining = find_tokens(kind)
    if remaining:
        _note(f"note: a {_label(kind)} is still configured in the {remaining[0].source}")


@token_app.command("generate")
def generate(
    local: LocalOption = False,
    system: SystemOption = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing local token.")] = False,
) -> None:
    """Create a new random local token, store it, and print it once for the POS's URLs (?_token=...)."""
    if not local:
        fail("only the local token can be generated (the cloud API token comes from Omniwallet); "
             "use `posbridge token generate --local`", code=2)
    existing = find_tokens("local")
    if existing and not force:
        fail(f"a local token already exists (in the {existing[0].source}) and the POS's URLs use it; "
             "pass --force to replace it, then update the POS")
    value = generate_local_token()
    try:
        where = f"credential file {write_credential_file('local', value)}" if system else store_token("local", value)
    except TokenStoreUnavailable:
        _note(
            "no system keyring on this machine, so the token was NOT stored. Store it for the service with\n"
            "  sudo posbridge token set --local --system     (paste the token printed below at the prompt)\n"
            "or generate one straight into the credential file: sudo posbridge token generate --local --system"
        )
    except PermissionError:
        fail(f"cannot write to {credentials_dir()}: permission denied; run it as root (sudo)")
    except OSError as exc:
        fail(f"cannot write the credential file in {credentials_dir()}: {exc.strerror or exc}")
    else:
        _note(f"local token stored in the {where}")
        _warn_if_shadowed("local", where)
        _note("restart the service to use it: sudo systemctl restart posbridge")
    _note("Paste it into the POS's bridge URLs as ?_token=<token> (this is the only time it is shown):")
    typer.echo(value)
