"""Part 10 framing of a received data set: preamble, "DICM" and the File Meta Information.

Input: the data set bytes exactly as the peer sent them, the command's Affected SOP Class and
Instance UIDs and the presentation context's transfer syntax. Output: the bytes of the file.

The File Meta group is encoded here with ``struct`` rather than through pydicom's
``FileMetaDataset``: it has the same seven elements for every instance, and building and writing a
pydicom data set for them cost more per C-STORE than the fsync. The bytes equal pynetdicom's
``Event.encoded_dataset()`` (``tests/dicom_node/test_part10.py``).
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

_PREAMBLE = b"\0" * 128 + b"DICM"


def part10_bytes(data_set: bytes, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """The file for ``data_set``: preamble, File Meta Information (PS3.10 7.1), then the data set."""
    elements = b"".join((
        _explicit(0x0001, b"OB", b"\0\1"),
        _explicit(0x0002, b"UI", uid_value(sop_class_uid)),
        _explicit(0x0003, b"UI", uid_value(sop_instance_uid)),
        _explicit(0x0010, b"UI", uid_value(transfer_syntax)),
        _explicit(0x0012, b"UI", uid_value(PYNETDICOM_IMPLEMENTATION_UID)),
        _explicit(0x0013, b"SH", _padded(PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" ")),
    ))
    return b"".join((_PREAMBLE, _explicit(0x0000, b"UL", struct.pack("<I", len(elements))), elements, data_set))


def _explicit(element: int, vr: bytes, value: bytes) -> bytes:
    """One group 0002 element in explicit VR little endian."""
    if vr == b"OB":
        return struct.pack("<HH2s2xI", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def uid_value(uid: str) -> bytes:
    """A UI value as encoded: ASCII, padded with NUL to even length (PS3.5 6.2).

    A non-ASCII character in a command's UID becomes "?"; identify() then refuses the UID itself."""
    return _padded(uid.encode("ascii", "replace"), b"\0")


def _padded(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value
