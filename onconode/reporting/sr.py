"""The structured report of one conclusion: a TID 1500 Measurement Report in a Comprehensive 3D SR.

Input: the ``Conclusion`` and the headers (``pydicom.Dataset``) of every analysed slice, and
optionally the SR it revises. Output: a ``highdicom.sr.Comprehensive3DSR`` (PS3.3 A.35.13),
VerificationFlag UNVERIFIED.

Content (PS3.16), saying one thing:
- TID 1500, a device observer (TID 1004: the model's device UID, OncoNode as manufacturer), the
  procedure from CID 100, and the image library (TID 1600) listing every analysed slice;
- one measurement group (TID 1501) for the study: the finding the model looks for as the finding
  type and its study probability (UCUM "1"), with the threshold and the aggregation named in the
  algorithm's parameters (TID 4019);
- one group per slice for the key slices and every slice at or over the threshold, named "per
  slice", each referencing its image;
- TID 1500's Qualitative Evaluations container with the decision, one coded item "<finding> =
  Present" or "Absent", and a comment with the headline that reads "research use only, not for
  diagnosis", where every SR viewer shows the report's text.
Evidence (Current Requested Procedure Evidence) is the analysed slices only; OncoNode's own
outputs are never listed as evidence. A revision references the SR it replaces (PS3.3 C.17.2), and
the groups keep their tracking UIDs across revisions of the same study by the same model.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes

from onconode.conclusion import NOT_FOR_DIAGNOSIS, Conclusion
from onconode.inference.pipeline import SliceScore
from onconode.reporting.equipment import contributing, stamp
from onconode.reporting.identity import copy_patient_study

# CID 100 Quantitative Diagnostic Imaging Procedures, by the modality of the analysed series.
PROCEDURE_BY_MODALITY = {"CT": codes.cid100.CTUnspecifiedBodyRegion, "MR": codes.cid100.MRIUnspecifiedBodyRegion}
OBSERVER_DEVICE = codes.DCM.Device
ALGORITHM_FAMILY = codes.DCM.ArtificialIntelligence
PROBABILITY = codes.DCM.Probability
PRESENT, ABSENT = codes.SCT.Present, codes.SCT.Absent
COMMENT = codes.DCM.Comment
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
UNITY = hd.sr.CodedConcept("1", "UCUM", "no units")
SERIES_DESCRIPTION = "AI findings - NOT FOR DIAGNOSIS"
# Slice groups beyond the key slices: those at or over the threshold, at most this many in all.
MAX_SLICE_GROUPS = 20
_TRACKING = uuid.UUID("5d0e3c4a-7a55-4d0b-9e7a-2b61f4f0c1d3")


def _tracking_uid(conclusion: Conclusion, what: str) -> str:
    """Stable across revisions: the same study, model and slice give the same UID."""
    key = f"{conclusion.study_uid}/{conclusion.algorithm.device_uid}/{what}"
    return f"2.25.{uuid.uuid5(_TRACKING, key).int}"


def slices_for_groups(conclusion: Conclusion) -> list[SliceScore]:
    """Key slices plus the slices at or over the threshold, in volume order, at most MAX_SLICE_GROUPS."""
    keys = {s.index for s in conclusion.key}
    over = sorted((s for s in conclusion.slices if s.index not in keys and s.probability >= conclusion.threshold),
                  key=lambda s: -s.probability)
    chosen = list(conclusion.key) + over[:max(0, MAX_SLICE_GROUPS - len(conclusion.key))]
    return sorted(chosen, key=lambda s: s.index)


def build_sr(conclusion: Conclusion, sources: Sequence[Dataset], series_uid: str, sop_instance_uid: str,
             series_number: int, created: datetime, node_id: str, predecessor: Dataset | None = None
             ) -> hd.sr.Comprehensive3DSR:
    """Build the SR; ``sources`` are the headers of the analysed slices (any order).

    Raises
    ------
    ValueError
        When a scored slice has no header among ``sources``, or the modality is not CT or MR.
    """
    if conclusion.modality not in PROCEDURE_BY_MODALITY:
        raise ValueError(f"modality {conclusion.modality!r}: expected one of {sorted(PROCEDURE_BY_MODALITY)}")
    by_uid = {str(s.SOPInstanceUID): s for s in sources}
    missing = [s.sop_instance_uid for s in conclusion.slices if s.sop_instance_uid not in by_uid]
    if missing:
        raise ValueError(f"{len(missing)} analysed slices have no header among the sources")
    analysed = [by_uid[uid] for uid in dict.fromkeys(s.sop_instance_uid for s in conclusion.slices)]
    finding = hd.sr.CodedConcept(conclusion.finding.code, conclusion.finding.scheme, conclusion.finding.meaning)
    algorithm = conclusion.algorithm
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name, version=algorithm.version, family=ALGORITHM_FAMILY,
        parameters=[f"decision threshold {conclusion.threshold:.4g} on the study probability",
                    f"study probability: {conclusion.method}"[:1024]])

    def refs(scores: Sequence[SliceScore]) -> list[hd.sr.SourceImageForMeasurementGroup]:
        return [hd.sr.SourceImageForMeasurementGroup.from_source_image(
            by_uid[s.sop_instance_uid], referenced_frame_numbers=[s.frame + 1] if s.frame is not None else None)
            for s in scores]

    study_group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_tracking_uid(conclusion, "study"), identifier=f"AI study result: {conclusion.finding.display}"[:64]),
        finding_type=finding, algorithm_id=algorithm_id,
        measurements=[hd.sr.Measurement(PROBABILITY, round(conclusion.probability, 6), UNITY,
                                        algorithm_id=algorithm_id)],
        source_images=refs(conclusion.key))
    slice_groups = [hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_tracking_uid(conclusion, f"slice/{s.sop_instance_uid}/{s.frame}"),
            identifier=f"AI per slice: slice {s.index + 1} of {conclusion.slices_total}"[:64]),
        finding_type=finding, algorithm_id=algorithm_id,
        measurements=[hd.sr.Measurement(PROBABILITY, round(s.probability, 6), UNITY, algorithm_id=algorithm_id)],
        source_images=refs([s])) for s in slices_for_groups(conclusion)]
    observer = hd.sr.ObserverContext(
        observer_type=OBSERVER_DEVICE,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid, name=algorithm.name, manufacturer_name=algorithm.manufacturer,
            model_name=f"{algorithm.name} {algorithm.version}"[:64], serial_number=node_id[:64]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE_BY_MODALITY[conclusion.modality],
        imaging_measurements=[study_group, *slice_groups], referenced_images=analysed)
    _tid1604_row_order(report[0])
    report[0].ContentSequence.append(_qualitative_evaluations(conclusion, finding))
    sr = hd.sr.Comprehensive3DSR(
        evidence=analysed, content=report, series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_instance_uid, instance_number=1, is_complete=True, is_final=False,
        is_verified=False, previous_versions=[predecessor] if predecessor is not None else None,
        contributing_equipment=[contributing(algorithm)])
    copy_patient_study(analysed[0], sr)
    stamp(sr, algorithm, node_id, created)
    sr.SeriesDescription = SERIES_DESCRIPTION
    return sr


SPACING_BETWEEN_SLICES, SLICE_THICKNESS = "112226", "112225"


def _tid1604_row_order(root: Dataset) -> None:
    """Put "Spacing between slices" before "Slice Thickness" in each image library entry, as TID 1604
    orders its rows (highdicom 0.28 appends it last; PixelMed's content-item-order check flags it)."""
    for item in root.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue != "111028":  # Image Library
            continue
        for group in item.get("ContentSequence", []):
            for entry in group.get("ContentSequence", []):
                descriptors = entry.get("ContentSequence", [])
                codes_ = [d.ConceptNameCodeSequence[0].CodeValue for d in descriptors]
                if SPACING_BETWEEN_SLICES in codes_ and SLICE_THICKNESS in codes_:
                    spacing = descriptors.pop(codes_.index(SPACING_BETWEEN_SLICES))
                    at = [d.ConceptNameCodeSequence[0].CodeValue for d in descriptors].index(SLICE_THICKNESS)
                    descriptors.insert(at, spacing)


def _qualitative_evaluations(conclusion: Conclusion, finding: hd.sr.CodedConcept) -> hd.sr.ContainerContentItem:
    """TID 1500's Qualitative Evaluations: the decision, and the notice a reader sees with it."""
    container = hd.sr.ContainerContentItem(QUALITATIVE_EVALUATIONS, relationship_type="CONTAINS")
    container.ContentSequence = hd.sr.ContentSequence([
        hd.sr.CodeContentItem(finding, PRESENT if conclusion.positive else ABSENT, relationship_type="CONTAINS"),
        hd.sr.TextContentItem(COMMENT, f"{conclusion.headline()}. {NOT_FOR_DIAGNOSIS}"[:1024],
                              relationship_type="CONTAINS"),
    ])
    return container
