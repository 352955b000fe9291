"""End to end with real peers: storescu → Orthanc (Lua OnStableSeries routing) → OncoNode (analysis
with the tiny test models) → SC, SEG, KOS and SR back into the same study in Orthanc, FHIR Bundle into
sekmet-fhir; everything that arrives is checked by dciodvfy, dcentvfy, PixelMed, Medplum and
fhir.resources, and nothing is routed twice."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from onconode.state import StudyState
from tests import peers
from tests.reporting_fixtures import CT_SERIES, MR_SERIES
from tests.support import NodeProcess, free_port, require, wait_for

pytestmark = pytest.mark.peers
PATIENT_SYSTEM = "urn:oid:1.2.3.4.5.99"


@pytest.fixture
def pacs(tmp_path: Path, models_dir: Path) -> Iterator[tuple[peers.Orthanc, NodeProcess, peers.Sekmet]]:
    sekmet = peers.Sekmet(tmp_path / "sekmet", free_port())
    node_port = free_port()
    orthanc = peers.Orthanc(tmp_path / "orthanc", node_port)
    (tmp_path / "node").mkdir()
    node = NodeProcess(
        tmp_path / "node", node={"port": node_port},
        callers=[{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port}],
        analysis={"models": str(models_dir)},
        routing=[{"name": "ct", "modality": "CT", "model": "test-ct", "target": "lung", "max_analysed_slices": 8},
                 {"name": "mr", "modality": "MR", "model": "test-mr", "target": "brain", "max_analysed_slices": 8}],
        destinations={"fhir": {"base_url": sekmet.base_url, "patient_system": PATIENT_SYSTEM}},
        delivery={"poll_seconds": 0.1, "backoff_seconds": 0.5})
    sekmet.start()
    orthanc.start()
    node.start()
    try:
        yield orthanc, node, sekmet
    finally:
        node.stop()
        orthanc.stop()
        sekmet.stop()


def test_results_come_back_to_the_same_study_and_the_ehr(pacs, dicom_dir: Path, tmp_path: Path) -> None:
    orthanc, node, sekmet = pacs
    storescu = require("storescu")
    sources = {name: sorted((dicom_dir / name).glob("*.dcm")) for name in (CT_SERIES, MR_SERIES)}
    for name, files in sources.items():
        propose = ["-xs"] if name == CT_SERIES else []  # the CT series is stored JPEG Lossless SV1
        subprocess.run([storescu, *propose, "-aet", "MODALITY", "-aec", "ORTHANC", "127.0.0.1",
                        str(orthanc.dicom_port), *map(str, files)], check=True, env={"TCP_NODELAY": "1"},
                       capture_output=True)
    study_uids = {name: str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
                  for name, files in sources.items()}
    for uid in study_uids.values():
        node.wait_for_state(uid, StudyState.DELIVERED, timeout=150)
    def two_srs() -> list[dict] | None:  # type: ignore[type-arg]
        found = orthanc.series("SR")
        return found if len(found) == 2 else None

    srs = wait_for(two_srs, 30, "2 SR series", interval=0.5)
    scs = orthanc.series("OT")
    assert len(scs) == 2
    out = tmp_path / "from-orthanc"
    out.mkdir()
    for name, files in sources.items():
        uid = study_uids[name]
        (sr_series,) = [s for s in srs if s["ParentStudy"] == _study_id(orthanc, uid)]
        (sc_series,) = [s for s in scs if s["ParentStudy"] == _study_id(orthanc, uid)]
        sr_path = orthanc.download(sr_series["Instances"][0], out / f"{name}-sr.dcm")
        sc_paths = [orthanc.download(i, out / f"{name}-sc-{n}.dcm") for n, i in enumerate(sc_series["Instances"])]
        sr = pydicom.dcmread(sr_path)
        assert sr.StudyInstanceUID == uid and sr.VerificationFlag == "UNVERIFIED"
        for path in [sr_path, *sc_paths]:
            assert peers.dciodvfy_errors(path) == [], path.name
        assert peers.pixelmed_sr_problems(sr_path) == []
        referenced = {pydicom.dcmread(p, stop_before_pixels=True).SourceImageSequence[0].ReferencedSOPInstanceUID
                      for p in sc_paths}
        key_sources = [f for f in files
                       if pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID in referenced]
        assert peers.dcentvfy_errors([*key_sources, *sc_paths, sr_path]) == []

    # No loop: Orthanc routed each source series once, and nothing OncoNode sent came back to it.
    jobs = [j for j in orthanc.get("/jobs?expand") if j["Type"] == "DicomModalityStore"]  # type: ignore[union-attr]
    assert len(jobs) == 2 and all(j["State"] == "Success" for j in jobs)
    # Each study's SC, SEG, KOS and SR series came back, and none was routed again.
    assert len(orthanc.series("SEG")) == len(orthanc.series("KO")) == len(sources)
    assert orthanc.log().count("not routing") == 4 * len(sources)
    db = node.db()
    try:
        for name, uid in study_uids.items():
            received = db.instances(uid)
            assert len(received) == len(sources[name])
            assert {i.identity.modality for i in received} <= {"CT", "MR"}
    finally:
        db.close()

    # The EHR: two reports, read back by patient identifier, each valid for fhir.resources and Medplum.
    assert sekmet.search("DiagnosticReport?_summary=count")["total"] == 2
    for name, files in sources.items():
        patient_id = str(pydicom.dcmread(files[0], stop_before_pixels=True).PatientID)
        found = sekmet.search(f"DiagnosticReport?subject:Patient.identifier={PATIENT_SYSTEM}|{patient_id}"
                              "&_include=DiagnosticReport:result")
        reports = [e["resource"] for e in found["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
        assert len(reports) == 1
        report = DiagnosticReport.model_validate(reports[0])
        assert report.status == "preliminary" and "NOT FOR DIAGNOSIS" in (report.conclusion or "")
        patients = sekmet.search(f"Patient?identifier={PATIENT_SYSTEM}|{patient_id}")
        assert patients["total"] == 1 and "name" not in patients["entry"][0]["resource"]
    for bundle_path in sorted((node.folder / "var" / "outbox").rglob("fhir.json")):
        Bundle.model_validate_json(bundle_path.read_text())
        ok, output = peers.medplum_validate(bundle_path)
        assert ok, output
    assert "PGBM-001" not in node.log() and "Lung_Dx-A0002" not in node.log()


def _study_id(orthanc: peers.Orthanc, study_uid: str) -> str:
    (found,) = orthanc.post("/tools/lookup", study_uid)  # type: ignore[misc]
    return str(found["ID"])
