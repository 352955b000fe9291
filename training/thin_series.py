"""How the brain model reads thin series: ``python -m training.thin_series``.

Every lesion series the shipped brain model was trained on has 18 to 28 slices over the brain (5 to
6.5 mm where the spacing is known). This prints two things, with the shipped ONNX, on prepared series
that no model was trained on, and never on the external studies:

- ``healthy``: the thin volumes of healthy volunteers with the skull (T1, 0.9 and 2 mm; the node would
  not offer them to the model, whose sequences are T1 post-contrast and FLAIR): the study value the
  node would compute, calibrated as shipped, and the slices that drive it. They are what a thin
  series without a tumour looks like to the model.
- ``slabs``: the skull-stripped 1 mm BraTS series, each slice scored as it is and as the mean of
  ``--slab`` slices: the AUC of lesion against lesion-free slices and whether the first key slice,
  and any of the three, is a lesion slice.

What was decided from them, and by which rule, is in ``models/RELEASE-NOTES.md``.
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
import onnxruntime as ort

from onconode.inference.slices import softmax
from onconode.models import load_manifest
from training import examples
from training.evaluate import study_value
from training.export import onnx_outputs, session
from training.fit import normalise
from training.metrics import roc_auc
from training.specs import BRAIN_MR, ModelSpec


def slabs(values: np.ndarray, size: int) -> np.ndarray:
    """Each slice replaced by the mean of the ``size`` slices centred on it (edges repeated)."""
    pad = size // 2
    padded = np.pad(values.astype(np.float64), [(pad, size - 1 - pad)] + [(0, 0)] * (values.ndim - 1), mode="edge")
    total = np.concatenate([np.zeros((1, *values.shape[1:])), np.cumsum(padded, axis=0)])
    return ((total[size:] - total[:-size]) / size).astype(values.dtype)


def scored(spec: ModelSpec, key: str, prepared: Path, entry: dict[str, Any], model: ort.InferenceSession,
           size: int) -> tuple[np.ndarray, np.ndarray]:
    """(per-slice lesion probability, slice labels) of one prepared series, slabbed when ``size`` > 1."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        npz = dict(np.load(prepared / f"{key}.npz"))
        if size > 1:
            npz["image"] = slabs(npz["image"], size)
        np.savez(root / f"{key}.npz", **npz)
        shutil.copy(prepared / f"{key}.json", root / f"{key}.json")
        series = examples.build(spec, key, root, entry)
    logits, _ = onnx_outputs(model, normalise(series.planes, spec).contiguous().numpy())
    return softmax(logits, 1.0)[:, 1], series.labels


def healthy(spec: ModelSpec, prepared: Path, entries: dict[str, dict[str, Any]], onnx: Path) -> None:
    manifest = load_manifest(onnx.with_suffix(".yaml"))
    model = session(onnx)
    calibration, key = manifest.decision.calibration, manifest.slices.key
    assert calibration is not None
    for name, entry in sorted(entries.items()):
        if entry.get("lesion") or entry.get("sequence") != "t1" or not (prepared / f"{name}.npz").exists():
            continue
        if float(json.loads((prepared / f"{name}.json").read_text())["spacing_mm"][0] or 99) > 2.5:
            continue
        p, _ = scored(spec, name, prepared, entry, model, 1)
        value = study_value(p.tolist(), calibration.slope, calibration.intercept, "series", key)
        print(json.dumps({"healthy": name, "slices": len(p), "study_value": round(value, 3),
                          "threshold": manifest.decision.threshold, "flagged": value >= manifest.decision.threshold,
                          "top_slices": [round(float(v), 2) for v in np.sort(p)[::-1][:key]]}))


def compare_slabs(spec: ModelSpec, prepared: Path, entries: dict[str, dict[str, Any]], onnx: Path, slab: int) -> None:
    keys = [k for k, e in entries.items() if e.get("skull_stripped") and (prepared / f"{k}.npz").exists()]
    model = session(onnx)
    pooled: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {1: [], slab: []}
    first = {1: 0, slab: 0}
    among = {1: 0, slab: 0}
    for key in sorted(keys):
        row = {}
        for size, rows in pooled.items():
            p, labels = scored(spec, key, prepared, entries[key], model, size)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", nargs="?", choices=("healthy", "slabs", "both"), default="both")
    parser.add_argument("--slab", type=int, default=5, help="slices per slab (1 mm series: millimetres)")
    parser.add_argument("--models", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    spec = dataclasses.replace(BRAIN_MR, skull_stripped=None)
    prepared = examples.prepared_root() / spec.data
    entries = examples.entries(spec)
    onnx = args.models / f"{spec.name}.onnx"
    if args.part in ("healthy", "both"):
        healthy(spec, prepared, entries, onnx)
    if args.part in ("slabs", "both"):
        compare_slabs(spec, prepared, entries, onnx, args.slab)


if __name__ == "__main__":
    main()
