"""SC and SR built from real analyses: written to the outbox, re-read, checked by dciodvfy,
dcentvfy and PixelMed's DicomSRValidator, and by the node's own rules."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from onconode.delivery import checks
from onconode.reporting import sc, sr
from tests import peers

ALGORITHM = sc.Algorithm.from_model("test-ct", "0.0.1-test", "ab" * 32)


@pytest.mark.peers
@pytest.mark.parametrize("which", ["ct", "mr"])
def test_sc_and_sr_pass_dciodvfy_dcentvfy_and_pixelmed(which: str, request: pytest.FixtureRequest, prepare) -> None:
    files = request.getfixturevalue(f"{which}_files")
    result = request.getfixturevalue(f"{which}_result")
    _, prepared = prepare(files, result)
    sr_path = prepared.folder / "sr.dcm"
    for path in [*prepared.captures, sr_path]:
        assert peers.dciodvfy_errors(path) == [], path.name
    assert peers.pixelmed_sr_problems(sr_path) == []
    key_files = [f for f in files if f.stem in {k.sop_instance_uid for k in result.key_slices}] or files[:1]
    sources = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in files}
    key_files = [sources[k.sop_instance_uid] for k in result.key_slices]
    assert peers.dcentvfy_errors([*key_files, *prepared.captures, sr_path]) == []


def test_sc_copies_identity_names_the_algorithm_and_says_not_for_diagnosis(ct_files, ct_result, prepare,
                                                                          registry) -> None:
    _, prepared = prepare(ct_files, ct_result)
    source = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    series = set()
    for path in prepared.captures:
        ds = pydicom.dcmread(path)
        series.add(ds.SeriesInstanceUID)
        assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.PhotometricInterpretation == "RGB" and ds.pixel_array.shape[2] == 3
        assert ds.BurnedInAnnotation == "YES" and "NOT FOR DIAGNOSIS" in ds.ImageComments
        assert "Laterality" in ds
        equipment = next(e for e in ds.ContributingEquipmentSequence if "DeviceUID" in e)
        assert equipment.ManufacturerModelName == "test-ct" and equipment.SoftwareVersions == "0.0.1-test"
        manifest = registry["test-ct"].manifest
        assert equipment.DeviceUID == sc.Algorithm.from_model("test-ct", manifest.version, manifest.sha256).device_uid
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in {k.sop_instance_uid for k in ct_result.key_slices}
    assert len(series) == 1 and len(prepared.captures) == len(ct_result.key_slices)


def test_sr_is_an_unverified_tid1500_report_with_one_group_per_label(ct_files, ct_result, prepare) -> None:
    _, prepared = prepare(ct_files, ct_result)
    ds = pydicom.dcmread(prepared.folder / "sr.dcm")
    assert ds.VerificationFlag == "UNVERIFIED" and ds.CompletionFlag == "COMPLETE"
    report = ds
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    groups = hd.sr.srread(prepared.folder / "sr.dcm").content.get_image_measurement_groups()
    assert len(groups) == len(ct_result.labels)
    for group in groups:
        assert group.tracking_uid and group.tracking_identifier.startswith("AI ")
        assert group.get_measurements(name=sr.PROBABILITY)[0].unit == sr.UNITY
    evidence = {item.ReferencedSOPInstanceUID for study in report.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    captures = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in prepared.captures}
    assert captures <= evidence and {k.sop_instance_uid for k in ct_result.key_slices} <= evidence
    text = str(report)
    assert "Artificial Intelligence" in text and "0.0.1-test" in text and "Probability" in text
    assert text.count("Tracking Unique Identifier") == len(ct_result.labels)


def test_a_revised_sr_references_the_one_it_replaces(ct_files) -> None:
    source = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    findings = [sr.Finding("malignant", "363358000", "Malignant tumor of lung", 0.7, True),
                sr.Finding("normal", "17621005", "Normal", 0.3, False)]
    first = sr.build_sr(findings, ALGORITHM, "CT", [source], [], generate_uid(), 1)
    second = sr.build_sr(findings, ALGORITHM, "CT", [source], [], generate_uid(), 1, predecessor=first)
    checks.check_sr(second, source.StudyInstanceUID, first)
    with pytest.raises(checks.OutputCheckError, match="predecessor"):
        checks.check_sr(first, source.StudyInstanceUID, second)


@pytest.mark.parametrize("kwargs, message", [
    ({"findings": []}, "at least one"),
    ({"sources": []}, "evidence"),
    ({"modality": "US"}, "modality"),
    ({"findings": [sr.Finding("x", "1", "x", 1.5, True)]}, "outside"),
])
def test_build_sr_refuses(ct_files, kwargs: dict, message: str) -> None:
    source = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    args = {"findings": [sr.Finding("x", "1", "x", 0.5, True)], "algorithm": ALGORITHM, "modality": "CT",
            "sources": [source], "captures": [], "series_uid": generate_uid(), "series_number": 1} | kwargs
    with pytest.raises(ValueError, match=message):
        sr.build_sr(**args)


def test_build_sc_refuses_a_non_rgb_array(ct_files) -> None:
    source = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    with pytest.raises(ValueError, match="uint8"):
        sc.build_sc(source, np.zeros((4, 4), np.uint8), ALGORITHM, generate_uid(), 1, 1)


def test_checks_refuse_an_sc_of_another_study(ct_files, ct_result, prepare) -> None:
    _, prepared = prepare(ct_files, ct_result)
    ds = pydicom.dcmread(prepared.captures[0])
    with pytest.raises(checks.OutputCheckError, match="study"):
        checks.check_sc(ds, "1.2.3")
    ds.BurnedInAnnotation = "NO"
    with pytest.raises(checks.OutputCheckError, match="not-for-diagnosis"):
        checks.check_sc(ds, ds.StudyInstanceUID)


def test_outbox_holds_nothing_half_written(ct_files, ct_result, prepare, tmp_path: Path) -> None:
    _, prepared = prepare(ct_files, ct_result)
    assert not list((tmp_path / "outbox").rglob("*.tmp"))
    assert {p.name for p in prepared.folder.iterdir()} == {"sr.dcm", *(p.name for p in prepared.captures)}
