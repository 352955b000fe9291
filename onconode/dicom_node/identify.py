"""Read just enough of a received data set to file it, and refuse what cannot be filed safely.

Input: the encoded Part 10 bytes of one C-STORE (file meta + data set as the peer sent it) and the
command's Affected SOP Class/Instance UIDs. Output: an ``InstanceIdentity`` or an
``InvalidInstance`` carrying the DIMSE status to answer.

Only the identifying tags are parsed, never the pixels: the bytes are stored as received, and
pixel decoding belongs to ``inference/volume.py``. UIDs are checked against the UID grammar here,
before any of them becomes part of a path.
"""

from __future__ import annotations

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
    try:
        # defer_size keeps pixel data unread: only its presence is needed here.
        ds = pydicom.dcmread(BytesIO(encoded), defer_size=256, specific_tags=_TAGS)
        values = {name: ds.get(name) for name in ("SOPClassUID", "SOPInstanceUID",
                                                  "StudyInstanceUID", "SeriesInstanceUID")}
        modality = str(ds.get("Modality", "") or "")
        has_pixels = any(name in ds for name in _PIXELS)
        has_matrix = bool(ds.get("Rows")) and bool(ds.get("Columns"))
        value_type = ds.get("ValueType")
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, OverflowError, AttributeError,
            NotImplementedError) as err:
        raise InvalidInstance(StoreStatus.CANNOT_DECODE, f"data set cannot be parsed ({type(err).__name__})") from err

    present = {name for name, value in values.items() if value is not None and str(value).strip()}
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
    _check_sop_class_content(UID(sop_class), has_pixels, has_matrix, value_type)
    return InstanceIdentity(
        study_uid=str(values["StudyInstanceUID"]),
        series_uid=str(values["SeriesInstanceUID"]),
        sop_instance_uid=str(values["SOPInstanceUID"]),
        sop_class_uid=sop_class,
        modality=modality,
    )


def _check_sop_class_content(sop_class: UID, has_pixels: bool, has_matrix: bool, value_type: object) -> None:
    """The cheapest checks that tell an image from an SR: a CT that has no pixels is not a CT."""
    if sop_class in IMAGE_STORAGE and not (has_pixels and has_matrix):
        raise InvalidInstance(StoreStatus.SOP_CLASS_MISMATCH,
                              f"{sop_class.name} without Rows/Columns/Pixel Data is not an image")
    if sop_class in SR_STORAGE and (has_pixels or value_type != "CONTAINER"):
        raise InvalidInstance(StoreStatus.SOP_CLASS_MISMATCH,
                              f"{sop_class.name} must be an SR document (root CONTAINER, no pixel data)")
