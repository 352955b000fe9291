"""A rehearsal of inference and reporting at start, on a synthetic series, so that the first real
study does not pay for first use.

Why: the first study a fresh process analyses and reports took about 0.6 s longer than the next
(2 cores): onnxruntime builds its session and sizes its memory arena on the first run; OpenCV,
highdicom (its module tables, the SR templates, the Segmentation encoder) and fhir.resources (each
R4B class's validator) build their caches on first call. A PACS sends one study and waits for the
SR, so that study is the one a person is waiting for.

What is rehearsed, with the code the worker runs: one batch of zeros through each installed model,
the manifest's preprocessing of a synthetic slice, and ``build_outputs`` (every SC, SEG, KOS, SR
and FHIR Bundle, with their checks) for a made-up conclusion on three synthetic slices written to a
temporary folder. Nothing is stored, recorded or sent, and a failure is logged, never raised: the
node then simply pays on its first study.

After the rehearsal the heap the start built (imported modules, model sessions, the libraries'
tables: about 350,000 objects) is frozen out of the cyclic garbage collector's view
(``gc.freeze``). Those objects live as long as the process, yet each full collection walked them
all: about 95 ms, and a report's build triggers one about every other study; frozen, it takes
about 15 ms. Objects that become garbage later are collected as before.
"""

from __future__ import annotations

import gc
import logging
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydicom import Dataset, FileMetaDataset, dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from onconode.conclusion import conclude
from onconode.fhir.report import Destination
from onconode.inference.pipeline import AnalysisResult, KeySlice, Outcome, SliceScore
from onconode.inference.preprocess import prepare_slice, series_scaling
from onconode.inference.runner import RunnerPool
from onconode.models import RegisteredModel
from onconode.reporting.outputs import build_outputs
from onconode.selection import series
from onconode.selection.region import body_outline

log = logging.getLogger(__name__)

SIZE = 128          # pixels a side of a synthetic slice
SLICES = 3
SPACING_MM = 2.0


def rehearse(registry: Mapping[str, RegisteredModel], runners: RunnerPool,
             fhir: Destination | None = None) -> None:
    """Rehearse every installed model and the reporting of each modality they read (see the module
    docstring); logs how long it took, or why it failed."""
    started = time.perf_counter()
    reported: set[str] = set()
    for model in registry.values():
        try:
            _rehearse_model(model, runners)
            if model.manifest.modality not in reported:
                _rehearse_reporting(model, fhir)
                reported.add(model.manifest.modality)
        except Exception:  # a rehearsal must never take the node down; the real study reports the error
            log.exception("event=rehearsal_failed model=%s", model.manifest.name)
    log.info("event=rehearsed models=%d ms=%.0f", len(registry), (time.perf_counter() - started) * 1000)


def warm_up(registry: Mapping[str, RegisteredModel], runners: RunnerPool, fhir: Destination | None = None) -> None:
    """What a node's start does before its first study: ``rehearse``, then freeze the heap it built."""
    rehearse(registry, runners, fhir)
    gc.collect()
    gc.freeze()
    log.info("event=heap_frozen objects=%d", gc.get_freeze_count())


def _rehearse_model(model: RegisteredModel, runners: RunnerPool) -> None:
    manifest = model.manifest
    values = _slice_values(manifest.modality, 0)
    scaling = series_scaling([values], manifest.preprocess)
    prepare_slice(values, manifest.preprocess, manifest.input.size, manifest.input.channels, manifest.modality,
                  scaling)
    runners.warm(model)


def _slice_values(modality: str, index: int) -> np.ndarray:
    """A slice in modality units: an elliptic body with two dark (CT: aerated) lobes."""
    y, x = np.mgrid[:SIZE, :SIZE] / (SIZE / 2) - 1
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 < 1
    lobes = ((np.abs(x) - 0.4) / 0.3) ** 2 + (y / 0.5) ** 2 < 1
    if modality == "CT":
        values = np.where(body, np.where(lobes, -850.0, 40.0), -1000.0)
    else:
        values = np.where(body, np.where(lobes, 300.0, 800.0), 0.0)
    return (values + index).astype(np.float32)


def _write_series(folder: Path, modality: str) -> list[Path]:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for index in range(SLICES):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = modality
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "REHEARSAL^ONCONODE", "REHEARSAL", "", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "", "1"
        ds.ReferringPhysicianName, ds.Manufacturer = "", "OncoNode rehearsal"
        ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, index * SPACING_MM]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], SPACING_MM
        ds.Rows = ds.Columns = SIZE
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        offset = 1024 if modality == "CT" else 0
        if modality == "CT":
            ds.RescaleIntercept, ds.RescaleSlope = -offset, 1
        ds.PixelData = (_slice_values(modality, index) + offset).astype(np.int16).tobytes()
        path = folder / f"{index}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _rehearse_reporting(model: RegisteredModel, fhir: Destination | None) -> None:
    manifest = model.manifest
    with tempfile.TemporaryDirectory(prefix="onconode-rehearsal-") as folder:
        paths = _write_series(Path(folder), manifest.modality)
        headers = [dcmread(p, stop_before_pixels=True) for p in paths]
        labels = tuple(label.name for label in manifest.labels)
        positive = manifest.decision.positive_labels[0]
        probabilities = tuple(0.9 if name == positive else 0.1 / max(1, len(labels) - 1) for name in labels)
        scores = tuple(SliceScore(i, str(h.SOPInstanceUID), None, 0.9 - 0.1 * i) for i, h in enumerate(headers))
        y, x = np.mgrid[:SIZE, :SIZE] / SIZE
        heat = np.exp(-((x - 0.3) ** 2 + (y - 0.5) ** 2) / 0.01).astype(np.float32)
        keys = []
        for i, header in enumerate(headers[:2]):
            values = _slice_values(manifest.modality, i)
            image = (values - values.min()) / max(1.0, float(np.ptp(values)))
            keys.append(KeySlice(str(header.SOPInstanceUID), None, i, (0.0, 0.0, i * SPACING_MM), probabilities,
                                 scores[i].probability, heat, image.astype(np.float32),
                                 body_outline(values, manifest.modality)))
        result = AnalysisResult(
            str(headers[0].StudyInstanceUID), Outcome.ANALYSED, "rehearsal", (), model=manifest.name,
            model_version=manifest.version, series_uid=str(headers[0].SeriesInstanceUID), labels=labels,
            probabilities=probabilities, predicted_label=positive, positive=True, positive_probability=0.9,
            threshold=manifest.decision.threshold, slices_total=SLICES, slices_analysed=tuple(range(SLICES)),
            key_slices=tuple(keys), slice_scores=scores,
            slice_paths={str(h.SOPInstanceUID): p for h, p in zip(headers, paths)},
            instances=tuple(series.read_header(p) for p in paths))
        build_outputs(conclude(result, manifest), result, paths, manifest, "rehearsal", None,
                      fhir or Destination("urn:onconode:rehearsal"), datetime.now(UTC))
