"""The outbox: a changed result (late images) gives a revised SR that references the one it replaces,
with its own deliveries; settings for destinations validate at the boundary."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydantic import ValidationError

from onconode.config import Settings
from onconode.inference.pipeline import analyze_study
from onconode.reporting.outputs import fingerprint
from onconode.state import DeliveryState, StudyState
from tests.reporting_fixtures import report

PACS = {"dicom": [{"ae_title": "PACS", "host": "127.0.0.1", "port": 11199}]}


def test_late_images_give_a_revised_sr_that_references_its_predecessor(ct_files, prepare, registry, rules,
                                                                      tmp_path: Path) -> None:
    early = ct_files[:-4]
    first_result = analyze_study(early, registry, rules)
    db, first = prepare(early, first_result, PACS)
    late_result = analyze_study(ct_files, registry, rules)
    assert db.transition(late_result.study_uid, StudyState.ANALYSING, "late images analysed")
    second = report(db, registry, tmp_path / "outbox", ct_files, late_result, PACS)
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
                                      "fhir": {"base_url": "https://ehr.example/fhir/", "token": "t0ken",
                                               "patient_system": "urn:oid:2.16.840.1.113883.3.9999"}},
                        callers=[{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}])  # type: ignore[list-item]
    assert settings.destinations.dicom[0].key == "PACS@10.0.0.5:104"
    assert settings.destinations.fhir.key == "https://ehr.example/fhir"
    assert "t0ken" not in repr(settings) and settings.callers[0].port == 4242
    for bad in ({"dicom": [{"ae_title": "PACS", "host": "h", "port": 0}]},
                {"dicom": [{"ae_title": "THIS-AE-TITLE-IS-TOO-LONG", "host": "h", "port": 104}]},
                {"fhir": {"base_url": "ftp://x", "patient_system": "urn:oid:1.2"}},
                {"fhir": {"base_url": "https://ehr.example/fhir"}}):  # no patient identifier system
        with pytest.raises(ValidationError):
            Settings(destinations=bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Settings(delivery={"max_attempts": 0})  # type: ignore[arg-type]


def test_a_report_of_a_study_that_changed_during_its_analysis_is_never_recorded(
        ct_files, ct_result, prepare, registry, tmp_path: Path) -> None:
    db, first = prepare(ct_files, ct_result, PACS)
    # Analysed again, but an instance arrives before the report is recorded: the study is RECEIVING.
    assert db.transition(ct_result.study_uid, StudyState.RECEIVING, "instance arrived")
    assert report(db, registry, tmp_path / "outbox", ct_files, ct_result, PACS) is None
    assert [r.sr_sop_uid for r in db.reports(ct_result.study_uid)] == [first.sr_uid]
    assert {p.name for p in (tmp_path / "outbox" / ct_result.study_uid).iterdir()} == {first.sr_uid}
    assert db.study(ct_result.study_uid).state is StudyState.RECEIVING  # type: ignore[union-attr]


def test_an_unchanged_result_is_recognised_by_its_fingerprint(ct_files, ct_result, prepare, registry) -> None:
    db, _ = prepare(ct_files, ct_result, PACS)
    manifest = registry[ct_result.model].manifest
    from onconode.config import DestinationSettings
    from onconode.reporting.outbox import Outbox

    outbox = Outbox(db, Path(db.latest_report(ct_result.study_uid).folder).parents[1],  # type: ignore[union-attr]
                    DestinationSettings(), [])
    assert outbox.unchanged(fingerprint(manifest, ct_files), ct_result.study_uid)
    assert not outbox.unchanged(fingerprint(manifest, ct_files[:-1]), ct_result.study_uid)
