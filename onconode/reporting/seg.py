"""Where the model looked, as a DICOM Segmentation a viewer draws on the source series.

Input: the ``Conclusion``, the key slices' Grad-CAM maps and body outlines, and the headers of
those slices. Output: a binary ``highdicom.seg.Segmentation`` (PS3.3 A.51) with one segment,
"AI saliency", on the source's Frame of Reference and pixel grid, one frame per key slice.

The segment is the heat map at or above half its maximum, inside the body: it says where the
evidence for the model's answer lies, and it is labelled as a saliency region (DCM 130404), never
as a lesion outline, because Grad-CAM is not a segmentation of the finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes

from onconode.algorithm import MANUFACTURER, SOFTWARE
from onconode.conclusion import Conclusion
from onconode.reporting.equipment import contributing, stamp
from onconode.reporting.identity import copy_patient_study

SERIES_DESCRIPTION = "AI saliency - NOT FOR DIAGNOSIS"
SEGMENT_LABEL = "AI saliency (Grad-CAM) - not a lesion outline"
SALIENCY = codes.DCM.Saliency
CATEGORY = codes.SCT.SpatialAndRelationalConcept
# The part of the map drawn: at or above this fraction of its maximum.
LEVEL = 0.5


def saliency_mask(heat_map: np.ndarray, body: np.ndarray) -> np.ndarray:
    """bool (H, W): the heat map at or above ``LEVEL`` of its maximum, inside the body."""
    peak = float(heat_map.max()) if heat_map.size else 0.0
    if peak <= 0:
        return np.zeros(heat_map.shape, bool)
    return (heat_map >= LEVEL * peak) & body


def build_seg(conclusion: Conclusion, sources: Sequence[Dataset], masks: Sequence[np.ndarray], series_uid: str,
              sop_instance_uid: str, series_number: int, created: datetime, node_id: str
              ) -> hd.seg.Segmentation:
    """One frame per source slice (single-frame images of one Frame of Reference).

    Raises
    ------
    ValueError
        When sources and masks differ in number or shape, or every mask is empty.
    """
    if len(sources) != len(masks) or not sources:
        raise ValueError(f"{len(sources)} source slices for {len(masks)} masks")
    stack = np.stack([m.astype(bool) for m in masks])
    if not stack.any():
        raise ValueError("every saliency mask is empty")
    algorithm = conclusion.algorithm
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label=SEGMENT_LABEL, segmented_property_category=CATEGORY,
        segmented_property_type=SALIENCY, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.name, family=codes.cid7162.ArtificialIntelligence, version=algorithm.version))
    seg = hd.seg.Segmentation(
        source_images=list(sources), pixel_array=stack, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_instance_uid, instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER, software_versions=SOFTWARE, device_serial_number=node_id[:64],
        content_label="AI_SALIENCY", content_description=f"Where {algorithm.name} looked; not for diagnosis"[:64],
        contributing_equipment=[contributing(algorithm)], omit_empty_frames=False)
    copy_patient_study(sources[0], seg)
    stamp(seg, algorithm, node_id, created)
    seg.SeriesDescription = SERIES_DESCRIPTION
    return seg
