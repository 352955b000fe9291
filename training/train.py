"""One command per model: ``python -m training.train chest-ct|brain-mri``.

Retrains from scratch with fixed seeds, then calibrates on validation, exports ONNX, evaluates on
the held-out test split once and writes ``models/<name>.{onnx,yaml,md}`` plus plots. ``--stage``
lets the release step rerun on a saved checkpoint (``runs/<name>/model.pt``) without retraining.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from training.datasets import Record, cached_arrays, load_splits
from training.fit import fit
from training.release import release
from training.specs import SPECS, ModelSpec

log = logging.getLogger(__name__)

RUNS = Path("runs")
CACHE = Path(".cache/training")


def arrays_for(spec: ModelSpec, records: list[Record], split: str) -> tuple[np.ndarray, np.ndarray]:
    chosen = [r for r in records if r.split == split]
    return cached_arrays(chosen, spec, spec.size, CACHE), np.array([r.label for r in chosen], dtype=np.int64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", choices=sorted(SPECS))
    parser.add_argument("--stage", choices=["all", "fit", "release"], default="all")
    parser.add_argument("--epochs", type=int, default=None, help="override the spec (smoke runs only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(2)
    spec = SPECS[args.model]
    records, report = load_splits(spec)
    log.info("model=%s dedup=%s", spec.name, report)
    if args.stage in ("all", "fit"):
        (train_x, train_y), (val_x, val_y) = arrays_for(spec, records, "train"), arrays_for(spec, records, "valid")
        result = fit(spec, train_x, train_y, val_x, val_y, RUNS / spec.name, epochs=args.epochs)
        log.info("model=%s best_epoch=%d val_loss=%.4f", spec.name, result.best_epoch, result.best_val_loss)
    if args.stage in ("all", "release"):
        splits = {split: arrays_for(spec, records, split) for split in ("valid", "test")}
        manifest = release(spec, records, report, splits, RUNS / spec.name, Path("models"))
        log.info("model=%s released threshold=%s temperature=%s", spec.name, manifest.decision.threshold,
                 manifest.decision.temperature)


if __name__ == "__main__":
    main()
