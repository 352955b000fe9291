"""The outbox: a report's outputs on disk, durably, and recorded for delivery in one transaction
with the study's move to REPORTED.

Input: ``Outputs`` from ``reporting/outputs.py``. Output: ``<outbox>/<StudyUID>/<SR UID>/`` holding
every file, one report row and one delivery row per destination x object, or nothing at all.

Files are written temp → fsync → rename → fsync of the folder (the same path as inbound storage),
and the rows are committed only after every file is durable: a crash in between leaves an
unrecorded folder, which the next analysis of the study replaces. The rows go in only while the
study is still being analysed (``StateDB.record_report``): if instances arrived meanwhile, the
folder is removed and nothing is delivered, since it describes a study that no longer exists.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from onconode.config import Caller, DestinationSettings
from onconode.durable import fsync_folder, write_file
from onconode.events import Event, log_event
from onconode.reporting.outputs import KIND_DICOM, KIND_FHIR, Outputs
from onconode.state import NewDelivery, NewReport, StateDB

log = logging.getLogger(__name__)

SR_FILE = "sr.dcm"


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
    """What the outbox recorded for one study."""

    report_id: int
    folder: Path
    sr_uid: str
    paths: tuple[Path, ...]
    deliveries: int

    @property
    def captures(self) -> tuple[Path, ...]:
        """The Secondary Captures, one per key slice."""
        return tuple(p for p in self.paths if p.name.startswith("sc-"))

    @property
    def dicom(self) -> tuple[Path, ...]:
        """Every DICOM object, in sending order (the SR first)."""
        return tuple(p for p in self.paths if p.suffix == ".dcm")


def dicom_destinations(destinations: DestinationSettings, callers: Sequence[Caller], calling_ae: str | None,
                       calling_host: str | None) -> list[str]:
    """Configured DICOM destinations, else the sender when it is a caller with host and port."""
    if destinations.dicom:
        return [d.key for d in destinations.dicom]
    if calling_ae is None:
        return []
    for caller in callers:
        if caller.ae_title == calling_ae and caller.port is not None:
            host = caller.host or calling_host
            if host:
                return [f"{caller.ae_title}@{host}:{caller.port}"]
    return []


class Outbox:
    def __init__(self, db: StateDB, root: Path, destinations: DestinationSettings, callers: Sequence[Caller]) -> None:
        self.db = db
        self.root = root
        self.destinations = destinations
        self.callers = list(callers)
        root.mkdir(parents=True, exist_ok=True)

    def unchanged(self, outputs_fingerprint: str, study_uid: str) -> bool:
        """Whether the newest recorded report was built from the same model and files."""
        previous = self.db.latest_report(study_uid)
        return previous is not None and previous.fingerprint == outputs_fingerprint

    def record(self, outputs: Outputs, reported: str) -> Prepared | None:
        """Write the files and record them with the REPORTED transition; None when the study moved
        on while it was analysed (see the module docstring).

        Raises
        ------
        OSError
            When the outbox cannot be written; nothing is recorded.
        """
        folder = self.root / outputs.study_uid / outputs.sr_uid
        paths = [folder / f.name for f in outputs.files]
        study = self.db.study(outputs.study_uid)
        dicom = dicom_destinations(self.destinations, self.callers, study.calling_ae if study else None,
                                   study.calling_host if study else None)
        dicom_files = [(p, f) for p, f in zip(paths, outputs.files) if f.kind == KIND_DICOM]
        deliveries = [NewDelivery(destination, KIND_DICOM, seq, path, f.object_uid)
                      for destination in dicom for seq, (path, f) in enumerate(dicom_files)]
        deliveries += [NewDelivery(self.destinations.fhir.key, KIND_FHIR, 0, p, f.object_uid)
                       for p, f in zip(paths, outputs.files) if f.kind == KIND_FHIR]
        write_durable([(p, f.data) for p, f in zip(paths, outputs.files)], self.root)
        report = NewReport(outputs.study_uid, folder, outputs.sr_uid, folder / SR_FILE, outputs.fingerprint)
        report_id = self.db.record_report(report, deliveries, reported=reported)
        if report_id is None:
            shutil.rmtree(folder, ignore_errors=True)
            log_event(log, Event.REPORT_PREPARED, study=outputs.study_uid, status="discarded",
                      reason="instances arrived during the analysis")
            return None
        # The notes name attributes left empty or objects left out, never a value.
        log_event(log, Event.REPORT_PREPARED, study=outputs.study_uid, sr=outputs.sr_uid, files=len(paths),
                  deliveries=len(deliveries), notes="; ".join(outputs.notes) or None)
        return Prepared(report_id, folder, outputs.sr_uid, tuple(paths), len(deliveries))
