"""Barcode decoders for camera frames: zxing-cpp (the default) and pyzbar.

A decoder turns one grayscale frame into the codes it holds. The camera source calls it from its worker thread,
once per frame worth decoding, and relies on three things:

- the decoder looks only for the configured formats (an empty frame is the common case, and every extra format
  costs time on it: about 40 ms for all formats against under 20 ms for a few on a 720p frame);
- it never raises for a bad picture (noise, black, a torn frame): it returns ``[]``;
- a configuration it cannot honour fails when the decoder is built, with a message that says what to change.
  pyzbar cannot read Aztec, PDF417 or Data Matrix (ZBar never finished PDF417 and has no Aztec or Data Matrix),
  and Wallet passes use Aztec and PDF417, so ``decoder = "zbar"`` with those formats is refused rather than
  silently missing cards.

Symbology names are posbridge's lower-case names (see :data:`FORMATS`), the same the ``formats`` setting uses and
:class:`posbridge.scanners.ScanEvent` carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    from posbridge.config import CameraScanner

#: Every format name the ``formats`` setting accepts, in the order shown to people.
FORMATS: tuple[str, ...] = ("qr", "aztec", "pdf417", "code128", "datamatrix", "ean13", "ean8")

#: What pyzbar (ZBar) can read of :data:`FORMATS`.
ZBAR_FORMATS: frozenset[str] = frozenset({"qr", "code128", "ean13", "ean8"})

ZBAR_INSTALL_HINT = "install libzbar0 (apt-get install libzbar0)"


@dataclass(frozen=True)
class Decoded:
    """One code found in a frame: its text, the bytes it encodes, and its symbology (a :data:`FORMATS` name)."""

    text: str
    raw: bytes
    symbology: str


class Decoder(Protocol):
    """What the camera source needs from a decoder."""

    name: str
    formats: tuple[str, ...]

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        """The codes in a 2-D uint8 frame, ``[]`` when there are none or the picture is unreadable."""
        ...


class DecoderUnsupported(ValueError):
    """The configured decoder cannot read a configured format (or no format is configured).

    A configuration error: retrying will not help, changing ``decoder`` or ``formats`` will.
    """


class DecoderUnavailable(RuntimeError):
    """The decoder's library cannot be loaded on this machine (e.g. pyzbar without libzbar0)."""


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """The formats as a tuple without repeats; refuses an empty list and unknown names."""
    if not formats:
        raise DecoderUnsupported(
            "no barcode formats configured; set formats, e.g. [\"qr\", \"aztec\", \"pdf417\", \"code128\"]"
        )
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise DecoderUnsupported(f"unknown barcode format(s) {', '.join(unknown)}; known: {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(formats))


_ZXING_NAMES = {"qr": "QRCode", "aztec": "Aztec", "pdf417": "PDF417", "code128": "Code128",
                "datamatrix": "DataMatrix", "ean13": "EAN13", "ean8": "EAN8"}


def zxing_format(name: str) -> Any:
    """zxing-cpp's ``BarcodeFormat`` for one of :data:`FORMATS` (for reading, and for writing test codes)."""
    import zxingcpp

    return getattr(zxingcpp.BarcodeFormat, _ZXING_NAMES[name])


def _text_of(raw: bytes) -> str:
    """Text for bytes a decoder returned without a text of its own: UTF-8, else Latin-1 (never fails)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class ZxingDecoder:
    """zxing-cpp: reads every Wallet format (QR, Aztec, PDF417, Code 128) plus Data Matrix and EAN.

    ``try_harder=True`` keeps zxing-cpp's defaults (rotated, downscaled and inverted searches: more robust,
    slower); ``False`` turns them off for the fastest possible empty-frame scan. The camera uses the default.
    """

    name = "zxing"

    def __init__(self, formats: Sequence[str], *, try_harder: bool = True) -> None:
        import zxingcpp

        self.formats = _check_formats(formats)
        self._read = zxingcpp.read_barcodes
        self._wanted = [zxing_format(f) for f in self.formats]
        self._names: dict[Any, str] = {zxing_format(f): f for f in FORMATS}
        self._options = {} if try_harder else {"try_rotate": False, "try_downscale": False, "try_invert": False}

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        if gray.size == 0:
            return []  # zxing-cpp raises on an empty image
        found = []
        for result in self._read(gray, formats=self._wanted, **self._options):
            raw = bytes(result.bytes)
            symbology = self._names.get(result.format, str(result.format).lower().replace(" ", ""))
            found.append(Decoded(result.text or _text_of(raw), raw, symbology))
        return found


class ZbarDecoder:
    """pyzbar over the system libzbar0: QR, Code 128, EAN-13 and EAN-8 only (see the module docstring)."""

    name = "zbar"

    def __init__(self, formats: Sequence[str]) -> None:
        self.formats = _check_formats(formats)
        unsupported = [f for f in self.formats if f not in ZBAR_FORMATS]
        if unsupported:
            raise DecoderUnsupported(
                f"decoder \"zbar\" cannot read {', '.join(unsupported)} (ZBar has no Aztec or Data Matrix and never "
                f"finished PDF417; Wallet passes use them); set decoder = \"zxing\", or limit formats to "
                f"{', '.join(f for f in FORMATS if f in ZBAR_FORMATS)}"
            )
        pyzbar = _import_pyzbar()
        symbols = {
            "qr": pyzbar.ZBarSymbol.QRCODE,
            "code128": pyzbar.ZBarSymbol.CODE128,
            "ean13": pyzbar.ZBarSymbol.EAN13,
            "ean8": pyzbar.ZBarSymbol.EAN8,
        }
        self._decode = pyzbar.decode
        self._symbols = [symbols[f] for f in self.formats]
        self._names = {symbol.name: name for name, symbol in symbols.items()}

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        if gray.ndim != 2 or gray.size == 0:
            return []
        found = []
        for result in self._decode(np.ascontiguousarray(gray), symbols=self._symbols):
            raw = bytes(result.data)
            found.append(Decoded(_text_of(raw), raw, self._names.get(result.type, result.type.lower())))
        return found


def _import_pyzbar() -> Any:
    """``pyzbar.pyzbar``, or :class:`DecoderUnavailable` saying how to install the system library."""
    try:
        from pyzbar import pyzbar
    except ImportError as exc:  # pyzbar raises ImportError("Unable to find zbar shared library")
        raise DecoderUnavailable(f"decoder \"zbar\" cannot load libzbar ({exc}); {ZBAR_INSTALL_HINT}, "
                                 f"or set decoder = \"zxing\"") from exc
    return pyzbar


def make_decoder(config: CameraScanner) -> Decoder:
    """The decoder a camera scanner's settings ask for.

    Raises :class:`DecoderUnsupported` (a configuration error) or :class:`DecoderUnavailable` (a missing library).
    """
    if config.decoder == "zbar":
        return ZbarDecoder(config.formats)
    return ZxingDecoder(config.formats)


def check_decoder(config: CameraScanner) -> list[str]:
    """Problems with a camera scanner's decoder settings, as lines for ``posbridge doctor`` (``[]``: fine).

    Builds the decoder once, so it finds both configuration mistakes and missing libraries.
    """
    try:
        make_decoder(config)
    except (DecoderUnsupported, DecoderUnavailable) as exc:
        return [f"scanner {config.name!r}: {exc}"]
    except ImportError as exc:
        return [f"scanner {config.name!r}: decoder {config.decoder!r} cannot be imported ({exc}); "
                f"reinstall posbridge's dependencies"]
    return []
