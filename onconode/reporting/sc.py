"""Secondary Capture images of the key slices: the slice, its Grad-CAM heat map, a caption.

Input: the source image's header (``pydicom.Dataset`` read inside this stage), the rendered RGB
array (``overlay.render``) and the ``Algorithm`` that produced it.
Output: a ``highdicom.sc.SCImage`` (Secondary Capture Image Storage, PS3.3 A.8.1) in the same
study, in a new series, with patient and study modules copied from the source by
``SCImage.from_ref_dataset`` (identity is copied, never re-typed).
"""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

# highdicom warns about single-component person names and quotes the name: that would put a
# patient's name in the node log. Identity is copied as received, so the warning has no use here.
warnings.filterwarnings("ignore", message=r".*unlikely to represent the intended person name.*")

MANUFACTURER = "OncoNode"
_MODEL_NAMESPACE = uuid.UUID("0b6f1f7e-2d8e-4c3f-9a51-6f2b9d1c7e20")
# CID 7005 Contributing Equipment Purposes of Reference: the algorithm processed the images.
PURPOSE_PROCESSING = codes.DCM.ProcessingEquipment
# Burned in on every SC and stated in the description: PS3.3 C.7.6.1.1.7 Burned In Annotation.
NOT_FOR_DIAGNOSIS = "AI RESULT - NOT FOR DIAGNOSIS"
SERIES_DESCRIPTION = "AI heat map - NOT FOR DIAGNOSIS"
# Patient and General Study module attributes highdicom does not copy; copied when the source has
# them so that every object of the study tells the same story (dcentvfy compares them).
PATIENT_STUDY_EXTRA = ("StudyDescription", "PatientAge", "PatientSize", "PatientWeight",
                       "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
                       "IssuerOfPatientID", "OtherPatientIDsSequence")


@dataclass(frozen=True)
class Algorithm:
    """The model as a piece of equipment (IHE AIR: creator, name, version, device UID)."""

    name: str
    version: str
    device_uid: str
    manufacturer: str = MANUFACTURER

    @classmethod
    def from_model(cls, name: str, version: str, sha256: str) -> Algorithm:
        """A stable Device UID per model file: the same model always has the same UID, a retrained
        one (new hash) a new UID, as the IHE AIR profile asks."""
        # PS3.5 B.2: a UUID as "2.25." + its integer; uuid5 makes it a function of the model file.
        return cls(name, version, f"2.25.{uuid.uuid5(_MODEL_NAMESPACE, f'{name}/{version}/{sha256}').int}")

    def contributing_equipment(self) -> hd.ContributingEquipment:
        """PS3.3 C.7.5.1 Contributing Equipment Sequence item naming the algorithm."""
        item = hd.ContributingEquipment(
            manufacturer=self.manufacturer, purpose_of_reference=PURPOSE_PROCESSING,
            manufacturer_model_name=self.name, software_versions=self.version,
            contribution_description="AI classification; research use only, not for diagnosis")
        item.DeviceUID = self.device_uid
        return item


def build_sc(source: Dataset, rgb: np.ndarray, algorithm: Algorithm, series_uid: str, series_number: int,
             instance_number: int, sop_instance_uid: str | None = None) -> hd.sc.SCImage:
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
        sop_instance_uid=sop_instance_uid or generate_uid(), instance_number=instance_number,
        manufacturer=MANUFACTURER, patient_orientation=_patient_orientation(source),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=[algorithm.contributing_equipment()])
    copy_patient_study(source, sc)
    # Laterality (Type 2C in General Series): the source's value, else empty (unpaired/unknown).
    sc.Laterality = source.get("Laterality", "")
    sc.SeriesDescription = SERIES_DESCRIPTION
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = NOT_FOR_DIAGNOSIS
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.ConversionType = "WSD"  # workstation: rendered by software
    sc.SoftwareVersions = algorithm.version
    sc.ManufacturerModelName = algorithm.name
    # Source Image Sequence: the slice under the heat map (PS3.3 C.7.6.1.1.3 Derivation).
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    sc.DerivationDescription = "Grad-CAM heat map over the windowed slice"
    return sc


def copy_patient_study(source: Dataset, target: Dataset) -> None:
    """Copy the ``PATIENT_STUDY_EXTRA`` attributes the source has and the target lacks."""
    for keyword in PATIENT_STUDY_EXTRA:
        if keyword in source and keyword not in target:
            target[keyword] = source[keyword]


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
