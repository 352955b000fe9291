"""Read just enough of a received data set to file it, and refuse what cannot be filed safely.

Input: the encoded Part 10 bytes of one C-STORE (file meta + data set as the peer sent it) and the
command's Affected SOP Class/Instance UIDs. Output: an ``InstanceIdentity`` or an
``InvalidInstance`` carrying the DIMSE status to answer.

Only the identifying tags are parsed, never the pixels: the bytes are stored as received, and
pixel decoding belongs to ``inference/volume.py``. UIDs are checked against the UID grammar here,
before any of them becomes part of a path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from io import BytesIO

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from onconode.dicom_node.sop_classes import IMAGE_STORAGE, SR_STORAGE
from onconode.dicom_node.status import StoreStatus
from onconode.dicom_node.validators import check_uid

# Values are validated here, by rules that return a reason; pydicom's own value warnings would
# write the offending value into the log, and a value is exactly what must not be logged.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
         "Rows", "Columns", "ValueType", "PixelData", "FloatPixelData", "DoubleFloatPixelData"]
_PIXELS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class InstanceIdentity:
    """Where an instance belongs; every UID has passed ``check_uid``."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str


class InvalidInstance(ValueError):
    """A data set OncoNode refuses; ``status`` is the answer, ``reason`` is safe to log (no PHI)."""

    def __init__(self, status: StoreStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def identify(encoded: bytes, affected_sop_class: str, affected_sop_instance: str) -> InstanceIdentity:
    """Parse the identifying attributes and check them against the command and the SOP class.

    Raises
    ------
    InvalidInstance
        With CANNOT_DECODE, MISSING_UID, INVALID_UID, INSTANCE_UID_MISMATCH or SOP_CLASS_MISMATCH.
    """
    header = scan_header(encoded) or _read_with_pydicom(encoded)
    values = header.uids
    present = {name for name, value in values.items() if value is not None and value.strip()}
    if not present:
        # pydicom reads arbitrary bytes leniently into "elements"; a data set in which not one of
        # the identifying attributes can be found was not understood at all.
        raise InvalidInstance(StoreStatus.CANNOT_DECODE, "no identifying attribute could be read")
    for name in values:
        if name not in present:
            raise InvalidInstance(StoreStatus.MISSING_UID, f"{name} is missing or empty")
    for name, value in values.items():
        reason = check_uid(str(value))
        if reason:
            raise InvalidInstance(StoreStatus.INVALID_UID, f"{name} is not a valid UID: {reason}")
    for name, value in (("SOPInstanceUID", affected_sop_instance), ("SOPClassUID", affected_sop_class)):
        reason = check_uid(value)
        if reason:
            raise InvalidInstance(StoreStatus.INVALID_UID, f"command's Affected {name} is not a valid UID: {reason}")

    sop_class = str(values["SOPClassUID"])
    if str(values["SOPInstanceUID"]) != affected_sop_instance:
        raise InvalidInstance(StoreStatus.INSTANCE_UID_MISMATCH,
                              "data set SOPInstanceUID differs from the command's Affected SOP Instance UID")
    if sop_class != affected_sop_class:
        raise InvalidInstance(StoreStatus.SOP_CLASS_MISMATCH,
                              f"data set SOPClassUID {sop_class} differs from the presentation context's "
                              f"{affected_sop_class}")
    _check_sop_class_content(UID(sop_class), header)
    return InstanceIdentity(
        study_uid=str(values["StudyInstanceUID"]),
        series_uid=str(values["SeriesInstanceUID"]),
        sop_instance_uid=str(values["SOPInstanceUID"]),
        sop_class_uid=sop_class,
        modality=header.modality,
    )


@dataclass(frozen=True)
class Header:
    """The attributes ``identify`` needs, however they were read."""

    uids: dict[str, str | None]  # SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID
    modality: str
    has_pixels: bool
    has_matrix: bool
    value_type: str | None


def _read_with_pydicom(encoded: bytes) -> Header:
    """The general reader: any transfer syntax, lenient about what the fast scan refuses."""
    try:
        # defer_size keeps pixel data unread: only its presence is needed here.
        ds = pydicom.dcmread(BytesIO(encoded), defer_size=256, specific_tags=_TAGS)
        uids = {name: ds.get(name) for name in _UID_NAMES}
        value_type = ds.get("ValueType")
        return Header(
            uids={name: None if value is None else str(value) for name, value in uids.items()},
            modality=str(ds.get("Modality", "") or ""),
            has_pixels=any(name in ds for name in _PIXELS),
            has_matrix=bool(ds.get("Rows")) and bool(ds.get("Columns")),
            value_type=None if value_type is None else str(value_type))
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OverflowError, AttributeError,
            NotImplementedError) as err:
        raise InvalidInstance(StoreStatus.CANNOT_DECODE, f"data set cannot be parsed ({type(err).__name__})") from err


# --- the fast scan ------------------------------------------------------------------------------
# Parsing a CT header with pydicom costs about as much as fsyncing the file. Every C-STORE is
# parsed, so the common case (Part 10 bytes in a little-endian, non-deflated transfer syntax with
# elements in ascending order) is walked here with struct alone: element headers are read, values
# are skipped unless wanted, and the walk stops at the pixel data. Anything else (big endian,
# deflate, a malformed or out-of-order element) returns None and pydicom reads it instead;
# ``tests/dicom_node/test_identify.py`` checks that both readers agree on every real file.

_UID_NAMES = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_WANTED = {0x00080016: "SOPClassUID", 0x00080018: "SOPInstanceUID", 0x0020000D: "StudyInstanceUID",
           0x0020000E: "SeriesInstanceUID", 0x00080060: "Modality", 0x00280010: "Rows",
           0x00280011: "Columns", 0x0040A040: "ValueType"}
_FIRST_PIXEL_TAG, _LAST_PIXEL_TAG = 0x7FE00008, 0x7FE00010  # Float, Double Float and (plain) Pixel Data
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_TS_TAG = 0x00020010
_IMPLICIT_LE = "1.2.840.10008.1.2"
_NOT_SCANNED = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}  # big endian, deflate


class _Unscannable(Exception):
    """The fast scan met something it does not handle; pydicom decides instead."""


def scan_header(encoded: bytes) -> Header | None:
    """The identifying attributes read by walking element headers, or None to use pydicom."""
    try:
        if encoded[128:132] != b"DICM":
            return None
        meta, start = _walk(encoded, 132, len(encoded), implicit=False, group_end=True)
        transfer_syntax = _text(meta.get(_TS_TAG))
        if not transfer_syntax or transfer_syntax in _NOT_SCANNED:
            return None
        found, _ = _walk(encoded, start, len(encoded), implicit=transfer_syntax == _IMPLICIT_LE)
    except (_Unscannable, struct.error):
        return None
    values = {_WANTED[tag]: value for tag, value in found.items() if tag in _WANTED}
    return Header(
        uids={name: _text(values.get(name)) for name in _UID_NAMES},
        modality=_text(values.get("Modality")) or "",
        has_pixels=any(_FIRST_PIXEL_TAG <= tag <= _LAST_PIXEL_TAG for tag in found),
        has_matrix=_us(values.get("Rows")) > 0 and _us(values.get("Columns")) > 0,
        value_type=_text(values.get("ValueType")))


def _walk(data: bytes, pos: int, end: int, implicit: bool, group_end: bool = False) -> tuple[dict[int, bytes], int]:
    """Top-level elements from ``pos``: wanted values by tag, and where the walk stopped.

    With ``group_end`` the walk covers the File Meta group only (its length is its first element).
    """
    found: dict[int, bytes] = {}
    last = -1
    while pos < end:
        tag, length, pos, value_implicit = _element_header(data, pos, implicit)
        if tag <= last:
            raise _Unscannable("elements out of order")
        if group_end and last < 0:
            if tag != 0x00020000:
                raise _Unscannable("File Meta without its group length")
            end = pos + length + struct.unpack_from("<I", data, pos)[0]
        last = tag
        if tag >= _FIRST_PIXEL_TAG:
            if tag <= _LAST_PIXEL_TAG:
                found[tag] = b""
            return found, pos
        if length == _UNDEFINED:
            pos = _skip_undefined(data, pos, end, value_implicit)
            continue
        if pos + length > end:
            raise _Unscannable("value runs past the end")
        if tag in _WANTED or tag == _TS_TAG:
            found[tag] = data[pos:pos + length]
        pos += length
    return found, pos


def _element_header(data: bytes, pos: int, implicit: bool) -> tuple[int, int, int, bool]:
    """(tag, value length, value offset, value is implicit VR) of the element at ``pos``."""
    group, element = struct.unpack_from("<HH", data, pos)
    tag = group << 16 | element
    if implicit or group == 0xFFFE:  # item and delimiter headers have no VR
        return tag, struct.unpack_from("<I", data, pos + 4)[0], pos + 8, implicit
    vr = data[pos + 4:pos + 6]
    if vr in _LONG_VRS:
        # A UN value of undefined length is encoded in implicit VR (PS3.5 6.2.2).
        return tag, struct.unpack_from("<I", data, pos + 8)[0], pos + 12, vr == b"UN"
    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
        raise _Unscannable("not an explicit VR")
    return tag, struct.unpack_from("<H", data, pos + 6)[0], pos + 8, False


def _skip_undefined(data: bytes, pos: int, end: int, implicit: bool) -> int:
    """Offset after a sequence of undefined length whose first item starts at ``pos``."""
    while pos < end:
        tag, length, pos, _ = _element_header(data, pos, True)
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise _Unscannable("sequence without items")
        if length != _UNDEFINED:
            pos += length
            continue
        while True:  # an item of undefined length: its elements, up to the item delimiter
            tag, length, pos, nested_implicit = _element_header(data, pos, implicit)
            if tag == _ITEM_END:
                break
            pos = _skip_undefined(data, pos, end, nested_implicit) if length == _UNDEFINED else pos + length
            if pos > end:
                raise _Unscannable("item runs past the end")
    raise _Unscannable("sequence runs past the end")


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1").rstrip("\0 ")


def _us(value: bytes | None) -> int:
    return int.from_bytes(value[:2], "little") if value and len(value) >= 2 else 0


def _check_sop_class_content(sop_class: UID, header: Header) -> None:
    """The cheapest checks that tell an image from an SR: a CT that has no pixels is not a CT."""
    if sop_class in IMAGE_STORAGE and not (header.has_pixels and header.has_matrix):
        raise InvalidInstance(StoreStatus.SOP_CLASS_MISMATCH,
                              f"{sop_class.name} without Rows/Columns/Pixel Data is not an image")
    if sop_class in SR_STORAGE and (header.has_pixels or header.value_type != "CONTAINER"):
        raise InvalidInstance(StoreStatus.SOP_CLASS_MISMATCH,
                              f"{sop_class.name} must be an SR document (root CONTAINER, no pixel data)")
