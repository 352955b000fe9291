"""Every output built from real analyses: re-read, checked by dciodvfy, dcentvfy and PixelMed's
DicomSRValidator, and by what they must say: one decision, per-slice values named as such, the
analysed slices as evidence, OncoNode's and the model's versions, and the notice."""

from __future__ import annotations

import logging
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from onconode.algorithm import SOFTWARE
from onconode.conclusion import NOT_FOR_DIAGNOSIS
from onconode.reporting import checks, sr
from onconode.reporting.outputs import build_outputs
from tests import peers

OURS = ("Laterality", "SeriesDate", "SeriesTime")  # warnings that would be OncoNode's own doing


def _read(prepared, name: str) -> pydicom.Dataset:
    return pydicom.dcmread(prepared.folder / name)


@pytest.mark.peers
@pytest.mark.parametrize("which", ["ct", "mr"])
def test_every_output_passes_dciodvfy_dcentvfy_and_pixelmed(which: str, request: pytest.FixtureRequest,
                                                           prepare) -> None:
    files = request.getfixturevalue(f"{which}_files")
    result = request.getfixturevalue(f"{which}_result")
    _, prepared = prepare(files, result)
    assert {p.name for p in prepared.dicom} == {"sc-1.dcm", "sc-2.dcm", "sc-3.dcm", "seg.dcm", "kos.dcm", "sr.dcm"}
    for path in prepared.dicom:
        assert peers.dciodvfy_errors(path) == [], path.name
        ours = [w for w in peers.dciodvfy_warnings(path) if any(k in w for k in OURS)]
        assert ours == [], path.name
    assert peers.pixelmed_sr_problems(prepared.folder / "sr.dcm") == []
    analysed = [p for p in files if p in result.slice_paths.values()]
    assert peers.dcentvfy_errors([*analysed, *prepared.dicom]) == []


def test_sr_says_one_decision_with_the_analysed_slices_as_evidence(ct_files, ct_result, ct_conclusion, prepare,
                                                                   tmp_path: Path) -> None:
    db, prepared = prepare(ct_files, ct_result)
    ds = _read(prepared, "sr.dcm")
    assert ds.VerificationFlag == "UNVERIFIED" and ds.CompletionFlag == "COMPLETE"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert SOFTWARE in ds.SoftwareVersions and "test-ct 0.0.1-test" in ds.SoftwareVersions
    assert ds.DeviceSerialNumber == db.node_id() and ds.SeriesDate and ds.SeriesTime
    report = hd.sr.srread(prepared.folder / "sr.dcm")
    (study,) = [g for g in report.content.get_image_measurement_groups()
                if g.tracking_identifier.startswith("AI study result")]
    (probability,) = study.get_measurements(name=sr.PROBABILITY)
    assert abs(float(probability.value) - ct_conclusion.probability) < 1e-6
    # The key slices' values are planar ROIs: an outline of where the model looked, on the key image.
    planar = report.content.get_planar_roi_measurement_groups()
    assert planar and all(g.tracking_identifier.startswith("AI per slice") for g in planar)
    assert {g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for g in planar} == {
        k.sop_instance_uid for k in ct_conclusion.key}
    # Exactly one decision, in the Qualitative Evaluations container: Present or Absent.
    decisions = [item for item in ds.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    (container,) = decisions
    codes = [i for i in container.ContentSequence if i.ValueType == "CODE"]
    assert len(codes) == 1
    assert codes[0].ConceptCodeSequence[0].CodeMeaning == ("Present" if ct_conclusion.positive else "Absent")
    assert any(NOT_FOR_DIAGNOSIS in i.TextValue for i in container.ContentSequence if i.ValueType == "TEXT")
    evidence = {item.ReferencedSOPInstanceUID for st in ds.CurrentRequestedProcedureEvidenceSequence
                for se in st.ReferencedSeriesSequence for item in se.ReferencedSOPSequence}
    assert evidence == {s.sop_instance_uid for s in ct_conclusion.slices}  # analysed slices, no outputs
    texts = [e.value for e in ds.iterall() if e.keyword == "TextValue"]
    assert f"decision threshold {ct_conclusion.threshold:.4g} on the study probability" in texts


def test_sc_captions_name_the_study_decision_and_the_per_slice_value(ct_files, ct_result, ct_conclusion,
                                                                      prepare) -> None:
    _, prepared = prepare(ct_files, ct_result)
    sources = {k.sop_instance_uid for k in ct_result.key_slices}
    for path in prepared.captures:
        ds = pydicom.dcmread(path)
        assert ds.BurnedInAnnotation == "YES" and "NOT FOR DIAGNOSIS" in ds.ImageComments
        assert ct_conclusion.headline() in ds.ImageComments
        assert "Laterality" not in ds  # an unpaired body part: absent, not empty
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in sources
        equipment = next(e for e in ds.ContributingEquipmentSequence if "DeviceUID" in e)
        assert equipment.DeviceUID == ct_conclusion.algorithm.device_uid
    # The picture: nothing tinted outside the patient (grey pixels stay grey: R == G == B).
    key = ct_result.key_slices[0]
    rgb = pydicom.dcmread(prepared.captures[0]).pixel_array[:key.image.shape[0]]
    outside = rgb[~key.body]
    assert (outside[:, 0] == outside[:, 1]).all() and (outside[:, 1] == outside[:, 2]).all()


def test_seg_and_kos_point_at_the_key_slices_on_the_source_grid(ct_files, ct_result, prepare) -> None:
    _, prepared = prepare(ct_files, ct_result)
    source = pydicom.dcmread(ct_result.slice_paths[ct_result.key_slices[0].sop_instance_uid], stop_before_pixels=True)
    seg = hd.seg.segread(prepared.folder / "seg.dcm")
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)
    description = seg.get_segment_description(1)
    assert "saliency" in description.segment_label.lower()
    assert description.segmented_property_type.value == "130404"
    referenced = {ref.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
                  for ref in s.ReferencedInstanceSequence}
    assert referenced == {k.sop_instance_uid for k in ct_result.key_slices}
    kos = _read(prepared, "kos.dcm")
    selected = {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in kos.ContentSequence
                if i.ValueType == "IMAGE"}
    assert selected == {k.sop_instance_uid for k in ct_result.key_slices}
    assert "NOT FOR DIAGNOSIS" in kos.SeriesDescription


def test_a_revised_sr_references_the_one_it_replaces(ct_files, ct_result, ct_conclusion, registry,
                                                     prepare) -> None:
    _, first = prepare(ct_files, ct_result)
    predecessor = _read(first, "sr.dcm")
    outputs = build_outputs(ct_conclusion, ct_result, ct_files, registry["test-ct"].manifest, "node",
                            predecessor=predecessor)
    revised = pydicom.dcmread(__import__("io").BytesIO(next(f.data for f in outputs.files if f.name == "sr.dcm")))
    checks.check_sr(revised, ct_conclusion.study_uid, predecessor)
    with pytest.raises(checks.OutputCheckError, match="predecessor"):
        checks.check_sr(predecessor, ct_conclusion.study_uid, revised)
    # The groups keep their tracking UIDs across the revision.
    uids = [[g.tracking_uid for g in hd.sr.srread(p).content.get_image_measurement_groups()]
            for p in (first.folder / "sr.dcm",)]
    again = [g.tracking_uid for g in hd.sr.Comprehensive3DSR.from_dataset(revised).content
             .get_image_measurement_groups()]
    assert uids[0] == again


def _moved(ct_result, files: list[Path]):
    """``ct_result`` with its slices read from ``files`` (edited copies of its own)."""
    paths = {p.stem: p for p in files}
    return type(ct_result)(**{**ct_result.__dict__, "slice_paths": {
        uid: paths[Path(path).stem] for uid, path in ct_result.slice_paths.items()}})


def _outputs_of(files: list[Path], ct_result, ct_conclusion, registry):
    """The outputs of ``ct_result`` with its slices read from ``files``."""
    return build_outputs(ct_conclusion, _moved(ct_result, files), files, registry["test-ct"].manifest, "node")


def test_a_malformed_source_value_is_left_out_and_never_quoted(ct_files, ct_result, ct_conclusion, registry,
                                                               copy_series) -> None:
    def bad_birth_date(ds: pydicom.Dataset, index: int) -> None:
        ds.PatientBirthDate = "1901-01-01"

    files = copy_series(ct_files, "bad", bad_birth_date)
    outputs = _outputs_of(files, ct_result, ct_conclusion, registry)
    assert outputs.notes == ("PatientBirthDate in the source is not a valid DA; left empty in OncoNode's outputs",)
    for f in outputs.files:
        assert b"1901-01-01" not in f.data


def test_a_sex_outside_the_enumerated_values_is_left_out_and_every_object_is_built(
        ct_files, ct_result, ct_conclusion, registry, copy_series) -> None:
    def odd_sex(ds: pydicom.Dataset, index: int) -> None:
        ds.PatientSex = "0000"

    files = copy_series(ct_files, "odd-sex", odd_sex)
    outputs = _outputs_of(files, ct_result, ct_conclusion, registry)
    note = "PatientSex in the source is not one of its enumerated values; left empty in OncoNode's outputs"
    assert outputs.notes == (note,)
    for f in outputs.files:
        if f.name.endswith(".dcm"):
            assert pydicom.dcmread(__import__("io").BytesIO(f.data)).PatientSex == "", f.name


def _nameless(ds: pydicom.Dataset, index: int) -> None:
    del ds.PatientName


def test_a_source_without_patient_name_still_gets_every_object(ct_files, ct_result, ct_conclusion, registry,
                                                                copy_series) -> None:
    """As COVID-CT-MD's sample studies come: no PatientName at all, which highdicom's SEG reads."""
    outputs = _outputs_of(copy_series(ct_files, "nameless", _nameless), ct_result, ct_conclusion, registry)
    assert outputs.notes == ("PatientName is absent from the source; empty in OncoNode's outputs",)
    built = {f.name for f in outputs.files if f.name.endswith(".dcm")}
    assert {"sr.dcm", "seg.dcm", "kos.dcm"} <= built


def test_the_report_log_line_names_what_was_left_empty(ct_files, ct_result, copy_series, prepare,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    files = copy_series(ct_files, "nameless-log", _nameless)
    with caplog.at_level(logging.INFO, logger="onconode.reporting.outbox"):
        prepare(files, _moved(ct_result, files))
    line = next(r.getMessage() for r in caplog.records if "event=report_prepared" in r.getMessage())
    assert "PatientName is absent from the source" in line


@pytest.mark.peers
def test_study_attributes_only_some_objects_would_take_are_in_every_object(
        ct_files, ct_result, ct_conclusion, registry, copy_series, tmp_path: Path) -> None:
    """A Philips study's procedure code, referenced study and pregnancy status (as BRAINIX has them):
    highdicom's SR and SEG take them from the evidence, so the SC and KOS carry them too, and dcentvfy
    finds no study attribute present in one object but not another."""
    def philips_study(ds: pydicom.Dataset, index: int) -> None:
        code = pydicom.Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "CTCHEST", "XPLORE", "CT chest"
        ref = pydicom.Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", "1.2.3.4.5"
        ds.ProcedureCodeSequence, ds.ReferencedStudySequence, ds.PregnancyStatus = [code], [ref], 4

    files = copy_series(ct_files, "philips", philips_study)
    outputs = _outputs_of(files, ct_result, ct_conclusion, registry)
    written = []
    for f in outputs.files:
        if f.name.endswith(".dcm"):
            (tmp_path / f.name).write_bytes(f.data)
            written.append(tmp_path / f.name)
            ds = pydicom.dcmread(tmp_path / f.name)
            assert ds.ProcedureCodeSequence[0].CodeValue == "CTCHEST" and ds.PregnancyStatus == 4, f.name
    done = subprocess.run([peers.require("dcentvfy"), *map(str, written)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert not [line for line in (done.stdout + done.stderr).splitlines() if "present in one instance" in line]


def test_checks_refuse_an_sc_of_another_study_or_without_its_notice(ct_files, ct_result, prepare) -> None:
    _, prepared = prepare(ct_files, ct_result)
    ds = pydicom.dcmread(prepared.captures[0])
    with pytest.raises(checks.OutputCheckError, match="study"):
        checks.check_sc(ds, "1.2.3")
    ds.BurnedInAnnotation = "NO"
    with pytest.raises(checks.OutputCheckError, match="not-for-diagnosis"):
        checks.check_sc(ds, ds.StudyInstanceUID)
    ds.BurnedInAnnotation = "YES"
    ds.SoftwareVersions = "something else"
    with pytest.raises(checks.OutputCheckError, match="OncoNode's version"):
        checks.check_sc(ds, ds.StudyInstanceUID)


def test_build_refuses_a_key_slice_without_its_file(ct_files, ct_result, ct_conclusion, registry) -> None:
    missing = type(ct_result)(**{**ct_result.__dict__, "slice_paths": {}})
    with pytest.raises(ValueError, match="key slice"):
        build_outputs(ct_conclusion, missing, ct_files, registry["test-ct"].manifest, "node",
                      created=datetime(2026, 12, 3, tzinfo=UTC))


def test_outbox_holds_nothing_half_written(ct_files, ct_result, prepare, tmp_path: Path) -> None:
    _, prepared = prepare(ct_files, ct_result)
    assert not list((tmp_path / "outbox").rglob("*.tmp"))
    assert {p.name for p in prepared.folder.iterdir()} == {p.name for p in prepared.paths}


def test_sc_refuses_a_non_rgb_array(ct_files, ct_conclusion) -> None:
    from onconode.reporting.sc import build_sc

    source = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    with pytest.raises(ValueError, match="uint8"):
        build_sc(source, np.zeros((4, 4), np.uint8), ct_conclusion, generate_uid(), 1, 1, generate_uid(),
                 datetime.now(UTC), "node")


@pytest.mark.peers
def test_without_a_verdict_the_outputs_state_none_and_stay_valid(ct_files, no_verdict, tmp_path: Path) -> None:
    """No Present/Absent anywhere, no threshold named, the headline saying why; still valid DICOM."""
    from onconode.reporting.sc import caption_lines

    result, manifest, conclusion = no_verdict
    outputs = build_outputs(conclusion, result, ct_files, manifest, "node")
    for output in outputs.files:
        (tmp_path / output.name).write_bytes(output.data)
    path = tmp_path / "sr.dcm"
    assert peers.dciodvfy_errors(path) == []
    assert peers.pixelmed_sr_problems(path) == []
    ds = pydicom.dcmread(path)
    (container,) = [i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    assert [i.ValueType for i in container.ContentSequence] == ["TEXT"]
    assert "NO VERDICT" in container.ContentSequence[0].TextValue
    texts = [e.value for e in ds.iterall() if e.keyword == "TextValue"]
    assert "no decision threshold: slices ranked only" in texts
    assert not any("decision threshold " in t for t in texts if t != "no decision threshold: slices ranked only")
    sc = pydicom.dcmread(tmp_path / "sc-1.dcm")
    assert conclusion.headline() in sc.ImageComments
    lines = caption_lines(conclusion, conclusion.key[0])
    assert any("NO VERDICT" in line for line in lines) and not any(">=" in line or " < " in line for line in lines)


def test_without_a_verdict_the_sr_groups_only_the_key_slices(no_verdict, ct_conclusion) -> None:
    """No threshold, so no "at or over the threshold" slices: the per-slice groups are the key slices."""
    conclusion = no_verdict[2]
    assert [s.index for s in sr.slices_for_groups(conclusion)] == sorted(s.index for s in conclusion.key)
    over = [s for s in ct_conclusion.slices if s.probability >= ct_conclusion.threshold]
    assert len(sr.slices_for_groups(ct_conclusion)) == min(sr.MAX_SLICE_GROUPS, len({*over, *ct_conclusion.key}))
