"""The structured report of one conclusion: a TID 1500 Measurement Report in a Comprehensive 3D SR.

Input: the ``Conclusion`` and the headers (``pydicom.Dataset``) of every analysed slice, and
optionally the SR it revises. Output: a ``highdicom.sr.Comprehensive3DSR`` (PS3.3 A.35.13),
VerificationFlag UNVERIFIED.

Content (PS3.16), saying one thing:
- TID 1500, a device observer (TID 1004: the model's device UID, OncoNode as manufacturer), the
  procedure from CID 100, and the image library (TID 1600) describing the slices the groups below
  cite (every analysed slice is evidence, below; describing all of them in the library too made
  the SR several times larger and slower to build, check and send, for nothing a viewer shows);
- one measurement group (TID 1501) for the study: the finding the model looks for as the finding
  type and its study value (UCUM "1", derivation "Mean", inferred from the key slices' outlined
  regions; ``Conclusion.value_name`` says which probability it is, the study's or, without a
  verdict, the key slices' mean), with the threshold and the aggregation named in the algorithm's parameters
  (TID 4019). The inferred-from regions also let a viewer that shows only spatial measurements
  (OHIF) draw the study's value on the most suspicious slice;
- one group per slice for the key slices and the most suspicious other slices at or over the
  threshold (``MAX_SLICE_GROUPS`` in all; the key slices only for a model that states no verdict),
  named "per slice": on a key slice a planar ROI (TID 1410) outlining where the model looked, so a
  viewer draws the value on the image; on the others a group citing its image. The algorithm is
  identified once per group, on its measurement;
- TID 1500's Qualitative Evaluations container with the decision, one coded item "<finding> =
  Present" or "Absent", and a comment with the headline that reads "research use only, not for
  diagnosis", where every SR viewer shows the report's text. A model that states no verdict
  (``Decision.verdict``) gets the comment only, which says so.
Evidence (Current Requested Procedure Evidence) is the analysed slices only; OncoNode's own
outputs are never listed as evidence. A revision references the SR it replaces (PS3.3 C.17.2), and
the groups keep their tracking UIDs across revisions of the same study by the same model.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

import cv2
import highdicom as hd
import numpy as np
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
MEAN = codes.SCT.Mean
COMMENT = codes.DCM.Comment
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
UNITY = hd.sr.CodedConcept("1", "UCUM", "no units")
SERIES_DESCRIPTION = "AI findings - NOT FOR DIAGNOSIS"
# Slice groups: the key slices, then the most suspicious others at or over the threshold, at most
# this many in all. Each cited slice also gets an image library entry (about 200 data elements), so
# every group costs build, check and transfer time before the report reaches the PACS; ten is a
# list a reader goes through, and every slice's value stays in the result (API, ``analyze --json``).
MAX_SLICE_GROUPS = 10
_TRACKING = uuid.UUID("5d0e3c4a-7a55-4d0b-9e7a-2b61f4f0c1d3")


def _tracking_uid(conclusion: Conclusion, what: str) -> str:
    """Stable across revisions: the same study, model and slice give the same UID."""
    key = f"{conclusion.study_uid}/{conclusion.algorithm.device_uid}/{what}"
    return f"2.25.{uuid.uuid5(_TRACKING, key).int}"


def slices_for_groups(conclusion: Conclusion) -> list[SliceScore]:
    """Key slices plus the slices at or over the threshold, in volume order, at most MAX_SLICE_GROUPS.
    A model that states no verdict has no threshold to be over: its key slices only."""
    keys = {s.index for s in conclusion.key}
    over = [] if conclusion.positive is None else sorted(
        (s for s in conclusion.slices if s.index not in keys and s.probability >= conclusion.threshold),
        key=lambda s: -s.probability)
    chosen = list(conclusion.key) + over[:max(0, MAX_SLICE_GROUPS - len(conclusion.key))]
    return sorted(chosen, key=lambda s: s.index)


def outline(mask: np.ndarray) -> np.ndarray | None:
    """The largest region of a bool (H, W) mask as a closed polyline of (column, row) image points,
    simplified to within a pixel; None for an empty mask."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea)
    points = cv2.approxPolyDP(largest, 1.0, True).reshape(-1, 2).astype(float)
    if len(points) < 3:
        return None
    return np.vstack([points, points[:1]])


def build_sr(conclusion: Conclusion, sources: Sequence[Dataset], series_uid: str, sop_instance_uid: str,
             series_number: int, created: datetime, node_id: str, predecessor: Dataset | None = None,
             regions: Mapping[str, np.ndarray] | None = None) -> hd.sr.Comprehensive3DSR:
    """Build the SR; ``sources`` are the headers of the analysed slices (any order): full headers for
    the key slices and those ``slices_for_groups`` cites, the UIDs alone for the rest. ``regions``
    maps a key slice's SOP Instance UID to the outline (``outline``) of where the model looked on it.

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
    # The SR takes the patient and study from its first evidence, so that one is a key slice's full
    # header; the others may be references only (study, series, SOP class and instance UIDs).
    first = (conclusion.key or conclusion.slices)[0].sop_instance_uid
    analysed = [by_uid[uid] for uid in dict.fromkeys([first, *(s.sop_instance_uid for s in conclusion.slices)])]
    finding = hd.sr.CodedConcept(conclusion.finding.code, conclusion.finding.scheme, conclusion.finding.meaning)
    algorithm = conclusion.algorithm
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name, version=algorithm.version, family=ALGORITHM_FAMILY,
        parameters=[f"decision threshold {conclusion.threshold:.4g} on the study probability"
                    if conclusion.positive is not None else "no decision threshold: slices ranked only",
                    f"{conclusion.value_name}: {conclusion.method}"[:1024]])

    def refs(scores: Sequence[SliceScore]) -> list[hd.sr.SourceImageForMeasurementGroup]:
        return [hd.sr.SourceImageForMeasurementGroup.from_source_image(
            by_uid[s.sop_instance_uid], referenced_frame_numbers=[s.frame + 1] if s.frame is not None else None)
            for s in scores]

    study_group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_tracking_uid(conclusion, "study"), identifier=f"AI study result: {conclusion.finding.display}"[:64]),
        finding_type=finding, algorithm_id=algorithm_id,
        measurements=[hd.sr.Measurement(
            PROBABILITY, round(conclusion.probability, 6), UNITY, algorithm_id=algorithm_id, derivation=MEAN,
            referenced_coordinates=[
                hd.sr.CoordinatesForMeasurement(
                    hd.sr.GraphicTypeValues.POLYLINE, (regions or {})[k.sop_instance_uid],
                    hd.sr.SourceImageForRegion.from_source_image(by_uid[k.sop_instance_uid]))
                for k in conclusion.key if k.sop_instance_uid in (regions or {}) and k.frame is None] or None)],
        source_images=refs(conclusion.key))
    grouped = slices_for_groups(conclusion)
    slice_groups = [_slice_group(conclusion, s, finding, algorithm_id, by_uid[s.sop_instance_uid],
                                 (regions or {}).get(s.sop_instance_uid), refs([s]))
                    for s in grouped]
    cited = [by_uid[uid] for uid in dict.fromkeys(s.sop_instance_uid for s in grouped)]  # the key slices too
    observer = hd.sr.ObserverContext(
        observer_type=OBSERVER_DEVICE,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid, name=algorithm.name, manufacturer_name=algorithm.manufacturer,
            model_name=f"{algorithm.name} {algorithm.version}"[:64], serial_number=node_id[:64]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE_BY_MODALITY[conclusion.modality],
        # The key slices' outlined groups first: a viewer opens an SR on its first measurement, and
        # only those have a place on an image to show it.
        imaging_measurements=[*slice_groups, study_group], referenced_images=cited)
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


def _slice_group(conclusion: Conclusion, score: SliceScore, finding: hd.sr.CodedConcept,
                 algorithm_id: hd.sr.AlgorithmIdentification, source: Dataset, region: np.ndarray | None,
                 refs: list[hd.sr.SourceImageForMeasurementGroup]
                 ) -> hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """One slice's probability: a planar ROI (TID 1410) around where the model looked when there is
    an outline (viewers draw it with the value on the slice), else a group citing the image (TID 1501)."""
    tracking = hd.sr.TrackingIdentifier(
        uid=_tracking_uid(conclusion, f"slice/{score.sop_instance_uid}/{score.frame}"),
        identifier=f"AI per slice: slice {score.index + 1} of {conclusion.slices_total}"[:64])
    measurements = [hd.sr.Measurement(PROBABILITY, round(score.probability, 6), UNITY, algorithm_id=algorithm_id)]
    if region is not None and score.frame is None:
        image_region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=region,
                                         source_image=hd.sr.SourceImageForRegion.from_source_image(source))
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_region=image_region, finding_type=finding,
            measurements=measurements)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, finding_type=finding, measurements=measurements, source_images=refs)


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
    """TID 1500's Qualitative Evaluations: the decision, and the notice a reader sees with it. A model
    that states no verdict gets no present/absent code: only the comment, which says why."""
    items: list[hd.sr.ContentItem] = []
    if conclusion.positive is not None:
        items.append(hd.sr.CodeContentItem(finding, PRESENT if conclusion.positive else ABSENT,
                                           relationship_type="CONTAINS"))
    items.append(hd.sr.TextContentItem(COMMENT, f"{conclusion.headline()}. {NOT_FOR_DIAGNOSIS}"[:1024],
                                       relationship_type="CONTAINS"))
    container = hd.sr.ContainerContentItem(QUALITATIVE_EVALUATIONS, relationship_type="CONTAINS")
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container
