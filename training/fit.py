"""Fine-tune one classifier on its train split, choosing the epoch on validation.

Input: a ``ModelSpec`` and cached arrays. Output: ``runs/<name>/model.pt`` (the best-validation
weights) and ``history.json``. The test split is never touched here.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.augment import Augmenter
from training.network import LiteClassifier
from training.specs import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitResult:
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]]


def seed_everything(seed: int) -> torch.Generator:
    """Fixed seeds for torch and numpy; returns the generator that drives shuffling and augmentation."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def predict_logits(model: LiteClassifier, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Eval-mode logits (N, classes) as float64 for a float16 array (N, 3, h, w)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start:start + batch_size].astype(np.float32))
            logits, _ = model(batch.contiguous(memory_format=torch.channels_last))
            out.append(logits.double().numpy())
    return np.concatenate(out)


def fit(spec: ModelSpec, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
        out_dir: Path, epochs: int | None = None, max_steps: int | None = None,
        pretrained: bool = True) -> FitResult:
    """AdamW + per-step cosine schedule; keeps the weights of the epoch with the lowest validation loss.

    The stem and the first ``spec.frozen_blocks`` blocks stay frozen (ImageNet weights and statistics).

    ``max_steps`` stops early (CI smoke runs); ``pretrained=False`` skips the ImageNet weights.
    """
    generator = seed_everything(spec.seed)
    epochs = epochs or spec.epochs
    model = LiteClassifier(len(spec.labels), spec.size[0], pretrained=pretrained)
    model.freeze_early(spec.frozen_blocks)
    model = model.to(memory_format=torch.channels_last)
    augment = Augmenter(spec.preprocess, generator)
    steps_per_epoch = max(1, len(train_x) // spec.batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=spec.lr, total_steps=total,
                                                   pct_start=0.1, anneal_strategy="cos")
    # Classes are unequal after dedup (chest: few normals), so the loss is weighted per class.
    counts = np.bincount(train_y, minlength=len(spec.labels)).astype(np.float64)
    weights = torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)
    labels = torch.from_numpy(train_y).long()
    out_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
    best = (float("inf"), -1)
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        started, running = time.monotonic(), 0.0
        order = torch.randperm(len(train_x), generator=generator)
        for batch_index in range(steps_per_epoch):
            if step >= total:
                break
            index = order[batch_index * spec.batch_size:(batch_index + 1) * spec.batch_size]
            batch = augment(torch.from_numpy(train_x[index.numpy()].astype(np.float32)))
            logits, _ = model(batch)
            loss = F.cross_entropy(logits, labels[index], weight=weights, label_smoothing=0.05)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            running += loss.item()
            step += 1
        val_logits = predict_logits(model, val_x)
        val_loss = float(F.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(val_y).long()))
        val_acc = float((val_logits.argmax(1) == val_y).mean())
        row = {"epoch": epoch, "train_loss": running / max(1, batch_index + 1), "val_loss": val_loss,
               "val_accuracy": val_acc, "seconds": time.monotonic() - started}
        history.append(row)
        log.info("model=%s %s", spec.name, " ".join(f"{k}={v:.4g}" for k, v in row.items()))
        if val_loss < best[0]:
            best = (val_loss, epoch)
            torch.save(model.state_dict(), out_dir / "model.pt")
        # Written every epoch so that an interrupted run still documents the checkpoint it left.
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))
        if step >= total:
            break
    return FitResult(best_epoch=best[1], best_val_loss=best[0], history=history)
