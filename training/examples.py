"""Prepared series to training examples, through the node's own slice selection and preprocessing.

Input: ``data/prepared/<data>/<key>.npz`` + ``.json`` (written by ``prepare_chest``/``prepare_brain``
from the data manifest) and a ``ModelSpec``. Output: one ``SeriesExamples`` per series: the slices
the node would analyse (``slices.tissue_fraction``/``is_eligible`` on the same values), each made
into the model's input by ``prepare_slice`` (the node's code), with its label, its lesion mask in
the model's input geometry (for localisation checks) and the plain facts a metadata-only baseline
may use.

The intensity planes are kept as uint8 (the [0, 1] planes before normalisation, quantised to 1/255)
to keep a few thousand 224 x 224 x 3 slices in memory; the quantisation is far below any window's
resolution. Cached on disk by series and preprocessing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import cv2
import numpy as np
import yaml

from onconode.inference import slices
from onconode.inference.preprocess import (
    Placement,
    context_neighbours,
    context_offset,
    prepare_slice,
    sample_indices,
    scale_intensities,
    series_scaling,
)
from training.gather import sources_dir
from training.specs import ModelSpec

log = logging.getLogger(__name__)

def prepared_root() -> Path:
    """``$ONCONODE_PREPARED``, else ``data/prepared`` under the working directory."""
    return Path(os.environ.get("ONCONODE_PREPARED", "data/prepared"))


@dataclass(frozen=True)
class SeriesMeta:
    key: str
    patient: str
    sequence: str            # "ct" for CT
    lesion: bool             # the series shows a lesion under the label policy
    collection: str
    skull_stripped: bool | None
    slices: int


@dataclass(frozen=True)
class SeriesExamples:
    meta: SeriesMeta
    planes: np.ndarray       # uint8 (N, C, h, w): [0, 1] intensity planes x 255, eligible slices only
    labels: np.ndarray       # int8 (N,): 1 lesion, 0 none, -1 ignore (a lesion the policy does not count)
    masks: np.ndarray        # bool (N, h, w): the lesion in the model's input geometry
    index: np.ndarray        # int32 (N,): slice position in the series
    features: np.ndarray     # float32 (N, F): metadata-only facts (``FEATURES``)
    mm_per_px: np.ndarray    # float32 (N,): millimetres per model-input pixel (NaN when the spacing is unknown)


# What the metadata-only baseline may see: size and intensity statistics, nothing a reader would call
# image content (and not the slice's position, which carries real anatomy: tumours avoid the vertex).
FEATURES = ("rows", "columns", "slices_in_series", "mean", "std", "p1", "p99", "pixel_spacing_mm")


def entries(spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """The data manifest's entries by key."""
    data = yaml.safe_load((sources_dir() / f"{spec.data}.yaml").read_text())
    return {e["key"]: e for e in data["series"]}


def _meta(spec: ModelSpec, key: str, info: dict[str, Any], entry: dict[str, Any], n: int) -> SeriesMeta:
    sequence = "ct" if spec.modality == "CT" else str(info.get("sequence") or entry.get("sequence"))
    lesion = bool(entry.get("lesion", info.get("lesion", info.get("series_label") == "lesion")))
    stripped = info.get("skull_stripped", entry.get("skull_stripped"))
    return SeriesMeta(key, str(entry.get("patient_id", key)), sequence, lesion, str(entry.get("collection", "")),
                      None if stripped is None else bool(stripped), n)


def _volume(npz: Any, spec: ModelSpec, info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values (Z, H, W) float32 in modality units, labels (Z,), lesion mask (Z, H, W))."""
    if spec.modality == "CT":
        values = npz["hu"].astype(np.float32)
        return values, npz["slice_label"].astype(np.int8), npz["mask"] > 0
    values = npz["image"].astype(np.float32)
    positive = set(info.get("positive_labels") or [])
    mask = np.isin(npz["mask"], list(positive)) if positive else npz["mask"] > 0
    labels = mask.reshape(mask.shape[0], -1).any(axis=1).astype(np.int8)
    return values, np.asarray(labels), np.asarray(mask)


def _to_model(mask: np.ndarray, placement: Placement) -> np.ndarray:
    """A slice mask carried through the same crop, resize and padding as the image (nearest)."""
    top, bottom, left, right = placement.crop
    crop = mask[top:bottom, left:right].astype(np.uint8)
    new_h = max(1, round(crop.shape[0] * placement.scale_y))
    new_w = max(1, round(crop.shape[1] * placement.scale_x))
    resized = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    out = np.zeros(placement.input_shape, bool)
    out[placement.top_pad:placement.top_pad + new_h, placement.left_pad:placement.left_pad + new_w] = resized > 0
    return out


def build(spec: ModelSpec, key: str, root: Path, entry: dict[str, Any]) -> SeriesExamples:
    """One prepared series through the node's slice selection and preprocessing."""
    npz = np.load(root / f"{key}.npz")
    info = json.loads((root / f"{key}.json").read_text())
    values, labels, mask = _volume(npz, spec, info)
    meta = _meta(spec, key, info, entry, len(values))
    hounsfield = spec.modality == "CT"
    scaling = series_scaling([values[i] for i in sample_indices(len(values))], spec.preprocess)
    spacing_mm = np.asarray(npz["spacing"], float)  # (dz, dy, dx)
    spacing = float(np.nan_to_num(spacing_mm[1], nan=0.0))
    context = spec.preprocess.context_mm
    offset = context_offset(abs(float(spacing_mm[0])), context) if context is not None else 0
    mean = np.asarray(spec.preprocess.normalize.mean, np.float32)[:, None, None]
    std = np.asarray(spec.preprocess.normalize.std, np.float32)[:, None, None]
    planes, kept_labels, masks, index, features, scale = [], [], [], [], [], []
    for z, slice_values in enumerate(values):
        seen = slice_values if hounsfield else scale_intensities(slice_values, spec.preprocess, scaling)
        if not slices.is_eligible(slices.tissue_fraction(seen, spec.slices.target, hounsfield), spec.slices.target):
            continue
        image, placement = prepare_slice(slice_values, spec.preprocess, spec.size, 3, spec.modality, scaling,
                                         context_neighbours(z, len(values), offset, values))
        planes.append(np.clip((image * std + mean) * 255.0 + 0.5, 0, 255).astype(np.uint8))
        kept_labels.append(labels[z])
        masks.append(_to_model(mask[z], placement))
        index.append(z)
        scale.append(spacing / placement.scale_x if spacing > 0 else np.nan)
        p1, p99 = np.percentile(slice_values, [1, 99])
        features.append([values.shape[1], values.shape[2], len(values), float(slice_values.mean()),
                         float(slice_values.std()), float(p1), float(p99), spacing])
    channels = (0, 3, *spec.size)
    return SeriesExamples(
        meta, np.stack(planes) if planes else np.zeros(channels, np.uint8), np.asarray(kept_labels, np.int8),
        np.stack(masks) if masks else np.zeros((0, *spec.size), bool), np.asarray(index, np.int32),
        np.asarray(features, np.float32).reshape(-1, len(FEATURES)), np.asarray(scale, np.float32))


def _cache_key(spec: ModelSpec, key: str, root: Path) -> str:
    stamp = (root / f"{key}.npz").stat()
    text = repr((spec.preprocess, spec.size, spec.slices.target, key, stamp.st_size, stamp.st_mtime_ns, FEATURES))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_all(spec: ModelSpec, root: Path | None = None, cache: Path = Path(".cache/training")) -> list[SeriesExamples]:
    """Every series of the data manifest that is prepared and fits the spec, cached on disk."""
    root = (root or prepared_root()) / spec.data
    out = []
    cache.mkdir(parents=True, exist_ok=True)
    for key, entry in sorted(entries(spec).items()):
        if not (root / f"{key}.npz").is_file():
            log.warning("series=%s not prepared: run python -m training.prepare_%s", key, spec.data.split("-")[0])
            continue
        path = cache / f"{spec.name}-{key}-{_cache_key(spec, key, root)}.npz"
        if path.is_file():
            z = np.load(path)
            meta = SeriesMeta(**json.loads(str(z["meta"])))
            examples = SeriesExamples(meta, z["planes"], z["labels"], z["masks"], z["index"], z["features"],
                                      z["mm_per_px"])
        else:
            examples = build(spec, key, root, entry)
            np.savez(path, meta=json.dumps(examples.meta.__dict__), planes=examples.planes, labels=examples.labels,
                     masks=examples.masks, index=examples.index, features=examples.features,
                     mm_per_px=examples.mm_per_px)
        if spec.modality == "MR" and examples.meta.sequence not in spec.accepts.sequences:
            continue
        if spec.skull_stripped is not None and examples.meta.skull_stripped not in (None, spec.skull_stripped):
            continue
        if len(examples.labels):
            out.append(examples)
    return out


def coverage_mm(info: dict[str, Any]) -> float | None:
    """How far a prepared series reaches along its normal (slices × spacing), as the node measures
    it (``selection.geometry``); None where the source lost the spacing."""
    volume = info.get("volume", info)
    shape, spacing = volume.get("shape"), volume.get("spacing_mm")
    if not shape or not spacing or spacing[0] is None or not np.isfinite(spacing[0]):
        return None
    return float(shape[0] * spacing[0])


def read_by_node(spec: ModelSpec, keys: list[str], root: Path | None = None) -> set[str]:
    """The prepared series among ``keys`` that the node would offer the model: every one, but those
    too short along the normal for ``accepts.min_coverage_mm``.

    Why not drop the others from training: their slices are real lesion-free (or lesion) slices, and the
    model learns from them; but a figure for what the node says of a series counts only series the
    node would read.
    """
    root = (root or prepared_root()) / spec.data
    kept = set()
    for key in keys:
        path = root / f"{key}.json"
        coverage = coverage_mm(json.loads(path.read_text())) if path.is_file() else None
        if coverage is None or coverage >= spec.accepts.min_coverage_mm:
            kept.add(key)
        else:
            log.info("series=%s covers %.0f mm < %g mm: trained on, not evaluated", key, coverage,
                     spec.accepts.min_coverage_mm)
    return kept


class _OfSeries(Protocol):
    @property
    def series(self) -> str: ...


Record = TypeVar("Record", bound=_OfSeries)


def node_reads_only(spec: ModelSpec, records: list[Record]) -> list[Record]:
    """The out-of-fold records of series the node would read (``read_by_node``): every figure counts
    only those."""
    readable = read_by_node(spec, sorted({r.series for r in records}))
    return [r for r in records if r.series in readable]
