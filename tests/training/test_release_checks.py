"""The card's studies from other sources (``release.check_studies``): the node's own analysis of a
study named in a check manifest, with the shipped model, on real DICOM whose UIDs a de-identification
emptied (as the COVID-CT-MD sample studies arrive), and on one that comes with a mask series of its
lesion (as BRAINIX does)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml

MODELS = Path(__file__).resolve().parents[2] / "models"


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_check_study_with_emptied_uids_is_analysed_on_a_renamed_copy_and_its_bytes_stay(
        torch_available: None, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onconode.folders import files_under
    from onconode.inference.pipeline import Outcome, analyze_study
    from onconode.models import load_registry
    from training.release import check_studies
    from training.specs import CHEST_CT

    gathered = tmp_path / "training" / "test-check" / "emptied-uids"
    gathered.mkdir(parents=True)
    for path in sorted((data / "dicom" / "lidc-idri-0001").glob("*.dcm"))[20:100]:  # 200 mm: the lungs
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ""
        ds.save_as(gathered / path.name)
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "test-check.yaml").write_text(yaml.safe_dump({"series": [
        {"key": "emptied-uids", "description": "LIDC-IDRI-0001 slices, SOP Instance UIDs emptied"}]}))
    monkeypatch.setenv("ONCONODE_TRAINING_SOURCES", str(sources))
    monkeypatch.setenv("ONCONODE_TRAINING_DATA", str(tmp_path / "training"))
    before = _digests(gathered)

    as_given = analyze_study(list(files_under([gathered])), load_registry(MODELS), [])
    assert as_given.outcome is Outcome.NO_APPLICABLE_MODEL
    assert "SOPInstanceUID of an instance is not a valid UID (empty)" in as_given.series[0].reason

    spec = dataclasses.replace(CHEST_CT, checks="test-check")
    (result,) = check_studies(spec, MODELS, tmp_path)
    assert result.outcome == "analysed" and result.probability is not None and result.positive is None
    assert len(set(result.key_files)) == len(result.key_files) == 3
    assert set(result.key_files) <= {Path(name).stem for name in before}
    assert result.picture == f"{CHEST_CT.name}.check-emptied-uids.png" and (tmp_path / result.picture).is_file()
    assert _digests(gathered) == before


def _mask_of(image: Path, box: tuple[int, int, int, int] | None, into: Path) -> None:
    """A mask slice on ``image``'s geometry, stored as OsiriX exports an ROI: 1 inside ``box``."""
    ds = pydicom.dcmread(image)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    mask = np.zeros((int(ds.Rows), int(ds.Columns)), np.uint16)
    if box is not None:
        mask[box[1]:box[3] + 1, box[0]:box[2] + 1] = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = mask.tobytes()
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{ds.InstanceNumber}"
    ds.SeriesDescription = "T1_ROI"
    ds.save_as(into / f"ROI-{image.stem}.dcm")


def test_a_check_study_with_a_mask_series_is_judged_against_it_and_the_node_never_sees_it(
        torch_available: None, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training.release import check_studies
    from training.specs import BRAIN_MR

    study = tmp_path / "training" / "test-check" / "with-mask"
    images, masks = study / "T1POST", study / "ROI"
    images.mkdir(parents=True)
    masks.mkdir()
    sources = sorted((data / "dicom" / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))
    box = (60, 70, 120, 130)
    for path in sources:
        (images / path.name).write_bytes(path.read_bytes())
        _mask_of(path, box if path.stem in {"IM-0016", "IM-0017", "IM-0018"} else None, masks)
    folder = tmp_path / "sources"
    folder.mkdir()
    (folder / "test-check.yaml").write_text(yaml.safe_dump({"series": [
        {"key": "with-mask", "description": "PGBM-001 with a mask series", "label_folder": "ROI",
         "label_of": "T1POST"}]}))
    monkeypatch.setenv("ONCONODE_TRAINING_SOURCES", str(folder))
    monkeypatch.setenv("ONCONODE_TRAINING_DATA", str(tmp_path / "training"))

    from training.mask_series import lesion_case
    case = lesion_case("with-mask", "", study, "ROI", "T1POST")
    assert case.lesion_slices == ("IM-0016", "IM-0017", "IM-0018")
    assert dict(case.boxes) == {stem: box for stem in case.lesion_slices}

    (result,) = check_studies(dataclasses.replace(BRAIN_MR, checks="test-check"), MODELS, tmp_path)
    assert result.lesion and result.outcome == "analysed" and len(result.key_files) == 3
    assert result.key_on_lesion == tuple(stem in case.lesion_slices for stem in result.key_files)
    assert len(result.peak_in_box) == 3
    assert all((p is None) == (stem not in case.lesion_slices) for stem, p in zip(result.key_files, result.peak_in_box))
    assert not any(stem.startswith("ROI-") for stem in result.key_files)


def test_a_mask_slice_on_no_slice_of_its_series_is_refused(data: Path, tmp_path: Path) -> None:
    from training.mask_series import lesion_case

    source = sorted((data / "dicom" / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))[15]
    (tmp_path / "T1POST").mkdir()
    (tmp_path / "ROI").mkdir()
    (tmp_path / "T1POST" / source.name).write_bytes(source.read_bytes())
    ds = pydicom.dcmread(source)
    ds.ImagePositionPatient = [float(v) + 40.0 * n for v, n in zip(ds.ImagePositionPatient, (0, 0, 1))]
    moved = tmp_path / "moved.dcm"
    ds.save_as(moved)
    _mask_of(moved, (10, 10, 20, 20), tmp_path / "ROI")
    with pytest.raises(ValueError, match="lies on no slice of T1POST"):
        lesion_case("k", "", tmp_path, "ROI", "T1POST")
