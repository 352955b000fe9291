"""Fine-tune one slice classifier, choosing the epoch on patient-held-out validation.

Input: training and validation ``SeriesExamples`` and the ``ModelSpec``. Output: the weights of the
epoch with the lowest validation loss, and the history. Each epoch draws ``samples_per_epoch``
slices, half with a lesion and half without: lesion slices are a few percent of a scan, and a
balanced draw keeps an epoch affordable on two cores while every lesion slice is seen often.
Slices whose lesion the label policy does not count (label -1) are never drawn.

The loss has two parts: the slice's class (cross-entropy) and, on lesion slices, where the heat
falls: the node's heat map is the lesion row of the classifier applied at every cell of the feature
grid (CAM), so ``heat_loss`` asks that map's softmax over the grid to put its mass on the cells the
readers' mask touches. Without it a classifier may be right for reasons elsewhere in the image (the
body outline, the scanner's noise) and its heat map points there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.augment import Augmenter
from training.evaluate import LEVELS, levels_in_order
from training.examples import SeriesExamples
from training.network import LiteClassifier
from training.specs import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stacked:
    """Slices of several series side by side; ``series`` indexes into the source list."""

    planes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    series: np.ndarray


def stack(series: Sequence[SeriesExamples]) -> Stacked:
    if not series:
        raise ValueError("no series to stack")
    return Stacked(np.concatenate([s.planes for s in series]), np.concatenate([s.labels for s in series]),
                   np.concatenate([s.masks for s in series]), np.concatenate([np.full(len(s.labels), i, np.int32) for i, s in enumerate(series)]))


def normalise(planes: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """uint8 planes (N, C, h, w) to the model's normalised float input, channels-last."""
    mean = torch.tensor(spec.preprocess.normalize.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.preprocess.normalize.std, dtype=torch.float32).view(1, -1, 1, 1)
    unit = torch.from_numpy(planes).float() / 255.0
    return ((unit - mean) / std).contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class FitResult:
    state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]]


def heat_loss(features: torch.Tensor, lesion_weights: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean over slices with a mask of -log(share of the CAM's softmax on the cells the mask touches).

    ``features`` (N, K, h, w), ``lesion_weights`` (K,), ``masks`` (N, H, W) in the input geometry.
    Zero when no slice has a mask.
    """
    cam = torch.einsum("nkhw,k->nhw", features, lesion_weights)
    cells = F.adaptive_max_pool2d(masks[:, None].float(), cam.shape[-2:])[:, 0].flatten(1) > 0
    rows = cells.any(dim=1)
    if not bool(rows.any()):
        return cam.new_zeros(())
    log_share = torch.log_softmax(cam.flatten(1)[rows], dim=1).masked_fill(~cells[rows], float("-inf"))
    return -torch.logsumexp(log_share, dim=1).mean()


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def logits_of(model: LiteClassifier, planes: np.ndarray, spec: ModelSpec, batch_size: int = 64) -> np.ndarray:
    """Eval-mode logits (N, 2) as float64."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(planes), batch_size):
            logits, _ = model(normalise(planes[start:start + batch_size], spec))
            out.append(logits.double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2))


def levels(series: Sequence[SeriesExamples], bins: int = LEVELS) -> np.ndarray:
    """Each stacked slice's level in its series, as the evaluation reads it (``evaluate.levels_in_order``)."""
    return np.concatenate([levels_in_order(s.index, bins) for s in series]) if series else np.zeros(0, int)


def level_matched(level: np.ndarray, labels: np.ndarray, share: float) -> np.ndarray:
    """Drawing weights of the lesion-free slices (``labels == 0``, in order) under which ``share`` of
    the draws follow the lesion slices' levels and the rest are uniform.

    Why: lesions sit at some levels more than others, and a single slice shows its level (apex, hilum,
    base), so with uniform lesion-free slices a model can rank by level instead of by the lesion. The
    uniform rest keeps every level, the apex and the base included, among the negatives it sees."""
    clear = labels == 0
    bins = int(level.max()) + 1 if len(level) else 1
    lesion_at = np.bincount(level[labels == 1], minlength=bins).astype(float)
    clear_at = np.bincount(level[clear], minlength=bins).astype(float)
    uniform = np.full(int(clear.sum()), 1.0 / max(1, int(clear.sum())))
    if not lesion_at.sum():
        return uniform
    matched = lesion_at[level[clear]] / clear_at[level[clear]] / lesion_at.sum()
    return share * matched / matched.sum() + (1 - share) * uniform


def lesion_free_draw(model: LiteClassifier, planes: np.ndarray, clear: np.ndarray, count: int, spec: ModelSpec,
                     rng: np.random.Generator, epoch: int, weights: np.ndarray | None = None) -> np.ndarray:
    """``count`` lesion-free slice indices for one epoch: by ``weights`` (``level_matched``) or uniform,
    except that from the second epoch ``spec.hard_negatives`` of them are the slices the model scores
    most like a lesion, out of a uniform pool four times as large (the whole set would cost an epoch's
    time to score)."""
    hard = round(count * spec.hard_negatives) if epoch > 1 else 0
    if weights is not None:
        uniform = rng.choice(clear, count - hard, replace=True, p=weights)
    else:
        uniform = rng.choice(clear, count - hard, replace=len(clear) < count - hard)
    if not hard:
        return uniform
    pool = rng.choice(clear, min(len(clear), 4 * hard), replace=False)
    logits = logits_of(model, planes[pool], spec)
    return np.concatenate([uniform, pool[np.argsort(logits[:, 0] - logits[:, 1], kind="stable")[:hard]]])


def fit(spec: ModelSpec, train: Sequence[SeriesExamples], valid: Sequence[SeriesExamples], seed: int,
        epochs: int | None = None, max_steps: int | None = None, pretrained: bool = True) -> FitResult:
    """AdamW + one-cycle schedule; keeps the weights of the epoch with the lowest validation loss, or of
    the last epoch when ``valid`` is empty (the shipped model, trained for the folds' median best epoch).

    ``max_steps`` stops early (smoke runs); ``pretrained=False`` skips the ImageNet weights.
    """
    generator = seed_everything(seed)
    epochs = epochs or spec.epochs
    data = stack(train)
    val_planes, val_labels = np.zeros((0,)), np.zeros((0,), dtype=np.int64)
    if valid:
        val = stack(valid)
        val_planes, val_labels = val.planes[val.labels >= 0], val.labels[val.labels >= 0].astype(np.int64)
    lesion = np.flatnonzero(data.labels == 1)
    clear = np.flatnonzero(data.labels == 0)
    if len(lesion) == 0 or len(clear) == 0:
        raise ValueError(f"training needs lesion and lesion-free slices, found {len(lesion)} and {len(clear)}")
    weights = level_matched(levels(train), data.labels, spec.level_matched) if spec.level_matched else None
    model = LiteClassifier(2, spec.size[0], pretrained=pretrained, feature_stride=spec.feature_stride,
                           fused=spec.feature_fusion)
    model.freeze_early(spec.frozen_blocks)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack memory_format
    augment = Augmenter(spec.preprocess, generator)
    steps_per_epoch = max(1, spec.samples_per_epoch // spec.batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=spec.lr, total_steps=total, pct_start=0.15,
                                                   anneal_strategy="cos")
    rng = np.random.default_rng(seed)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] = (float("inf"), -1, {})
    step = 0
    for epoch in range(1, epochs + 1):
        started, running, batches = time.monotonic(), 0.0, 0
        half = spec.samples_per_epoch // 2
        order = np.concatenate([rng.choice(lesion, half, replace=len(lesion) < half),
                                lesion_free_draw(model, data.planes, clear, half, spec, rng, epoch, weights)])
        order = order[rng.permutation(len(order))]
        model.train()
        for b in range(steps_per_epoch):
            if step >= total:
                break
            index = np.sort(order[b * spec.batch_size:(b + 1) * spec.batch_size])
            placed = spec.heat_weight > 0  # the masks are moved and scored only when the loss uses them
            batch, masks = augment(normalise(data.planes[index], spec),
                                   torch.from_numpy(data.masks[index]) if placed else None)
            logits, features = model(batch)
            target = torch.from_numpy(data.labels[index].astype(np.int64))
            loss = F.cross_entropy(logits, target, label_smoothing=0.05)
            if masks is not None:
                lesion_masks = masks * (target == 1).float().view(-1, 1, 1)
                loss = loss + spec.heat_weight * heat_loss(features, model.classifier.weight[1], lesion_masks)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            running += loss.item()
            batches += 1
            step += 1
        row = {"epoch": epoch, "train_loss": running / max(1, batches), "seconds": time.monotonic() - started}
        if len(val_labels):
            val_logits = logits_of(model, val_planes, spec)
            val_loss = float(F.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(val_labels)))
            row |= {"val_loss": val_loss, "val_accuracy": float((val_logits.argmax(1) == val_labels).mean())}
        else:
            val_loss = -float(epoch)  # no validation: the last epoch is kept
        history.append(row)
        log.info("model=%s %s", spec.name, " ".join(f"{k}={v:.4g}" for k, v in row.items()))
        if val_loss < best[0]:
            best = (val_loss, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if step >= total:
            break
    return FitResult(best[2], best[1], best[0], history)


def load(spec: ModelSpec, state: dict[str, torch.Tensor]) -> LiteClassifier:
    model = LiteClassifier(2, spec.size[0], pretrained=False, feature_stride=spec.feature_stride,
                           fused=spec.feature_fusion)
    model.load_state_dict(state)
    return model.eval()
