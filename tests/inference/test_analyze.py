"""``onconode analyze`` on the real studies, through ``cli.main`` as a user would run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onconode.cli import main
from onconode.folders import files_under
from onconode.selection import series


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "onconode.yaml"
    path.write_text("routing:\n"
                    "  - {name: ct, modality: CT, model: test-ct, target: lung, max_analysed_slices: 8}\n"
                    "  - {name: mr, modality: MR, model: test-mr, target: brain, max_analysed_slices: 8}\n")
    return path


def test_every_study_in_the_data_ends_with_a_result_or_a_reason(dicom_dir: Path, models_dir: Path, config: Path,
                                                                tmp_path: Path, capsys) -> None:
    out = tmp_path / "overlays"
    status = main(["--config", str(config), "analyze", str(dicom_dir), "--json", "--models", str(models_dir),
                   "--out", str(out)])
    reports = json.loads(capsys.readouterr().out)
    assert status == 0
    expected = series.group_by_study(files_under([dicom_dir]))
    assert {r["study_uid"] for r in reports} == set(expected)
    outcomes = {r["study_uid"]: r["outcome"] for r in reports}
    assert list(outcomes.values()).count("analysed") == 4  # 2 chest CT, 2 brain MR
    # localizers, SC, dose report, and the 2-frame perfusion map (no region, 2 slices)
    assert list(outcomes.values()).count("no_applicable_model") == 4
    for report in reports:
        assert report["reason"]
        if report["outcome"] == "analysed":
            assert report["model"] in {"test-ct", "test-mr"}
            assert set(report["probabilities"]) == {"malignant", "benign", "normal"}
            assert len(report["overlays"]) == len(report["key_slices"]) >= 1
            assert all(Path(p).is_file() and Path(p).stat().st_size > 0 for p in report["overlays"])
            assert [s for s in report["series"] if s["taken"]]


def test_table_output_names_model_decision_and_key_slices(dicom_dir: Path, models_dir: Path, config: Path,
                                                          capsys) -> None:
    status = main(["--config", str(config), "analyze", str(dicom_dir / "brain-tumor-progression-pgbm-001-t1post"),
                   "--models", str(models_dir)])
    text = capsys.readouterr().out
    assert status == 0
    assert "test-mr 0.0.1-test" in text and "result    test finding:" in text and "(per slice)" in text
    assert "key 1" in text and "TAKEN" in text


def test_without_models_every_study_ends_with_a_clear_reason(dicom_dir: Path, config: Path, tmp_path: Path,
                                                             capsys) -> None:
    status = main(["--config", str(config), "analyze", str(dicom_dir / "lidc-idri-0001"),
                   "--models", str(tmp_path / "no-models")])
    captured = capsys.readouterr()
    assert status == 0
    assert "no-models does not exist: no model is installed" in captured.err
    assert "no applicable model: rule ct wants model test-ct, which is not installed" in captured.out


def test_missing_path_is_a_usage_error(tmp_path: Path, config: Path, capsys) -> None:
    assert main(["--config", str(config), "analyze", str(tmp_path / "nothing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_folder_without_dicom_is_a_usage_error(tmp_path: Path, config: Path, capsys) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    assert main(["--config", str(config), "analyze", str(tmp_path)]) == 2
    assert "no DICOM study found" in capsys.readouterr().err


def test_a_broken_model_stops_the_command(dicom_dir: Path, config: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x.yaml").write_text("name: [")
    assert main(["--config", str(config), "analyze", str(dicom_dir / "misc"), "--models", str(tmp_path / "m")]) == 2
    assert "model manifest" in capsys.readouterr().err


def test_an_undecodable_study_fails_with_its_reason(dicom_dir: Path, models_dir: Path, config: Path,
                                                    copy_series, capsys) -> None:
    import pydicom

    def mpeg2(ds: pydicom.Dataset, index: int) -> None:
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"

    src = sorted((dicom_dir / "lung-pet-ct-dx-a0002-ct").glob("*.dcm"))[:12]
    folder = copy_series(src, edit=mpeg2)[0].parent
    assert main(["--config", str(config), "analyze", str(folder), "--models", str(models_dir)]) == 1
    assert "cannot decode pixel data" in capsys.readouterr().out
