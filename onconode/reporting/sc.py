"""Secondary Capture images of the key slices, for viewers that show only images.

Input: the source image's header (``pydicom.Dataset``), the rendered RGB array (``overlay.render``:
the slice in its display window, the heat map over the body, the caption) and the ``Conclusion``.
Output: a ``highdicom.sc.SCImage`` (Secondary Capture Image Storage, PS3.3 A.8.1) in the same
study, in a new series, with patient and study copied from the source by
``SCImage.from_ref_dataset`` (identity is copied, never re-typed).
"""

from __future__ import annotations

from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from onconode.algorithm import MANUFACTURER
from onconode.conclusion import Conclusion
from onconode.inference.pipeline import SliceScore
from onconode.reporting.equipment import contributing, stamp
from onconode.reporting.identity import copy_patient_study

# Burned in on every SC and stated in the description: PS3.3 C.7.6.1.1.7 Burned In Annotation.
NOT_FOR_DIAGNOSIS = "AI RESULT - NOT FOR DIAGNOSIS"
SERIES_DESCRIPTION = "AI heat map - NOT FOR DIAGNOSIS"


def caption_lines(conclusion: Conclusion, score: SliceScore) -> tuple[str, ...]:
    """The burned-in caption: warning, the study's decision, this slice's own value, the model.

    Hershey fonts draw ASCII only; anything else in a manifest's display text becomes "?".
    """
    def ascii_only(text: str) -> str:
        return text.encode("ascii", "replace").decode()

    return (NOT_FOR_DIAGNOSIS,
            ascii_only(f"{conclusion.finding.display}: {conclusion.verdict.upper()} (whole study)"),
            conclusion.probability_line(),
            conclusion.slice_line(score),
            ascii_only(f"{conclusion.algorithm.name} {conclusion.algorithm.version}"))


def build_sc(source: Dataset, rgb: np.ndarray, conclusion: Conclusion, series_uid: str, series_number: int,
             instance_number: int, sop_instance_uid: str, created: datetime, node_id: str) -> hd.sc.SCImage:
    """One RGB Secondary Capture built from ``source``'s patient and study.

    Raises
    ------
    ValueError
        When ``rgb`` is not uint8 (rows, columns, 3).
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be uint8 (rows, columns, 3), found {rgb.dtype} {rgb.shape}")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_instance_uid, instance_number=instance_number,
        manufacturer=MANUFACTURER, patient_orientation=_patient_orientation(source),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=[contributing(conclusion.algorithm)])
    copy_patient_study(source, sc)
    stamp(sc, conclusion.algorithm, node_id, created)
    # Laterality (Type 2C in General Series) is required for a paired body part only; the body part
    # comes with it so a validator can tell (dciodvfy requires it when no body part is named).
    if source.get("BodyPartExamined"):
        sc.BodyPartExamined = source.BodyPartExamined
    if source.get("Laterality"):
        sc.Laterality = source.Laterality
    elif source.get("BodyPartExamined"):
        if "Laterality" in sc:
            del sc.Laterality
    else:
        sc.Laterality = ""  # the body part is unknown: Laterality present, empty (unknown)
    sc.SeriesDescription = SERIES_DESCRIPTION
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = f"{NOT_FOR_DIAGNOSIS}. {conclusion.headline()}"[:10240]
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ConversionType = "WSD"  # workstation: rendered by software
    # Source Image Sequence: the slice under the heat map (PS3.3 C.7.6.1.1.3 Derivation).
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    sc.DerivationDescription = "Grad-CAM heat map over the slice in its display window"
    return sc


def _patient_orientation(source: Dataset) -> tuple[str, str]:
    """Row and column directions of an axial slice from ImageOrientationPatient (PS3.3 C.7.6.1.1.1)."""
    iop = source.get("ImageOrientationPatient")
    if not iop or len(iop) != 6:
        return ("L", "P")

    def letter(vector: tuple[float, float, float]) -> str:
        axis = int(np.argmax(np.abs(vector)))
        positive = vector[axis] >= 0
        return (("L", "R"), ("P", "A"), ("H", "F"))[axis][0 if positive else 1]

    row = tuple(float(v) for v in iop[:3])
    column = tuple(float(v) for v in iop[3:])
    return (letter(row), letter(column))  # type: ignore[arg-type]
