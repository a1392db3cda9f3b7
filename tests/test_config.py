"""Configuration: the example loads as shipped; every error names the file, the key and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from posbridge import config
from posbridge.errors import ConfigError
from tests.support.cli import run_posbridge
from tests.support.paths import REPO

EXAMPLE = REPO / "config" / "posbridge.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "posbridge.toml"
    path.write_text(text)
    return path


def test_example_config_loads_as_shipped():
    settings = config.load(EXAMPLE)
    assert settings.server.listen == "127.0.0.1:8080"
    assert settings.cloud.base_url == "https://api.omniwallet.cloud"
    assert settings.storage.path == Path("/var/lib/posbridge/posbridge.db")
    assert {s.type for s in settings.scanners} == {"serial", "hid", "camera"}
    assert {o.type for o in settings.outputs} == {"uinput", "hid-gadget"}


def test_example_config_documents_every_key():
    text = EXAMPLE.read_text()
    for section_name, model in config.Settings.model_fields.items():
        if section_name in ("scanners", "outputs", "source"):
            continue
        assert f"[{section_name}]" in text, section_name
        for key in model.annotation.model_fields:  # type: ignore[union-attr]
            assert f"\n{key} =" in text or f"\n# {key} =" in text, f"[{section_name}] {key} is not documented"
    for scanner_model in (config.SerialScanner, config.HidScanner, config.CameraScanner, config.OutputSettings):
        for key in scanner_model.model_fields:
            assert f"\n{key} =" in text or f"\n# {key} =" in text, f"scanner key {key} is not documented"


def test_durations_accept_numbers_and_units(tmp_path):
    settings = config.load(write(tmp_path, '[members]\nmax_stale = "30d"\ntimeout = "500ms"\n'
                                           '[delivery]\nbackoff_cap = "5m"\n'))
    assert settings.members.max_stale == 30 * 86400
    assert settings.members.timeout == 0.5
    assert settings.delivery.backoff_cap == 300


def test_relative_storage_path_is_relative_to_the_config_file(tmp_path):
    settings = config.load(write(tmp_path, '[storage]\npath = "state/pb.db"\n'))
    assert settings.storage.path == tmp_path / "state" / "pb.db"


@pytest.mark.parametrize("text, key, words", [
    ('[server]\nlisten = "8080"\n', "[server] listen", "HOST:PORT"),
    ('[server]\nlisten = "127.0.0.1:99999"\n', "[server] listen", "out of range"),
    ('[server]\nlistn = "127.0.0.1:8080"\n', "[server] listn", "unknown key"),
    ('[cloud]\nbase_url = "ftp://x"\n', "[cloud] base_url", "http(s) URL"),
    ('[members]\nmax_stale = "forever"\n', "[members] max_stale", "not a duration"),
    ('[members]\nunknown_offline = "maybe"\n', "[members] unknown_offline", "'reject' or 'accept'"),
    ('[cards]\npatterns = ["(unclosed"]\n', "[cards] patterns", "not a regular expression"),
    ('[cards]\npatterns = ["^(?P<id>x)$"]\n', "[cards] patterns", "(?P<member>"),
    ('[[scanners]]\nname = "front"\ntype = "serial"\nbaudrate = "fast"\nport = "/dev/ttyS0"\n',
     "[[scanners]] #1 (front) baudrate", "integer"),
    ('[[scanners]]\nname = "front"\ntype = "hid"\nvid = "zzzz"\npid = "0001"\n',
     "[[scanners]] #1 (front) vid", "USB id"),
    ('[[scanners]]\nname = "front"\ntype = "laser"\n', "[[scanners]] #1 (front)", "type"),
    ('[nonsense]\nx = 1\n', "nonsense", "unknown key"),
])
def test_config_error_names_the_file_and_the_key(tmp_path, text, key, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        config.load(path)
    message = str(error.value)
    assert str(path) in message
    assert key in message
    assert words in message


@pytest.mark.parametrize("content", [b"[server\nlisten=", b"\xff\xfe\x00garbage", b"= = =", b"[server]\nlisten = 1.2.3\n"])
def test_garbage_config_file_is_a_config_error_not_a_crash(tmp_path, content):
    path = tmp_path / "posbridge.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert str(path) in str(error.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "absent.toml")


def test_config_file_is_found_through_the_environment(tmp_path, monkeypatch):
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:9999"\n')
    monkeypatch.setenv("POSBRIDGE_CONFIG", str(path))
    assert config.load_settings(None).server.port == 9999


def test_cli_exits_2_with_the_file_and_key_on_a_bad_config(tmp_path):
    path = write(tmp_path, '[server]\nlisten = "nowhere"\n')
    result = run_posbridge(["run", "--config", str(path)])
    assert result.returncode == 2
    assert str(path) in result.stderr and "[server] listen" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["run", "--bogus"], ["queue", "list", "--state", "lost"], ["nonsense"]])
def test_cli_garbage_arguments_get_a_usage_error(args, tmp_path):
    result = run_posbridge(args, env={"POSBRIDGE_CONFIG": str(write(tmp_path, "")), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
