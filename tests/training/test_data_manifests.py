"""The data manifests (``training/sources/*.yaml``) name every training series well enough to rebuild
it, and none of it is the project's external check: no patient, study or series of
``$ONCONODE_DATA/dicom``, and no repository the data README holds out. Reads YAML and headers only."""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
import pytest
import yaml

from onconode.folders import files_under

SOURCES = Path(__file__).resolve().parents[2] / "training" / "sources"
MANIFESTS = sorted(SOURCES.glob("*.yaml"))
PROVENANCE = ("key", "repo", "commit", "paths", "patient_id", "licence", "label_source", "format")


def series_entries() -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    return [(path.name, entry) for path in MANIFESTS for entry in yaml.safe_load(path.read_text())["series"]]


def test_every_series_says_where_it_comes_from_and_what_labels_it() -> None:
    entries = series_entries()
    assert MANIFESTS and entries
    keys = [entry["key"] for _, entry in entries]
    assert len(keys) == len(set(keys)), "a series key is used twice"
    for name, entry in entries:
        missing = [field for field in PROVENANCE if not entry.get(field)]
        assert not missing, (name, entry["key"], missing)
        assert re.fullmatch(r"[0-9a-f]{40}", entry["commit"]), (name, entry["key"])
        assert re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", entry["repo"]), (name, entry["key"])
        if entry["format"] == "dicom":  # NIfTI carries no DICOM identifiers to name
            assert entry.get("study_uid") and entry.get("series_uid"), (name, entry["key"])


def held_out_repositories(data: Path) -> set[str]:
    """The repositories the data README lists under "Held out" (its bullet list of owner/name)."""
    text = (data / "README.md").read_text()
    section = text.split("## Held out", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("- ")]
    return {name.lower() for line in lines for name in re.findall(r"\b[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+\b", line)}


def test_no_series_comes_from_a_held_out_repository(data: Path) -> None:
    held_out = held_out_repositories(data)
    assert "huyenbui117/lung_ct" in held_out and "datalad/example-dicom-functional" in held_out
    used = {entry["repo"].lower() for _, entry in series_entries()}
    assert not used & held_out, sorted(used & held_out)


def test_no_patient_study_or_series_of_the_external_check_is_in_training(data: Path) -> None:
    seen: dict[str, set[str]] = {"patient_id": set(), "study_uid": set(), "series_uid": set()}
    for path in files_under([data / "dicom"]):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError):
            continue
        seen["patient_id"].add(str(ds.get("PatientID", "")))
        seen["study_uid"].add(str(ds.get("StudyInstanceUID", "")))
        seen["series_uid"].add(str(ds.get("SeriesInstanceUID", "")))
    if not seen["series_uid"]:
        pytest.skip("no DICOM under the data folder")
    assert {"LIDC-IDRI-0001", "PGBM-001", "UPENN-GBM-00001"} <= seen["patient_id"]
    for name, entry in series_entries():
        for field, values in seen.items():
            value = entry.get(field)
            assert value is None or str(value) not in values, (name, entry["key"], field)
