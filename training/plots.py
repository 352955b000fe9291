"""Reliability and ROC figures for the model card (matplotlib, train extra only)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from training.metrics import reliability, roc_curve


def reliability_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """One reliability diagram per (probs, labels) entry, e.g. before/after temperature scaling."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4.2), squeeze=False)
    for axis, (name, (probs, labels)) in zip(axes[0], curves.items()):
        confidence, accuracy, count = reliability(probs, labels)
        used = count > 0
        axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
        axis.bar(confidence[used], accuracy[used], width=1 / len(count), alpha=0.7, edgecolor="black")
        axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=name)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str,
             operating_point: tuple[float, float] | None = None) -> None:
    """ROC curves, one per (scores, positive mask) entry; optional (fpr, tpr) marker."""
    fig, axis = plt.subplots(figsize=(5, 5))
    for name, (scores, positive) in curves.items():
        fpr, tpr, _ = roc_curve(scores, positive)
        axis.plot(fpr, tpr, label=name)
    if operating_point is not None:
        axis.plot(*operating_point, "ko", label="manifest threshold")
    axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
    axis.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity", title=title)
    axis.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
