"""The metadata-only baseline: a logistic regression on facts that are not image content (matrix
size, series length, intensity statistics, pixel spacing; ``examples.FEATURES``), trained and scored on
the same folds as the model.

Why: a model can score well by learning which source a slice came from rather than what it shows
(the Kaggle sets taught exactly that). If these facts alone separate lesion from lesion-free, the
data still carry a shortcut, and the model's score means little; the card shows both side by side.
"""

from __future__ import annotations

import numpy as np


def fit(features: np.ndarray, labels: np.ndarray, ridge: float = 1.0, steps: int = 50
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, mean, scale) of an L2-regularised logistic regression (Newton steps) on standardised features."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0
    x = np.hstack([(features - mean) / scale, np.ones((len(features), 1))])
    y = labels.astype(float)
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], ridge)
    penalty[-1] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + penalty * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w, mean, scale


def predict(model: tuple[np.ndarray, np.ndarray, np.ndarray], features: np.ndarray) -> np.ndarray:
    w, mean, scale = model
    x = np.hstack([(features - mean) / scale, np.ones((len(features), 1))])
    return 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
