"""Where the cloud and local tokens come from, how they are stored, and how they are kept out of text."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import keyring
import pytest
from keyring.backends import fail

from posbridge import logs, secrets
from posbridge.errors import InvalidToken, PosbridgeError, TokenMissing, TokenStoreUnavailable
from posbridge.redaction import redact, redact_url
from posbridge.secrets import (
    Token,
    delete_token,
    find_tokens,
    generate_local_token,
    load_cloud_token,
    load_local_token,
    store_token,
    write_credential_file,
)
from tests.support.memory_keyring import BrokenKeyring, FileKeyring

CLOUD = "ow_live_7f3a9c2e51b84d0aa6"
LOCAL = "loc_Qm4v8Zt2Lw0pXy7Rk5Nb"


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No token anywhere by default; the on-disk credential directory is a temporary one."""
    for name in ("CREDENTIALS_DIRECTORY", "POSBRIDGE_CLOUD_TOKEN", "POSBRIDGE_LOCAL_TOKEN", "POSBRIDGE_DEV",
                 "INVOCATION_ID"):
        monkeypatch.delenv(name, raising=False)
    system_dir = tmp_path / "etc-credentials"
    monkeypatch.setenv("POSBRIDGE_CREDENTIALS_DIR", str(system_dir))
    monkeypatch.setattr(secrets, "_env_warned", False)
    return system_dir


@pytest.fixture
def use_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    yield
    keyring.set_keyring(previous)


@pytest.fixture
def memory_keyring(tmp_path: Path, use_keyring: None) -> FileKeyring:
    backend = FileKeyring(tmp_path / "keyring.json")
    keyring.set_keyring(backend)
    return backend


@pytest.fixture
def no_keyring(use_keyring: None) -> None:
    keyring.set_keyring(fail.Keyring())


@pytest.fixture
def systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "run-credentials"
    directory.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))
    return directory


def test_systemd_credential_wins_over_keyring_and_environment(
    systemd_credentials: Path, memory_keyring: FileKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    (systemd_credentials / "cloud-token").write_text(CLOUD + "\n")
    memory_keyring.set_password("posbridge", "cloud-token", "from-the-keyring")
    monkeypatch.setenv("POSBRIDGE_CLOUD_TOKEN", "from-the-environment")
    token = load_cloud_token()
    assert token.value == CLOUD
    assert "systemd credential 'cloud-token'" in token.source
    assert [t.value for t in find_tokens("cloud")] == [CLOUD, "from-the-keyring", "from-the-environment"]


def test_blank_systemd_credential_from_the_units_fallback_counts_as_not_set(
    systemd_credentials: Path, memory_keyring: FileKeyring
) -> None:
    (systemd_credentials / "local-token").write_text("\n")
    memory_keyring.set_password("posbridge", "local-token", LOCAL)
    token = load_local_token()
    assert token.value == LOCAL
    assert token.source == "system keyring (service 'posbridge', user 'local-token')"


def test_credential_file_on_disk_is_read_when_this_process_may_read_it(clean_env: Path, no_keyring: None) -> None:
    clean_env.mkdir()
    (clean_env / "cloud-token").write_text(CLOUD)
    token = load_cloud_token()
    assert token.value == CLOUD
    assert token.source == f"credential file {clean_env / 'cloud-token'}"


def test_keyring_is_used_when_there_is_no_credential(memory_keyring: FileKeyring) -> None:
    memory_keyring.set_password("posbridge", "cloud-token", f"  {CLOUD}  ")
    assert load_cloud_token().value == CLOUD


@pytest.mark.parametrize("backend", [fail.Keyring, BrokenKeyring], ids=["no-backend", "broken-backend"])
def test_a_missing_or_broken_keyring_counts_as_not_there(
    backend: type, use_keyring: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring.set_keyring(backend())
    monkeypatch.setenv("POSBRIDGE_CLOUD_TOKEN", CLOUD)
    monkeypatch.setenv("POSBRIDGE_DEV", "1")
    assert load_cloud_token().source == "environment variable POSBRIDGE_CLOUD_TOKEN"


def test_environment_token_warns_once_per_process_outside_development(
    no_keyring: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("POSBRIDGE_CLOUD_TOKEN", CLOUD)
    monkeypatch.setenv("POSBRIDGE_LOCAL_TOKEN", LOCAL)
    with caplog.at_level(logging.WARNING, logger="posbridge.secrets"):
        load_cloud_token()
        load_cloud_token()
        load_local_token()
    warnings = [r.getMessage() for r in caplog.records if r.name == "posbridge.secrets"]
    assert len(warnings) == 1
    assert "POSBRIDGE_DEV=1" in warnings[0] and CLOUD not in warnings[0]


def test_environment_token_is_quiet_in_development(
    no_keyring: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("POSBRIDGE_CLOUD_TOKEN", CLOUD)
    monkeypatch.setenv("POSBRIDGE_DEV", "1")
    with caplog.at_level(logging.WARNING, logger="posbridge.secrets"):
        assert load_cloud_token().value == CLOUD
    assert not [r for r in caplog.records if r.name == "posbridge.secrets"]


def test_environment_token_under_systemd_warns_even_with_posbridge_dev(
    no_keyring: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("POSBRIDGE_CLOUD_TOKEN", CLOUD)
    monkeypatch.setenv("POSBRIDGE_DEV", "1")
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    with caplog.at_level(logging.WARNING, logger="posbridge.secrets"):
        load_cloud_token()
    assert len([r for r in caplog.records if r.name == "posbridge.secrets"]) == 1


def test_missing_token_error_names_every_place_and_the_fix(clean_env: Path, no_keyring: None) -> None:
    with pytest.raises(TokenMissing) as caught:
        load_cloud_token()
    text = str(caught.value)
    for expected in ("systemd credential 'cloud-token'", str(clean_env / "cloud-token"), "system keyring",
                     "$POSBRIDGE_CLOUD_TOKEN", "posbridge token set --system", "systemctl restart posbridge"):
        assert expected in text
    with pytest.raises(TokenMissing, match="posbridge token generate --local --system"):
        load_local_token()


def test_token_repr_and_str_never_show_the_value() -> None:
    token = Token(CLOUD, "system keyring")
    assert CLOUD not in repr(token) and CLOUD not in str(token) and CLOUD not in f"{token}"
    assert "system keyring" in repr(token)


def test_store_and_delete_round_trip_through_the_keyring(memory_keyring: FileKeyring) -> None:
    where = store_token("cloud", f"{CLOUD}\n")
    assert where == "system keyring (service 'posbridge', user 'cloud-token')"
    assert memory_keyring.get_password("posbridge", "cloud-token") == CLOUD
    assert load_cloud_token().value == CLOUD
    assert delete_token("cloud") is True
    assert delete_token("cloud") is False
    assert memory_keyring.get_password("posbridge", "cloud-token") is None


@pytest.mark.parametrize("value", ["", "   \n", "two words", "tab\there", "bell\x07", "x" * 4097])
def test_values_that_cannot_be_tokens_are_refused_before_storing(memory_keyring: FileKeyring, value: str) -> None:
    with pytest.raises(InvalidToken):
        store_token("cloud", value)
    assert memory_keyring.get_password("posbridge", "cloud-token") is None


@pytest.mark.parametrize("backend", [fail.Keyring, BrokenKeyring], ids=["no-backend", "broken-backend"])
def test_storing_without_a_keyring_says_where_to_put_the_token_instead(
    backend: type, use_keyring: None, clean_env: Path
) -> None:
    keyring.set_keyring(backend())
    with pytest.raises(TokenStoreUnavailable) as caught:
        store_token("cloud", CLOUD)
    text = str(caught.value)
    assert isinstance(caught.value, PosbridgeError)
    assert CLOUD not in text
    assert "sudo posbridge token set --system" in text
    assert f"systemd-creds encrypt --name=cloud-token - {clean_env / 'cloud-token'}.cred" in text
    assert "export POSBRIDGE_CLOUD_TOKEN=" in text


def test_deleting_without_a_keyring_explains_how_to_remove_the_credential_file(no_keyring: None) -> None:
    with pytest.raises(TokenStoreUnavailable, match="sudo rm .*local-token"):
        delete_token("local")


def test_credential_file_is_written_private_and_then_found(clean_env: Path, no_keyring: None) -> None:
    path = write_credential_file("local", f" {LOCAL} ")
    assert path == clean_env / "local-token"
    assert path.read_text() == LOCAL + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(clean_env.stat().st_mode) == 0o700
    assert [p.name for p in clean_env.iterdir()] == ["local-token"]
    assert load_local_token().value == LOCAL


def test_generated_local_tokens_are_url_safe_and_unique() -> None:
    tokens = {generate_local_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert len(token) == 43
        assert all(ch.isalnum() or ch in "-_" for ch in token)


def test_loaded_tokens_are_registered_for_log_redaction(memory_keyring: FileKeyring) -> None:
    memory_keyring.set_password("posbridge", "cloud-token", "registered-by-loading-42")
    load_cloud_token()
    assert logs.redact_text("sent registered-by-loading-42 upstream") == "sent *** upstream"


def test_redact_hides_token_values_and_their_url_encoded_forms() -> None:
    token = "ab+cd/ef=="
    text = f"raw {token} quoted ab%2Bcd%2Fef%3D%3D plus ab%2Bcd%2Fef%3D%3D"
    assert redact(text, token) == "raw *** quoted *** plus ***"


def test_redact_hides_any_token_query_value_even_unregistered() -> None:
    url = "https://api.omniwallet.cloud/agora/member/OW7K?_token=s3cr3t&ow_account=shop"
    assert redact(url) == "https://api.omniwallet.cloud/agora/member/OW7K?_token=***&ow_account=shop"
    assert redact("GET /agora/invoices?a=1&_TOKEN=xyz HTTP/1.1") == "GET /agora/invoices?a=1&_TOKEN=*** HTTP/1.1"
    assert redact("params={'_token': 'abc123', 'ow_account': 'x'}") == "params={'_token': '***', 'ow_account': 'x'}"
    assert redact('{"_token": "abc123"}') == '{"_token": "***"}'


def test_redact_hides_bearer_credentials_and_url_passwords() -> None:
    assert redact("Authorization: Bearer loc_Qm4v8Zt2Lw") == "Authorization: Bearer ***"
    assert redact("proxy http://till:hunter2@10.0.0.1:3128/") == "proxy http://till:***@10.0.0.1:3128/"


def test_redact_leaves_ordinary_text_and_very_short_tokens_alone() -> None:
    text = "member OW7K2M9Q: 120 points, a tiny abc"
    assert redact(text, "abc", "") == text


def test_redact_url_accepts_httpx_urls() -> None:
    url = httpx.URL("https://api.omniwallet.cloud/agora/invoices", params={"_token": CLOUD, "ow_account": "shop"})
    printed = redact_url(url, CLOUD)
    assert CLOUD not in printed
    assert printed == "https://api.omniwallet.cloud/agora/invoices?_token=***&ow_account=shop"
