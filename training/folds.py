"""Patient-grouped folds: a patient's series are always on one side of every split.

Several series of one patient (two exams, T1 post-contrast and FLAIR, neighbouring
reconstructions) look alike; a split by series would put near-copies on both sides and measure
memory, not generalisation. Folds are balanced over patients with and without a lesion so that
each test fold has both where the data allow it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.examples import SeriesExamples


def patients(series: Sequence[SeriesExamples]) -> dict[str, bool]:
    """Patient → whether any of its series shows a lesion."""
    out: dict[str, bool] = {}
    for s in series:
        out[s.meta.patient] = out.get(s.meta.patient, False) or s.meta.lesion
    return out


def split(names: dict[str, bool], folds: int, seed: int) -> list[set[str]]:
    """``folds`` disjoint patient sets, lesion and lesion-free patients dealt out in turn."""
    rng = np.random.default_rng(seed)
    out: list[set[str]] = [set() for _ in range(folds)]
    turn = 0
    for group in (sorted(p for p, lesion in names.items() if lesion), sorted(p for p, lesion in names.items()
                                                                           if not lesion)):
        order = list(rng.permutation(len(group)))
        for i in order:
            out[turn % folds].add(group[int(i)])
            turn += 1
    return [f for f in out if f]


def inner_validation(names: dict[str, bool], fraction: float, seed: int) -> set[str]:
    """A patient-grouped validation set carved from training patients: at least one lesion patient and,
    when there are any, one lesion-free patient."""
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for group in (sorted(p for p, lesion in names.items() if lesion), sorted(p for p, lesion in names.items()
                                                                           if not lesion)):
        if len(group) < 2:
            continue
        count = max(1, round(len(group) * fraction))
        chosen.update(group[int(i)] for i in rng.permutation(len(group))[:count])
    return chosen
