"""Barcode decoders for camera frames: zxing-cpp (the default) and pyzbar.

A decoder turns one grayscale frame into the codes it holds. The camera source calls it from its worker thread,
once per frame worth decoding, and relies on four things:

- **the text is the code's own content**, the same for every source and both decoders: zxing-cpp in its plain
  text mode (not its human-readable one, which writes control characters as ``<NUL>``/``<STX>`` and GS1 data as
  ``(01)...``), GS1 codes with FNC1 as the GS character (0x1D); the AIM symbology identifier (``]Q3`` for a GS1
  QR code) travels beside the text in ``aim``. pyzbar gives the same text and the same AIM ID (GS1 from ZBar's
  symbol modifiers);
- the decoder looks only for the configured formats, and an empty frame (the common case) is cheap: zxing first
  looks at a half-size copy of a large frame, and decodes at full size only where the picture has the dense
  edges of a code (see :class:`ZxingDecoder`);
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

import cv2
import numpy as np

from posbridge.errors import DecoderUnavailable, DecoderUnsupported
from posbridge.scanners import decode_text

if TYPE_CHECKING:
    from posbridge.config import CameraScanner

#: Every format name the ``formats`` setting accepts, in the order shown to people.
FORMATS: tuple[str, ...] = ("qr", "aztec", "pdf417", "code128", "datamatrix", "ean13", "ean8")

#: What pyzbar (ZBar) can read of :data:`FORMATS`.
ZBAR_FORMATS: frozenset[str] = frozenset({"qr", "code128", "ean13", "ean8"})

ZBAR_INSTALL_HINT = "install libzbar0 (apt-get install libzbar0)"

@dataclass(frozen=True)
class Decoded:
    """One code found in a frame: its text, the bytes it encodes, its symbology (a :data:`FORMATS` name) and its
    AIM symbology identifier (``"]Q1"``, ``"]Q3"`` for GS1...) when the decoder knows it."""

    text: str
    raw: bytes
    symbology: str
    aim: str | None = None


class Decoder(Protocol):
    """What the camera source needs from a decoder."""

    name: str
    formats: tuple[str, ...]

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        """The codes in a 2-D uint8 frame, ``[]`` when there are none or the picture is unreadable."""
        ...


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


# Where a code is likely: edges (|Sobel x| + |Sobel y| above EDGE) cover more than DENSE of a BLOCK x BLOCK cell.
# Measured on the benchmark's frames: a phone showing an empty pass peaks at 48 % (its outline and header strip),
# every code, down to 15 % of the frame, at 68 % or more; a bare counter at 2 %.
EDGE = 100
BLOCK = 16
DENSE = 0.6
HALF_FROM = 1280  # frames at least this wide are first decoded at half size (640 x 360 and up)
_MARGIN = 0.5  # a likely region grows by half its size on each side (quiet zones, ends of wide codes)


def likely_regions(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """The part of ``gray`` (x, y, width, height) where a code is likely, or None when nowhere.

    Cheap (under a millisecond at 640 x 360): edge density per 16-pixel block. Blocks dense enough to be part of
    a code are boxed together, and the box grows by half its size on each side.
    """
    h, w = gray.shape[:2]
    if h < BLOCK or w < BLOCK:
        return (0, 0, w, h)
    gx = cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_16S, 1, 0, ksize=3))
    gy = cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_16S, 0, 1, ksize=3))
    edges = np.where(cv2.add(gx, gy) > EDGE, np.uint8(255), np.uint8(0))
    density = cv2.resize(edges, (w // BLOCK, h // BLOCK), interpolation=cv2.INTER_AREA)
    ys, xs = np.nonzero(density > DENSE * 255)
    if not len(xs):
        return None
    x0, x1 = int(xs.min()) * BLOCK, (int(xs.max()) + 1) * BLOCK
    y0, y1 = int(ys.min()) * BLOCK, (int(ys.max()) + 1) * BLOCK
    grow_x, grow_y = int((x1 - x0) * _MARGIN) + BLOCK, int((y1 - y0) * _MARGIN) + BLOCK
    x0, y0 = max(0, x0 - grow_x), max(0, y0 - grow_y)
    x1, y1 = min(w, x1 + grow_x), min(h, y1 + grow_y)
    return x0, y0, x1 - x0, y1 - y0


class ZxingDecoder:
    """zxing-cpp: reads every Wallet format (QR, Aztec, PDF417, Code 128) plus Data Matrix and EAN.

    With ``first_pass=True`` (the camera's default) an empty frame costs a few milliseconds instead of a full
    multi-format search: a frame of :data:`HALF_FROM` pixels or wider is first decoded at half size (a phone held
    to a till camera fills enough of it); when that finds nothing, the full-size decode runs only on the region
    where :func:`likely_regions` sees a code, and not at all when it sees none. ``first_pass=False`` decodes every
    frame whole (the benchmark's reference). ``try_harder=True`` keeps zxing-cpp's rotated, downscaled and
    inverted searches (more robust, slower); ``False`` turns them off.
    """

    name = "zxing"

    def __init__(self, formats: Sequence[str], *, try_harder: bool = True, first_pass: bool = True) -> None:
        import zxingcpp

        self.formats = _check_formats(formats)
        self.first_pass = first_pass
        self._read = zxingcpp.read_barcodes
        self._wanted = [zxing_format(f) for f in self.formats]
        self._names: dict[Any, str] = {zxing_format(f): f for f in FORMATS}
        self._options: dict[str, Any] = {"text_mode": zxingcpp.TextMode.Plain}
        if not try_harder:
            self._options.update(try_rotate=False, try_downscale=False, try_invert=False)

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        if gray.ndim != 2 or gray.size == 0:
            return []  # zxing-cpp raises on an empty image
        if not self.first_pass:
            return self._decode(gray)
        h, w = gray.shape
        if w >= HALF_FROM:
            small = cv2.resize(gray, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
            found = self._decode(small)
            if found:
                return found
            region = likely_regions(small)
            if region is None:
                return []
            x, y, rw, rh = (2 * v for v in region)
            return self._decode(gray[y:y + rh, x:x + rw])
        return self._decode(gray)  # a small frame: its whole decode is cheap enough, and every pixel counts

    def _decode(self, gray: np.ndarray) -> list[Decoded]:
        found = []
        for result in self._read(np.ascontiguousarray(gray), formats=self._wanted, **self._options):
            raw = bytes(result.bytes)
            symbology = self._names.get(result.format, str(result.format).lower().replace(" ", ""))
            found.append(Decoded(result.text if result.text or not raw else decode_text(raw), raw, symbology,
                                 result.symbology_identifier or None))
        return found


# ZBar symbology -> (posbridge name, AIM ID, AIM ID when ZBar's GS1 modifier is set)
_ZBAR_AIM = {"qr": ("]Q1", "]Q3"), "code128": ("]C0", "]C1"), "ean13": ("]E0", "]E0"), "ean8": ("]E4", "]E4")}
_ZBAR_MOD_GS1 = 0x01


class ZbarDecoder:
    """pyzbar over the system libzbar0: QR, Code 128, EAN-13 and EAN-8 only (see the module docstring).

    pyzbar's ``decode`` does not return ZBar's symbol modifiers, so this runs the same ZBar calls through pyzbar's
    bindings and asks each symbol for its GS1 modifier: a GS1 code gets the AIM ID zxing-cpp gives it (``]Q3``,
    ``]C1``), and the text is the same in both decoders.
    """

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
        self._zbar = _ZbarCalls()
        self._symbols = [self._zbar.symbol(f) for f in self.formats]

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        if gray.ndim != 2 or gray.size == 0:
            return []
        found = []
        for name, raw, modifiers in self._zbar.scan(np.ascontiguousarray(gray), self._symbols):
            plain, gs1 = _ZBAR_AIM.get(name, (None, None))
            aim = gs1 if modifiers & _ZBAR_MOD_GS1 else plain
            found.append(Decoded(decode_text(raw), raw, name, aim))
        return found


class _ZbarCalls:
    """The ZBar C calls pyzbar's ``decode`` makes, plus ``zbar_symbol_get_modifiers`` (which pyzbar leaves out)."""

    _NAMES = {"QRCODE": "qr", "CODE128": "code128", "EAN13": "ean13", "EAN8": "ean8"}

    def __init__(self) -> None:
        from ctypes import POINTER, c_uint

        pyzbar = _import_pyzbar()
        from pyzbar import wrapper

        self._pyzbar, self._wrapper = pyzbar, wrapper
        self._modifiers = wrapper.zbar_function("zbar_symbol_get_modifiers", c_uint, POINTER(wrapper.zbar_symbol))

    def symbol(self, name: str) -> Any:
        return getattr(self._pyzbar.ZBarSymbol, {v: k for k, v in self._NAMES.items()}[name])

    def scan(self, gray: np.ndarray, symbols: list[Any]) -> list[tuple[str, bytes, int]]:
        """(posbridge symbology name, data, modifiers) for each code ZBar finds in a contiguous 8-bit frame."""
        from ctypes import c_void_p, cast, string_at

        w, p = self._wrapper, self._pyzbar
        height, width = gray.shape
        pixels = gray.tobytes()
        out = []
        with p._image_scanner() as scanner:
            w.zbar_image_scanner_set_config(scanner, w.ZBarSymbol.NONE, w.ZBarConfig.CFG_ENABLE, 0)
            for symbol in symbols:
                w.zbar_image_scanner_set_config(scanner, symbol, w.ZBarConfig.CFG_ENABLE, 1)
            with p._image() as image:
                w.zbar_image_set_format(image, p._FOURCC["L800"])
                w.zbar_image_set_size(image, width, height)
                w.zbar_image_set_data(image, cast(pixels, c_void_p), len(pixels), None)
                if w.zbar_scan_image(scanner, image) < 0:
                    return []
                for found in p._symbols_for_image(image):
                    kind = w.ZBarSymbol(found.contents.type).name
                    data = string_at(w.zbar_symbol_get_data(found), w.zbar_symbol_get_data_length(found))
                    out.append((self._NAMES.get(kind, kind.lower()), data, int(self._modifiers(found))))
        return out


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
