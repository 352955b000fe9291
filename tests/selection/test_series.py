"""Series screening and selection on real studies assembled in tmp copies."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from onconode.folders import files_under
from onconode.inference import pipeline
from onconode.selection import series

STUDY = "1.2.826.0.1.3680043.8.498.424242"


def _into_study(ds: pydicom.Dataset, index: int) -> None:
    ds.StudyInstanceUID = STUDY


def _decisions(result: pipeline.AnalysisResult) -> dict[str, series.SeriesDecision]:
    return {d.description: d for d in result.series}


def test_localizer_dose_report_and_two_axial_series_pick_the_right_one(dicom_dir: Path, copy_series,
                                                                       registry, rules) -> None:
    misc = dicom_dir / "misc"
    files = copy_series([misc / "ct-localizer-ap.dcm", misc / "ct-localizer-lat.dcm",
                         misc / "ct-dose-rdsr-siemens-flash.dcm"], "misc", _into_study)
    files += copy_series(sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[:30], "lidc", _into_study)
    files += copy_series(sorted((dicom_dir / "lung-pet-ct-dx-a0002-ct").glob("*.dcm"))[:12], "lung", _into_study)
    result = pipeline.analyze_study(files, registry, rules)
    assert result.outcome is pipeline.Outcome.ANALYSED
    chosen = [d for d in result.series if d.taken]
    assert len(chosen) == 1 and chosen[0].slices == 30
    assert result.series_uid == chosen[0].series_uid
    by_desc = _decisions(result)
    assert "localizer" in by_desc["Scout"].reason
    assert "dose report" in by_desc["Dose Report"].reason
    assert "ranked below the chosen series" in by_desc["ThoraxRoutine  8.0.0  B40f"].reason
    assert len(result.series) == 4


def test_derived_series_loses_to_original_but_is_never_dropped_alone(dicom_dir: Path, copy_series,
                                                                     registry, rules) -> None:
    upenn = sorted((dicom_dir / "upenn-gbm-00001-t1post").glob("*.dcm"))
    pgbm = sorted((dicom_dir / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))
    # The derived series has four times the slices and still loses to the original one.
    both = copy_series(upenn[::2], "upenn", _into_study) + copy_series(pgbm, "pgbm", _into_study)
    result = pipeline.analyze_study(both, registry, rules)
    by_desc = _decisions(result)
    assert by_desc["T1post"].taken and by_desc["T1post"].slices == 24
    assert by_desc["t1 axial stealth-post : Processed_CaPTk"].slices == 96
    derived = by_desc["t1 axial stealth-post : Processed_CaPTk"]
    assert not derived.taken and "ranked below the chosen series by sequence, original" in derived.reason
    assert "DERIVED/SECONDARY" in derived.evidence

    alone = pipeline.analyze_study(upenn[::8], registry, rules)
    assert alone.outcome is pipeline.Outcome.ANALYSED
    (decision,) = alone.series
    assert decision.taken and decision.reason == "read by test-mr (rule mr)"


def test_a_study_with_no_applicable_model_ends_no_applicable_model(dicom_dir: Path, registry, rules) -> None:
    result = pipeline.analyze_study([dicom_dir / "misc" / "sc-nm-jpeg-lossless.dcm"], registry, rules)
    assert result.outcome is pipeline.Outcome.NO_APPLICABLE_MODEL
    assert result.reason.startswith("no applicable model")
    assert "secondary capture" in result.series[0].reason


def test_scan_refuses_files_of_two_studies(dicom_dir: Path) -> None:
    files = [dicom_dir / "lidc-idri-0001" / "IM-0001.dcm", dicom_dir / "misc" / "ct-localizer-ap.dcm"]
    with pytest.raises(ValueError, match="2 studies"):
        series.scan(files)


def test_scan_refuses_paths_without_dicom(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM")
    with pytest.raises(ValueError, match="no readable DICOM"):
        series.scan([junk])


def test_group_by_study_splits_a_folder(dicom_dir: Path) -> None:
    studies = series.group_by_study(files_under([dicom_dir / "misc"]))
    assert len(studies) == 3  # the two localizers share one study


@pytest.mark.parametrize(("attribute", "value", "reason"), [
    ("SOPInstanceUID", "", "SOPInstanceUID of an instance is not a valid UID (empty)"),
    ("SeriesInstanceUID", "1bc8b288-610b-4001-aac8-f814641169da", "SeriesInstanceUID of an instance is not a valid UID"),
    ("SOPInstanceUID", "1.2.826.0.1.3680043.8.498.7", "instances share one SOP Instance UID"),
])
def test_a_series_whose_instances_cannot_be_named_is_left_out_without_quoting_the_value(
        dicom_dir: Path, copy_series, registry, rules, attribute: str, value: str, reason: str) -> None:
    """Real de-identified studies arrive with UIDs emptied or written as UUIDs: a report could not name
    their key slices, and the node refuses such instances on receipt, so ``analyze`` leaves the series
    out with the reason, never a finding, and the reason does not repeat what the file holds."""
    def broken(ds: pydicom.Dataset, index: int) -> None:
        _into_study(ds, index)
        setattr(ds, attribute, value)

    files = copy_series(sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[:12], "lidc", broken)
    result = pipeline.analyze_study(files, registry, rules)
    assert result.outcome is pipeline.Outcome.NO_APPLICABLE_MODEL
    (decision,) = result.series
    assert not decision.taken and reason in decision.reason
    assert not value or value not in decision.reason
