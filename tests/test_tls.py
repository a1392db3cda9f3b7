"""TLS on the local API: `posbridge tls generate` makes the pair, the daemon serves HTTPS with it, and a TLS
handshake is bounded like a request head. The daemon runs as a real process; the POS is an httpx client that
trusts the generated certificate, as a POS would after the technician imported it."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.support.daemon import DaemonProcess, invoice
from tests.support.paths import REPO
from tests.support.sandbox import running_sandbox


def posbridge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "posbridge.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    result = posbridge("tls", "generate", "--dir", str(directory), "--name", "till-1.shop.lan",
                       "--ip", "192.168.1.20")
    assert result.returncode == 0, result.stderr
    return directory / "posbridge.crt", directory / "posbridge.key"


class TlsDaemon(DaemonProcess):
    """The daemon with [server] tls_cert/tls_key, reached over https:// by a client trusting the pair."""

    def __init__(self, workdir: Path, sandbox, cert: Path, key: Path, **server: object) -> None:
        super().__init__(workdir, sandbox.url, sandbox.token, sandbox.account,
                         overrides={"server": {"tls_cert": str(cert), "tls_key": str(key), **server}})
        self.url = f"https://127.0.0.1:{self.port}"
        self.cert = cert
        self.client = httpx.Client(base_url=self.url, timeout=30, verify=ssl.create_default_context(cafile=cert))

    def start(self, timeout: float = 20.0, stdin: int | None = subprocess.DEVNULL) -> "TlsDaemon":
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "posbridge.cli", "run", "--config", str(self.config_path)],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=stdin)
        self.wait_for(lambda: self._ready(), timeout=timeout, interval=0.05, what="the daemon ready over TLS")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.client.get("/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


def test_tls_generate_writes_a_key_only_its_owner_reads_and_a_certificate_for_the_bridges_addresses(pair):
    cert_path, key_path = pair
    assert stat.S_IMODE(key_path.stat().st_mode) in (0o600, 0o640)
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"till-1.shop.lan", "localhost", socket.gethostname().lower()} <= set(alt.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "192.168.1.20"} <= {str(a) for a in alt.get_values_for_type(x509.IPAddress)}
    again = posbridge("tls", "generate", "--dir", str(cert_path.parent))
    assert again.returncode == 1 and "--force" in again.stderr  # never replaces a pair the POS may trust
    shown = posbridge("tls", "show", str(cert_path))
    assert shown.returncode == 0 and "SHA-256" in shown.stdout and "192.168.1.20" in shown.stdout
    bad = posbridge("tls", "generate", "--dir", str(cert_path.parent / "x"), "--ip", "not-an-ip")
    assert bad.returncode == 2 and "not an IP address" in bad.stderr
    days = posbridge("tls", "generate", "--dir", str(cert_path.parent / "y"), "--days", "0")
    assert days.returncode == 2
    not_pem = posbridge("tls", "show", str(key_path.parent / "nothing.pem"))
    assert not_pem.returncode == 1 and "cannot read" in not_pem.stderr
    garbage = key_path.parent / "garbage.pem"
    garbage.write_bytes(b"\x00\xff not a certificate")
    shown_garbage = posbridge("tls", "show", str(garbage))
    assert shown_garbage.returncode == 1 and "not a PEM certificate" in shown_garbage.stderr


def test_the_pos_reaches_the_bridge_over_https_and_its_invoice_is_delivered_once(tmp_path: Path, pair):
    with running_sandbox() as sandbox:
        daemon = TlsDaemon(tmp_path, sandbox, *pair)
        daemon.start()
        try:
            answer = daemon.post_invoice(invoice(1))
            assert answer.status_code in (200, 202), answer.text
            daemon.wait_for(lambda: daemon.status()["queue"]["sent"] == 1, timeout=30, what="invoice delivered")
            assert [(e["key"], e["accepted"]) for e in sandbox.invoices()] == [("T1-1", 1)]
            with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no HTTP answer
                httpx.get(f"http://127.0.0.1:{daemon.port}/healthz", timeout=10)
            assert daemon.client.get("/healthz").status_code == 200  # and broke nothing
        finally:
            daemon.stop()


def test_a_tls_handshake_that_never_comes_is_closed_after_header_timeout(tmp_path: Path, pair):
    with running_sandbox() as sandbox:
        daemon = TlsDaemon(tmp_path, sandbox, *pair, header_timeout=1)
        daemon.start()
        try:
            with socket.create_connection(("127.0.0.1", daemon.port), timeout=60) as silent:
                silent.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
                started = time.monotonic()
                try:
                    closed = silent.recv(1024) == b""
                except ConnectionResetError:
                    closed = True
                assert closed  # by the bridge, not by our 60 s timeout
                assert time.monotonic() - started < 60
            assert daemon.client.get("/healthz").status_code == 200
        finally:
            daemon.stop()


def test_an_unreadable_tls_key_stops_the_start_with_the_key_named(tmp_path: Path, pair):
    cert, _ = pair
    with running_sandbox() as sandbox:
        daemon = TlsDaemon(tmp_path, sandbox, cert, tmp_path / "missing.key")
        with pytest.raises(RuntimeError) as failed:
            daemon.start()
        assert "[server] tls_key" in str(failed.value) and "missing.key" in str(failed.value)
        assert "posbridge tls generate" in str(failed.value)
        daemon.stop()


def test_tls_cert_without_tls_key_is_a_config_error(tmp_path: Path):
    config = tmp_path / "posbridge.toml"
    config.write_text("[server]\ntls_cert = \"a.pem\"\n")
    result = posbridge("tls", "show", "--config", str(config))
    assert result.returncode == 2 and "set both tls_cert and tls_key" in result.stderr
