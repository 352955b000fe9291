"""Classification metrics with bootstrap confidence intervals, calibration and operating points.

Input: probabilities or logits (N, K) as numpy and integer labels (N,). Output: plain numbers and
dataclasses for the card. Pure numpy: the same code scores PyTorch and ONNX outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve by the rank (Mann-Whitney) statistic, ties counted half."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    values = np.concatenate([pos, neg])
    order = np.argsort(values, kind="mergesort")
    _, inverse, counts = np.unique(values[order], return_inverse=True, return_counts=True)
    mean_rank = np.bincount(inverse, weights=np.arange(1, len(values) + 1)) / counts  # ties share a rank
    ranks = np.empty(len(values))
    ranks[order] = mean_rank[inverse]
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), thresholds descending."""
    thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1]])
    tpr = np.array([(scores[positive] >= t).mean() for t in thresholds])
    fpr = np.array([(scores[~positive] >= t).mean() for t in thresholds])
    return fpr, tpr, thresholds


def macro_ovr_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the one-vs-rest AUC."""
    return float(np.nanmean([roc_auc(probs[:, k], labels == k) for k in range(probs.shape[1])]))


def confusion(predicted: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """(true, predicted) counts."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


@dataclass(frozen=True)
class PerClass:
    precision: float
    recall: float
    f1: float
    support: int


def per_class(matrix: np.ndarray) -> list[PerClass]:
    rows = []
    for k in range(len(matrix)):
        tp = matrix[k, k]
        precision = tp / matrix[:, k].sum() if matrix[:, k].sum() else 0.0
        recall = tp / matrix[k].sum() if matrix[k].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(PerClass(float(precision), float(recall), float(f1), int(matrix[k].sum())))
    return rows


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-class confidence, equal-width bins."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = predicted == labels
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (mean confidence, accuracy, count) for the reliability plot."""
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    mean_conf = np.bincount(index, weights=confidence, minlength=bins) / np.maximum(count, 1)
    accuracy = np.bincount(index, weights=correct.astype(float), minlength=bins) / np.maximum(count, 1)
    return mean_conf, accuracy, count


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising validation negative log-likelihood (log-spaced grid, 0.05-20)."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 600))
    nll = [-np.log(softmax(logits, t)[np.arange(len(labels)), labels] + 1e-12).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


def youden_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """Validation threshold maximising sensitivity + specificity - 1; ties go to the lower threshold.

    The lower one among equals favours sensitivity, the safer error for a triage flag. Clipped to the
    open interval (0, 1) the manifest allows.
    """
    fpr, tpr, thresholds = roc_curve(scores, positive)
    j = tpr - fpr
    best = np.flatnonzero(j == j.max())
    threshold = float(thresholds[best[-1]])
    return float(np.clip(threshold, 1e-3, 1 - 1e-3))


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} (95% CI {self.low:.3f}–{self.high:.3f})"


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, resamples: int = 2000,
              seed: int = 0) -> Estimate:
    """Percentile bootstrap over cases: ``statistic(indices)`` on the full set and on resamples."""
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)])
    values = values[~np.isnan(values)]
    low, high = np.percentile(values, [2.5, 97.5])
    return Estimate(statistic(np.arange(n)), float(low), float(high))
