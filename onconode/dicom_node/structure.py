"""Walk a received data set once: read the values that file it, and prove its structure sound.

Input: the data set bytes exactly as received and the presentation context's transfer syntax.
Output: a ``Header`` (the identifying values), or ``InvalidInstance`` carrying the status of the
first fault found. Reasons name the fault and the attribute, never a value of the data set.

Why before Success: an instance acknowledged and then found unreadable is lost to the study (the
sender has moved on), so what an acceptor can check without decoding pixels it checks here:
- every element and item, at every nesting level, lies within the bytes received (a value length
  that runs past the end is a truncated or corrupt object);
- the bytes are in the context's transfer syntax: in explicit VR every element has a valid VR
  (implicit VR bytes have none), in implicit VR the first element does not look explicit; native
  syntaxes carry Pixel Data with a defined length, compressed ones encapsulated in items (PS3.5
  A.4) whose first fragment starts as the codec's stream does;
- native Pixel Data holds Rows x Columns x Number of Frames x Samples per Pixel x Bits Allocated
  bits (PS3.5 8.1.1, padded to even length), and Float/Double Float Pixel Data likewise;
- top-level elements are in ascending tag order (PS3.5 7.1);
- a deflated data set (PS3.5 A.5) inflates to no more than the data set limit.

Parsing is ``struct`` only: pydicom costs about as much per instance as the fsync, and every
C-STORE comes here. ``tests/dicom_node/test_identify.py`` checks every real object in the shared
data against pydicom.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from onconode.dicom_node.status import StoreStatus

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
_NATIVE = frozenset({IMPLICIT_LE, EXPLICIT_LE, DEFLATED_LE})
# The first bytes of a compressed frame, by transfer syntax family (PS3.5 A.4 and the codec standards).
_JPEG_SOI = (b"\xff\xd8",)
_J2K_STARTS = (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")  # codestream SOC+SIZ, or a JP2 file
_FRAME_STARTS = {
    "1.2.840.10008.1.2.4.50": _JPEG_SOI, "1.2.840.10008.1.2.4.51": _JPEG_SOI,
    "1.2.840.10008.1.2.4.57": _JPEG_SOI, "1.2.840.10008.1.2.4.70": _JPEG_SOI,
    "1.2.840.10008.1.2.4.80": _JPEG_SOI, "1.2.840.10008.1.2.4.81": _JPEG_SOI,
    "1.2.840.10008.1.2.4.90": _J2K_STARTS, "1.2.840.10008.1.2.4.91": _J2K_STARTS,
    "1.2.840.10008.1.2.4.201": _J2K_STARTS, "1.2.840.10008.1.2.4.202": _J2K_STARTS,
    "1.2.840.10008.1.2.4.203": _J2K_STARTS,
}
_RLE = "1.2.840.10008.1.2.5"

_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
                 b"UN UR US UT UV".split())
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA, _FLOAT_PIXEL_DATA, _DOUBLE_PIXEL_DATA = 0x7FE00010, 0x7FE00008, 0x7FE00009
_MAX_DEPTH = 32  # nested sequences; real objects stay under 8

_WANTED = {0x00080016: "SOPClassUID", 0x00080018: "SOPInstanceUID", 0x00080060: "Modality",
           0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID", 0x00280002: "SamplesPerPixel",
           0x00280004: "PhotometricInterpretation", 0x00280008: "NumberOfFrames", 0x00280010: "Rows",
           0x00280011: "Columns", 0x00280100: "BitsAllocated", 0x0040A040: "ValueType"}
UID_NAMES = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class InvalidInstance(ValueError):
    """A data set OncoNode refuses; ``status`` is the answer, ``reason`` is safe to log (no PHI)."""

    def __init__(self, status: StoreStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Header:
    """The attributes ``identify`` needs."""

    uids: dict[str, str | None]  # SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID
    modality: str
    has_pixels: bool
    has_matrix: bool
    value_type: str | None


def read_header(data_set: bytes, transfer_syntax: str, max_inflated_bytes: int) -> Header:
    """The identifying values of ``data_set``, once its structure has been checked.

    Raises
    ------
    InvalidInstance
        CANNOT_DECODE (malformed, truncated, out of order), TRANSFER_SYNTAX_MISMATCH,
        PIXEL_DATA_LENGTH or TOO_LARGE_INFLATED.
    """
    if transfer_syntax == DEFLATED_LE:
        data_set = _inflate(data_set, max_inflated_bytes)
    walker = _Walker(data_set, transfer_syntax)
    values, pixels = walker.walk_top_level()
    text = {name: _text(values.get(name)) for name in _WANTED.values()}
    rows, columns = _us(values.get("Rows")), _us(values.get("Columns"))
    if pixels is not None:
        _check_native_pixels(pixels, values, rows, columns, text.get("PhotometricInterpretation"))
    return Header(
        uids={name: text[name] for name in UID_NAMES},
        modality=text["Modality"] or "",
        has_pixels=pixels is not None or walker.encapsulated_pixels,
        has_matrix=rows > 0 and columns > 0,
        value_type=text["ValueType"])


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(data, limit + 1)
    except zlib.error as err:
        raise InvalidInstance(StoreStatus.CANNOT_DECODE, "deflated data set cannot be inflated") from err
    if len(inflated) > limit:
        raise InvalidInstance(StoreStatus.TOO_LARGE_INFLATED, "deflated data set inflates past node.max_dataset_bytes")
    if not inflater.eof:
        raise InvalidInstance(StoreStatus.CANNOT_DECODE, "deflated data set is truncated")
    return inflated


@dataclass(frozen=True)
class _NativePixels:
    tag: int
    length: int


def _fault(reason: str) -> InvalidInstance:
    return InvalidInstance(StoreStatus.CANNOT_DECODE, reason)


class _Walker:
    def __init__(self, data: bytes, transfer_syntax: str) -> None:
        self.data = data
        self.transfer_syntax = transfer_syntax
        self.implicit = transfer_syntax == IMPLICIT_LE
        self.native = transfer_syntax in _NATIVE
        self.encapsulated_pixels = False

    def walk_top_level(self) -> tuple[dict[str, bytes], _NativePixels | None]:
        data, pos, end = self.data, 0, len(self.data)
        values: dict[str, bytes] = {}
        pixels: _NativePixels | None = None
        last = -1
        if self.implicit and end >= 8 and data[4:6] in _VRS and 8 + int.from_bytes(data[6:8], "little") <= end:
            raise InvalidInstance(StoreStatus.TRANSFER_SYNTAX_MISMATCH,
                                  "explicit VR data set on an implicit VR presentation context")
        while pos < end:
            tag, vr, length, pos = self._element(pos, end, self.implicit)
            if tag <= last:
                raise _fault("top-level elements out of ascending tag order")
            last = tag
            if tag >> 16 == 0xFFFE:
                raise _fault("item or delimiter outside a sequence")
            if tag == _PIXEL_DATA:
                pos, pixels = self._pixel_data(vr, length, pos, end)
                continue
            if tag in (_FLOAT_PIXEL_DATA, _DOUBLE_PIXEL_DATA) and (length == _UNDEFINED or not self.native):
                raise InvalidInstance(StoreStatus.TRANSFER_SYNTAX_MISMATCH, "Float Pixel Data that is not native")
            if length == _UNDEFINED:
                pos = self._undefined(vr, pos, end, 1, self.implicit)
                continue
            if pos + length > end:
                raise _fault("an element's value runs past the end of the data set")
            name = _WANTED.get(tag)
            if name is not None:
                values[name] = data[pos:pos + length]
            elif tag in (_FLOAT_PIXEL_DATA, _DOUBLE_PIXEL_DATA):
                pixels = _NativePixels(tag, length)
            if vr == b"SQ":
                self._items(pos, pos + length, depth=1)
            pos += length
        return values, pixels

    def _element(self, pos: int, end: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
        """(tag, VR or None, value length, value offset) of the element header at ``pos``."""
        if pos + 8 > end:
            raise _fault("an element header runs past the end")
        group, element = struct.unpack_from("<HH", self.data, pos)
        tag = group << 16 | element
        if implicit or group == 0xFFFE:  # item and delimiter headers have no VR
            return tag, None, struct.unpack_from("<I", self.data, pos + 4)[0], pos + 8
        vr = self.data[pos + 4:pos + 6]
        if vr not in _VRS:
            if _reads_as_implicit(self.data):
                raise InvalidInstance(StoreStatus.TRANSFER_SYNTAX_MISMATCH,
                                      "implicit VR data set on an explicit VR presentation context")
            raise _fault("an element without a valid VR")
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise _fault("an element header runs past the end")
            return tag, vr, struct.unpack_from("<I", self.data, pos + 8)[0], pos + 12
        return tag, vr, struct.unpack_from("<H", self.data, pos + 6)[0], pos + 8

    def _undefined(self, vr: bytes | None, pos: int, end: int, depth: int, implicit: bool) -> int:
        """Offset after a value of undefined length: a sequence (SQ, implicit, or UN, whose content is
        implicit VR, PS3.5 6.2.2)."""
        if vr not in (None, b"SQ", b"UN"):
            raise _fault("undefined length on an element that is not a sequence")
        if depth > _MAX_DEPTH:
            raise _fault(f"sequences nested deeper than {_MAX_DEPTH}")
        implicit = implicit or vr == b"UN"
        while True:
            tag, _, length, pos = self._element(pos, end, True)
            if tag == _SEQUENCE_END:
                return pos
            if tag != _ITEM:
                raise _fault("a sequence holds something other than items")
            if length == _UNDEFINED:
                pos = self._item_elements(pos, end, implicit, depth, delimited=True)
            else:
                if pos + length > end:
                    raise _fault("a sequence item runs past the end")
                self._item_elements(pos, pos + length, implicit, depth, delimited=False)
                pos += length

    def _items(self, pos: int, end: int, depth: int) -> None:
        """The items of an explicit VR sequence of defined length, which must fill it exactly."""
        if depth > _MAX_DEPTH:
            raise _fault(f"sequences nested deeper than {_MAX_DEPTH}")
        while pos < end:
            tag, _, length, pos = self._element(pos, end, True)
            if tag != _ITEM:
                raise _fault("a sequence holds something other than items")
            if length == _UNDEFINED:
                pos = self._item_elements(pos, end, False, depth, delimited=True)
                continue
            if pos + length > end:
                raise _fault("a sequence item runs past its sequence")
            self._item_elements(pos, pos + length, False, depth, delimited=False)
            pos += length

    def _item_elements(self, pos: int, end: int, implicit: bool, depth: int, delimited: bool) -> int:
        """Walk an item's elements up to ``end`` (or its delimitation item); the offset after it."""
        while pos < end:
            tag, vr, length, pos = self._element(pos, end, implicit)
            if tag == _ITEM_END:
                if not delimited:
                    raise _fault("an item delimiter in an item of defined length")
                return pos
            if tag >> 16 == 0xFFFE:
                raise _fault("an item or sequence delimiter where an element belongs")
            if length == _UNDEFINED and tag == _PIXEL_DATA:  # an icon image's, encapsulated (PS3.5 A.4)
                pos, _ = self._fragments(pos, end)
                continue
            if length == _UNDEFINED:
                pos = self._undefined(vr, pos, end, depth + 1, implicit)
                continue
            if pos + length > end:
                raise _fault("an element's value runs past the end of its item")
            if vr == b"SQ":
                self._items(pos, pos + length, depth + 1)
            pos += length
        if delimited:
            raise _fault("an item of undefined length without its delimiter")
        return pos

    def _pixel_data(self, vr: bytes | None, length: int, pos: int, end: int) -> tuple[int, _NativePixels | None]:
        if self.native:
            if length == _UNDEFINED:
                raise InvalidInstance(StoreStatus.TRANSFER_SYNTAX_MISMATCH,
                                      "encapsulated Pixel Data on a native transfer syntax")
            if pos + length > end:
                raise _fault("Pixel Data runs past the end of the data set")
            return pos + length, _NativePixels(_PIXEL_DATA, length)
        if length != _UNDEFINED:
            raise InvalidInstance(StoreStatus.TRANSFER_SYNTAX_MISMATCH,
                                  "native Pixel Data on a compressed transfer syntax")
        self.encapsulated_pixels = True
        pos, first_fragment = self._fragments(pos, end)
        self._check_codec(first_fragment)
        return pos, None

    def _fragments(self, pos: int, end: int) -> tuple[int, bytes]:
        """Walk encapsulated Pixel Data (PS3.5 A.4): offset table item, fragment items, delimiter."""
        first_fragment: bytes | None = None
        items = 0
        while True:
            tag, _, length, pos = self._element(pos, end, True)
            if tag == _SEQUENCE_END:
                break
            if tag != _ITEM or length == _UNDEFINED or pos + length > end:
                raise _fault("encapsulated Pixel Data whose items do not fit the data set")
            if items == 1:
                first_fragment = self.data[pos:pos + 12]
            items += 1
            pos += length
        if items < 2:
            raise _fault("encapsulated Pixel Data without a fragment")
        return pos, first_fragment or b""

    def _check_codec(self, start: bytes) -> None:
        starts = _FRAME_STARTS.get(self.transfer_syntax)
        if starts is not None and not start.startswith(starts):
            raise InvalidInstance(StoreStatus.TRANSFER_SYNTAX_MISMATCH,
                                  "the first Pixel Data fragment is not in the context's compression")
        if self.transfer_syntax == _RLE and not (len(start) >= 4 and 1 <= int.from_bytes(start[:4], "little") <= 15):
            raise InvalidInstance(StoreStatus.TRANSFER_SYNTAX_MISMATCH,
                                  "the first Pixel Data fragment has no RLE header")


def _reads_as_implicit(data: bytes, elements: int = 4) -> bool:
    """Whether the data set's first elements read as implicit VR: in ascending order, each value
    within the bytes. Random or corrupt bytes fail this almost surely (a 32-bit length is rarely
    small enough); a data set written in implicit VR passes it."""
    pos, last = 0, -1
    for _ in range(elements):
        if pos == len(data):
            return True
        if pos + 8 > len(data):
            return False
        group, element, length = struct.unpack_from("<HHI", data, pos)
        tag = group << 16 | element
        if tag <= last or length == _UNDEFINED or pos + 8 + length > len(data):
            return length == _UNDEFINED and tag > last  # a sequence: plausible
        last, pos = tag, pos + 8 + length
    return True


def _check_native_pixels(pixels: _NativePixels, values: dict[str, bytes], rows: int, columns: int,
                         photometric: str | None) -> None:
    """Native pixel data must hold exactly the pixels its attributes describe (PS3.5 8.1.1)."""
    bits = 32 if pixels.tag == _FLOAT_PIXEL_DATA else 64 if pixels.tag == _DOUBLE_PIXEL_DATA else _us(
        values.get("BitsAllocated"))
    if not (rows and columns and bits):
        raise InvalidInstance(StoreStatus.PIXEL_DATA_LENGTH,
                              "Pixel Data without Rows, Columns or Bits Allocated to size it")
    samples = _us(values.get("SamplesPerPixel")) or 1
    frames_text = _text(values.get("NumberOfFrames")) or "1"
    try:
        frames = int(frames_text)
    except ValueError as err:
        raise _fault("Number of Frames is not an integer") from err
    if frames < 1:
        raise InvalidInstance(StoreStatus.PIXEL_DATA_LENGTH, "Number of Frames below 1 with Pixel Data")
    expected_bits = rows * columns * frames * samples * bits
    if photometric == "YBR_FULL_422":  # two chroma samples shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
        expected_bits = expected_bits * 2 // 3
    expected = (expected_bits + 7) // 8
    if pixels.length not in (expected, expected + (expected & 1)):
        side = "shorter" if pixels.length < expected else "longer"
        raise InvalidInstance(StoreStatus.PIXEL_DATA_LENGTH,
                              f"Pixel Data {side} than Rows x Columns x Frames x Samples x Bits Allocated")


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1").rstrip("\0 ")


def _us(value: bytes | None) -> int:
    return int.from_bytes(value[:2], "little") if value and len(value) >= 2 else 0
