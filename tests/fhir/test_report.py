"""The FHIR transaction Bundle: fhir.resources R4B and Medplum validateResource accept it, sekmet-fhir
stores it once even when it is sent twice, and the node never invents demographics."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from onconode.fhir.report import StudyFacts, build_bundle
from onconode.reporting.sc import Algorithm
from onconode.reporting.sr import Finding
from tests import peers
from tests.support import free_port

ALGORITHM = Algorithm.from_model("test-ct", "0.0.1-test", "cd" * 32)
FINDINGS = [Finding("malignant", "363358000", "Malignant tumor of lung", 0.81, True),
            Finding("normal", "17621005", "Normal", 0.19, False)]
STUDY = StudyFacts("1.2.826.0.1.3680043.8.498.1", "PGBM-001", "CT", "ACC-7")
SYSTEM = "urn:oid:1.2.3.4.5"


def bundle(**facts: str) -> Bundle:
    study = StudyFacts(**({"study_uid": STUDY.study_uid, "patient_id": STUDY.patient_id, "modality": "CT",
                           "accession_number": STUDY.accession_number} | facts))  # type: ignore[arg-type]
    return build_bundle(study, FINDINGS, ALGORITHM, "1.2.826.0.1.3680043.8.498.2",
                        datetime(2026, 11, 23, 21, 0, tzinfo=UTC), SYSTEM)


def resources(b: Bundle, kind: str) -> list[dict]:  # type: ignore[type-arg]
    data = json.loads(b.model_dump_json(exclude_none=True))
    return [e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == kind]


def test_bundle_holds_report_observations_device_study_and_an_identifier_only_patient() -> None:
    b = bundle()
    assert b.type == "transaction"
    (patient,) = resources(b, "Patient")
    assert patient == {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": "PGBM-001"}]}
    (report,) = resources(b, "DiagnosticReport")
    assert report["status"] == "preliminary" and "NOT FOR DIAGNOSIS" in report["conclusion"]
    assert report["conclusionCode"][0]["coding"][0]["code"] == "363358000"
    assert {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
            "value": "ACC-7"} in report["identifier"]
    assert report["performer"] and report["issued"].startswith("2026-11-23T21:00")
    observations = resources(b, "Observation")
    assert [o["valueQuantity"]["value"] for o in observations] == [0.81, 0.19]
    assert [o["interpretation"][0]["coding"][0]["code"] for o in observations] == ["DET", "ND"]
    assert all(o["derivedFrom"][0]["reference"] == report["imagingStudy"][0]["reference"] for o in observations)
    (study,) = resources(b, "ImagingStudy")
    assert study["identifier"][0]["value"] == f"urn:oid:{STUDY.study_uid}"
    (device,) = resources(b, "Device")
    assert device["identifier"][0]["value"] == f"urn:oid:{ALGORITHM.device_uid}"
    DiagnosticReport.model_validate(report)
    for o in observations:
        Observation.model_validate(o)
    Bundle.model_validate_json(b.model_dump_json())


def test_no_accession_number_no_accession_identifier() -> None:
    (report,) = resources(bundle(accession_number=""), "DiagnosticReport")
    assert len(report["identifier"]) == 1


def test_a_study_without_patient_id_gets_no_bundle() -> None:
    with pytest.raises(ValueError, match="Patient ID"):
        bundle(patient_id=" ")


def test_build_refuses_naive_time_and_no_findings() -> None:
    with pytest.raises(ValueError, match="timezone"):
        build_bundle(STUDY, FINDINGS, ALGORITHM, "1.2.3", datetime(2026, 1, 1), SYSTEM)
    with pytest.raises(ValueError, match="findings"):
        build_bundle(STUDY, [], ALGORITHM, "1.2.3", datetime.now(UTC), SYSTEM)


@pytest.mark.peers
def test_medplum_validates_the_bundle_and_each_resource(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(bundle().model_dump_json(exclude_none=True))
    ok, output = peers.medplum_validate(path)
    assert ok, output
    broken = json.loads(path.read_text())
    del broken["entry"][-1]["resource"]["status"]
    path.write_text(json.dumps(broken))
    ok, output = peers.medplum_validate(path)
    assert not ok and "DiagnosticReport.status" in output


@pytest.mark.peers
def test_sekmet_stores_the_bundle_once_and_reads_it_back(tmp_path: Path) -> None:
    server = peers.Sekmet(tmp_path / "sekmet", free_port())
    server.start()
    try:
        body = bundle().model_dump_json(exclude_none=True).encode()
        import urllib.request
        for _ in range(2):  # a retry after a lost answer must not duplicate anything
            request = urllib.request.Request(server.base_url, data=body, method="POST",
                                             headers={"Content-Type": "application/fhir+json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
            assert answer["type"] == "transaction-response"
        for kind, count in (("Patient", 1), ("DiagnosticReport", 1), ("Observation", 2), ("Device", 1),
                            ("ImagingStudy", 1)):
            assert server.search(f"{kind}?_summary=count")["total"] == count, kind
        found = server.search(f"DiagnosticReport?subject:Patient.identifier={SYSTEM}|PGBM-001"
                              "&_include=DiagnosticReport:result")
        kinds = sorted(e["resource"]["resourceType"] for e in found["entry"])
        assert kinds == ["DiagnosticReport", "Observation", "Observation"]
    finally:
        server.stop()
