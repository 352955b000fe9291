"""Linear probe: frozen ImageNet EfficientNet-Lite0, only the GAP + linear head is trained.

Why it exists: full fine-tuning did not fit the CPU budget on the shared 2-core machine (epochs ran
about 4x slower than the idle benchmark). With the backbone frozen, the pooled features are
computed once, through onnxruntime (several times faster than PyTorch eager on CPU), and the head is
a class-weighted multinomial logistic regression whose L2 strength is chosen on validation. The
exported graph and manifest are the same as for a fine-tuned model.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.export import export, onnx_outputs, session
from training.fit import FitResult, seed_everything
from training.network import LiteClassifier
from training.specs import ModelSpec

log = logging.getLogger(__name__)

L2_GRID = (1e-4, 1e-3, 1e-2)


def _fit_linear(features: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, classes: int,
                l2: float) -> torch.nn.Linear:
    """Full-batch L-BFGS on class-weighted cross-entropy + l2 * ||W||^2."""
    head = torch.nn.Linear(features.shape[1], classes).double()
    optimiser = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(head(features), labels, weight=weights) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return head


def fit_head(spec: ModelSpec, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
             out_dir: Path) -> FitResult:
    """Pooled features through ONNX, head fit per L2 value, best validation loss kept in ``model.pt``."""
    seed_everything(spec.seed)
    started = time.monotonic()
    model = LiteClassifier(len(spec.labels), spec.size[0], pretrained=True).eval()
    with tempfile.TemporaryDirectory() as tmp:
        backbone_onnx = Path(tmp) / "backbone.onnx"
        export(model, spec.size, backbone_onnx)
        sess = session(backbone_onnx)
        train_f = torch.from_numpy(onnx_outputs(sess, train_x)[1]).double()
        val_f = torch.from_numpy(onnx_outputs(sess, val_x)[1]).double()
    counts = np.bincount(train_y, minlength=len(spec.labels)).astype(np.float64)
    weights = torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)))
    labels, val_labels = torch.from_numpy(train_y).long(), torch.from_numpy(val_y).long()
    history: list[dict[str, float]] = []
    best: tuple[float, torch.nn.Linear | None] = (float("inf"), None)
    for epoch, l2 in enumerate(L2_GRID, start=1):
        head = _fit_linear(train_f, labels, weights, len(spec.labels), l2)
        with torch.no_grad():
            val_logits = head(val_f)
            train_loss = float(F.cross_entropy(head(train_f), labels))
            val_loss = float(F.cross_entropy(val_logits, val_labels))
        row = {"epoch": epoch, "l2": l2, "train_loss": train_loss, "val_loss": val_loss,
               "val_accuracy": float((val_logits.argmax(1) == val_labels).double().mean()),
               "seconds": time.monotonic() - started}
        history.append(row)
        log.info("model=%s %s", spec.name, " ".join(f"{k}={v:.4g}" for k, v in row.items()))
        if val_loss < best[0]:
            best = (val_loss, head)
    chosen = best[1]
    assert chosen is not None
    with torch.no_grad():
        model.classifier.weight.copy_(chosen.weight.float())
        model.classifier.bias.copy_(chosen.bias.float())
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "model.pt")
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    best_row = min(history, key=lambda r: r["val_loss"])
    return FitResult(best_epoch=int(best_row["epoch"]), best_val_loss=best_row["val_loss"], history=history)
