"""`posbridge tls ...`: a self-signed certificate and key for `[server] tls_cert` / `tls_key`.

A till's bridge has no public name, so no public certificate authority will sign for it; a self-signed pair
that the POS is told to trust is what a shop can have. `tls generate` makes one for the bridge's names and
addresses (the ones the POS may type into its URLs) with the `cryptography` package, so it works the same on
every machine, needs no `openssl` binary and writes the key with the right mode from its first byte.
`tls show` prints what the configured certificate covers and when it expires.

Exit codes: 0 success, 1 the action failed (file exists, cannot write, unreadable certificate), 2 wrong usage.
"""

from __future__ import annotations

import datetime
import grp
import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from posbridge.api.allow import peer_address
from posbridge.cli.common import ConfigOption, command_group, fail, load_settings

DEFAULT_DIR = Path("/etc/posbridge/tls")
CERT_NAME = "posbridge.crt"
KEY_NAME = "posbridge.key"
SERVICE_GROUP = "posbridge"
RSA_BITS = 2048  # RSA rather than EC: older POS terminals' TLS stacks (Windows 7-era .NET) all speak RSA

tls_app = command_group("tls", "Make and inspect the bridge's TLS certificate ([server] tls_cert / tls_key).")


def _names_and_addresses(listen_host: str, names: list[str], ips: list[str]) -> tuple[list[str], list[str]]:
    """DNS names and IP addresses the certificate must cover: what the technician named, this machine's host
    name (plain and ``.local``), localhost, and the listen address — or, when it listens on every address,
    each address this machine has on the LAN."""
    hostname = socket.gethostname()
    dns = [*names, hostname, f"{hostname.split('.')[0]}.local", "localhost"]
    addresses: list[str] = [*ips, "127.0.0.1", "::1"]
    listen = peer_address(listen_host)
    if listen is not None and not listen.is_unspecified:
        addresses.append(str(listen))
    elif listen is None:
        dns.append(listen_host)
    else:
        addresses.extend(_local_addresses(hostname))
    unique_dns = list(dict.fromkeys(n.strip().lower() for n in dns if n and n.strip()))
    unique_ips = list(dict.fromkeys(str(ipaddress.ip_address(a)) for a in addresses))
    return unique_dns, unique_ips


def _local_addresses(hostname: str) -> list[str]:
    """This machine's non-loopback addresses: those its host name resolves to, and the one it uses towards
    the LAN (a UDP "connect" sends nothing; it only asks the kernel which source address it would use)."""
    found: list[str] = []
    try:
        for info in socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP):
            found.append(str(info[4][0]).split("%", 1)[0])
    except OSError:
        pass
    for family, probe in ((socket.AF_INET, "10.255.255.255"), (socket.AF_INET6, "fd00::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((probe, 9))
                found.append(str(sock.getsockname()[0]))
        except OSError:
            pass
    result = []
    for text in found:
        address = peer_address(text)
        if address is not None and not (address.is_loopback or address.is_link_local or address.is_unspecified):
            result.append(str(address))
    return result


def _validate_ip(values: list[str]) -> list[str]:
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not an IP address (e.g. 192.168.1.20)") from None
    return values


def _write_key(path: Path, data: bytes) -> str:
    """The private key, readable by the service only: 0640 root:posbridge when run as root and the service
    group exists (the unit runs as user posbridge), else 0600 for whoever runs this. Returns the mode text."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
        mode = "0600"
        if os.geteuid() == 0:
            try:
                gid = grp.getgrnam(SERVICE_GROUP).gr_gid
            except KeyError:
                gid = None
            if gid is not None:
                os.fchown(fd, 0, gid)
                os.fchmod(fd, 0o640)
                mode = f"0640 root:{SERVICE_GROUP}"
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return mode


def _write_cert(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def make_pair(dns: list[str], ips: list[str], days: int) -> tuple[bytes, bytes]:
    """A self-signed certificate (PEM) for ``dns``/``ips``, valid ``days`` days, and its RSA key (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"posbridge on {socket.gethostname()}"[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "posbridge (self-signed)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a POS clock a little behind still accepts it
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def describe(cert_pem: bytes) -> list[str]:
    """Lines for a person: subject, names and addresses covered, validity, SHA-256 fingerprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = alt.get_values_for_type(x509.DNSName)
        ips = [str(a) for a in alt.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    expires = cert.not_valid_after_utc
    left = (expires - datetime.datetime.now(datetime.timezone.utc)).days
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return [
        f"subject:     {cert.subject.rfc4514_string()}",
        f"names:       {', '.join(dns) or '(none)'}",
        f"addresses:   {', '.join(ips) or '(none)'}",
        f"valid until: {expires:%Y-%m-%d} ({left} days left)" if left >= 0 else
        f"EXPIRED on:  {expires:%Y-%m-%d}: make a new pair with `posbridge tls generate --force`",
        f"SHA-256:     {fingerprint}",
    ]


@tls_app.command("generate")
def generate(
    directory: Annotated[Path, typer.Option("--dir", help="Where to write posbridge.crt and posbridge.key.")]
    = DEFAULT_DIR,
    name: Annotated[Optional[list[str]], typer.Option(
        "--name", help="A DNS name the POS uses for the bridge (repeat for several). The host name, "
        "<host>.local and localhost are always included.")] = None,
    ip: Annotated[Optional[list[str]], typer.Option(
        "--ip", help="An IP address the POS uses for the bridge (repeat for several). 127.0.0.1, ::1 and "
        "the [server] listen address (or, for 0.0.0.0, this machine's LAN addresses) are always included.",
        callback=lambda v: _validate_ip(v or []))] = None,
    days: Annotated[int, typer.Option(min=1, max=3650, help="Validity in days.")] = 825,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing pair.")] = False,
    config: ConfigOption = None,
) -> None:
    """Make a self-signed certificate and key for the bridge's names and addresses.

    The key is written 0640 root:posbridge when run as root (the service can read it, nobody else), else 0600.
    Then set [server] tls_cert and tls_key, restart the service, copy posbridge.crt to the POS and make it
    trust it, and change the POS's URLs to https://.
    """
    settings = load_settings(config, required=False)
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    existing = [str(p) for p in (cert_path, key_path) if p.exists()]
    if existing and not force:
        fail(f"{' and '.join(existing)} already exist (the POS may trust that certificate); pass --force to "
             "replace them, then give the POS the new certificate")
    dns, ips = _names_and_addresses(settings.server.host, name or [], ip or [])
    cert_pem, key_pem = make_pair(dns, ips, days)
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        key_mode = _write_key(key_path, key_pem)
        _write_cert(cert_path, cert_pem)
    except PermissionError:
        fail(f"cannot write in {directory}: permission denied; run it as root (sudo posbridge tls generate) "
             "or choose another --dir")
    except OSError as exc:
        fail(f"cannot write in {directory}: {exc.strerror or exc}")
    typer.echo(f"certificate: {cert_path} (0644)")
    typer.echo(f"key:         {key_path} ({key_mode})")
    for line in describe(cert_pem)[1:]:
        typer.echo(line)
    typer.echo("")
    typer.echo("Next:")
    typer.echo(f"  1. in {settings.source or '/etc/posbridge/posbridge.toml'}, under [server]:")
    typer.echo(f'       tls_cert = "{cert_path}"')
    typer.echo(f'       tls_key = "{key_path}"')
    typer.echo("  2. sudo systemctl restart posbridge")
    typer.echo(f"  3. copy {cert_path} to the POS, add it to its trusted certificates, and use https:// in "
               "its bridge URLs (compare the SHA-256 above with what the POS shows)")


@tls_app.command("show")
def show(
    file: Annotated[Optional[Path], typer.Argument(help="A certificate file (default: [server] tls_cert).")]
    = None,
    config: ConfigOption = None,
) -> None:
    """What a certificate covers (names, addresses), when it expires, and its SHA-256 fingerprint."""
    if file is None:
        settings = load_settings(config, required=False)
        file = settings.server.tls_cert
        if file is None:
            fail("TLS is off: no [server] tls_cert in the configuration (make a pair with `posbridge tls "
                 "generate`)")
    try:
        data = file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    try:
        lines = describe(data)
    except ValueError:
        fail(f"{file} is not a PEM certificate")
    typer.echo(f"certificate: {file}")
    for line in lines:
        typer.echo(line)
