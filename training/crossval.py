"""Patient-grouped cross-validation: every slice and series gets a prediction from a model (and a
baseline) that never saw its patient.

For each fold: the other folds' patients train, a patient-grouped part of them chooses the epoch;
the fold's patients are predicted, and for each lesion slice the Grad-CAM heat map (CAM: the head
is GAP + one linear layer) is compared with the lesion mask. Output: ``SliceRecord`` rows for
``evaluate.summary``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from training import baseline
from training.evaluate import SliceRecord
from training.examples import SeriesExamples
from training.fit import fit, load, normalise
from training.folds import inner_validation, patients, split
from training.network import LiteClassifier
from training.specs import ModelSpec

log = logging.getLogger(__name__)
LESION = 1  # the positive label's index in the logits


def predict_with_cams(model: LiteClassifier, series: SeriesExamples, spec: ModelSpec, batch_size: int = 64
                      ) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """(P(lesion) per slice, CAM in model-input geometry for lesion slices, else None)."""
    weights = model.classifier.weight[LESION].detach()
    probs, cams = [], []
    with torch.inference_mode():
        for start in range(0, len(series.labels), batch_size):
            logits, features = model(normalise(series.planes[start:start + batch_size], spec))
            probs.append(torch.softmax(logits.double(), dim=1)[:, LESION].numpy())
            maps = torch.relu(torch.einsum("k,nkhw->nhw", weights, features)).numpy()
            for row, label in enumerate(series.labels[start:start + batch_size]):
                cams.append(cv2.resize(maps[row], spec.size[::-1], interpolation=cv2.INTER_LINEAR)
                            if label == 1 else None)
    return np.concatenate(probs), cams


def localisation(cam: np.ndarray, mask: np.ndarray, mm_per_px: float) -> tuple[float, float]:
    """(peak inside the lesion grown by 1 cm, share of the heat inside the lesion)."""
    if not mask.any() or cam.max() <= 0:
        return float("nan"), float("nan")
    radius = max(1, round(10.0 / mm_per_px)) if np.isfinite(mm_per_px) and mm_per_px > 0 else 10
    grown = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                                       (2 * radius + 1, 2 * radius + 1))) > 0
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return float(grown[peak]), float(cam[mask].sum() / cam.sum())


def run(spec: ModelSpec, series: Sequence[SeriesExamples], epochs: int | None = None,
        max_steps: int | None = None, pretrained: bool = True) -> tuple[list[SliceRecord], list[int]]:
    """Out-of-fold records for every slice of every series, and each fold's best epoch."""
    names = patients(series)
    folds = split(names, min(spec.folds, len(names)), spec.seed)
    records: list[SliceRecord] = []
    best_epochs: list[int] = []
    for fold, test_patients in enumerate(folds):
        train_names = {p: lesion for p, lesion in names.items() if p not in test_patients}
        # Validation needs slices with a label: patients whose series are diagnosis-only cannot choose an epoch.
        labelled = {p for p in train_names if any(s.meta.patient == p and (s.labels >= 0).any() for s in series)}
        # A fixed schedule (no ``select_epoch``) needs no validation patients: they train too.
        inner = inner_validation({p: lesion for p, lesion in train_names.items() if p in labelled}, 0.2,
                                 spec.seed + fold) if spec.select_epoch else set()
        train = [s for s in series if s.meta.patient in train_names and s.meta.patient not in inner]
        valid = [s for s in series if s.meta.patient in inner]
        test = [s for s in series if s.meta.patient in test_patients]
        log.info("model=%s fold=%d train_series=%d valid_series=%d test_series=%d", spec.name, fold, len(train),
                 len(valid), len(test))
        result = fit(spec, train, (valid or train) if spec.select_epoch else [], spec.seed + fold, epochs=epochs,
                     max_steps=max_steps, pretrained=pretrained)
        model = load(spec, result.state)
        best_epochs.append(result.best_epoch)
        keep = np.concatenate([s.labels for s in train]) >= 0
        base = baseline.fit(np.concatenate([s.features for s in train])[keep],
                            np.concatenate([s.labels for s in train])[keep] == 1)
        for s in test:
            probs, cams = predict_with_cams(model, s, spec)
            base_probs = baseline.predict(base, s.features)
            for i, label in enumerate(s.labels):
                hit, share = (localisation(cams[i], s.masks[i], float(s.mm_per_px[i]))  # type: ignore[arg-type]
                              if cams[i] is not None else (float("nan"), float("nan")))
                records.append(SliceRecord(s.meta.key, s.meta.patient, s.meta.sequence, fold, int(s.index[i]),
                                           int(label), float(probs[i]), float(base_probs[i]), hit, share))
    return records, best_epochs
