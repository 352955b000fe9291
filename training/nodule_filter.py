"""The nodule filter's score for every out-of-fold slice, where the spec ranks key slices by the
model and the filter together (``slices.ranking``).

The scores come from the prepared HU volumes through the node's own functions
(``onconode.inference.blobs``), so the numbers the card reports on the ranking are the ranking the
node runs. Nothing here is fitted: the filter has no weights, and its scales are the spec's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from onconode.inference import blobs
from onconode.models import BlobRanking
from training.evaluate import SliceRecord, by_series
from training.examples import prepared_root
from training.specs import ModelSpec


def series_scores(npz: Path, ranking: BlobRanking) -> np.ndarray:
    """Per slice of one prepared CT volume (``hu`` (Z, Y, X), ``spacing`` (dz, dy, dx) mm)."""
    with np.load(npz) as data:
        hu, (dz, dy, _) = data["hu"], (float(v) for v in data["spacing"])
    return blobs.slice_scores([blobs.shrink(s, ranking) for s in hu], dz, dy * ranking.shrink, ranking)


def attach(spec: ModelSpec, slices: Sequence[SliceRecord], prepared: Path | None = None) -> list[SliceRecord]:
    """``slices`` with the filter's score of each; unchanged where the spec ranks by the model alone."""
    ranking = spec.slices.ranking
    if ranking is None:
        return list(slices)
    folder = prepared or prepared_root() / spec.data
    scores = {key: series_scores(folder / f"{key}.npz", ranking) for key in by_series(slices)}
    return [replace(r, blob=float(scores[r.series][r.index])) for r in slices]
