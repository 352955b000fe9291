"""Would the brain model read a thin series better as thicker slabs? ``python -m training.slab_check``.

The shipped model's T1 post-contrast lesion series are all 5 to 6.5 mm thick. This scores the prepared
skull-stripped 1 mm series of the manifest, which the spec leaves out of training, with the shipped
ONNX twice: each slice as it is, and each slice as the mean of ``--slab`` slices (one slab of that
many millimetres). It prints, per series and pooled, the AUC of lesion against lesion-free slices and
whether the first key slice, and any of the three, is a lesion slice. The external studies are not
used. The result and the rule it was judged by are in ``models/RELEASE-NOTES.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from training import examples
from training.export import onnx_outputs, session
from training.metrics import roc_auc
from training.specs import BRAIN_MR, ModelSpec


def slabs(values: np.ndarray, size: int) -> np.ndarray:
    """Each slice replaced by the mean of the ``size`` slices centred on it (edges repeated)."""
    pad = size // 2
    padded = np.pad(values.astype(np.float64), [(pad, size - 1 - pad)] + [(0, 0)] * (values.ndim - 1), mode="edge")
    total = np.concatenate([np.zeros((1, *values.shape[1:])), np.cumsum(padded, axis=0)])
    return ((total[size:] - total[:-size]) / size).astype(values.dtype)


def scored(spec: ModelSpec, key: str, prepared: Path, entry: dict[str, Any], onnx: Path, size: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """(per-slice lesion probability, slice labels) of one prepared series, slabbed when ``size`` > 1."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        npz = dict(np.load(prepared / f"{key}.npz"))
        if size > 1:
            npz["image"] = slabs(npz["image"], size)
        np.savez(root / f"{key}.npz", **npz)
        shutil.copy(prepared / f"{key}.json", root / f"{key}.json")
        series = examples.build(spec, key, root, entry)
    mean = np.asarray(spec.preprocess.normalize.mean, np.float32)[:, None, None]
    std = np.asarray(spec.preprocess.normalize.std, np.float32)[:, None, None]
    images = (series.planes.astype(np.float32) / 255.0 - mean) / std
    logits, _ = onnx_outputs(session(onnx), images)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted[:, 1] / shifted.sum(axis=1), series.labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slab", type=int, default=5, help="slices per slab (1 mm series: millimetres)")
    parser.add_argument("--models", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    spec = dataclasses.replace(BRAIN_MR, skull_stripped=True)
    prepared = examples.prepared_root() / spec.data
    entries = examples.entries(spec)
    keys = [k for k, e in entries.items() if e.get("skull_stripped") and (prepared / f"{k}.npz").exists()]
    pooled: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {1: [], args.slab: []}
    first = {1: 0, args.slab: 0}
    among = {1: 0, args.slab: 0}
    for key in sorted(keys):
        row = {}
        for size, rows in pooled.items():
            p, labels = scored(spec, key, prepared, entries[key], args.models / f"{spec.name}.onnx", size)
            rows.append((p, labels))
            known = labels >= 0
            order = np.argsort(-p)
            first[size] += int(labels[order[0]] == 1)
            among[size] += int((labels[order[:3]] == 1).any())
            row[size] = round(roc_auc(p[known], labels[known] == 1), 3)
        print(json.dumps({"series": key, "auc_by_slab": row}))
    for size, rows in pooled.items():
        p = np.concatenate([r[0] for r in rows])
        labels = np.concatenate([r[1] for r in rows])
        known = labels >= 0
        print(json.dumps({"slab": size, "series": len(rows), "pooled_auc": round(roc_auc(p[known], labels[known] == 1), 3),
                          "mean_auc": round(float(np.nanmean([roc_auc(r[0][r[1] >= 0], r[1][r[1] >= 0] == 1)
                                                              for r in rows])), 3),
                          "first_key_on_lesion": first[size], "lesion_among_key": among[size]}))


if __name__ == "__main__":
    main()
