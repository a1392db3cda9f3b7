"""TOML settings -> typed, validated objects.

Every problem is reported as a :class:`ConfigError` that names the file, the key and what is wrong, so a
technician reading it at 7 a.m. knows which line to fix. Unknown keys are errors too: a typo must not be
silently ignored.

Where the file is looked for, in order: ``--config``, ``$POSBRIDGE_CONFIG``, ``/etc/posbridge/posbridge.toml``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import tomllib
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from posbridge.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/posbridge/posbridge.toml")
ENV_CONFIG = "POSBRIDGE_CONFIG"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"1.5s"``, ``"500ms"``, ``"5m"``, ``"30d"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 1.5, \"500ms\", \"5m\" or \"30d\", not true/false")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration; write e.g. 1.5, \"500ms\", \"5m\", \"2h\" or \"30d\"")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"expected a duration, got {type(value).__name__}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _parse_usb_id(value: Any) -> int:
    """USB vendor/product ids as written on the device or by lsusb: 0x0c2e, "0c2e" or 3118."""
    if isinstance(value, bool):
        raise ValueError("expected a USB id such as \"0c2e\"")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip().lower().removeprefix("0x")
        if not re.fullmatch(r"[0-9a-f]{1,4}", text):
            raise ValueError(f"{value!r} is not a USB id; write four hex digits as lsusb shows them, e.g. \"0c2e\"")
        number = int(text, 16)
    else:
        raise ValueError("expected a USB id such as \"0c2e\"")
    if not 0 <= number <= 0xFFFF:
        raise ValueError(f"{value!r} is out of range for a USB id (0000-ffff)")
    return number


UsbId = Annotated[int, BeforeValidator(_parse_usb_id)]

LAYOUTS = ("us", "es", "fr", "de", "pt", "br-abnt2")
Layout = Literal["us", "es", "fr", "de", "pt", "br-abnt2"]


class Section(BaseModel):
    """Base of every section: unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Section):
    """``[server]``: the local HTTP API the POS talks to."""

    listen: str = "127.0.0.1:8080"
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    inline_deadline: Duration = 1.5
    shutdown_grace: Duration = 10.0
    # --- network: crowded LANs and exposure (README "Failure modes") ---
    max_connections: int = Field(default=256, ge=8, le=65536)
    header_timeout: Duration = Field(default=10.0, gt=0)
    body_timeout: Duration = Field(default=30.0, gt=0)
    keepalive_timeout: Duration = Field(default=15.0, gt=0)
    allow: list[str] = []
    tls_cert: Path | None = None
    tls_key: Path | None = None
    hostnames: list[str] = []  # extra names/addresses the POS or a browser may use in Host (DNS rebinding check)

    @field_validator("hostnames")
    @classmethod
    def _check_hostnames(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}|\[?[0-9A-Fa-f:.]+\]?", name.strip()):
                raise ValueError(f"{name!r} is not a host name or address; write e.g. \"till-3.local\" or "
                                 "\"192.168.1.20\" (no port, no scheme)")
        return [name.strip().lower().strip("[]") for name in value]

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("allow")
    @classmethod
    def _check_allow(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an address or network; write e.g. \"192.168.1.0/24\" "
                                 "or \"192.168.1.20\"") from None
        return value

    @model_validator(mode="after")
    def _check_tls_pair(self) -> "ServerSettings":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither; `posbridge tls generate` makes a pair")
        return self

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def split_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` / ``"[::1]:8080"`` / ``"0.0.0.0:8080"`` -> (host, port)."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", value.strip())
    if not match:
        raise ValueError(f"{value!r} is not HOST:PORT; write e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if match.group(1):
        ipaddress.IPv6Address(host)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range (1-65535)")
    return host, port


class CloudSettings(Section):
    """``[cloud]``: where the Omniwallet API is and which account this shop is."""

    base_url: str = "https://api.omniwallet.cloud"
    account: str = ""
    timeout: Duration = 10.0
    connect_timeout: Duration = 3.0
    # --- network: a slow or hostile cloud (README "Failure modes") ---
    deadline: Duration = Field(default=30.0, gt=0)
    max_answer_bytes: int = Field(default=1024 * 1024, ge=1024)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL; write e.g. \"https://api.omniwallet.cloud\"")
        return value.rstrip("/")

    @field_validator("account")
    @classmethod
    def _check_account(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}", value):
            raise ValueError(f"{value!r} is not an account subdomain (letters, digits, '-' and '_')")
        return value


class StorageSettings(Section):
    """``[storage]``: the SQLite file that holds the outbox and the member cache.

    ``min_free_bytes``: below this much free disk new invoices are refused (503) while delivery goes on.
    ``marker_dir``: where the database marker is kept (see posbridge/marker.py); default: beside the state
    directory, ``/var/lib/posbridge`` -> ``/var/lib/posbridge-marker``.
    """

    path: Path = Path("/var/lib/posbridge/posbridge.db")
    min_free_bytes: int = Field(default=50 * 1024 * 1024, ge=0)
    marker_dir: Path | None = None

    @property
    def marker_directory(self) -> Path:
        if self.marker_dir is not None:
            return self.marker_dir
        state = self.path.absolute().parent
        return state.parent / f"{state.name or 'posbridge'}-marker"


class InvoiceSettings(Section):
    """``[invoices]``: which JSON fields of the POS's invoice the bridge reads (it forwards the bytes as-is).

    An invoice's identity (``posbridge.invoice.invoice_identity``): ``id_field`` when the document has it,
    else ``scope_fields`` that are present plus ``key_fields`` (all required), else the hash of its JSON.
    """

    id_field: str = "GlobalId"
    key_fields: list[str] = ["Serie", "Number"]
    scope_fields: list[str] = ["Workplace.Id"]
    member_field: str = "Loyalty.MemberId"
    amount_field: str = "Totals.GrossAmount"


class DeliverySettings(Section):
    """``[delivery]``: how the outbox is replayed to the cloud."""

    concurrency: int = Field(default=4, ge=1, le=64)
    backoff_base: Duration = 1.0
    backoff_cap: Duration = 300.0
    retry_after_cap: Duration = 3600.0
    auth_probe_interval: Duration = 60.0
    retention_days: float = Field(default=30.0, ge=0)
    poll_interval: Duration = 1.0


class MemberSettings(Section):
    """``[members]``: member look-ups and the offline cache."""

    timeout: Duration = 1.5
    max_stale: Duration = 30 * 86400.0
    not_found_ttl: Duration = 600.0
    unknown_offline: Literal["reject", "accept"] = "reject"


class CardSettings(Section):
    """``[cards]``: how scanned or typed text becomes a member id."""

    patterns: list[str] = []
    min_length: int = Field(default=4, ge=1)
    max_length: int = Field(default=64, ge=1)
    alphabet: str = "A-Za-z0-9_-"
    url_query_keys: list[str] = ["id", "member", "member_id", "card", "c"]
    scanner_layout: Layout | None = None
    host_layout: Layout | None = None
    #: GS1 Application Identifiers whose value is the member id, tried in this order, when a card is a GS1 code
    #: (AIM ]C1/]Q3/]d2/]z1/]e0, GS separators, or "(8018)..."). 8018 is the GSRN of a service relation: the
    #: GS1 key for a loyalty membership. An empty list reads GS1 codes as plain text.
    gs1_member_ais: list[str] = ["8018"]

    @field_validator("gs1_member_ais")
    @classmethod
    def _check_gs1_ais(cls, value: list[str]) -> list[str]:
        for ai in value:
            problem = gs1_ai_problem(ai)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("patterns")
    @classmethod
    def _check_patterns(cls, value: list[str]) -> list[str]:
        for index, pattern in enumerate(value):
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {index + 1} ({pattern!r}) is not a regular expression: {exc}") from None
            if "member" not in compiled.groupindex:
                raise ValueError(f"pattern {index + 1} ({pattern!r}) has no named group (?P<member>...)")
        return value

    @field_validator("alphabet")
    @classmethod
    def _check_alphabet(cls, value: str) -> str:
        try:
            re.compile(f"[{value}]")
        except re.error as exc:
            raise ValueError(f"{value!r} is not a character class: {exc}") from None
        return value

    @model_validator(mode="after")
    def _check_layout_pair(self) -> "CardSettings":
        if (self.scanner_layout is None) != (self.host_layout is None):
            raise ValueError("set both scanner_layout and host_layout, or neither (then known pairs are tried)")
        if self.min_length > self.max_length:
            raise ValueError(f"min_length ({self.min_length}) is larger than max_length ({self.max_length})")
        return self


def gs1_ai_problem(ai: str) -> str | None:
    """None when ``ai`` is a GS1 Application Identifier (2-4 digits, in the GS1 table), else the reason.

    For ``[cards] gs1_member_ais``: a typo there would make every GS1 card fail.
    """
    from biip import ParseError
    from biip.gs1_application_identifiers import GS1ApplicationIdentifier

    if not (isinstance(ai, str) and ai.isdigit() and 2 <= len(ai) <= 4):
        return f"{ai!r} is not a GS1 Application Identifier (2 to 4 digits, e.g. \"8018\")"
    try:
        known = GS1ApplicationIdentifier.extract(ai)
    except ParseError:
        known = None
    if known is None or known.ai != ai:
        return f"{ai!r} is not in the GS1 Application Identifier table (8018 is the GSRN of a service relation)"
    return None


class ScannerBase(Section):
    """Keys every scanner has. Each subclass is one scanner type and says, once, which code serves it:

    ``driver``: the :class:`~posbridge.scanners.ScanSource` class (``"module:Class"``, imported only when a
    scanner of that type is configured); ``doctor_check``: the function that checks it for ``posbridge doctor``
    (``"module:function"``, taking the settings and keywords, returning a ``Check``). Adding a scanner type is a
    subclass here, added to :data:`SCANNER_TYPES`, plus its driver module.
    """

    driver: ClassVar[str]
    doctor_check: ClassVar[str]

    name: str = Field(min_length=1, max_length=64)
    enabled: bool = True
    debounce: Duration = 1.5


class SerialScanner(ScannerBase):
    """``type = "serial"``: RS-232 or USB-CDC scanner, by path or by USB ids (stable across re-plugging)."""

    driver: ClassVar[str] = "posbridge.scanners.serial:SerialSource"
    doctor_check: ClassVar[str] = "posbridge.scanners.doctor:check_serial"

    type: Literal["serial"]
    port: str | None = None
    vid: UsbId | None = None
    pid: UsbId | None = None
    serial_number: str | None = None
    baudrate: int = Field(default=9600, gt=0)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 1.5, 2] = 1
    framing: Literal["cr", "lf", "crlf", "eol", "stx-etx", "idle"] = "eol"
    idle_gap: Duration = 0.05
    max_length: int = Field(default=4096, gt=0)

    @model_validator(mode="after")
    def _port_or_ids(self) -> "SerialScanner":
        if not self.port and self.vid is None:
            raise ValueError("give either port (e.g. \"/dev/ttyACM0\") or vid/pid to find the port by USB ids")
        return self


class HidScanner(ScannerBase):
    """``type = "hid"``: USB scanner read through pyusb, in HID POS or keyboard mode."""

    driver: ClassVar[str] = "posbridge.scanners.hid:HidSource"
    doctor_check: ClassVar[str] = "posbridge.scanners.doctor:check_hid"

    type: Literal["hid"]
    vid: UsbId
    pid: UsbId
    serial_number: str | None = None
    mode: Literal["pos", "keyboard"] = "pos"
    layout: Layout = "us"
    #: keyboard mode, Alt+keypad ("ALT mode") characters without a leading 0: the scanner's OEM code page
    #: (Alt+0nnn is always Windows-1252). 850 is Western Europe's, 437 the US one.
    oem_code_page: Literal[437, 850] = 850
    #: a code ends after this long without a report: a keyboard scan without Enter, a HID POS code whose last
    #: report never came (the continued flag was still set)
    idle_gap: Duration = 0.1
    read_timeout: Duration = 1.0


class CameraScanner(ScannerBase):
    """``type = "camera"``: OpenCV capture decoded by zxing-cpp or pyzbar."""

    driver: ClassVar[str] = "posbridge.scanners.camera:CameraSource"
    doctor_check: ClassVar[str] = "posbridge.scanners.doctor:check_camera"

    type: Literal["camera"]
    source: str | int = 0
    decoder: Literal["zxing", "zbar"] = "zxing"
    formats: list[Literal["qr", "aztec", "pdf417", "code128", "datamatrix", "ean13", "ean8"]] = [
        "qr",
        "aztec",
        "pdf417",
        "code128",
    ]
    width: int | None = None
    height: int | None = None
    max_fps: float = Field(default=15.0, gt=0)
    loop: bool = False  # replay a video file forever (demos); real cameras ignore it
    #: a code is a scan once it was decoded in this many frames within confirm_window (a one-frame misread
    #: never is); 1 publishes the first read
    confirm_frames: int = Field(default=2, ge=1, le=30)
    confirm_window: Duration = 0.5


class StdinScanner(ScannerBase):
    """``type = "stdin"``: one line typed in the terminal is one scan (demos and ``make run``)."""

    driver: ClassVar[str] = "posbridge.scanners.stdin:StdinSource"
    doctor_check: ClassVar[str] = "posbridge.scanners.doctor:check_stdin"

    type: Literal["stdin"]


#: Every scanner type, the one registry of them: the settings class names the type (its ``type`` literal), its
#: driver and its doctor check. The configuration, the scanner manager and doctor all read it from here.
SCANNER_TYPES: tuple[type[ScannerBase], ...] = (SerialScanner, HidScanner, CameraScanner, StdinScanner)
SCANNER_TYPE_NAMES: frozenset[str] = frozenset(
    t.model_fields["type"].annotation.__args__[0] for t in SCANNER_TYPES)  # type: ignore[union-attr]

Scanner = Annotated[Union[SCANNER_TYPES], Field(discriminator="type")]  # type: ignore[valid-type]


OUTPUT_DEVICES = {"uinput": "/dev/uinput", "hid-gadget": "/dev/hidg0"}


class OutputSettings(Section):
    """``[[outputs]]``: type each scan into the till as a keyboard would (see posbridge/outputs/)."""

    name: str = Field(min_length=1, max_length=64)
    type: Literal["uinput", "hid-gadget"]
    enabled: bool = True
    device: str = Field(min_length=1)  # default per type: /dev/uinput, /dev/hidg0
    layout: Layout = "us"  # the TILL's keyboard layout
    what: Literal["member_id", "text"] = "member_id"
    prefix: Literal["enter", "tab", "none"] = "none"
    suffix: Literal["enter", "tab", "none"] = "enter"
    when: Literal["validated", "any"] = "validated"
    key_delay: Duration = 0.002
    write_timeout: Duration = 1.0  # hid-gadget: how long the till may take to read one key report

    @field_validator("prefix", "suffix", mode="before")
    @classmethod
    def _key_name(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("key_delay")
    @classmethod
    def _check_key_delay(cls, value: float) -> float:
        if value > 1.0:
            raise ValueError(f"key_delay {value} s is more than a second per key; write e.g. \"2ms\" or \"20ms\"")
        return value

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """``device`` and ``name`` default by type: /dev/uinput, /dev/hidg0; the type's name."""
        if isinstance(data, dict) and data.get("type") in OUTPUT_DEVICES:
            data = dict(data)
            data.setdefault("device", OUTPUT_DEVICES[data["type"]])
            data.setdefault("name", data["type"])
        return data


class LoggingSettings(Section):
    """``[logging]``."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json", "journald", "auto"] = "auto"


class Settings(Section):
    """Everything the daemon needs, validated. ``source`` is the file it came from (None: defaults)."""

    server: ServerSettings = ServerSettings()
    cloud: CloudSettings = CloudSettings()
    storage: StorageSettings = StorageSettings()
    invoices: InvoiceSettings = InvoiceSettings()
    delivery: DeliverySettings = DeliverySettings()
    members: MemberSettings = MemberSettings()
    cards: CardSettings = CardSettings()
    scanners: list[Scanner] = []
    outputs: list[OutputSettings] = []
    logging: LoggingSettings = LoggingSettings()
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_scanner_names(self) -> "Settings":
        seen: set[str] = set()
        for scanner in self.scanners:
            if scanner.name in seen:
                raise ValueError(f"two scanners are named {scanner.name!r}; names must be unique")
            seen.add(scanner.name)
        names = [output.name for output in self.outputs]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two outputs are named {name!r}; give each [[outputs]] its own name")
        return self


def _key_path(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """Pydantic's error location as the TOML key a person would look for: ``[server] listen``,
    ``[[scanners]] #2 (front-door) baudrate``."""
    parts = [str(p) for p in loc]
    if not parts:
        return "(top level)"
    if parts[0] == "scanners" and len(parts) >= 2 and parts[1].isdigit():
        index = int(parts[1])
        name = ""
        try:
            name = f" ({data['scanners'][index]['name']})"
        except (KeyError, IndexError, TypeError):
            pass
        # drop pydantic's discriminator tag ("serial", "hid"...) from the location
        rest = [p for p in parts[2:] if p not in SCANNER_TYPE_NAMES]
        where = f"[[scanners]] #{index + 1}{name}"
        return f"{where} {'.'.join(rest)}".strip()
    if parts[0] == "outputs" and len(parts) >= 2 and parts[1].isdigit():
        return f"[[outputs]] #{int(parts[1]) + 1} {'.'.join(parts[2:])}".strip()
    if len(parts) == 1:
        return parts[0] if parts[0] not in Settings.model_fields else f"[{parts[0]}]"
    return f"[{parts[0]}] {'.'.join(parts[1:])}"


def _describe(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key (a typo? see config/posbridge.example.toml for the valid keys)"
    if kind == "missing":
        return "required key is missing"
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


def from_dict(data: dict[str, Any], source: Path | None = None) -> Settings:
    """Validate already-parsed settings; errors name ``source`` and the key."""
    where = str(source) if source else "(built-in defaults)"
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            key = _key_path(tuple(error["loc"]), data)
            value = error.get("input")
            shown = "" if error.get("type") in ("missing",) or isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"{key}: {_describe(error)}{shown}")
        raise ConfigError(where, lines) from None
    return settings.model_copy(update={"source": source})


def load(path: Path | None) -> Settings:
    """Read and validate one TOML file. Relative ``[storage] path`` and ``marker_dir`` are taken relative to
    the file."""
    assert path is not None
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except IsADirectoryError:
        raise ConfigError(str(path), ["is a directory, not a TOML file"]) from None
    except PermissionError:
        raise ConfigError(str(path), ["permission denied (the service user must be able to read it)"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    settings = from_dict(data, path)
    storage_path = settings.storage.path
    if not storage_path.is_absolute():
        storage_path = (path.parent / storage_path).resolve()
        settings = settings.model_copy(
            update={"storage": settings.storage.model_copy(update={"path": storage_path})}
        )
    tls = {key: (path.parent / value).resolve() for key in ("tls_cert", "tls_key")
           if (value := getattr(settings.server, key)) is not None and not value.is_absolute()}
    if tls:  # relative TLS files are relative to this file too
        settings = settings.model_copy(update={"server": settings.server.model_copy(update=tls)})
    marker_dir = settings.storage.marker_dir
    if marker_dir is not None and not marker_dir.is_absolute():
        settings = settings.model_copy(update={"storage": settings.storage.model_copy(
            update={"marker_dir": (path.parent / marker_dir).resolve()})})
    return settings


def find_config(explicit: Path | None) -> Path | None:
    """The file to load: ``--config``, else ``$POSBRIDGE_CONFIG``, else the system file when it exists."""
    if explicit is not None:
        return explicit
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    if DEFAULT_CONFIG_PATH.exists():
        return DEFAULT_CONFIG_PATH
    return None


def load_settings(explicit: Path | None, *, required: bool = True) -> Settings:
    """Find and load the configuration. Without any file: an error if ``required``, else the defaults."""
    path = find_config(explicit)
    if path is None:
        if required:
            raise ConfigError(
                str(DEFAULT_CONFIG_PATH),
                [
                    "no configuration found (looked at --config, $POSBRIDGE_CONFIG and this file); "
                    "copy config/posbridge.example.toml there, or try `posbridge run --sandbox`"
                ],
            )
        return Settings()
    return load(path)
