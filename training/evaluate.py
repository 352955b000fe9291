"""Score a model's logits on one split: the numbers the model card reports.

Input: logits (N, K), labels (N,), the validation-chosen temperature and threshold, and the
indices of the decision's positive labels. Output: an ``Evaluation`` with bootstrap 95% CIs
(percentile bootstrap over images, 2000 resamples, fixed seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.metrics import (
    Estimate,
    PerClass,
    bootstrap,
    confusion,
    ece,
    macro_ovr_auc,
    per_class,
    roc_auc,
    softmax,
)


@dataclass(frozen=True)
class Evaluation:
    n: int
    accuracy: Estimate
    per_class: list[PerClass]
    confusion: np.ndarray          # (true, predicted)
    macro_auc: Estimate            # one-vs-rest, mean over classes
    decision_auc: Estimate         # positive labels (summed probability) vs the rest
    sensitivity: Estimate          # at the manifest threshold
    specificity: Estimate
    ece_before: float              # temperature 1
    ece_after: float               # manifest temperature


def positive_score(probs: np.ndarray, positive: list[int]) -> np.ndarray:
    """The decision score: probability mass on the positive labels (what the node thresholds)."""
    return probs[:, positive].sum(axis=1)


def evaluate(logits: np.ndarray, labels: np.ndarray, temperature: float, threshold: float,
             positive: list[int], seed: int = 0) -> Evaluation:
    probs = softmax(logits, temperature)
    predicted = probs.argmax(axis=1)
    is_positive = np.isin(labels, positive)
    score = positive_score(probs, positive)
    flagged = score >= threshold
    n = len(labels)

    def sensitivity(i: np.ndarray) -> float:
        return float(flagged[i][is_positive[i]].mean()) if is_positive[i].any() else float("nan")

    def specificity(i: np.ndarray) -> float:
        return float((~flagged[i])[~is_positive[i]].mean()) if (~is_positive[i]).any() else float("nan")

    return Evaluation(
        n=n,
        accuracy=bootstrap(lambda i: float((predicted[i] == labels[i]).mean()), n, seed=seed),
        per_class=per_class(confusion(predicted, labels, probs.shape[1])),
        confusion=confusion(predicted, labels, probs.shape[1]),
        macro_auc=bootstrap(lambda i: macro_ovr_auc(probs[i], labels[i]), n, seed=seed),
        decision_auc=bootstrap(lambda i: roc_auc(score[i], is_positive[i]), n, seed=seed),
        sensitivity=bootstrap(sensitivity, n, seed=seed),
        specificity=bootstrap(specificity, n, seed=seed),
        ece_before=ece(softmax(logits, 1.0), labels),
        ece_after=ece(probs, labels),
    )
