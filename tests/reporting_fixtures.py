"""Fixtures shared by tests/reporting, tests/fhir, tests/delivery and tests/e2e: a real analysis of
real series with the tiny test models, and an outbox prepared from it in a fresh database."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
import pytest

from onconode.conclusion import Conclusion, conclude
from onconode.config import Caller, DestinationSettings
from onconode.inference.pipeline import AnalysisResult, analyze_study
from onconode.models import Calibration, Manifest, RegisteredModel
from onconode.reporting.outbox import Outbox, Prepared
from onconode.reporting.outputs import build_outputs, destination_for, read_header
from onconode.state import ReceivedInstance, StateDB, StudyState
from onconode.values import InstanceIdentity
from tests.inference.conftest import copy_series, dicom_dir, models_dir, registry, rules  # noqa: F401  (fixtures)

CT_SERIES = "lung-pet-ct-dx-a0002-ct"
MR_SERIES = "brain-tumor-progression-pgbm-001-t1post"


@pytest.fixture(scope="session")
def ct_files(dicom_dir: Path) -> list[Path]:  # noqa: F811
    return sorted((dicom_dir / CT_SERIES).glob("*.dcm"))


@pytest.fixture(scope="session")
def ct_result(ct_files: list[Path], registry: dict[str, RegisteredModel], rules) -> AnalysisResult:  # noqa: F811
    return analyze_study(ct_files, registry, rules)


@pytest.fixture(scope="session")
def mr_files(dicom_dir: Path) -> list[Path]:  # noqa: F811
    return sorted((dicom_dir / MR_SERIES).glob("*.dcm"))


@pytest.fixture(scope="session")
def mr_result(mr_files: list[Path], registry: dict[str, RegisteredModel], rules) -> AnalysisResult:  # noqa: F811
    return analyze_study(mr_files, registry, rules)


def index_study(db: StateDB, files: list[Path], calling_ae: str = "ORTHANC", state: StudyState | None = None) -> str:
    """Record ``files`` as received (what the SCP would have done) and optionally set a state."""
    study_uid = ""
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ident = InstanceIdentity(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID,
                                 ds.Modality)
        study_uid = ident.study_uid
        db.record_instance(ReceivedInstance(ident, "1.2.840.10008.1.2.1", path.stat().st_size, path.name,
                                            time.time(), calling_ae), "127.0.0.1")
    if state is not None:
        db.transition(study_uid, state, "test")
    return study_uid


def report(db: StateDB, registry: dict[str, RegisteredModel], outbox_root: Path, files: list[Path],  # noqa: F811
           result: AnalysisResult, destinations: dict[str, Any] | None = None,
           callers: list[Caller] | None = None) -> Prepared | None:
    """What the worker does after an analysis: conclude, build the outputs, record them (the study
    must be ANALYSING; it moves to REPORTED)."""
    manifest = registry[result.model or ""].manifest
    conclusion = conclude(result, manifest)
    settings = DestinationSettings.model_validate(destinations or {})
    outbox = Outbox(db, outbox_root, settings, callers or [])
    previous = db.latest_report(result.study_uid)
    predecessor = read_header(previous.sr_path) if previous is not None and previous.sr_path.is_file() else None
    outputs = build_outputs(conclusion, result, files, manifest, db.node_id(), predecessor,
                            destination_for(settings.fhir))
    return outbox.record(outputs, conclusion.headline())


@pytest.fixture
def prepare(tmp_path: Path, registry: dict[str, RegisteredModel]) -> Callable[..., tuple[StateDB, Prepared]]:  # noqa: F811
    """prepare(files, result, destinations=dict, callers=[...], db_path=None) → (db, Prepared)."""
    opened: list[StateDB] = []

    def run(files: list[Path], result: AnalysisResult, destinations: dict[str, Any] | None = None,
            callers: list[Caller] | None = None, db_path: Path | None = None) -> tuple[StateDB, Prepared]:
        db = StateDB(db_path or tmp_path / "onconode.db")
        opened.append(db)
        index_study(db, files, state=StudyState.ANALYSING)
        prepared = report(db, registry, tmp_path / "outbox", files, result, destinations, callers)
        assert prepared is not None
        return db, prepared

    yield run  # type: ignore[misc]
    for db in opened:
        db.close()


@pytest.fixture(scope="session")
def ct_conclusion(ct_result: AnalysisResult, registry: dict[str, RegisteredModel]) -> Conclusion:  # noqa: F811
    return conclude(ct_result, registry[ct_result.model or ""].manifest)


@pytest.fixture(scope="session")
def mr_conclusion(mr_result: AnalysisResult, registry: dict[str, RegisteredModel]) -> Conclusion:  # noqa: F811
    return conclude(mr_result, registry[mr_result.model or ""].manifest)


@pytest.fixture(scope="session")
def no_verdict(ct_result: AnalysisResult, ct_files: list[Path], registry: dict[str, RegisteredModel],  # noqa: F811
               rules) -> tuple[AnalysisResult, Manifest, Conclusion]:  # noqa: F811
    """The CT analysis by a model whose manifest states no verdict (``Decision.verdict`` false), with
    a slice calibration as such a model ships: the same series analysed again, so its slice values
    are calibrated."""
    model = registry[ct_result.model or ""]
    decision = model.manifest.decision.model_copy(
        update={"verdict": False, "calibration": Calibration(slope=0.35, intercept=-1.3, fitted_on="slices")})
    manifest = model.manifest.model_copy(update={"decision": decision})
    result = analyze_study(ct_files, {**registry, manifest.name: replace(model, manifest=manifest)}, rules)
    return result, manifest, conclude(result, manifest)
