"""The outbox: a changed result (late images) gives a revised SR that references the one it replaces,
with its own deliveries; settings for destinations validate at the boundary."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydantic import ValidationError

from onconode.config import Settings
from onconode.delivery.outbox import Reporter
from onconode.inference.pipeline import analyze_study
from onconode.state import DeliveryState

PACS = {"dicom": [{"ae_title": "PACS", "host": "127.0.0.1", "port": 11199}]}


def test_late_images_give_a_revised_sr_that_references_its_predecessor(ct_files, prepare, registry, rules,
                                                                      tmp_path: Path) -> None:
    early = ct_files[:-4]
    first_result = analyze_study(early, registry, rules)
    db, first = prepare(early, first_result, PACS)
    late_result = analyze_study(ct_files, registry, rules)
    reporter = Reporter(db, registry, tmp_path / "outbox", Settings(destinations=PACS).destinations, [])  # type: ignore[arg-type]
    second = reporter.prepare(late_result.study_uid, late_result, ct_files)
    assert second is not None and second.sr_uid != first.sr_uid
    revised = pydicom.dcmread(second.folder / "sr.dcm")
    (study,) = revised.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == late_result.study_uid
    assert study.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.sr_uid
    pending = db.deliveries(late_result.study_uid, DeliveryState.PENDING)
    assert {d.report_id for d in pending} == {first.report_id, second.report_id}
    assert [r.sr_sop_uid for r in db.reports(late_result.study_uid)] == [first.sr_uid, second.sr_uid]


def test_destination_settings_validate_and_hide_the_token() -> None:
    settings = Settings(destinations={"dicom": [{"ae_title": "PACS", "host": "10.0.0.5", "port": 104}],  # type: ignore[arg-type]
                                      "fhir": {"base_url": "https://ehr.example/fhir/", "token": "t0ken"}},
                        callers=[{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}])  # type: ignore[list-item]
    assert settings.destinations.dicom[0].key == "PACS@10.0.0.5:104"
    assert settings.destinations.fhir.key == "https://ehr.example/fhir"
    assert "t0ken" not in repr(settings) and settings.callers[0].port == 4242
    for bad in ({"dicom": [{"ae_title": "PACS", "host": "h", "port": 0}]},
                {"dicom": [{"ae_title": "THIS-AE-TITLE-IS-TOO-LONG", "host": "h", "port": 104}]},
                {"fhir": {"base_url": "ftp://x"}}):
        with pytest.raises(ValidationError):
            Settings(destinations=bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(delivery={"max_attempts": 0})  # type: ignore[arg-type]
