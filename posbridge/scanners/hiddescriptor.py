"""HID report descriptors: which bytes of a scanner's reports hold what, read from the device itself.

A USB HID device describes its reports in a report descriptor (``GET_DESCRIPTOR``, descriptor type 0x22). For a
scanner in HID POS mode (usage page 0x8C, "Bar Code Scanner") that description says where the Byte Count, the
Symbology Identifier (AIM ID) bytes, the Decoded Data and the Decode Data Continued flag are. Reading it is how
posbridge decodes any HID POS scanner, whatever its maker put where, instead of guessing a vendor layout from the
bytes (a guess that turned a Honeywell report without an AIM ID into a Newland one, cutting the member id short).

Pure: descriptor bytes in, :class:`Field` lists and a :class:`PosLayout` out. The parser follows the HID 1.11
specification (section 6.2.2): short items, long items skipped, global state with Push/Pop, local usages reset
after each main item, extended 32-bit usages. The usages come from the HID POS Usage Tables
(``shared/reference/scanners.md`` section 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from posbridge.errors import DescriptorError

HID_POS_PAGE = 0x8C
GENERIC_DESKTOP_PAGE = 0x01
BYTE_COUNT = (GENERIC_DESKTOP_PAGE << 16) | 0x3B
SYMBOLOGY_IDENTIFIERS = tuple((HID_POS_PAGE << 16) | u for u in (0xFB, 0xFC, 0xFD))
DECODED_DATA = (HID_POS_PAGE << 16) | 0xFE
DECODE_DATA_CONTINUED = (HID_POS_PAGE << 16) | 0xFF
#: Honeywell's vendor usage for its one-byte Code ID (vendor page 0xFF66, usage 1), as its firmware declares it.
HONEYWELL_CODE_ID = (0xFF66 << 16) | 0x01
MAX_USAGES = 4096  # a Usage Minimum/Maximum range larger than this is a broken descriptor

Kind = Literal["input", "output", "feature"]
_MAIN_KINDS: dict[int, Kind] = {0x8: "input", 0x9: "output", 0xB: "feature"}


@dataclass(frozen=True)
class Field:
    """One main item of a report: ``count`` elements of ``size`` bits from ``bit_offset``.

    ``bit_offset`` counts from the first byte after the report ID. ``usages`` holds one 32-bit usage (page << 16 |
    id) per element, the last one repeated as the specification says; empty for constant padding.
    """

    kind: Kind
    report_id: int  # 0: the descriptor declares no report IDs, reports carry no ID byte
    bit_offset: int
    size: int
    count: int
    usages: tuple[int, ...]
    constant: bool

    def usage_of(self, element: int) -> int | None:
        if not self.usages:
            return None
        return self.usages[min(element, len(self.usages) - 1)]


@dataclass
class _Globals:
    page: int = 0
    report_id: int = 0
    size: int = 0
    count: int = 0


@dataclass
class _Locals:
    usages: list[int] = field(default_factory=list)
    minimum: int | None = None


def parse(descriptor: bytes) -> list[Field]:
    """Every Input, Output and Feature item of ``descriptor``, in order.

    Raises :class:`DescriptorError` naming the byte where an item runs past the end.
    """
    fields: list[Field] = []
    state, stack, local = _Globals(), [], _Locals()
    offsets: dict[tuple[Kind, int], int] = {}
    i = 0
    while i < len(descriptor):
        prefix = descriptor[i]
        if prefix == 0xFE:  # long item: data size in the next byte (none are defined; skip them)
            if i + 1 >= len(descriptor):
                raise DescriptorError(f"report descriptor: long item at byte {i} is cut short")
            i += 3 + descriptor[i + 1]
            continue
        size = (0, 1, 2, 4)[prefix & 0x03]
        if i + 1 + size > len(descriptor):
            raise DescriptorError(f"report descriptor: item 0x{prefix:02x} at byte {i} needs {size} data bytes, "
                                  f"only {len(descriptor) - i - 1} are left ({len(descriptor)} bytes in all)")
        data = int.from_bytes(descriptor[i + 1:i + 1 + size], "little")
        kind, tag = (prefix >> 2) & 0x03, prefix >> 4
        i += 1 + size
        if kind == 1:  # global
            if tag == 0x0:
                state.page = data
            elif tag == 0x7:
                state.size = data
            elif tag == 0x8:
                state.report_id = data
            elif tag == 0x9:
                state.count = data
            elif tag == 0xA:
                stack.append(replace(state))
            elif tag == 0xB and stack:
                state = stack.pop()
        elif kind == 2:  # local
            usage = data if size == 4 else (state.page << 16) | data
            if tag == 0x0:
                local.usages.append(usage)
            elif tag == 0x1:
                local.minimum = usage
            elif tag == 0x2 and local.minimum is not None:
                if usage - local.minimum > MAX_USAGES:
                    raise DescriptorError(f"report descriptor: usage range of {usage - local.minimum} at byte {i}")
                local.usages.extend(range(local.minimum, usage + 1))
                local.minimum = None
        elif kind == 0:  # main
            main_kind = _MAIN_KINDS.get(tag)
            if main_kind is not None:
                key = (main_kind, state.report_id)
                offset = offsets.get(key, 0)
                fields.append(Field(main_kind, state.report_id, offset, state.size, state.count,
                                    tuple(local.usages), constant=bool(data & 0x01)))
                offsets[key] = offset + state.size * state.count
            local = _Locals()  # collections and items end the local state alike
    return fields


def usage_pages(descriptor: bytes) -> set[int]:
    """Usage pages a report descriptor mentions (Usage Page items and 32-bit usages); ``set()`` if unparsable."""
    pages: set[int] = set()
    i = 0
    while i < len(descriptor):
        prefix = descriptor[i]
        if prefix == 0xFE:
            i += 3 + (descriptor[i + 1] if i + 1 < len(descriptor) else 0)
            continue
        size = (0, 1, 2, 4)[prefix & 0x03]
        value = int.from_bytes(descriptor[i + 1:i + 1 + size], "little")
        tag_type = prefix & 0xFC
        if tag_type == 0x04:  # global: Usage Page
            pages.add(value)
        elif tag_type in (0x08, 0x18, 0x28) and size == 4:  # local usage with the page in the high half
            pages.add(value >> 16)
        i += 1 + size
    return pages


def is_hid_pos(descriptor: bytes) -> bool:
    """True when the report descriptor declares the Bar Code Scanner usage page (0x8C)."""
    return HID_POS_PAGE in usage_pages(descriptor)


@dataclass(frozen=True)
class PosLayout:
    """Where the fields of a scanned-data report are. Byte offsets count the report ID (when there is one) as 0.

    ``size`` is the whole report in bytes (None: not known, a layout guessed without a descriptor); ``count_at``
    the Byte Count (None: the data runs to the end of its field, trailing NULs removed); ``aim_at`` the first of
    three Symbology Identifier bytes; ``continued`` (byte, bit mask) of Decode Data Continued (None: every report
    is a whole code); ``code_id_at`` Honeywell's Code ID byte; ``vendor_symbology_at`` Newland's symbology byte.
    """

    name: str
    report_id: int | None
    size: int | None
    count_at: int | None
    aim_at: int | None
    data_at: int
    data_max: int
    continued: tuple[int, int] | None = (63, 0x01)
    code_id_at: int | None = None
    vendor_symbology_at: int | None = None

    def describe(self) -> str:
        """One line for logs and ``scanners decode``: where each field is."""
        parts = [f"report {self.report_id}" if self.report_id else "no report ID",
                 f"{self.size} bytes" if self.size else "size not known"]
        if self.count_at is not None:
            parts.append(f"byte count at {self.count_at}")
        if self.aim_at is not None:
            parts.append(f"AIM ID at {self.aim_at}-{self.aim_at + 2}")
        parts.append(f"data at {self.data_at}-{self.data_at + self.data_max - 1}")
        if self.continued is not None:
            parts.append(f"continued flag at byte {self.continued[0]} mask 0x{self.continued[1]:02x}")
        return f"{self.name}: " + ", ".join(parts)


def _byte_field(found: Field, element: int, id_bytes: int, what: str) -> int:
    if found.size != 8:
        raise DescriptorError(f"report descriptor: {what} is {found.size} bits per element; HID POS needs bytes")
    bit = found.bit_offset + element * found.size
    if bit % 8:
        raise DescriptorError(f"report descriptor: {what} starts at bit {bit}, not on a byte boundary")
    return id_bytes + bit // 8


def pos_layout(descriptor: bytes) -> PosLayout:
    """The scanned-data report of a HID POS descriptor, found by usage (page 0x8C, Byte Count on page 0x01).

    Raises :class:`DescriptorError` when the descriptor has no Decoded Data input (not a HID POS scanner, or a
    descriptor of the wrong interface) or describes it in a way no report could carry.
    """
    inputs = [f for f in parse(descriptor) if f.kind == "input"]
    data = next((f for f in inputs if DECODED_DATA in f.usages), None)
    if data is None:
        raise DescriptorError("report descriptor has no Decoded Data input (usage page 0x8C, usage 0xFE): this "
                              "interface is not a scanner in HID POS mode")
    report_id = data.report_id
    id_bytes = 1 if report_id else 0
    own = [f for f in inputs if f.report_id == report_id]
    size = id_bytes + (max(f.bit_offset + f.size * f.count for f in own) + 7) // 8

    def element(usage: int) -> tuple[Field, int] | None:
        for candidate in own:
            for index in range(candidate.count):
                if candidate.usage_of(index) == usage and not candidate.constant:
                    return candidate, index
        return None

    def byte_of(usage: int, what: str) -> int | None:
        found = element(usage)
        return None if found is None else _byte_field(found[0], found[1], id_bytes, what)

    data_at = _byte_field(data, 0, id_bytes, "Decoded Data")
    count_at = byte_of(BYTE_COUNT, "Byte Count")
    aim = [byte_of(u, f"Symbology Identifier {n}") for n, u in enumerate(SYMBOLOGY_IDENTIFIERS, 1)]
    aim_at = aim[0] if aim[0] is not None and aim == [aim[0], aim[0] + 1, aim[0] + 2] else None
    continued = None
    flag = element(DECODE_DATA_CONTINUED)
    if flag is not None:
        bit = flag[0].bit_offset + flag[1] * flag[0].size
        continued = (id_bytes + bit // 8, 1 << (bit % 8))
    return PosLayout("descriptor", report_id or None, size, count_at, aim_at, data_at, data.count, continued,
                     code_id_at=byte_of(HONEYWELL_CODE_ID, "Code ID"))


def parse_hex(text: str, *, where: str = "descriptor") -> bytes:
    """A descriptor written as hex (spaces, colons, ``0x`` prefixes, newlines and ``#`` comments allowed).

    Raises :class:`DescriptorError` naming the first token that is not hex.
    """
    out = bytearray()
    for number, line in enumerate(text.splitlines(), 1):
        for token in line.split("#", 1)[0].replace(":", " ").replace(",", " ").split():
            token = token[2:] if token.lower().startswith("0x") else token
            if len(token) % 2 or any(c not in "0123456789abcdefABCDEF" for c in token):
                raise DescriptorError(f"{where} line {number}: {token!r} is not hex bytes")
            out += bytes.fromhex(token)
    if not out:
        raise DescriptorError(f"{where} holds no bytes")
    return bytes(out)
