"""One command per model: ``python -m training.train chest-ct|brain-mr``.

From the prepared data of the data manifest (``python -m training.gather <data>`` then
``python -m training.prepare_<chest|brain>``), with fixed seeds: patient-grouped cross-validation,
the shipped model, its ONNX export, manifest, card, plots and the external check, written to
``models/``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch

from training.examples import load_all, prepared_root
from training.release import release
from training.specs import SPECS

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", choices=sorted(SPECS))
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--epochs", type=int, default=None, help="override the spec (smoke runs only)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop each fit early (smoke runs only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(int(os.environ.get("ONCONODE_TRAIN_THREADS", "2")))
    spec = SPECS[args.model]
    series = load_all(spec)
    if not series:
        raise SystemExit(f"no prepared series under {prepared_root() / spec.data}: run python -m training.gather "
                         f"{spec.data} and python -m training.prepare_{spec.data.split('-')[0]}")
    log.info("model=%s series=%d patients=%d", spec.name, len(series), len({s.meta.patient for s in series}))
    dicom = Path(os.environ.get("ONCONODE_DATA", "../shared/data")) / "dicom"
    manifest = release(spec, series, args.out, dicom, epochs=args.epochs, max_steps=args.max_steps)
    log.info("model=%s released threshold=%s", spec.name, manifest.decision.threshold)


if __name__ == "__main__":
    main()
