"""Real series under new UIDs: as many distinct studies as a test needs, from one series on disk."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import generate_uid


def reuid_studies(series: Path, folder: Path, count: int, slices: int) -> dict[str, list[Path]]:
    """``count`` copies of ``slices`` consecutive slices from the middle of ``series``, each copy a new
    study (new Study, Series and SOP Instance UIDs), written under ``folder``; by Study Instance UID."""
    files = sorted(series.glob("*.dcm"))
    start = max(0, (len(files) - slices) // 2)
    sources = [pydicom.dcmread(path) for path in files[start:start + slices]]
    studies: dict[str, list[Path]] = {}
    for n in range(count):
        study_uid, series_uid = generate_uid(), generate_uid()
        target = folder / f"study-{n:03d}"
        target.mkdir(parents=True)
        paths = []
        for i, ds in enumerate(sources):
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            path = target / f"{i:03d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        studies[study_uid] = paths
    return studies
