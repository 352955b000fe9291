"""The card's studies without the finding (``release.check_studies``): the node's own analysis of a
study named in a check manifest, with the shipped model, on real DICOM whose UIDs a de-identification
emptied, as the COVID-CT-MD sample studies arrive."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

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
    for path in sorted((data / "dicom" / "lidc-idri-0001").glob("*.dcm"))[30:46]:
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
