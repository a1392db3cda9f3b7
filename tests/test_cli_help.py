"""The command line's help and small promises to people: readable help in an 80-column terminal, --version,
human times, colour only for terminals, and messages that point a headless till at --system."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from posbridge import __version__
from posbridge.cli.humane import ago, paint, span, when
from posbridge.cli.root import app
from posbridge.service import InstallError, check_executable, check_not_packaged, hidden_from_service
from tests.support.paths import REPO


def every_command() -> list[list[str]]:
    """Every command path (`[]`, `["queue"]`, `["queue", "list"]`, ...)."""
    found: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        found.append(path)
        if isinstance(getattr(command, "commands", None), dict):  # a group (typer may bundle its own click)
            for name, sub in command.commands.items():  # type: ignore[attr-defined]
                walk(sub, [*path, name])

    walk(get_command(app), [])
    return found


def help_text(path: list[str]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", every_command(), ids=lambda p: " ".join(p) or "posbridge")
def test_help_shows_no_bool_metavar_and_cuts_nothing_at_80_columns(path: list[str]) -> None:
    text = help_text(path)
    assert "<bool>" not in text
    assert "…" not in text  # a default or a path cut off


def test_an_invoice_argument_has_one_name_in_every_command() -> None:
    for command in ("show", "retry", "drop"):
        text = help_text(["queue", command])
        assert "INVOICE" in text and "ident" not in text and "<str>" not in text


def test_version_names_the_version_and_the_python_running_it() -> None:
    done = subprocess.run([sys.executable, "-m", "posbridge.cli", "--version"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.startswith(f"posbridge {__version__} (Python {sys.version.split()[0]}")


# --- times and colour for people -------------------------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "said"), [(0, "0 s"), (59, "59 s"), (60, "1 min"), (7199, "119 min"),
                                               (7200, "2 h"), (172799, "47 h"), (172800, "2 days"), (None, "-")])
def test_span_says_a_duration_as_a_person_would(seconds, said: str) -> None:
    assert span(seconds) == said


def test_ago_reads_past_present_future_and_nothing() -> None:
    assert ago(1000.0, now=1240.0) == "4 min ago"
    assert ago(1000.0, now=1000.4) == "just now"
    assert ago(1030.0, now=1000.0) == "in 30 s"
    assert ago(None) == "-" and ago(float("nan")) == "-"
    assert when(None) == "-" and when(0.0, now=60.0).endswith("(1 min ago)")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_for_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert paint("late", "bad", FakeTerminal()) != "late" and "late" in paint("late", "bad", FakeTerminal())
    assert paint("late", "bad", io.StringIO()) == "late"
    monkeypatch.setenv("NO_COLOR", "1")
    assert paint("late", "bad", FakeTerminal()) == "late"


# --- service install: a command the unit could not run ---------------------------------------------------------

@pytest.mark.parametrize(("place", "setting"), [("/tmp/venv/bin/posbridge", "PrivateTmp=yes"),
                                                ("/home/tech/venv/bin/posbridge", "ProtectHome=yes"),
                                                ("/root/venv/bin/posbridge", "ProtectHome=yes")])
def test_service_install_refuses_a_command_the_unit_hides_with_reason_and_fix(place: str, setting: str) -> None:
    with pytest.raises(InstallError) as refused:
        check_executable(Path(place))
    message = str(refused.value)
    assert setting in message and "203/EXEC" in message and "/opt/posbridge/venv" in message


def test_service_install_looks_through_the_script_to_its_interpreter(tmp_path: Path) -> None:
    script = tmp_path / "posbridge"
    script.write_text("#!/home/tech/.pyenv/versions/3.11/bin/python\n")
    hidden = [str(path) for path, _ in hidden_from_service(Path("/opt/x/bin/posbridge"))]
    assert hidden == []
    found = hidden_from_service(script)
    assert (Path("/home/tech/.pyenv/versions/3.11/bin/python"), "ProtectHome=yes") in found


def test_service_install_cli_refuses_before_any_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From a virtualenv under /tmp (pytest's tmp_path) the real install is refused, naming the fix."""
    import posbridge.service as service

    monkeypatch.setattr(service, "current_executable", lambda: tmp_path / "venv" / "bin" / "posbridge")
    result = CliRunner().invoke(app, ["service", "install", "--dry-run"])
    assert result.exit_code == 1
    assert "PrivateTmp=yes" in result.output and "would create" not in result.output


def test_service_install_refuses_where_the_debian_package_is_installed(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import posbridge.service as service

    unit = tmp_path / "posbridge.service"
    unit.write_text("[Service]\n")
    monkeypatch.setattr(service, "PACKAGED_UNITS", (unit,))
    with pytest.raises(InstallError, match="posbridge setup"):
        check_not_packaged(None)
    with pytest.raises(InstallError, match="apt remove posbridge"):
        check_not_packaged(None, removing=True)
    check_not_packaged(tmp_path)  # building an image under --root is not refused


# --- tokens on a till without a keyring ------------------------------------------------------------------------

def test_token_messages_point_a_headless_till_at_system(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSBRIDGE_")}
    env.update(POSBRIDGE_CREDENTIALS_DIR=str(tmp_path / "credentials"),
               PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "posbridge.cli", "token", *args], cwd=REPO, env=env,
                              input=stdin, capture_output=True, text=True, timeout=60)

    for done in (run("check"), run("check", "--local"), run("set", stdin="abc123\n"), run("delete"),
                 run("generate", "--local")):
        assert "--system" in done.stderr, done.stderr
