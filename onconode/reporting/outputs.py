"""The reporting stage: from a conclusion to every object that will leave the node, checked.

Input: the ``Conclusion``, the ``AnalysisResult`` it came from (key-slice pictures, heat maps,
analysed files), the study's files, the manifest, the SR being revised (if any) and the FHIR
destination. Output: ``Outputs``, the encoded bytes of each object, or an exception; nothing is
written and no state changes here: the worker records the outputs (``reporting/outbox.py``) and
alone moves the study on.

What is built, all from the one conclusion: a Secondary Capture per key slice (the picture for
viewers that show only images), the TID 1500 SR, a Segmentation of where the model looked, a Key
Object Selection of the key slices, and, with an EHR configured, the FHIR Bundle. Every object
passes ``checks`` before it is returned; copied patient and study values that do not parse are
left empty and named in ``notes`` (attribute and VR, never the value).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.uid import generate_uid

from onconode.conclusion import Conclusion
from onconode.config import FhirDestination
from onconode.fhir.report import (
    Destination,
    InstanceFacts,
    KeyImage,
    SeriesFacts,
    StudyFacts,
    build_bundle,
    fhir_datetime,
)
from onconode.inference.pipeline import AnalysisResult
from onconode.models import Manifest
from onconode.reporting import checks, overlay
from onconode.reporting.identity import sanitized
from onconode.reporting.kos import build_kos
from onconode.reporting.sc import build_sc, caption_lines
from onconode.reporting.seg import build_seg, saliency_mask
from onconode.reporting.sr import build_sr, outline, slices_for_groups
from onconode.selection.series import InstanceHeader

log = logging.getLogger(__name__)

# Series numbers of the node's own series: high, so that they sort after the modality's series.
SC_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
SEG_SERIES_NUMBER = 9903
KOS_SERIES_NUMBER = 9904
KIND_DICOM = "dicom"
KIND_FHIR = "fhir"
FHIR_FILE = "fhir.json"


@dataclass(frozen=True)
class Output:
    name: str          # file name in the report's outbox folder
    kind: str          # "dicom" or "fhir"
    object_uid: str    # SOP Instance UID; the SR's UID for the FHIR Bundle
    data: bytes


@dataclass(frozen=True)
class Outputs:
    study_uid: str
    sr_uid: str
    fingerprint: str               # what the report was built from (model file + study files)
    # In sending order: the SR first (it cites only the study's own images, already in the PACS, and
    # it is what a reader and the EHR wait for), then the captures, the segmentation, the KOS.
    files: tuple[Output, ...]
    notes: tuple[str, ...]


def fingerprint(manifest: Manifest, source_paths: Sequence[Path]) -> str:
    """What a report is built from: the model file and the set of source files."""
    digest = hashlib.sha256(f"{manifest.name}\0{manifest.version}\0{manifest.sha256}".encode())
    for path in sorted(str(p) for p in source_paths):
        digest.update(b"\0" + path.encode())
    return digest.hexdigest()


def read_header(path: Path) -> Dataset:
    """The header only: outputs take identity and references from it, never the pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True)


def encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def build_outputs(conclusion: Conclusion, result: AnalysisResult, study_paths: Sequence[Path], manifest: Manifest,
                  node_id: str, predecessor: Dataset | None = None, fhir: Destination | None = None,
                  created: datetime | None = None) -> Outputs:
    """Every output of one conclusion, built and checked (see the module docstring).

    Raises
    ------
    checks.OutputCheckError
        When an output breaks one of the node's rules.
    ValueError
        When the result and the conclusion do not fit (a key slice without its file, no slices).
    """
    created = created or datetime.now(UTC)
    notes: list[str] = []
    scanned = {h.sop_instance_uid: h for h in result.instances}
    # Only the slices whose header the outputs copy or cite are read: the key slices and the SR's
    # per-slice groups. Every other analysed slice is listed as SR evidence by its references alone.
    cited = dict.fromkeys([*(k.sop_instance_uid for k in result.key_slices),
                           *(s.sop_instance_uid for s in slices_for_groups(conclusion))])
    headers: dict[str, Dataset] = {}
    for uid in cited:
        if uid not in result.slice_paths:
            raise ValueError("a key slice, or a slice the SR cites, is not among the analysed files")
        clean, dropped = sanitized(read_header(result.slice_paths[uid]))
        headers[uid] = clean
        notes.extend(n for n in dropped if n not in notes)
    for uid in result.slice_paths:
        if uid not in headers:
            if uid not in scanned:
                raise ValueError("an analysed slice is not among the scanned instances")
            headers[uid] = reference(scanned[uid])
    scores = {s.index: s for s in conclusion.slices}
    key_headers = [headers[k.sop_instance_uid] for k in result.key_slices]
    files: list[Output] = []
    pictures = [overlay.render(k.image, k.heat_map, caption_lines(conclusion, scores[k.index]), k.body)
                for k in result.key_slices]

    sc_series = generate_uid()
    for n, (rgb, source) in enumerate(zip(pictures, key_headers), start=1):
        sc = build_sc(source, rgb, conclusion, sc_series, SC_SERIES_NUMBER, n, generate_uid(), created, node_id)
        data = encode(sc)
        checks.check_sc(sc, conclusion.study_uid, data)
        files.append(Output(f"sc-{n}.dcm", KIND_DICOM, str(sc.SOPInstanceUID), data))

    single_frame = all(k.frame is None for k in result.key_slices)
    masks = [saliency_mask(k.heat_map, k.body) for k in result.key_slices]
    if single_frame and any(m.any() for m in masks):
        seg = build_seg(conclusion, key_headers, masks, generate_uid(), generate_uid(), SEG_SERIES_NUMBER, created,
                        node_id)
        data = encode(seg)
        checks.check_derived(seg, conclusion.study_uid, checks.SEG_SOP_CLASS, data)
        files.append(Output("seg.dcm", KIND_DICOM, str(seg.SOPInstanceUID), data))
    elif not single_frame:
        notes.append("no segmentation: the key slices are frames of a multi-frame image")

    kos = build_kos(conclusion, key_headers, generate_uid(), generate_uid(), KOS_SERIES_NUMBER, created, node_id)
    data = encode(kos)
    checks.check_derived(kos, conclusion.study_uid, checks.KOS_SOP_CLASS, data)
    files.append(Output("kos.dcm", KIND_DICOM, str(kos.SOPInstanceUID), data))

    regions = {k.sop_instance_uid: region for k, m in zip(result.key_slices, masks)
               if (region := outline(m)) is not None}
    sr = build_sr(conclusion, list(headers.values()), generate_uid(), generate_uid(), SR_SERIES_NUMBER, created,
                  node_id, predecessor, regions)
    sr_bytes = encode(sr)
    checks.check_sr(sr, conclusion.study_uid, predecessor, sr_bytes)
    files.insert(0, Output("sr.dcm", KIND_DICOM, str(sr.SOPInstanceUID), sr_bytes))

    if fhir is not None:
        bundle = _bundle(conclusion, result, pictures, study_facts(result.instances, key_headers[0]),
                         str(sr.SOPInstanceUID), fhir, created)
        if bundle is not None:
            files.append(Output(FHIR_FILE, KIND_FHIR, str(sr.SOPInstanceUID), bundle))
        else:
            notes.append("no FHIR report: the study has no Patient ID")
    return Outputs(conclusion.study_uid, str(sr.SOPInstanceUID), fingerprint(manifest, study_paths), tuple(files),
                   tuple(notes))


def reference(header: InstanceHeader) -> Dataset:
    """An instance as a report lists it (study, series, SOP class and instance), from its scanned header."""
    ds = Dataset()
    ds.StudyInstanceUID = header.study_uid
    ds.SeriesInstanceUID = header.series_uid
    ds.SOPClassUID = header.sop_class_uid
    ds.SOPInstanceUID = header.sop_instance_uid
    return ds


def study_facts(instances: Sequence[InstanceHeader], source: Dataset) -> StudyFacts:
    """Identifiers and exam date from ``source`` (a sanitized header), and every series and instance
    of the study from the scan."""
    series: dict[str, list[InstanceHeader]] = {}
    for header in instances:
        series.setdefault(header.series_uid, []).append(header)
    facts = []
    for uid, items in sorted(series.items()):
        first = items[0]
        facts.append(SeriesFacts(uid, first.modality, first.series_number, first.series_description,
                                 tuple(InstanceFacts(h.sop_instance_uid, h.sop_class_uid, h.instance_number)
                                       for h in items)))
    started = fhir_datetime(str(source.get("StudyDate", "")), str(source.get("StudyTime", "")),
                            str(source.get("TimezoneOffsetFromUTC", "")))
    return StudyFacts(str(source.StudyInstanceUID), str(source.get("PatientID", "")), str(source.Modality),
                      str(source.get("AccessionNumber", "")) or None, started, tuple(facts))


def _bundle(conclusion: Conclusion, result: AnalysisResult, pictures: Sequence[np.ndarray], facts: StudyFacts,
            sr_uid: str, destination: Destination, created: datetime) -> bytes | None:
    if not facts.patient_id.strip():
        return None
    images = []
    scores = {s.index: s for s in conclusion.slices}
    for rank, (key, rgb) in enumerate(zip(result.key_slices, pictures), start=1):
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if ok:
            images.append(KeyImage(f"key image {rank}: slice {key.index + 1} of {conclusion.slices_total}, "
                                   f"probability {scores[key.index].probability:.2f} (per slice)", png.tobytes()))
    bundle = build_bundle(conclusion, facts, sr_uid, created, destination, images)
    return bundle.model_dump_json(exclude_none=True).encode()


def destination_for(settings: FhirDestination) -> Destination | None:
    """The FHIR destination of the configuration, or None when FHIR delivery is off."""
    if not settings.base_url or not settings.patient_system:
        return None
    return Destination(settings.patient_system, settings.dicomweb_url)
