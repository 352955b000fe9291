"""Read just enough of a received data set to file it, and refuse what cannot be filed safely.

Input: the data set bytes of one C-STORE as the peer sent them, the presentation context's transfer
syntax and the command's Affected SOP Class/Instance UIDs. Output: an ``InstanceIdentity`` or an
``InvalidInstance`` carrying the DIMSE status to answer.

Only the identifying tags are read (``structure.read_header``, which also proves the data set's
structure sound), never the pixels: the bytes are stored as received, and pixel decoding belongs
to ``inference/volume.py``. UIDs are checked against the UID grammar here, before any of them
becomes part of a path. Reasons never quote a value of the data set.
"""

from __future__ import annotations

import struct

from pydicom.uid import UID

from onconode.dicom_node.sop_classes import IMAGE_STORAGE, SR_STORAGE
from onconode.dicom_node.status import StoreStatus
from onconode.dicom_node.structure import Header, InvalidInstance, read_header
from onconode.values import InstanceIdentity, check_uid

__all__ = ["InvalidInstance", "identify", "identify_file"]


def identify(data_set: bytes, transfer_syntax: str, affected_sop_class: str, affected_sop_instance: str,
             max_inflated_bytes: int) -> InstanceIdentity:
    """Check the data set's structure, parse the identifying attributes and check them against the
    command and the SOP class.

    Raises
    ------
    InvalidInstance
        With CANNOT_DECODE, TRANSFER_SYNTAX_MISMATCH, PIXEL_DATA_LENGTH, TOO_LARGE_INFLATED,
        MISSING_UID, INVALID_UID, INSTANCE_UID_MISMATCH or SOP_CLASS_MISMATCH.
    """
    header = read_header(data_set, transfer_syntax, max_inflated_bytes)
    values = header.uids
    present = {name for name, value in values.items() if value is not None and value.strip()}
    if not present:
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
                              "data set SOPClassUID differs from the presentation context's")
    _check_sop_class_content(UID(sop_class), header)
    return InstanceIdentity(
        study_uid=str(values["StudyInstanceUID"]),
        series_uid=str(values["SeriesInstanceUID"]),
        sop_instance_uid=str(values["SOPInstanceUID"]),
        sop_class_uid=sop_class,
        modality=header.modality,
    )


def identify_file(encoded: bytes, max_inflated_bytes: int) -> tuple[InstanceIdentity, str]:
    """The identity and transfer syntax of a stored Part 10 file, as ``identify`` reads a C-STORE
    (File Meta as ``part10.part10_bytes`` writes it: explicit VR little endian, group length first).

    Raises
    ------
    InvalidInstance
        As ``identify``, and CANNOT_DECODE for a file without a readable File Meta group.
    """
    meta = _file_meta(encoded)
    end = 132 + 12 + int.from_bytes(meta.get(0x0000, b"\0\0\0\0")[:4], "little")
    syntax, sop_class, sop_instance = (meta.get(e, b"").decode("ascii", "replace").rstrip("\0 ")
                                       for e in (0x0010, 0x0002, 0x0003))
    return identify(encoded[end:], syntax, sop_class, sop_instance, max_inflated_bytes), syntax


def _file_meta(encoded: bytes) -> dict[int, bytes]:
    """The group 0002 elements (by element number) of a Part 10 file."""
    if encoded[128:132] != b"DICM":
        raise InvalidInstance(StoreStatus.CANNOT_DECODE, "not a Part 10 file")
    meta: dict[int, bytes] = {}
    pos, end = 132, len(encoded)
    while pos + 8 <= end:
        group, element = struct.unpack_from("<HH", encoded, pos)
        if group != 0x0002:
            break
        vr = encoded[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"UN", b"UT", b"SQ", b"UC", b"UR"):
            length, start = struct.unpack_from("<I", encoded, pos + 8)[0], pos + 12
        else:
            length, start = struct.unpack_from("<H", encoded, pos + 6)[0], pos + 8
        if start + length > end:
            break
        meta[element] = encoded[start:start + length]
        pos = start + length
    if 0x0010 not in meta or 0x0000 not in meta:
        raise InvalidInstance(StoreStatus.CANNOT_DECODE, "File Meta without its group length or transfer syntax")
    return meta


def _check_sop_class_content(sop_class: UID, header: Header) -> None:
    """The cheapest checks that tell an image from an SR: a CT that has no pixels is not a CT."""
    if sop_class in IMAGE_STORAGE and not (header.has_pixels and header.has_matrix):
        raise InvalidInstance(StoreStatus.SOP_CLASS_MISMATCH,
                              f"{sop_class.name} without Rows/Columns/Pixel Data is not an image")
    if sop_class in SR_STORAGE and (header.has_pixels or header.value_type != "CONTAINER"):
        raise InvalidInstance(StoreStatus.SOP_CLASS_MISMATCH,
                              f"{sop_class.name} must be an SR document (root CONTAINER, no pixel data)")
