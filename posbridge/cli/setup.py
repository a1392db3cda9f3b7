"""`posbridge setup`: the first-run wizard (and the same with flags, `--non-interactive`, for scripted installs).

Steps, each printing one line that says what it did: the configuration file; the Omniwallet account and API token
(asked to the cloud before anything is stored); the listen address (this till only, or the shop's network); the
local token and the two URLs to paste into Ágora; the scanner (from what `scanners list` finds); a test scan
showing the member; then the configuration and the token files are written and the service is enabled and
(re)started. Nothing is written before the last step: an interrupted setup changes nothing. Run again, it keeps
every answer given before (Enter accepts it) and restarts the service only when something changed.

``--root DIR`` puts the files under DIR (image building, tests); the service is then left alone unless
``$POSBRIDGE_SYSTEMCTL`` names a systemctl to use (tests give a stand-in).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from posbridge.cli.common import fail
from posbridge.cli.humane import paint
from posbridge.cli.root import app
from posbridge.cli.setup_config import ConfigEdit
from posbridge.cli.setup_scanner import scanner_step, test_scan_step
from posbridge.config import CloudSettings, split_listen
from posbridge.errors import ConfigError

UNIT = "posbridge.service"
ENV_SYSTEMCTL = "POSBRIDGE_SYSTEMCTL"
DEFAULT_PORT = 8080


class Wizard:
    """The questions and the one-line reports, interactive or from flags."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive

    def say(self, step: str, text: str, tone: str | None = None) -> None:
        typer.echo(f"{paint(f'{step}:', 'bold')} {paint(text, tone) if tone else text}")  # type: ignore[arg-type]

    def note(self, text: str) -> None:
        typer.echo(f"  {text}")

    def ask(self, question: str, default: str | None, *, flag: str) -> str:
        if not self.interactive:
            if default is None or default == "":
                self.missing(flag, question)
            return default
        answer = typer.prompt(question, default=default or None, show_default=bool(default))
        return str(answer).strip()

    def ask_secret(self, question: str) -> str:
        return str(typer.prompt(question, hide_input=True, default="", show_default=False)).strip()

    def choose(self, question: str, options: list[tuple[str, Any]], default: int) -> Any:
        for number, (label, _) in enumerate(options, 1):
            typer.echo(f"  {number}) {label}")
        while True:
            answer = typer.prompt(question, default=str(default))
            if str(answer).strip().isdigit() and 1 <= int(answer) <= len(options):
                return options[int(answer) - 1][1]
            typer.echo(f"  type a number from 1 to {len(options)}")

    def confirm(self, question: str, default: bool) -> bool:
        return self.interactive and typer.confirm(question, default=default)

    def missing(self, flag: str, what: str) -> NoReturn:
        fail(f"--non-interactive needs {flag} ({what}); nothing was changed", code=2)


# --- steps --------------------------------------------------------------------------------------------------

def _credentials_dir(root: Path | None) -> Path:
    from posbridge.secrets import credentials_dir

    return root / "etc/posbridge/credentials" if root else credentials_dir()


def _stored(directory: Path, name: str) -> str | None:
    try:
        value = (directory / name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value or None


def _probe(base_url: str, account: str, token: str) -> tuple[str, str]:
    """``doctor``'s token check (a 404 that names the account, not the member, is a wrong account)."""
    from posbridge.cloud import probe_cloud

    probe = asyncio.run(probe_cloud(CloudSettings(base_url=base_url, account=account), token, timeout=10.0,
                                    want_date=False))
    return probe.outcome, probe.detail


EXAMPLE_ACCOUNT = "mystore"  # the example configuration's placeholder, not a real answer


def cloud_step(wizard: Wizard, edit: ConfigEdit, stored: str | None, token_file: Path | None,
               cloud_url: str | None, account_flag: str | None) -> tuple[str, bool]:
    """Account and API token, checked with the cloud. Returns the token and whether it is new."""
    from posbridge.secrets import InvalidToken, check_token_value

    if cloud_url:
        edit.set("cloud", "base_url", cloud_url.rstrip("/"))
    base_url = edit.get("cloud", "base_url", CloudSettings().base_url)
    current = edit.get("cloud", "account", "") or None
    if current == EXAMPLE_ACCOUNT:
        current = None
    account = account_flag or wizard.ask("Omniwallet account (the subdomain: mystore for mystore.omniwallet.cloud)",
                                         current, flag="--account")
    try:
        CloudSettings(base_url=base_url, account=account)
    except ValueError:
        fail(f"{account!r} is not an account subdomain (letters, digits, '-' and '_')", code=2)
    changed = edit.set("cloud", "account", account)
    wizard.say("account", f"{account} ({'changed' if changed else 'unchanged'})")
    given: str | None = None
    if token_file is not None:
        try:
            given = sys.stdin.readline() if str(token_file) == "-" else token_file.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"cannot read --api-token-file {token_file}: {exc.strerror}", code=2)
    for attempt in range(3):
        if given is None and wizard.interactive:
            hint = " (Enter keeps the stored one)" if stored else ""
            given = wizard.ask_secret(f"Omniwallet API token{hint}, not shown") or None
        token = given or stored
        if token is None:
            if not wizard.interactive:
                wizard.missing("--api-token-file", "the Omniwallet API token")
            typer.echo("  a token is needed: Omniwallet > Settings > API")
            continue
        try:
            token = check_token_value(token)
        except InvalidToken as exc:
            if not wizard.interactive:
                fail(f"that is not a usable API token: {exc}; nothing was changed", code=2)
            typer.echo(f"  that is not a usable API token: {exc}")
            given = None
            continue
        from posbridge.redaction import register_secret

        register_secret(token)
        outcome, detail = _probe(base_url, account, token)
        if outcome == "ok":
            new = token != stored
            wizard.say("API token", f"{'new token' if new else 'stored token'} checked with {base_url}: {detail}",
                       "ok")
            return token, new
        message = (f"{base_url} refused the token for account {account}: {detail}" if outcome == "refused"
                   else f"could not check the token with {base_url}: {detail}")
        if not wizard.interactive or outcome != "refused" or "account" in detail:
            fail(f"{message}. Nothing was stored{'; check the network and run setup again' if outcome != 'refused' else ''}")
        typer.echo(f"  {paint(message, 'bad')}; paste the right token (attempt {attempt + 2} of 3)")
        given = None
    fail("no API token the cloud accepts; nothing was stored")


def lan_address() -> str:
    """This machine's IPv4 address on the shop's network (the first interface that is not loopback), read
    from the kernel without sending anything; a placeholder when there is none."""
    import fcntl
    import struct

    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            if name == "lo":
                continue
            try:
                packed = fcntl.ioctl(probe.fileno(), siocgifaddr, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            address = socket.inet_ntoa(packed[20:24])
            if not address.startswith("127."):
                return address
    return "THIS-MACHINE'S-ADDRESS"


def listen_step(wizard: Wizard, edit: ConfigEdit, choice: str | None) -> str:
    current = edit.get("server", "listen", "127.0.0.1:8080")
    try:
        host, port = split_listen(current)
    except ValueError:
        host, port = "127.0.0.1", DEFAULT_PORT
    till, lan = f"127.0.0.1:{port}", f"0.0.0.0:{port}"
    if choice is None and wizard.interactive:
        options = [(f"only this till (the POS runs here): {till}", till),
                   (f"the shop's network (the POS is on another machine): {lan}", lan)]
        listen = wizard.choose("Where is the POS?", options, default=2 if host in ("0.0.0.0", "::") else 1)
    else:
        listen = {"till": till, "lan": lan, None: current}.get(choice, choice)  # type: ignore[arg-type]
        try:
            split_listen(listen)
        except ValueError as exc:
            fail(f"--listen: {exc} (or till, or lan)", code=2)
    changed = edit.set("server", "listen", listen)
    where = "the shop's network" if split_listen(listen)[0] in ("0.0.0.0", "::") else "this machine only"
    wizard.say("listen", f"{listen}, reachable from {where} ({'changed' if changed else 'unchanged'})")
    return listen


def local_token_step(wizard: Wizard, stored: str | None, renew: bool, listen: str) -> tuple[str, bool]:
    from posbridge.secrets import generate_local_token

    if stored and not renew:
        token, new = stored, False
        wizard.say("local token", "kept (the URLs already in the POS stay valid)")
    else:
        token, new = generate_local_token(), True
        wizard.say("local token", "generated" + (" (replaces the old one: update the POS)" if stored else ""))
    host, port = split_listen(listen)
    shown = lan_address() if host in ("0.0.0.0", "::") else host
    base = f"http://{shown}:{port}"
    typer.echo("  Paste into Ágora > Integration Services:")
    typer.echo(f"    participant validation: {base}/agora/member/{{member_id}}?_token={token}")
    typer.echo(f"    purchase submission:    {base}/agora/invoices?_token={token}")
    return token, new


def _systemctl(root: Path | None) -> str | None:
    """The systemctl to drive, or None when there is no running systemd to talk to (or --root without one)."""
    if os.environ.get(ENV_SYSTEMCTL):
        return os.environ[ENV_SYSTEMCTL]
    if root is not None or not Path("/run/systemd/system").is_dir():
        return None
    return shutil.which("systemctl")


def _run(systemctl: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([systemctl, *args], capture_output=True, text=True, timeout=120, check=False)


def service_step(wizard: Wizard, root: Path | None, changed: bool, start: bool) -> None:
    if not start:
        wizard.say("service", "not started (--no-start); start it with: sudo systemctl enable --now posbridge")
        return
    systemctl = _systemctl(root)
    if systemctl is None:
        reason = "--root was given" if root else "systemd is not running here (a container or a chroot?)"
        wizard.say("service", f"not started: {reason}; on the till: sudo systemctl enable --now posbridge", "warn")
        return
    if _run(systemctl, "is-enabled", UNIT).stdout.strip() != "enabled":
        done = _run(systemctl, "enable", UNIT)
        if done.returncode != 0:
            fail(f"systemctl enable {UNIT} failed: {(done.stderr or done.stdout).strip()} (is the package "
                 "installed? `sudo posbridge service install` from a checkout)")
        wizard.say("service", "enabled at boot")
    active = _run(systemctl, "is-active", UNIT).stdout.strip() == "active"
    if active and not changed:
        wizard.say("service", "running; nothing changed, so it was not restarted", "ok")
        return
    action = "restart" if active else "start"
    done = _run(systemctl, action, UNIT)
    if done.returncode != 0 or _run(systemctl, "is-active", UNIT).stdout.strip() != "active":
        fail(f"the service did not {action}: {(done.stderr or done.stdout).strip() or 'see the journal'}; "
             "journalctl -u posbridge -n 30 says why")
    wizard.say("service", ("restarted to use the new settings" if active else "started") + "; "
               "`posbridge status` shows how it is doing", "ok")


# --- the command ----------------------------------------------------------------------------------------------

@app.command("setup")
def setup(
    non_interactive: Annotated[bool, typer.Option(
        "--non-interactive", help="Ask nothing: take the answers from the options and keep everything else.")]
    = False,
    account: Annotated[str | None, typer.Option(metavar="ACCOUNT", show_default=False,
                                                help="Omniwallet account subdomain (mystore).")] = None,
    api_token_file: Annotated[Path | None, typer.Option(
        metavar="FILE", show_default=False,
        help="Read the Omniwallet API token from FILE ('-': standard input). Checked with the cloud first.")]
    = None,
    cloud_url: Annotated[str | None, typer.Option(metavar="URL", show_default=False,
                                                  help="The cloud's address (a sandbox, for trials).")] = None,
    listen: Annotated[str | None, typer.Option(
        metavar="WHERE", show_default=False,
        help="till (127.0.0.1:8080, the POS runs here), lan (0.0.0.0:8080) or HOST:PORT.")] = None,
    scanner: Annotated[str | None, typer.Option(
        metavar="DEVICE", show_default=False,
        help="keep, none, or a device: serial:PATH (serial:/dev/ttyACM0, with :BAUD after it if needed), "
        "hid:VID:PID (:keyboard after it for keyboard mode), camera:PATH.")] = None,
    test_scan: Annotated[bool | None, typer.Option(
        "--test-scan/--no-test-scan", show_default=False,
        help="Ask for a scan and show the member (default: yes when interactive).")] = None,
    scan_timeout: Annotated[float, typer.Option(metavar="SECONDS", help="How long to wait for the test scan.")]
    = 60.0,
    new_local_token: Annotated[bool, typer.Option(
        "--new-local-token", help="Replace the local token (the POS's URLs must then be updated).")] = False,
    start: Annotated[bool, typer.Option("--start/--no-start", help="Enable and (re)start the service at the end.")]
    = True,
    root: Annotated[Path | None, typer.Option(
        metavar="DIR", show_default=False, file_okay=False,
        help="Write under DIR instead of / (image building, tests).")] = None,
) -> None:
    """Set this till up: account and API token, listen address, local token and the URLs for Ágora, scanner,
    test scan; then write the configuration and tokens and start the service.

    Every step says what it did. Run it again to change one answer: Enter keeps the others, and the service is
    restarted only when something changed."""
    wizard = Wizard(interactive=not non_interactive and sys.stdin.isatty())
    if not non_interactive and not sys.stdin.isatty():
        fail("no terminal to ask questions on; pass --non-interactive with the answers as options", code=2)
    root = root.absolute() if root else None
    path = (root / "etc/posbridge/posbridge.toml") if root else Path(
        os.environ.get("POSBRIDGE_CONFIG") or "/etc/posbridge/posbridge.toml")
    credentials = _credentials_dir(root)
    if root is None and os.geteuid() != 0 and not os.access(path.parent if path.parent.exists() else Path("/etc"),
                                                               os.W_OK):
        fail(f"setup writes {path} and the token files in {credentials}: run it as root (sudo posbridge setup)",
             code=2)
    try:
        edit = ConfigEdit.open(path)
    except ConfigError as exc:
        fail(str(exc), code=2)
    wizard.say("configuration", f"{path}" + (" (new file)" if edit.original is None else ""))
    for problem in edit.problems:
        wizard.note(paint(f"currently invalid: {problem} (setup fixes what it asks; the rest is yours)", "warn"))
    try:
        cloud_token, cloud_new = cloud_step(wizard, edit, _stored(credentials, "cloud-token"), api_token_file,
                                            cloud_url, account)
        address = listen_step(wizard, edit, listen)
        local_token, local_new = local_token_step(wizard, _stored(credentials, "local-token"), new_local_token,
                                                  address)
        scanner_step(wizard, edit, scanner)
        if test_scan if test_scan is not None else wizard.interactive:
            test_scan_step(wizard, edit, cloud_token, scan_timeout)
    except (KeyboardInterrupt, EOFError, typer.Abort):
        typer.echo("\nsetup interrupted: nothing was changed", err=True)
        raise typer.Exit(130) from None
    try:
        edit.settings()
    except ConfigError as exc:
        fail(f"the configuration would not be valid, so nothing was written:\n{exc}")
    written = _write(wizard, edit, credentials, cloud_token if cloud_new else None,
                     local_token if local_new else None)
    service_step(wizard, root, written, start)


def _write(wizard: Wizard, edit: ConfigEdit, credentials: Path, cloud_token: str | None,
           local_token: str | None) -> bool:
    """Write what changed; True when anything did (the service then needs a restart)."""
    from posbridge.secrets import write_credential_file

    changed = False
    try:
        if edit.dirty:
            names = edit.changes()
            edit.write()
            wizard.say("configuration", f"written ({', '.join(names) if names else 'new file'})")
            changed = True
        else:
            wizard.say("configuration", "unchanged")
        for kind, value in (("cloud", cloud_token), ("local", local_token)):
            if value is not None:
                target = write_credential_file(kind, value, credentials)  # type: ignore[arg-type]
                wizard.say(f"{kind} token", f"stored in {target} (root only, mode 0600)")
                changed = True
    except PermissionError as exc:
        fail(f"permission denied writing {exc.filename}: run it as root (sudo posbridge setup)")
    except OSError as exc:
        fail(f"cannot write {exc.filename}: {exc.strerror}")
    if not changed:
        wizard.say("tokens", "unchanged")
    return changed
