"""Fixtures shared by tests/reporting, tests/fhir, tests/delivery and tests/e2e: a real analysis of
real series with the tiny test models, and an outbox prepared from it in a fresh database."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

from onconode.config import Caller, DestinationSettings
from onconode.delivery.outbox import Prepared, Reporter
from onconode.dicom_node.identify import InstanceIdentity
from onconode.inference.models import RegisteredModel
from onconode.inference.pipeline import AnalysisResult, analyze_study
from onconode.state import ReceivedInstance, StateDB, StudyState
from tests.inference.conftest import dicom_dir, models_dir, registry, rules  # noqa: F401  (fixtures)

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


@pytest.fixture
def prepare(tmp_path: Path, registry: dict[str, RegisteredModel]) -> Callable[..., tuple[StateDB, Prepared]]:  # noqa: F811
    """prepare(files, result, destinations=dict, callers=[...], db_path=None) → (db, Prepared)."""
    opened: list[StateDB] = []

    def run(files: list[Path], result: AnalysisResult, destinations: dict[str, Any] | None = None,
            callers: list[Caller] | None = None, db_path: Path | None = None,
            state: StudyState | None = StudyState.REPORTED) -> tuple[StateDB, Prepared]:
        db = StateDB(db_path or tmp_path / "onconode.db")
        opened.append(db)
        index_study(db, files, state=state)
        reporter = Reporter(db, registry, tmp_path / "outbox", DestinationSettings.model_validate(destinations or {}),
                            callers or [])
        prepared = reporter.prepare(result.study_uid, result, files)
        assert prepared is not None
        return db, prepared

    yield run  # type: ignore[misc]
    for db in opened:
        db.close()
