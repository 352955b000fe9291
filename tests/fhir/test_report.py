"""The FHIR transaction Bundle rendered from the conclusion: what an EHR needs to file it (exam date,
the study with its series, instances and endpoint, the model as a device, the decision and the
probability as separate observations, the key images), and nothing it must not file (no coded
disorder as a conclusion). fhir.resources R4B and Medplum validateResource accept it; sekmet-fhir
stores it once even when it is sent twice; the node never invents demographics."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from onconode.fhir.report import Destination, StudyFacts, build_bundle, fhir_datetime
from onconode.reporting.outputs import study_facts
from tests import peers
from tests.support import free_port

SYSTEM = "urn:oid:2.16.840.1.113883.3.9999.1"
DICOMWEB = "http://127.0.0.1:8042/dicom-web"
ISSUED = datetime(2026, 11, 23, 21, 0, tzinfo=UTC)
SR_UID = "1.2.826.0.1.3680043.8.498.2"


@pytest.fixture(scope="module")
def facts(ct_files) -> StudyFacts:
    import pydicom

    from onconode.selection import series

    return study_facts(series.scan(ct_files).instances, pydicom.dcmread(ct_files[0], stop_before_pixels=True))


def bundle(conclusion, facts: StudyFacts, **changes: object) -> Bundle:
    study = StudyFacts(**{**facts.__dict__, **changes})  # type: ignore[arg-type]
    return build_bundle(conclusion, study, SR_UID, ISSUED, Destination(SYSTEM, DICOMWEB), [])


def resources(b: Bundle, kind: str) -> list[dict]:  # type: ignore[type-arg]
    data = json.loads(b.model_dump_json(exclude_none=True))
    return [e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == kind]


def test_report_files_under_the_exam_date_and_says_the_one_decision(ct_conclusion, facts) -> None:
    b = bundle(ct_conclusion, facts)
    (report,) = resources(b, "DiagnosticReport")
    assert report["status"] == "preliminary" and "conclusionCode" not in report
    assert report["conclusion"].startswith(ct_conclusion.headline()) and "NOT FOR DIAGNOSIS" in report["conclusion"]
    assert report["effectiveDateTime"] == "2007-04-25"  # the exam (StudyDate), not the day of the report
    assert report["issued"].startswith("2026-11-23T21:00")
    probability, decision = (next(o for o in resources(b, "Observation") if o["code"]["coding"][0]["code"] == code)
                             for code in ("122157", ct_conclusion.finding.code))
    assert probability["valueQuantity"]["value"] == round(ct_conclusion.probability, 6)
    assert probability["component"][0]["valueQuantity"]["value"] == round(ct_conclusion.threshold, 6)
    assert "probability" in probability["code"]["text"].lower()
    assert decision["interpretation"][0]["coding"][0]["code"] == ("POS" if ct_conclusion.positive else "NEG")
    assert decision["valueCodeableConcept"]["coding"][0]["display"] == ("Present" if ct_conclusion.positive
                                                                        else "Absent")
    (device,) = resources(b, "Device")
    assert all(o["device"]["reference"] for o in (probability, decision))
    assert device["identifier"][0]["value"] == f"urn:oid:{ct_conclusion.algorithm.device_uid}"
    assert device["property"][0]["valueCode"][0]["text"] == ct_conclusion.algorithm.sha256
    assert {v["type"]["text"] for v in device["version"]} == {"model", "software"}


def test_imaging_study_lists_series_and_instances_and_the_dicomweb_endpoint(ct_conclusion, facts, ct_files) -> None:
    b = bundle(ct_conclusion, facts)
    (study,) = resources(b, "ImagingStudy")
    assert study["started"] == "2007-04-25" and study["numberOfInstances"] == len(ct_files)
    (series,) = study["series"]
    assert len(series["instance"]) == len(ct_files) and series["modality"]["code"] == "CT"
    assert series["instance"][0]["sopClass"]["code"].startswith("urn:oid:1.2.840.10008.5.1.4.1.1.2")
    (endpoint,) = resources(b, "Endpoint")
    assert endpoint["address"] == DICOMWEB and endpoint["connectionType"]["code"] == "dicom-wado-rs"
    assert study["endpoint"][0]["reference"]


def test_an_identifier_only_patient_under_the_configured_system(ct_conclusion, facts) -> None:
    (patient,) = resources(bundle(ct_conclusion, facts), "Patient")
    assert patient == {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": facts.patient_id}]}


def test_key_images_go_as_media(ct_conclusion, facts) -> None:
    from onconode.fhir.report import KeyImage

    b = build_bundle(ct_conclusion, facts, SR_UID, ISSUED, Destination(SYSTEM), [KeyImage("key 1", b"\x89PNG")])
    (media,) = resources(b, "Media")
    (report,) = resources(b, "DiagnosticReport")
    assert media["content"]["contentType"] == "image/png" and report["media"][0]["comment"] == "key 1"
    assert not resources(b, "Endpoint")  # no DICOMweb base configured: no endpoint


@pytest.mark.parametrize(("date", "time", "offset", "expected"), [
    ("20070425", "101500", "", "2007-04-25"),
    ("20070425", "101500.123", "+0100", "2007-04-25T10:15:00+01:00"),
    ("2007-04-25", "", "", None), ("", "", "", None), ("20071345", "", "", None),
])
def test_dicom_dates_become_fhir_datetimes(date: str, time: str, offset: str, expected: str | None) -> None:
    assert fhir_datetime(date, time, offset) == expected


def test_refusals(ct_conclusion, facts) -> None:
    with pytest.raises(ValueError, match="Patient ID"):
        bundle(ct_conclusion, facts, patient_id=" ")
    with pytest.raises(ValueError, match="timezone"):
        build_bundle(ct_conclusion, facts, SR_UID, datetime(2026, 1, 1), Destination(SYSTEM))
    with pytest.raises(ValueError, match="patient identifier system"):
        build_bundle(ct_conclusion, facts, SR_UID, ISSUED, Destination(" "))


@pytest.mark.peers
def test_medplum_validates_the_bundle_and_each_resource(ct_conclusion, facts, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(bundle(ct_conclusion, facts).model_dump_json(exclude_none=True))
    ok, output = peers.medplum_validate(path)
    assert ok, output
    broken = json.loads(path.read_text())
    report = next(e for e in broken["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    del report["resource"]["status"]
    path.write_text(json.dumps(broken))
    ok, output = peers.medplum_validate(path)
    assert not ok and "DiagnosticReport.status" in output


@pytest.mark.peers
def test_sekmet_stores_the_bundle_once_and_reads_it_back(ct_conclusion, facts, tmp_path: Path) -> None:
    from onconode.fhir.report import KeyImage

    server = peers.Sekmet(tmp_path / "sekmet", free_port())
    server.start()
    try:
        body = build_bundle(ct_conclusion, facts, SR_UID, ISSUED, Destination(SYSTEM, DICOMWEB),
                            [KeyImage("key 1", b"\x89PNG\r\n")]).model_dump_json(exclude_none=True).encode()
        import urllib.request
        for _ in range(2):  # a retry after a lost answer must not duplicate anything
            request = urllib.request.Request(server.base_url, data=body, method="POST",
                                             headers={"Content-Type": "application/fhir+json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
            assert answer["type"] == "transaction-response"
        for kind, count in (("Patient", 1), ("DiagnosticReport", 1), ("Observation", 2), ("Device", 1),
                            ("ImagingStudy", 1), ("Endpoint", 1), ("Media", 1)):
            assert server.search(f"{kind}?_summary=count")["total"] == count, kind
        found = server.search(f"DiagnosticReport?subject:Patient.identifier={SYSTEM}|{facts.patient_id}"
                              "&_include=DiagnosticReport:result")
        kinds = sorted(e["resource"]["resourceType"] for e in found["entry"])
        assert kinds == ["DiagnosticReport", "Observation", "Observation"]
    finally:
        server.stop()


def test_without_a_verdict_the_report_carries_the_probability_alone(no_verdict, facts) -> None:
    """No decision Observation and no threshold component; the conclusion text says why."""
    _, _, c = no_verdict
    b = bundle(c, facts)
    (report,) = resources(b, "DiagnosticReport")
    (probability,) = resources(b, "Observation")
    assert probability["code"]["coding"][0]["code"] == "122157" and "component" not in probability
    assert probability["valueQuantity"]["value"] == round(c.probability, 6)
    assert "key slices" in probability["code"]["text"] and "whole study" not in probability["code"]["text"]
    assert len(report["result"]) == 1 and report["conclusion"].startswith(c.headline())
    assert "NO VERDICT" in report["conclusion"]


@pytest.mark.peers
def test_medplum_validates_a_bundle_without_a_verdict(no_verdict, facts, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(bundle(no_verdict[2], facts).model_dump_json(exclude_none=True))
    ok, output = peers.medplum_validate(path)
    assert ok, output
