"""The structured report of one analysis: a TID 1500 Measurement Report in a Comprehensive 3D SR.

Input: ``Finding`` values (label, SNOMED CT code from the manifest, probability), the
``Algorithm``, the source images' headers and the Secondary Capture images (``pydicom.Dataset``),
and optionally the SR it revises.
Output: a ``highdicom.sr.Comprehensive3DSR`` (PS3.3 A.35.13), VerificationFlag UNVERIFIED.

Content (PS3.16):
- TID 1500 Measurement Report, procedure reported from CID 100, a device observer (TID 1004);
- TID 1411 one measurement group per label, each with a tracking identifier and UID, the label
  as finding type, the probability as a numeric measurement in UCUM "1", and TID 4019 algorithm
  identification (name, version, family "Artificial Intelligence");
- the predicted label as the qualitative evaluation "Finding" in its group;
- TID 1600 image library: the key slices. The SC images are listed in the SR's evidence
  (Current Requested Procedure Evidence) but not in the library: their modality is OT, which
  CID 29 (the library's Modality row) does not allow.
A revision references the SR it replaces (Predecessor Documents Sequence, PS3.3 C.17.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from onconode.reporting.sc import MANUFACTURER, Algorithm, copy_patient_study

# CID 100 Quantitative Diagnostic Imaging Procedures, by the modality of the analysed series.
PROCEDURE_BY_MODALITY = {"CT": codes.cid100.CTUnspecifiedBodyRegion, "MR": codes.cid100.MRIUnspecifiedBodyRegion}
# CID 270 Observer Type: the algorithm observed, no person did.
OBSERVER_DEVICE = codes.DCM.Device
# TID 4019 Algorithm Family (CID 7162).
ALGORITHM_FAMILY = codes.DCM.ArtificialIntelligence
# TID 1419 qualitative evaluation concept and TID 1411 measurement concept.
FINDING = codes.DCM.Finding
PROBABILITY = codes.DCM.Probability
# UCUM "no units": a probability is a ratio in [0, 1].
UNITY = hd.sr.CodedConcept("1", "UCUM", "no units")
SNOMED = "SCT"
NOT_FOR_DIAGNOSIS = "Research use only - NOT FOR DIAGNOSIS"
SERIES_DESCRIPTION = "AI findings - NOT FOR DIAGNOSIS"


@dataclass(frozen=True)
class Finding:
    """One label's result: its name, its SNOMED CT code and meaning, its probability."""

    label: str
    code: str
    meaning: str
    probability: float
    predicted: bool


def build_sr(findings: Sequence[Finding], algorithm: Algorithm, modality: str, sources: Sequence[Dataset],
             captures: Sequence[Dataset], series_uid: str, series_number: int,
             predecessor: Dataset | None = None, sop_instance_uid: str | None = None
             ) -> hd.sr.Comprehensive3DSR:
    """Build the SR; the first source gives patient and study (highdicom copies them).

    Raises
    ------
    ValueError
        When there are no findings, no sources, an unknown modality, or a probability outside [0, 1].
    """
    if not findings:
        raise ValueError("findings: at least one is required")
    if not sources:
        raise ValueError("sources: the SR needs the analysed images as evidence")
    if modality not in PROCEDURE_BY_MODALITY:
        raise ValueError(f"modality {modality!r}: expected one of {sorted(PROCEDURE_BY_MODALITY)}")
    for finding in findings:
        if not 0.0 <= finding.probability <= 1.0:
            raise ValueError(f"finding {finding.label}: probability {finding.probability} outside [0, 1]")
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name, version=algorithm.version, family=ALGORITHM_FAMILY,
        parameters=[NOT_FOR_DIAGNOSIS])  # TID 4019 (2022) has no manufacturer row: PixelMed flags it
    source_refs = [hd.sr.SourceImageForMeasurementGroup.from_source_image(s) for s in sources]
    groups = [_group(f, algorithm_id, source_refs) for f in findings]
    observer = hd.sr.ObserverContext(
        observer_type=OBSERVER_DEVICE,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid, name=algorithm.name, manufacturer_name=algorithm.manufacturer,
            model_name=f"{algorithm.name} {algorithm.version}"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE_BY_MODALITY[modality], imaging_measurements=groups,
        referenced_images=list(sources))
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, *captures], content=report, series_instance_uid=series_uid,
        series_number=series_number, sop_instance_uid=sop_instance_uid or generate_uid(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        previous_versions=[predecessor] if predecessor is not None else None,
        contributing_equipment=[algorithm.contributing_equipment()])
    copy_patient_study(sources[0], sr)
    sr.SeriesDescription = SERIES_DESCRIPTION
    sr.SoftwareVersions = algorithm.version
    sr.ManufacturerModelName = algorithm.name
    return sr


def _group(finding: Finding, algorithm_id: hd.sr.AlgorithmIdentification,
           source_refs: Sequence[hd.sr.SourceImageForMeasurementGroup]
           ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1411 for one label; the tracking UID makes the group citable across revisions."""
    label_code = hd.sr.CodedConcept(finding.code, SNOMED, finding.meaning)
    evaluations = [hd.sr.QualitativeEvaluation(FINDING, label_code)] if finding.predicted else None
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"AI {finding.label}"[:64]),
        finding_type=label_code, algorithm_id=algorithm_id,
        measurements=[hd.sr.Measurement(PROBABILITY, finding.probability, UNITY, algorithm_id=algorithm_id)],
        qualitative_evaluations=evaluations, source_images=list(source_refs))
