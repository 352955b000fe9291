"""Slice selection and study aggregation: which slices to run, and one result from many slices.

Input: per-slice values (HU for CT, [0, 1] intensities for MR) for ``tissue_fraction``; a list of
fractions for ``choose``; per-slice logits (N, L) for ``aggregate``. Output: indices and a
``StudyScore``. Pure functions: no files, no clock.

The models were trained on single slices that show the organ (chest CT, brain MR), so slices
without it (neck, abdomen, vertex, empty air) would only add noise: a simple HU/intensity mask
keeps the slices that show enough of the organ, capped and evenly spread so a 500-slice series
costs the same inference time as a 60-slice one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from onconode.inference.blobs import within_ranks
from onconode.models import Calibration, Decision

Target = Literal["lung", "brain", "body"]

# Aerated lung is about -950…-500 HU; anything above -300 HU is soft tissue or bone.
LUNG_HU = (-950.0, -500.0)
BODY_HU = -300.0
# On a percentile-scaled MR slice, tissue is brighter than this fraction of the range.
BRAIN_LEVEL = 0.2
# A slice is worth running when the organ covers at least this much of it.
MIN_FRACTION = {"lung": 0.03, "brain": 0.10, "body": 0.05}


def tissue_fraction(values: np.ndarray, target: Target, hounsfield: bool) -> float:
    """Fraction of the slice that shows ``target``.

    ``values``: float (H, W), HU when ``hounsfield`` (CT), else intensities scaled to [0, 1]. Lung
    needs HU; for MR every target uses the bright-tissue mask.
    """
    if hounsfield and target == "lung":
        mask = (values > LUNG_HU[0]) & (values < LUNG_HU[1])
    elif hounsfield:
        mask = values > BODY_HU
    else:
        mask = values > BRAIN_LEVEL
    return float(np.count_nonzero(mask)) / float(mask.size)


def organ_wanted(target: Target) -> str:
    """What ``tissue_fraction`` counts for ``target``, as a person reads it in a reason."""
    what = {"lung": f"aerated lung ({LUNG_HU[0]:g} to {LUNG_HU[1]:g} HU)",
            "brain": f"tissue brighter than {BRAIN_LEVEL:.0%} of the series' intensity range",
            "body": f"tissue above {BODY_HU:g} HU"}[target]
    return f"{what} on at least {MIN_FRACTION[target]:.0%} of the slice"


def is_eligible(fraction: float, target: Target) -> bool:
    """Whether a slice shows enough of ``target`` to be worth running."""
    return fraction >= MIN_FRACTION[target]


def choose(fractions: Sequence[float], target: Target, cap: int) -> tuple[int, ...]:
    """Indices of the slices to run: those over the target's minimum fraction, at most ``cap``,
    evenly spread along the series. None when no slice shows the organ: a blank, uniform or
    off-target series is not what the model was made for, and any finding on it would be noise.

    Raises
    ------
    ValueError
        If ``cap`` is below 1.
    """
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    pool = [i for i, f in enumerate(fractions) if is_eligible(f, target)]
    if len(pool) <= cap:
        return tuple(pool)
    picks = np.linspace(0, len(pool) - 1, cap).round().astype(int)
    return tuple(pool[i] for i in sorted(set(picks.tolist())))


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax of (N, L) logits divided by the manifest's calibration temperature."""
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class StudyScore:
    probabilities: tuple[float, ...]   # per label, manifest order; sums to 1
    predicted: int                     # index of the most probable label
    positive_probability: float        # sum over the manifest's positive labels
    positive: bool                     # positive_probability >= threshold
    slice_probabilities: np.ndarray    # (N, L) float64
    key: tuple[int, ...]               # row indices of the key slices, most suspicious first


def aggregate(logits: np.ndarray, labels: Sequence[str], decision: Decision, key_count: int,
              blob_scores: np.ndarray | None = None) -> StudyScore:
    """Study probabilities = mean of the ``key_count`` key slices, with the manifest's calibration.
    The key slices are those with the highest positive probability or, given ``blob_scores`` (the
    nodule filter's, one per row; ``blobs.py``), the highest mean of both ranks in the series.

    A tumour shows on a few slices; the mean over every slice would dilute it by the normal ones,
    while the single maximum follows one noisy slice. Averaging the top k is the compromise; the
    same k slices are the key slices shown with Grad-CAM.

    A calibration fitted on series maps that mean; one fitted on slices (``Calibration``) maps each
    slice, so every slice value shown is calibrated and the study value is exactly the mean of the
    key slices' shown values.

    Raises
    ------
    ValueError
        If ``logits`` is not (N ≥ 1, len(labels)), or ``blob_scores`` not one per row.
    """
    if logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[1] != len(labels):
        raise ValueError(f"logits: expected (N>=1, {len(labels)}), got {logits.shape}")
    probs = softmax(logits, decision.temperature)
    positive_cols = [labels.index(name) for name in decision.positive_labels]
    per_slice = decision.calibration is not None and decision.calibration.fitted_on == "slices"
    if per_slice:
        probs = _recalibrated(probs, positive_cols, decision.calibration)
    suspicion = probs[:, positive_cols].sum(axis=1)
    if blob_scores is not None:
        if blob_scores.shape != suspicion.shape:
            raise ValueError(f"blob_scores: expected {suspicion.shape}, got {blob_scores.shape}")
        suspicion = (within_ranks(suspicion) + within_ranks(blob_scores)) / 2
    order = np.argsort(-suspicion, kind="stable")[:max(1, key_count)]
    study = probs[order].mean(axis=0)
    if not per_slice:
        study = _recalibrated(study[None], positive_cols, decision.calibration)[0]
    positive_probability = float(study[positive_cols].sum())
    return StudyScore(tuple(float(p) for p in study), int(np.argmax(study)), positive_probability,
                      positive_probability >= decision.threshold, probs, tuple(int(i) for i in order))


def _recalibrated(rows: np.ndarray, positive_cols: list[int], calibration: Calibration | None) -> np.ndarray:
    """Label probabilities (N, L) whose positive mass is calibrated, the other labels scaled to
    the rest, so that each row still sums to one."""
    rest = [i for i in range(rows.shape[1]) if i not in positive_cols]
    if calibration is None or not rest:
        return rows
    raw = rows[:, positive_cols].sum(axis=1)
    calibrated = np.array([calibrate(float(p), calibration) for p in raw])
    out = rows.astype(np.float64, copy=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, positive_cols] *= np.where(raw > 0, calibrated / raw, 0.0)[:, None]
        out[:, rest] *= np.where(raw < 1, (1 - calibrated) / (1 - raw), 0.0)[:, None]
    return out


def calibrate(probability: float, calibration: Calibration | None) -> float:
    """The manifest's Platt scaling of a study probability (identity without one)."""
    if calibration is None:
        return probability
    p = min(max(probability, 1e-6), 1 - 1e-6)
    z = calibration.slope * float(np.log(p / (1 - p))) + calibration.intercept
    return float(1.0 / (1.0 + np.exp(-z)))
