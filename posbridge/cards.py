"""Scanned or typed text -> member id.

One function, :func:`parse_card`, used by the HTTP member route and by every scanner alike, so a card reads
the same whichever way it arrives. It cleans what devices leave behind (surrounding whitespace, CR/LF,
NUL padding of fixed-size HID reports, STX/ETX framing, AIM symbology prefixes), takes the id out of GS1 codes
(the Application Identifier named in ``[cards] gs1_member_ais``, AI 8018 by default), card URLs (query parameter
or last path segment) or configured patterns, checks it against the configured length and alphabet, and undoes
keyboard-layout damage from keyboard-wedge scanners.

A text is read as a GS1 element string when the code says it is one: a GS1 AIM ID (``]C1``, ``]Q3``, ``]d2``,
``]z1``, ``]e0``...) in front of the text or reported by the device apart from it (``aim=``), a GS1 symbology, a GS
separator (0x1D, FNC1) in the text, or the printed form ``(8018)...``. Element strings are parsed with biip's GS1
Application Identifier table (fixed-length AIs need no separator, variable-length ones end at GS or the end);
the GSRN of AIs 8017/8018 must have a valid check digit.

What callers can rely on:

- it never raises for any ``str`` (a bad scan must not stop the daemon): problems come back as
  ``CardRead.error``, a reason a person can read;
- ``member_id`` is either None or made only of ``[cards] alphabet`` characters, with a length inside
  ``min_length..max_length``, so it is safe in a cloud URL path;
- ``repairs`` lists every change made to the input, in order; ``gs1_ai`` names the GS1 AI the id came from.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from posbridge import layouts
from posbridge.config import CardSettings
from posbridge.errors import CardRejected

RAW_LIMIT = 2048
"""Inputs longer than ``max(RAW_LIMIT, 4 * max_length)`` are rejected before any parsing."""

# AIM code character -> (symbology token, name for people). ISO/IEC 15424; see scanners.md section 3.
AIM_SYMBOLOGIES: dict[str, tuple[str, str]] = {
    "Q": ("qr", "QR"), "z": ("aztec", "Aztec"), "L": ("pdf417", "PDF417"), "d": ("datamatrix", "Data Matrix"),
    "C": ("code128", "Code 128"), "E": ("ean13", "EAN-13/UPC"), "A": ("code39", "Code 39"),
    "I": ("itf", "ITF"), "F": ("codabar", "Codabar"), "G": ("code93", "Code 93"),
    "e": ("gs1-databar", "GS1 DataBar"), "U": ("maxicode", "MaxiCode"), "X": ("other", "other"),
}
_AIM_MODIFIER_OVERRIDES: dict[str, tuple[str, str]] = {"E4": ("ean8", "EAN-8")}
_AIM = re.compile(r"\]([A-Za-z])([0-9A-Za-z])")
#: AIM IDs that announce a GS1 element string (FNC1 in first position; DataBar and DotCode always are GS1).
GS1_AIMS = frozenset({"]C1", "]Q3", "]Q4", "]d2", "]d5", "]z1", "]z4", "]e0", "]e1", "]e2", "]J1"})
GS1_SYMBOLOGIES = frozenset({"gs1-128", "gs1-databar"})
_GS = "\x1d"
_HRI = re.compile(r"\(\d{2,4}\)")
_GSRN_AIS = frozenset({"8017", "8018"})
_URL = re.compile(r"https?://", re.IGNORECASE)
_FRAMING = {"\x00": "NUL padding", "\x02": "STX/ETX framing", "\x03": "STX/ETX framing",
            "\r": "CR/LF", "\n": "CR/LF"}
_DEFAULT_SETTINGS = CardSettings()


@dataclass(frozen=True)
class CardRead:
    """The outcome of :func:`parse_card`. Exactly one of ``member_id`` and ``error`` is None."""

    input: str
    member_id: str | None
    symbology: str | None = None
    repairs: list[str] = field(default_factory=list)
    error: str | None = None
    gs1_ai: str | None = None

    @property
    def ok(self) -> bool:
        return self.member_id is not None

    def require(self) -> str:
        """The member id, or :class:`CardRejected` with the reason."""
        if self.member_id is None:
            raise CardRejected(self)
        return self.member_id

    def as_dict(self) -> dict[str, Any]:
        """``{"input", "member_id", "symbology", "gs1_ai", "repairs", "error"}``, always encodable as UTF-8 JSON.

        Lone surrogates in ``input`` are shown as ``\\udXXX`` escapes; an input over :data:`RAW_LIMIT`
        characters is cut to its first 256 (a log line or an HTTP answer must not echo a megabyte back).
        """
        shown = self.input
        if len(shown) > RAW_LIMIT:
            shown = f"{shown[:256]}… ({len(self.input)} characters)"
        shown = shown.encode("utf-8", "backslashreplace").decode("utf-8")
        return {"input": shown, "member_id": self.member_id, "symbology": self.symbology, "gs1_ai": self.gs1_ai,
                "repairs": list(self.repairs), "error": self.error}


@dataclass
class _Extracted:
    """What one pass of AIM removal + id extraction found in an already cleaned text."""

    text: str  # the text after the AIM prefix (what layout repair works on)
    symbology: str | None = None
    notes: list[str] = field(default_factory=list)
    member: str | None = None
    error: str | None = None
    aim: str | None = None  # the AIM ID found in front of the text


def parse_card(text: str, settings: CardSettings | None = None, *, symbology: str | None = None,
               aim: str | None = None) -> CardRead:
    """Turn ``text`` (as a scanner, a camera or the POS delivered it) into a member id, or say why not.

    ``symbology`` is what the device reported on its own (HID POS report, camera decoder); when given it
    wins over an AIM prefix found in the text. ``aim`` is the AIM ID the device reported apart from the text
    (``"]Q3"`` for a GS1 QR code read by a camera). Errors start with one of: ``empty``, ``too long``,
    ``too short``, ``invalid text``, ``control character``, ``does not look like a card``,
    ``not matching any pattern``, ``GS1``. Never raises.
    """
    settings = settings or _DEFAULT_SETTINGS
    if symbology is None and aim and len(aim) >= 2 and aim[1] in AIM_SYMBOLOGIES:
        symbology = AIM_SYMBOLOGIES[aim[1]][0]
    if not isinstance(text, str):
        return CardRead(input=repr(text), member_id=None, symbology=symbology,
                        error=f"invalid text: expected a string, got {type(text).__name__}")
    try:
        return _parse(text, settings, symbology, aim)
    except Exception as exc:  # a bug must cost one scan, never the daemon
        return CardRead(input=text, member_id=None, symbology=symbology,
                        error=f"internal error while parsing ({type(exc).__name__})")


def _parse(text: str, settings: CardSettings, symbology: str | None, aim: str | None) -> CardRead:
    def reject(reason: str, found: str | None = None, notes: list[str] | None = None) -> CardRead:
        return CardRead(input=text, member_id=None, symbology=symbology or found,
                        repairs=list(notes or []), error=reason)

    limit = max(RAW_LIMIT, 4 * settings.max_length)
    if len(text) > limit:
        return reject(f"too long ({len(text)} characters, at most {limit})")
    for index, char in enumerate(text):
        if "\ud800" <= char <= "\udfff":
            return reject(f"invalid text: lone surrogate U+{ord(char):04X} at position {index}")
    start, end, notes = _strip(text)
    body = text[start:end]
    if not body:
        return reject("empty", notes=notes)
    gs1 = _gs1(body, settings, symbology, aim)
    if gs1 is not None:
        if gs1.member is None:
            return reject(gs1.error or "GS1", gs1.symbology, notes + gs1.notes)
        return CardRead(input=text, member_id=gs1.member, symbology=symbology or gs1.symbology,
                        repairs=notes + gs1.notes, gs1_ai=gs1.aim)
    for index, char in enumerate(body):
        if unicodedata.category(char) == "Cc":
            return reject(f"control character U+{ord(char):04X} at position {start + index}", notes=notes)

    plain = _extract(body, settings)
    if plain.member is not None:
        return CardRead(input=text, member_id=plain.member, symbology=symbology or plain.symbology,
                        repairs=notes + plain.notes)
    assert plain.error is not None
    fixed = _layout_repair(plain, settings)
    if isinstance(fixed, str):
        return reject(f"{plain.error}; {fixed}", plain.symbology, notes + plain.notes)
    if fixed is not None:
        pair, again = fixed
        return CardRead(input=text, member_id=again.member, symbology=symbology or again.symbology
                        or plain.symbology, repairs=notes + plain.notes + [f"keyboard layout {pair} repaired"]
                        + again.notes)
    return reject(plain.error, plain.symbology, notes + plain.notes)


def _strip(text: str) -> tuple[int, int, list[str]]:
    """Indexes of ``text`` without what devices wrap around a scan, and notes saying what went.

    GS (0x1D) stays although Python counts it as whitespace: at either end it is a GS1 FNC1."""
    start, end = 0, len(text)
    removed: set[str] = set()
    while start < end and text[start] != _GS and (text[start].isspace() or text[start] in _FRAMING):
        removed.add(_FRAMING.get(text[start], "surrounding whitespace"))
        start += 1
    while end > start and text[end - 1] != _GS and (text[end - 1].isspace() or text[end - 1] in _FRAMING):
        removed.add(_FRAMING.get(text[end - 1], "surrounding whitespace"))
        end -= 1
    order = ("STX/ETX framing", "NUL padding", "CR/LF", "surrounding whitespace")
    return start, end, [f"stripped {what}" for what in order if what in removed]


def _gs1(body: str, settings: CardSettings, symbology: str | None, aim: str | None) -> _Extracted | None:
    """The member id of a GS1 code (``aim`` of the result: the AI it came from), or None when ``body`` is not one.

    Not one: no GS1 member AI configured, or nothing says the text is GS1 (see the module docstring).
    """
    if not settings.gs1_member_ais:
        return None
    found = _Extracted(text=body)
    match = _AIM.match(body)
    prefix = match.group(0) if match else None
    if prefix is not None and prefix[1] in AIM_SYMBOLOGIES:
        found.text = body[match.end():] if match else body
    else:
        prefix = None
    announced = prefix or aim
    hri = _HRI.match(found.text)
    if not (announced in GS1_AIMS or symbology in GS1_SYMBOLOGIES or _GS in found.text or hri):
        return None
    if prefix is not None:
        found.symbology = AIM_SYMBOLOGIES[prefix[1]][0]
        found.notes.append(f"removed AIM prefix {prefix} (GS1 {AIM_SYMBOLOGIES[prefix[1]][1]})")
    from biip import BiipException, ParseConfig
    from biip.gs1_messages import GS1Message

    content = found.text.lstrip(_GS)  # a leading GS is the FNC1 in first position some scanners transmit
    try:
        message = (GS1Message.parse_hri(content) if hri else
                   GS1Message.parse(content, config=ParseConfig(separator_chars=[_GS])))
    except (BiipException, ValueError) as exc:
        found.error = f"GS1 element string cannot be read: {exc}"
        return found
    values = {element.ai.ai: element.value for element in message.element_strings}
    for ai in settings.gs1_member_ais:
        if ai not in values:
            continue
        value = values[ai]
        problem = _gsrn_problem(value) if ai in _GSRN_AIS else None
        problem = problem or _check_id(value, settings)
        if problem:
            found.error = f"GS1 AI ({ai}): {problem}"
            return found
        found.member, found.aim = value, ai
        found.notes.append(f"member id from GS1 AI ({ai})")
        return found
    held = " ".join(f"({ai})" for ai in values) or "nothing"
    wanted = " ".join(f"({ai})" for ai in settings.gs1_member_ais)
    found.error = (f"GS1 code without a member id: it holds {held}, the member id is looked for in {wanted}; "
                   "set [cards] gs1_member_ais")
    return found


def _gsrn_problem(value: str) -> str | None:
    """None when ``value`` is an 18-digit GSRN with a valid GS1 check digit, else the reason."""
    from biip.checksums import gs1_standard_check_digit

    if len(value) != 18 or not value.isdigit():
        return f"a GSRN is 18 digits, not {value!r}"
    expected = str(gs1_standard_check_digit(value[:-1]))
    if value[-1] != expected:
        return f"GSRN check digit is {value[-1]}, it should be {expected} (a misread, or not a GSRN)"
    return None


def _extract(body: str, settings: CardSettings) -> _Extracted:
    """AIM prefix, then configured patterns, then card URLs, then the whole text as an id."""
    found = _Extracted(text=body)
    match = _AIM.match(body)
    if match and match.group(1) in AIM_SYMBOLOGIES:
        token, name = _AIM_MODIFIER_OVERRIDES.get(match.group(1) + match.group(2),
                                                  AIM_SYMBOLOGIES[match.group(1)])
        found.symbology = token
        found.notes.append(f"removed AIM prefix {match.group(0)} ({name})")
        rest = body[match.end():]
        found.text = rest.strip()
        if found.text != rest:
            found.notes.append("stripped whitespace after the AIM prefix")
        if not found.text:
            found.error = "empty (only an AIM prefix)"
            return found
    member, error, note = _member(found.text, settings)
    found.member, found.error = member, error
    if note:
        found.notes.append(note)
    return found


def _member(text: str, settings: CardSettings) -> tuple[str | None, str | None, str | None]:
    """(member, None, note) or (None, reason, None) for a text without framing or AIM prefix."""
    pattern_problem = None
    for number, pattern in enumerate(settings.patterns, 1):
        match = _compiled(pattern).search(text)
        if match is None or match.group("member") is None:
            continue
        problem = _check_id(match.group("member"), settings)
        if problem is None:
            return match.group("member"), None, f"member id from pattern {number}"
        pattern_problem = pattern_problem or f"pattern {number} matched, but its member id: {problem}"
    if _URL.match(text):
        member, error, note = _from_url(text, settings)
    else:
        problem = _check_id(text, settings)
        member, error, note = (text, None, None) if problem is None else (None, problem, None)
    if member is None and settings.patterns:
        count = len(settings.patterns)
        error = pattern_problem or f"not matching any pattern ({count} configured), and {error}"
    return member, error, note


def _from_url(text: str, settings: CardSettings) -> tuple[str | None, str | None, str | None]:
    """A configured query parameter when the URL has one (it decides), else the last path segment."""
    try:
        parts = urlsplit(text)
        query = parse_qs(parts.query, keep_blank_values=True)
    except ValueError as exc:
        return None, f"does not look like a card: malformed URL ({exc})", None
    for key in settings.url_query_keys:
        if key in query:
            value = query[key][0]
            problem = _check_id(value, settings)
            if problem:
                return None, f"{problem} (query parameter {key!r} of the card URL)", None
            return value, None, f"member id from query parameter {key!r} of the card URL"
    segments = [unquote(segment) for segment in parts.path.split("/") if segment]
    if not segments:
        keys = ", ".join(settings.url_query_keys) or "(none configured)"
        return None, f"does not look like a card: URL without a path or a query parameter {keys}", None
    problem = _check_id(segments[-1], settings)
    if problem:
        return None, f"{problem} (last path segment of the card URL)", None
    return segments[-1], None, "member id from the last path segment of the card URL"


def _check_id(candidate: str, settings: CardSettings) -> str | None:
    """None when ``candidate`` is a valid member id, else the reason."""
    allowed = _alphabet(settings.alphabet).match(candidate)
    if allowed is None or allowed.end() < len(candidate):
        char = candidate[allowed.end() if allowed else 0]
        shown = f"{char!r}" if char.isprintable() else f"U+{ord(char):04X}"
        return (f"does not look like a card: character {shown} is not allowed in a member id "
                f"(allowed: {settings.alphabet})")
    if len(candidate) > settings.max_length:
        return f"too long ({len(candidate)} characters, at most {settings.max_length})"
    if len(candidate) < settings.min_length:
        return f"too short ({len(candidate)} characters, at least {settings.min_length})"
    return None


def _layout_repair(plain: _Extracted, settings: CardSettings) -> tuple[str, _Extracted] | str | None:
    """Retype the text through keyboard-layout pairs: ("us->es", result) when exactly one member id fits.

    With ``scanner_layout``/``host_layout`` configured only that pair is tried; otherwise every pair, and a
    repair counts only if all pairs that give a valid id give the same one. Returns a reason (str) when the
    pairs disagree, None when no pair helps.
    """
    if plain.error and plain.error.startswith("empty"):
        return None
    if settings.scanner_layout and settings.host_layout:
        pairs = [(settings.scanner_layout, settings.host_layout)]
    else:
        pairs = [(s, h) for s in layouts.LAYOUTS for h in layouts.LAYOUTS if s != h]
    fits: dict[str, tuple[str, _Extracted]] = {}
    for scanner_layout, host_layout in pairs:
        fixed = layouts.repair(plain.text, scanner_layout, host_layout)
        if fixed is None or fixed == plain.text:
            continue
        again = _extract(fixed, settings)
        if again.member is not None:
            fits.setdefault(again.member, (f"{scanner_layout}->{host_layout}", again))
    if len(fits) == 1:
        return next(iter(fits.values()))
    if len(fits) > 1:
        # the candidate ids are not named: this reason reaches logs and the POS, and ids are personal data
        options = ", ".join(sorted(pair for pair, _ in fits.values()))
        return (f"keyboard-layout repair is ambiguous ({options} give different member ids); "
                "set [cards] scanner_layout and host_layout")
    return None


@lru_cache(maxsize=64)
def _alphabet(alphabet: str) -> re.Pattern[str]:
    return re.compile(f"(?:[{alphabet}])*")


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|[rnt0\\])")
_SIMPLE_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", "0": "\x00", "\\": "\\"}


def unescape(text: str) -> str:
    """Backslash escapes as written in ``card-payloads.tsv``: ``\\r \\n \\t \\0 \\\\ \\xNN \\uNNNN``.

    Unknown escapes stay as they are, so a Windows path or a stray backslash survives.
    """
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        return _SIMPLE_ESCAPES.get(code) or chr(int(code[1:], 16))

    return _ESCAPE.sub(one, text)
