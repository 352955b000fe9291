"""The project's own checks on every output before it may leave the node.

Input: a built SC, SR, SEG or KOS (``pydicom.Dataset``), its encoded bytes and the study it
belongs to. Output: nothing, or ``OutputCheckError`` naming the first rule broken.

highdicom validates while it builds (types, required attributes, template structure); these rules
add what OncoNode promises on top: the same study, an unverified SR, the not-for-diagnosis notice
on every object, OncoNode's version and the algorithm named as contributing equipment, a series
date, the encoding round-trips with pydicom's ``enforce_valid_values``, and a revision references
what it replaces.
"""

from __future__ import annotations

from io import BytesIO

import pydicom
from pydicom import Dataset, config
from pydicom.uid import UID
from pydicom.valuerep import validate_value

from onconode.algorithm import SOFTWARE
from onconode.conclusion import NOT_FOR_DIAGNOSIS
from onconode.reporting import sc as sc_module

SC_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.7")  # Secondary Capture Image Storage
SR_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.88.34")  # Comprehensive 3D SR Storage
SEG_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.66.4")  # Segmentation Storage
KOS_SOP_CLASS = UID("1.2.840.10008.5.1.4.1.1.88.59")  # Key Object Selection Document Storage


# Value representations whose values pydicom's validators check as text (PS3.5 6.2).
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                       "UR", "UT"})


class OutputCheckError(ValueError):
    """An output broke one of the node's rules; it is not recorded for delivery."""


def check_sc(ds: Dataset, study_uid: str, encoded: bytes | None = None) -> None:
    """Raises ``OutputCheckError`` when the SC breaks a rule (see the module docstring);
    ``encoded`` is the Part 10 file to be sent (default: ``ds`` written here)."""
    _common(ds, study_uid, SC_SOP_CLASS, encoded)
    if ds.get("BurnedInAnnotation") != "YES" or sc_module.NOT_FOR_DIAGNOSIS not in str(ds.get("ImageComments", "")):
        raise OutputCheckError(f"SC {ds.SOPInstanceUID}: the not-for-diagnosis caption is not declared")
    if ds.PhotometricInterpretation != "RGB" or ds.SamplesPerPixel != 3:
        raise OutputCheckError(f"SC {ds.SOPInstanceUID}: expected RGB, found {ds.PhotometricInterpretation}")
    if not ds.get("SourceImageSequence"):
        raise OutputCheckError(f"SC {ds.SOPInstanceUID}: no Source Image Sequence")


def check_sr(ds: Dataset, study_uid: str, predecessor: Dataset | None, encoded: bytes | None = None) -> None:
    """Raises ``OutputCheckError`` when the SR breaks a rule (see the module docstring)."""
    _common(ds, study_uid, SR_SOP_CLASS, encoded)
    if ds.get("VerificationFlag") != "UNVERIFIED":
        raise OutputCheckError(f"SR {ds.SOPInstanceUID}: VerificationFlag must be UNVERIFIED")
    if ds.get("CompletionFlag") != "COMPLETE":
        raise OutputCheckError(f"SR {ds.SOPInstanceUID}: CompletionFlag must be COMPLETE")
    if "NOT FOR DIAGNOSIS" not in str(ds.get("SeriesDescription", "")):
        raise OutputCheckError(f"SR {ds.SOPInstanceUID}: the series does not say not for diagnosis")
    if not ds.get("CurrentRequestedProcedureEvidenceSequence"):
        raise OutputCheckError(f"SR {ds.SOPInstanceUID}: no evidence listed")
    if predecessor is not None:
        listed = {item.ReferencedSOPInstanceUID
                  for study in ds.get("PredecessorDocumentsSequence", [])
                  for series in study.ReferencedSeriesSequence
                  for item in series.ReferencedSOPSequence}
        if predecessor.SOPInstanceUID not in listed:
            raise OutputCheckError(f"SR {ds.SOPInstanceUID}: revision does not reference "
                                   f"{predecessor.SOPInstanceUID} as predecessor")
    if not any(e.keyword == "TextValue" and NOT_FOR_DIAGNOSIS in str(e.value) for e in ds.iterall()):
        raise OutputCheckError(f"SR {ds.SOPInstanceUID}: content does not say not for diagnosis")


def check_derived(ds: Dataset, study_uid: str, sop_class: UID, encoded: bytes | None = None) -> None:
    """A Segmentation or Key Object Selection: the common rules and the notice in its description."""
    _common(ds, study_uid, sop_class, encoded)
    if "NOT FOR DIAGNOSIS" not in str(ds.get("SeriesDescription", "")):
        raise OutputCheckError(f"{ds.SOPInstanceUID}: the series does not say not for diagnosis")


def _common(ds: Dataset, study_uid: str, sop_class: UID, encoded: bytes | None) -> None:
    if ds.SOPClassUID != sop_class:
        raise OutputCheckError(f"{ds.SOPInstanceUID}: SOP class {ds.SOPClassUID}, expected {sop_class}")
    if ds.StudyInstanceUID != study_uid:
        raise OutputCheckError(f"{ds.SOPInstanceUID}: study {ds.StudyInstanceUID}, expected {study_uid}")
    equipment = ds.get("ContributingEquipmentSequence") or []
    if not any(item.get("DeviceUID") and item.get("SoftwareVersions") for item in equipment):
        raise OutputCheckError(f"{ds.SOPInstanceUID}: the algorithm is not named as contributing equipment")
    versions = ds.get("SoftwareVersions") or []
    if SOFTWARE not in ([versions] if isinstance(versions, str) else list(versions)) or not ds.get("SeriesDate"):
        raise OutputCheckError(f"{ds.SOPInstanceUID}: OncoNode's version or the series date is missing")
    # Written, re-read, and every value checked against its VR as ``enforce_valid_values`` would,
    # without flipping pydicom's process-wide setting under the other threads.
    if encoded is None:
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        encoded = buffer.getvalue()
    try:
        reread = pydicom.dcmread(BytesIO(encoded))
        if reread.SOPInstanceUID != ds.SOPInstanceUID:
            raise ValueError(f"encoded file holds {reread.SOPInstanceUID}")
        for element in reread.iterall():
            if element.VR not in _TEXT_VRS or element.value is None:
                continue
            values = element.value if element.VM > 1 else [element.value]
            for value in values:
                validate_value(element.VR, str(value), config.RAISE)
    except (ValueError, KeyError, TypeError) as err:
        raise OutputCheckError(f"{ds.SOPInstanceUID}: does not re-read with enforce_valid_values: {err}") from err
