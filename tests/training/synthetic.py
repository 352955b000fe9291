"""Synthetic prepared CT series in the prepared format (``prepare_chest``'s npz + json) and their
data manifest: a body, two lungs and, for lesion patients, a round nodule on a few slices.

For testing the training pipeline end to end without real data in CI; nothing here is a model of
anatomy, and no model trained on it is shipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml


def _series(rng: np.random.Generator, lesion: bool, slices: int = 16, size: int = 64) -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) / (0.42 * size)) ** 2 + ((xx - size / 2) / (0.47 * size)) ** 2 <= 1
    lungs = [((yy - size / 2) / (0.28 * size)) ** 2 + ((xx - cx) / (0.16 * size)) ** 2 <= 1
             for cx in (0.3 * size, 0.7 * size)]
    hu = np.full((slices, size, size), -1000, np.int16)
    mask = np.zeros((slices, size, size), np.uint8)
    for z in range(slices):
        hu[z][body] = 40
        for lung in lungs:
            hu[z][lung] = -850
        hu[z] += rng.normal(0, 15, (size, size)).astype(np.int16)
    labels = np.zeros(slices, np.int8)
    if lesion:
        cy, cx = int(0.5 * size), int(0.3 * size)
        nodule = (yy - cy) ** 2 + (xx - cx) ** 2 <= 16
        for z in range(slices // 2 - 2, slices // 2 + 2):
            hu[z][nodule] = 30
            mask[z][nodule] = 1
            labels[z] = 1
    return {"hu": hu, "mask": mask, "ignore": np.zeros_like(mask), "slice_label": labels,
            "spacing": np.array([2.5, 0.7, 0.7], np.float32),
            "sop_uids": np.array([f"1.2.826.0.1.3680043.8.498.{z + 1}" for z in range(slices)]),
            "z_mm": np.arange(slices) * 2.5}


def write(root: Path, sources: Path, patients: int = 6, lesion_patients: int = 4, seed: int = 0) -> None:
    """``root/chest-ct/<key>.npz|json`` and ``sources/chest-ct.yaml`` for ``patients`` synthetic patients."""
    rng = np.random.default_rng(seed)
    folder = root / "chest-ct"
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for p in range(patients):
        key = f"synthetic-{p:02d}"
        lesion = p < lesion_patients
        np.savez(folder / f"{key}.npz", **_series(rng, lesion))
        (folder / f"{key}.json").write_text(json.dumps({"key": key, "series_label": "lesion" if lesion else "none"}))
        entries.append({"key": key, "patient_id": f"SYN-{p:02d}", "lesion": lesion, "collection": "synthetic",
                        "licence": "none (generated)", "repo": "none/none", "commit": "0" * 40})
    sources.mkdir(parents=True, exist_ok=True)
    (sources / "chest-ct.yaml").write_text(yaml.safe_dump({"model": "chest-ct", "label_policy": "synthetic",
                                                           "series": entries}))
