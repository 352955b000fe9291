"""The outbox: build a study's results, check them, write them durably, record their deliveries.

Input: ``report(study_uid, result, source_paths)`` from the worker (an ``AnalysisResult`` and the
study's stored files).
Output: ``<outbox>/<StudyUID>/<SR SOP Instance UID>/`` holding ``sc-<n>.dcm``, ``sr.dcm`` and
``fhir.json``, one report row and one delivery row per destination x object, all recorded before
any network send. Nothing is recorded for delivery unless it passed ``checks.check_*``.

Files are written temp → fsync → rename → fsync of the folder (the same path as inbound storage),
and the rows are committed only after every file is durable: a crash in between leaves an
unrecorded folder, which the next analysis of the study replaces.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.uid import generate_uid

from onconode.config import Caller, DestinationSettings
from onconode.delivery import checks
from onconode.durable import fsync_folder, write_file
from onconode.events import Event, log_event
from onconode.fhir.report import StudyFacts, build_bundle
from onconode.inference.models import Manifest, RegisteredModel
from onconode.inference.pipeline import AnalysisResult, Outcome
from onconode.reporting import overlay
from onconode.reporting.sc import Algorithm, build_sc
from onconode.reporting.sr import Finding, build_sr
from onconode.state import NewDelivery, NewReport, StateDB, StudyState

log = logging.getLogger(__name__)

SR_FILE = "sr.dcm"
FHIR_FILE = "fhir.json"
SC_PATTERN = "sc-{n}.dcm"
# Series numbers of the node's own series: high, so that they sort after the modality's series.
SC_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
KIND_DICOM = "dicom"
KIND_FHIR = "fhir"


def write_durable(files: Sequence[tuple[Path, bytes]], root: Path) -> None:
    """Write each ``(path, data)`` by temp → fsync → rename, then fsync each folder once.

    Raises
    ------
    OSError
        For any I/O failure; no temporary file is left behind.
    """
    folders = []
    for path, data in files:
        write_file(path, data, root, sync_folder=False)
        if path.parent not in folders:
            folders.append(path.parent)
    for folder in folders:
        fsync_folder(folder)


@dataclass(frozen=True)
class Prepared:
    """What ``Reporter`` wrote for one study."""

    report_id: int
    folder: Path
    sr_uid: str
    captures: tuple[Path, ...]
    deliveries: int


class Reporter:
    """The worker's ``report`` hook: outputs into the outbox, one delivery row per destination x object."""

    def __init__(self, db: StateDB, registry: Mapping[str, RegisteredModel], outbox: Path,
                 destinations: DestinationSettings, callers: Sequence[Caller]) -> None:
        self.db = db
        self.registry = registry
        self.outbox = outbox
        self.destinations = destinations
        self.callers = list(callers)
        outbox.mkdir(parents=True, exist_ok=True)

    def __call__(self, study_uid: str, result: AnalysisResult, source_paths: Sequence[Path]) -> None:
        """The worker's hook. An output that fails the checks, or an outbox that cannot be written,
        fails the study with the reason (the worker's REPORTED transition then finds it moved on)."""
        try:
            self.prepare(study_uid, result, source_paths)
        except (checks.OutputCheckError, ValueError, OSError) as err:
            log_event(log, Event.REPORT_PREPARED, logging.WARNING, study=study_uid, status="failed",
                      reason=str(err).splitlines()[0])
            self.db.transition(study_uid, StudyState.FAILED, f"reporting: {str(err).splitlines()[0]}",
                               expect=[StudyState.ANALYSING])

    def prepare(self, study_uid: str, result: AnalysisResult, source_paths: Sequence[Path]) -> Prepared | None:
        """Build, check, write and record the outputs; ``None`` when there is nothing to report
        (no model applied) or this exact result was already recorded (a resumed analysis).

        Raises
        ------
        checks.OutputCheckError
            When an output fails the project's own checks: nothing is recorded.
        ValueError
            When the result names a model that is not in the registry.
        """
        if result.outcome != Outcome.ANALYSED or not result.key_slices:
            return None
        model = self.registry.get(result.model or "")
        if model is None:
            raise ValueError(f"result names model {result.model!r}, which is not in the registry")
        manifest = model.manifest
        fingerprint = _fingerprint(manifest, source_paths)
        previous = self.db.latest_report(study_uid)
        if previous is not None and previous.fingerprint == fingerprint:
            log_event(log, Event.REPORT_PREPARED, study=study_uid, sr=previous.sr_sop_uid, status="unchanged")
            return None
        algorithm = Algorithm.from_model(manifest.name, manifest.version, manifest.sha256)
        by_uid = {p.stem: p for p in source_paths}
        key_sources = [_read(by_uid[k.sop_instance_uid] if k.sop_instance_uid in by_uid
                             else _find(source_paths, k.sop_instance_uid)) for k in result.key_slices]
        findings = findings_of(result, manifest)
        captures = _captures(result, manifest, findings, key_sources, algorithm)
        predecessor = _read(previous.sr_path) if previous is not None and previous.sr_path.is_file() else None
        sr = build_sr(findings, algorithm, key_sources[0].Modality, key_sources, captures, generate_uid(),
                      SR_SERIES_NUMBER, predecessor=predecessor)
        # Encoded once: the checks re-read these bytes, and these bytes are what the outbox holds.
        encoded = [_encode(c) for c in captures]
        for capture, data in zip(captures, encoded):
            checks.check_sc(capture, study_uid, data)
        sr_bytes = _encode(sr)
        checks.check_sr(sr, study_uid, predecessor, sr_bytes)
        bundle_json = self._bundle(study_uid, key_sources[0], findings, algorithm, sr.SOPInstanceUID)
        folder = self.outbox / study_uid / sr.SOPInstanceUID
        sc_paths = [folder / SC_PATTERN.format(n=n) for n in range(1, len(captures) + 1)]
        sr_path = folder / SR_FILE
        files = [*zip(sc_paths, encoded), (sr_path, sr_bytes)]
        objects = [*zip(sc_paths, (c.SOPInstanceUID for c in captures)), (sr_path, sr.SOPInstanceUID)]
        deliveries = [NewDelivery(destination, KIND_DICOM, seq, path, uid)
                      for destination in self.dicom_destinations(study_uid)
                      for seq, (path, uid) in enumerate(objects)]
        if bundle_json is not None:
            files.append((folder / FHIR_FILE, bundle_json))
            deliveries.append(NewDelivery(self.destinations.fhir.key, KIND_FHIR, 0, folder / FHIR_FILE,
                                          sr.SOPInstanceUID))
        write_durable(files, self.outbox)
        report_id = self.db.record_report(
            NewReport(study_uid, folder, sr.SOPInstanceUID, sr_path, fingerprint), deliveries)
        log_event(log, Event.REPORT_PREPARED, study=study_uid, sr=sr.SOPInstanceUID, captures=len(captures),
                  deliveries=len(deliveries), revision=previous is not None)
        return Prepared(report_id, folder, sr.SOPInstanceUID, tuple(sc_paths), len(deliveries))

    def _bundle(self, study_uid: str, source: Dataset, findings: Sequence[Finding], algorithm: Algorithm,
                sr_uid: str) -> bytes | None:
        """The FHIR Bundle as JSON, or None without a FHIR destination or a Patient ID."""
        fhir = self.destinations.fhir
        if not fhir.base_url:
            return None
        facts = StudyFacts(study_uid, str(source.get("PatientID", "")), source.Modality,
                           str(source.get("AccessionNumber", "")) or None)
        try:
            bundle = build_bundle(facts, findings, algorithm, sr_uid, datetime.now(UTC), fhir.patient_system)
        except ValueError as err:
            log_event(log, Event.REPORT_PREPARED, logging.WARNING, study=study_uid, status="no_fhir",
                      reason=str(err).splitlines()[0])
            return None
        return bundle.model_dump_json(exclude_none=True).encode()

    def dicom_destinations(self, study_uid: str) -> list[str]:
        """Configured DICOM destinations, else the sender when it is a caller with host and port."""
        if self.destinations.dicom:
            return [d.key for d in self.destinations.dicom]
        study = self.db.study(study_uid)
        if study is None or study.calling_ae is None:
            return []
        for caller in self.callers:
            if caller.ae_title == study.calling_ae and caller.port is not None:
                host = caller.host or study.calling_host
                if host:
                    return [f"{caller.ae_title}@{host}:{caller.port}"]
        return []


def warm_up() -> None:
    """Load what highdicom and fhir.resources read on first use (their IOD module table, the R4B
    model classes: about 1-2 s on 2 cores), so that the first study's reporting does not pay it.
    ``onconode serve`` calls this in a background thread at start."""
    from highdicom._standard_utils import get_module_attribute_map  # the cached JSON table

    get_module_attribute_map()
    build_bundle(StudyFacts("1.2.3", "warm-up", "CT"), [Finding("x", "1", "x", 0.5, True)],
                 Algorithm("x", "0", "1.2.3"), "1.2.3.4", datetime.now(UTC), "urn:oid:1.2.3")


def _captures(result: AnalysisResult, manifest: Manifest, findings: Sequence[Finding],
              sources: Sequence[Dataset], algorithm: Algorithm) -> list[Dataset]:
    """One SC per key slice, all in one new series, captioned with the predicted label."""
    predicted = next(f for f in findings if f.predicted)
    index = manifest_index(manifest, predicted.label)
    series_uid = generate_uid()
    captures: list[Dataset] = []
    for n, (key, source) in enumerate(zip(result.key_slices, sources), start=1):
        lines = overlay.caption_lines(manifest.name, manifest.version, predicted.label, key.probabilities[index])
        rgb = overlay.render(key.image, key.heat_map, lines)
        captures.append(build_sc(source, rgb, algorithm, series_uid, SC_SERIES_NUMBER, n))
    return captures


def findings_of(result: AnalysisResult, manifest: Manifest) -> list[Finding]:
    """One ``Finding`` per manifest label with its study-level probability."""
    return [Finding(label.name, label.snomed.code, label.snomed.display,
                    float(result.probabilities[i]), label.name == result.predicted_label)
            for i, label in enumerate(manifest.labels)]


def manifest_index(manifest: Manifest, label: str) -> int:
    return [item.name for item in manifest.labels].index(label)


def _fingerprint(manifest: Manifest, source_paths: Sequence[Path]) -> str:
    """What a report was built from: the model file and the set of source files."""
    digest = hashlib.sha256(f"{manifest.name}\0{manifest.version}\0{manifest.sha256}".encode())
    for path in sorted(str(p) for p in source_paths):
        digest.update(b"\0" + path.encode())
    return digest.hexdigest()


def _read(path: Path) -> Dataset:
    """The header only: SC and SR take identity and references from it, never the pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True)


def _find(paths: Sequence[Path], sop_instance_uid: str) -> Path:
    for path in paths:
        meta = pydicom.filereader.read_file_meta_info(path)
        if str(meta.get("MediaStorageSOPInstanceUID", "")) == sop_instance_uid:
            return path
    raise ValueError(f"key slice {sop_instance_uid} is not among the study's files")


def _encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
