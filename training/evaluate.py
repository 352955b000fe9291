"""Honest numbers from out-of-fold predictions: slice and series AUC with patient-bootstrap CIs,
cross-fitted calibration, thresholds and operating points, localisation against the lesion masks,
and the metadata-only baseline on the same folds.

Input: per-slice out-of-fold records (``SliceRecord``) from ``crossval``. Output: plain numbers in
dataclasses and dicts for the card and ``<model>.metrics.json``.

"Cross-fitted" means a fold's calibration and threshold are fitted on the other folds' out-of-fold
predictions only, so the operating point reported for a patient never saw that patient. Every CI
resamples patients, not slices or series: slices of one patient are not independent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from itertools import pairwise

import numpy as np

from onconode.inference.blobs import within_ranks
from training.metrics import Estimate, roc_auc, youden_threshold


@dataclass(frozen=True)
class SliceRecord:
    series: str
    patient: str
    sequence: str
    fold: int
    index: int
    label: int              # 1 lesion, 0 none, -1 ignore
    probability: float      # per-slice P(lesion) of the fold's model
    baseline: float         # per-slice P(lesion) of the metadata-only baseline
    pointing_hit: float     # lesion slices: the heat peak inside the lesion (+1 cm); NaN otherwise
    heat_share: float       # lesion slices: share of the heat inside the lesion; NaN otherwise
    blob: float = float("nan")  # the nodule filter's score where the manifest ranks by it; NaN otherwise


@dataclass(frozen=True)
class SeriesRecord:
    series: str
    patient: str
    sequence: str
    fold: int
    lesion: bool
    score: float            # mean of the k highest per-slice probabilities (the node's aggregation)
    baseline: float


def by_series(slices: Sequence[SliceRecord]) -> dict[str, list[SliceRecord]]:
    """The slice records of each series, in their order."""
    out: dict[str, list[SliceRecord]] = defaultdict(list)
    for record in slices:
        out[record.series].append(record)
    return out


def top_mean(values: Sequence[float] | np.ndarray, k: int) -> float:
    """Mean of the ``k`` highest values: the node's study score from its slices."""
    return float(np.sort(np.asarray(values, float))[-k:].mean())


def ranking_scores(rows: Sequence[SliceRecord]) -> np.ndarray:
    """What the node ranks a series' slices by (``onconode.inference.slices.aggregate``): the model's
    probability, or, where the records carry the nodule filter's scores, the mean of both ranks
    within the series."""
    probability = np.array([r.probability for r in rows], float)
    blob = np.array([r.blob for r in rows], float)
    if not len(rows) or np.isnan(blob).any():
        return probability
    return (within_ranks(probability) + within_ranks(blob)) / 2


def ranked(rows: Sequence[SliceRecord]) -> list[SliceRecord]:
    """A series' slice records, most suspicious first, as the node orders them."""
    order = np.argsort(-ranking_scores(rows), kind="stable")
    return [rows[i] for i in order]


def key_probabilities(rows: Sequence[SliceRecord], key: int) -> list[float]:
    """The model's probabilities of the ``key`` slices the node would show: what its study value
    averages (``study_value``)."""
    return [r.probability for r in ranked(rows)[:key]]


def lesion_free_part(rows: Sequence[SliceRecord], key: int) -> list[SliceRecord] | None:
    """A series' lesion-free slices when it has a located lesion and at least ``key`` of them (enough
    for a study score); None otherwise. See ``lesion_free_remainders``."""
    free = [r for r in rows if r.label == 0]
    return free if any(r.label == 1 for r in rows) and len(free) >= key else None


def series_records(slices: Sequence[SliceRecord], lesion_of: dict[str, bool], k: int) -> list[SeriesRecord]:
    out = []
    for key, rows in sorted(by_series(slices).items()):
        out.append(SeriesRecord(key, rows[0].patient, rows[0].sequence, rows[0].fold, lesion_of[key],
                                top_mean(key_probabilities(rows, k), k), top_mean([r.baseline for r in rows], k)))
    return out


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def platt(scores: np.ndarray, positive: np.ndarray, ridge: float = 1e-2) -> tuple[float, float]:
    """(slope, intercept) of sigmoid(slope·logit(score) + intercept) by Newton steps on the log loss.

    The targets are Platt's own (1999): (N₊+1)/(N₊+2) for a positive and 1/(N₋+2) for a negative, not
    1 and 0. On a few dozen nearly separable series, hard targets drive the slope up until every
    series reads 0.000 or 1.000 and the lesion-free ones that score high are called certain; the
    smoothed targets are the estimate that one more series of each class could have been either.
    On thousands of slices they are 0 and 1 to the third decimal. A small ridge keeps the fit finite;
    the slope is kept positive (a calibration must not reverse the ranking)."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    x, y = logit(scores), np.where(positive, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    a, b = 1.0, 0.0
    for _ in range(100):
        p = 1 / (1 + np.exp(-(a * x + b)))
        w = np.maximum(p * (1 - p), 1e-9)
        grad = np.array([np.sum((p - y) * x) + ridge * (a - 1), np.sum(p - y) + ridge * b])
        hess = np.array([[np.sum(w * x * x) + ridge, np.sum(w * x)], [np.sum(w * x), np.sum(w) + ridge]])
        step = np.linalg.solve(hess, grad)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    return float(max(a, 1e-3)), float(b)


def calibrated(scores: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(slope * logit(scores) + intercept)))


def study_value(probabilities: Sequence[float], slope: float, intercept: float, basis: str, key: int) -> float:
    """A series' study value as the node computes it (``onconode.inference.slices.aggregate``) from
    its key slices' probabilities (``key_probabilities``; by the model alone, any of its slices' do)
    and a fit of ``operating_fit``: a series fit calibrates the mean of the ``key`` highest; a slice
    fit (the model then states no verdict) calibrates each slice, and the value is the mean of the
    ``key`` highest of those."""
    values = np.asarray(probabilities, float)
    if basis == "slices":
        return top_mean(calibrated(values, slope, intercept), key)
    return float(calibrated(np.array([top_mean(values, key)]), slope, intercept)[0])


def ece(probabilities: np.ndarray, positive: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of P(lesion) against the lesion frequency, equal-width bins."""
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in pairwise(edges):
        inside = (probabilities > low) & (probabilities <= high) if low > 0 else probabilities <= high
        if inside.any():
            total += inside.mean() * abs(positive[inside].mean() - probabilities[inside].mean())
    return float(total)


def ece_if_calibrated(probabilities: np.ndarray, observed: float, draws: int = 2000, seed: int = 0
                      ) -> dict[str, float] | None:
    """The ECE a perfectly calibrated model would show on these series: each outcome drawn as a coin
    with the series' own calibrated probability, the ECE computed as for the real outcomes.

    Why: with a few dozen series most bins hold a handful of them, so even a perfect model's ECE is
    far from zero; where that floor lies above a target, the data cannot show the target met, and
    ``at_or_above`` (the share of draws reaching the observed ECE) says whether the observed value
    is any evidence of miscalibration at all. None without series.
    """
    if not len(probabilities):
        return None
    rng = np.random.default_rng(seed)
    values = np.array([ece(probabilities, rng.random(len(probabilities)) < probabilities) for _ in range(draws)])
    low, median, high = np.percentile(values, [2.5, 50, 97.5])
    return {"median": float(median), "low": float(low), "high": float(high),
            "at_or_above": float((values >= observed).mean())}


def patient_bootstrap(statistic: object, groups: Sequence[str], resamples: int = 2000, seed: int = 0) -> Estimate:
    """Percentile bootstrap resampling patients: ``statistic(indices)`` over the rows of the drawn patients."""
    assert callable(statistic)
    names = sorted(set(groups))
    rows: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        rows[g].append(i)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(names), len(names))
        index = np.concatenate([rows[names[d]] for d in drawn])
        value = statistic(index)
        if not np.isnan(value):
            values.append(value)
    point = statistic(np.arange(len(groups)))
    if not values:
        return Estimate(point, float("nan"), float("nan"))
    low, high = np.percentile(values, [2.5, 97.5])
    return Estimate(float(point), float(low), float(high))


def auc_estimate(scores: np.ndarray, positive: np.ndarray, groups: Sequence[str]) -> Estimate:
    return patient_bootstrap(lambda i: roc_auc(scores[i], positive[i]), groups)


@dataclass(frozen=True)
class OperatingPoint:
    sensitivity: Estimate
    specificity: Estimate
    thresholds: tuple[float, ...]   # per fold, each chosen on the other folds


def operating_fit(scores: np.ndarray, positive: np.ndarray, slice_scores: np.ndarray,
                  slice_lesion: np.ndarray) -> tuple[float, float, float, str]:
    """(slope, intercept, threshold, basis) of the study decision.

    From the series when they hold both classes; otherwise from the slices (lesion against
    lesion-free), applied to the study score, which is a mean of slice probabilities: data whose
    every series shows a lesion still give an operating point, and the card says which it is."""
    if positive.all() or not positive.any():
        if slice_lesion.all() or not slice_lesion.any():
            return 1.0, 0.0, 0.5, "none"
        slope, intercept = platt(slice_scores, slice_lesion)
        return slope, intercept, youden_threshold(calibrated(slice_scores, slope, intercept), slice_lesion), "slices"
    slope, intercept = platt(scores, positive)
    return slope, intercept, youden_threshold(calibrated(scores, slope, intercept), positive), "series"


def fold_fits(series: Sequence[SeriesRecord],
              slices: Sequence[SliceRecord] = ()) -> dict[int, tuple[float, float, float, str]]:
    """Each fold's (slope, intercept, threshold, basis), fitted by ``operating_fit`` on the other folds only."""
    scores = np.array([s.score for s in series])
    positive = np.array([s.lesion for s in series])
    folds = np.array([s.fold for s in series])
    labelled = [r for r in slices if r.label >= 0]
    slice_scores = np.array([r.probability for r in labelled])
    slice_lesion = np.array([r.label == 1 for r in labelled], bool)
    slice_folds = np.array([r.fold for r in labelled])
    fits = {}
    for fold in sorted(set(folds.tolist())):
        other, other_slices = folds != fold, slice_folds != fold
        fits[fold] = operating_fit(scores[other], positive[other], slice_scores[other_slices],
                                   slice_lesion[other_slices])
    return fits


def cross_fitted(series: Sequence[SeriesRecord], slices: Sequence[SliceRecord] = (),
                 key: int = 3) -> tuple[np.ndarray, OperatingPoint]:
    """Each fold's series values (``study_value``) calibrated and thresholded by fits on the other
    folds, the same way the shipped operating point is fit on all of them (``operating_fit``).

    Returns the calibrated values (series order) and the operating point they give.
    """
    positive = np.array([s.lesion for s in series])
    grouped = by_series(slices)
    fits = fold_fits(series, slices)

    def value(record: SeriesRecord) -> float:
        slope, intercept, _, basis = fits[record.fold]
        if basis == "slices" and record.series in grouped:
            return study_value(key_probabilities(grouped[record.series], key), slope, intercept, basis, key)
        return float(calibrated(np.array([record.score]), slope, intercept)[0])  # the same for a series fit

    out = np.array([value(s) for s in series], float)
    decided = out >= np.array([fits[s.fold][2] for s in series], float)
    thresholds = [fit[2] for fit in fits.values()]
    groups = [s.patient for s in series]

    def rate(i: np.ndarray, wanted: bool) -> float:
        chosen = positive[i] == wanted
        return float((decided[i][chosen] == wanted).mean()) if chosen.any() else float("nan")

    point = OperatingPoint(patient_bootstrap(lambda i: rate(i, True), groups),
                           patient_bootstrap(lambda i: rate(i, False), groups), tuple(thresholds))
    return out, point


LEVELS = 10  # a series' analysed slices in tenths: what "the same level" means here and in ``fit``


def levels_in_order(positions: np.ndarray, bins: int = LEVELS) -> np.ndarray:
    """Each slice's level in its series, from the slices' positions (any order): the tenth (for 10
    bins) of the series' analysed slices, in slice order, that it falls in."""
    rank = np.argsort(np.argsort(positions, kind="stable"), kind="stable")
    return np.minimum((rank / max(1, len(rank) - 1) * bins).astype(int), bins - 1)


def _levels(rows: Sequence[SliceRecord], bins: int) -> dict[int, int]:
    """Each slice record's level in its series (by ``id``), see ``levels_in_order``."""
    level = levels_in_order(np.array([r.index for r in rows]), bins)
    return {id(r): int(v) for r, v in zip(rows, level)}


def position_baseline(slices: Sequence[SliceRecord], bins: int = LEVELS) -> np.ndarray:
    """Each slice scored by where it lies in its series alone: the lesion rate of its position bin
    (its rank among the series' analysed slices, in tenths) among the other folds' labelled slices,
    cross-fitted like everything else.

    Why: a tumour is likelier at some levels of the brain or chest than at others, so a model can rank
    slices by level rather than by what they show; inside a lesion series no source shortcut exists,
    but this one does. The metadata-only baseline cannot see it (each slice alone has no position).
    """
    levels: dict[int, int] = {}
    for rows in by_series(slices).values():
        levels |= _levels(rows, bins)
    cell = np.array([levels[id(r)] for r in slices], int)
    folds = np.array([r.fold for r in slices])
    label = np.array([r.label for r in slices])
    out = np.zeros(len(slices))
    for fold in set(folds.tolist()):
        other = (folds != fold) & (label >= 0)
        lesions = np.bincount(cell[other], weights=(label[other] == 1).astype(float), minlength=bins)
        counts = np.bincount(cell[other], minlength=bins)
        rate = (lesions + 1) / (counts + 2)  # Laplace: an empty bin is a coin
        out[folds == fold] = rate[cell[folds == fold]]
    return out


def same_level_auc(slices: Sequence[SliceRecord], bins: int = LEVELS, as_ranked: bool = False) -> Estimate:
    """The model's AUC over pairs of a lesion and a lesion-free slice of the same series at the same
    level (the same tenth of its analysed slices), with a patient-bootstrap CI; with ``as_ranked``,
    that of the node's ranking (``ranking_scores``) instead.

    Why: ``position_baseline`` says how far level alone goes; this says what the model sees beyond
    it, among neighbours that share the patient, the scanner and the level. 0.5 means level is all
    the model ranks by.
    """
    wins: dict[str, float] = defaultdict(float)
    pairs: dict[str, int] = defaultdict(int)
    for rows in by_series(slices).values():
        level = _levels(rows, bins)
        value = dict(zip(map(id, rows), ranking_scores(rows) if as_ranked else [r.probability for r in rows]))
        for cell in range(bins):
            inside = [r for r in rows if r.label >= 0 and level[id(r)] == cell]
            lesion = np.array([value[id(r)] for r in inside if r.label == 1])
            free = np.array([value[id(r)] for r in inside if r.label == 0])
            if len(lesion) and len(free):
                patient = rows[0].patient
                wins[patient] += float((lesion[:, None] > free[None, :]).sum()
                                       + 0.5 * (lesion[:, None] == free[None, :]).sum())
                pairs[patient] += len(lesion) * len(free)
    names = sorted(pairs)
    won, counted = np.array([wins[n] for n in names]), np.array([pairs[n] for n in names], float)
    if not names:
        return Estimate(float("nan"), float("nan"), float("nan"))
    return patient_bootstrap(lambda i: float(won[i].sum() / counted[i].sum()), names)


def key_slice_placement(slices: Sequence[SliceRecord], lesion_series: set[str], key: int) -> tuple[float, float, int]:
    """(share whose most suspicious slice is a lesion slice, share with a lesion slice among the ``key``
    most suspicious, how many series) over the lesion series whose slices say where the lesion is.

    A series labelled only as a whole (a diagnosis, every slice -1) cannot place its lesion, so it is
    left out of both shares rather than counted as a miss."""
    located = [ranked(rows) for name, rows in by_series(slices).items()
               if name in lesion_series and any(r.label == 1 for r in rows)]
    if not located:
        return float("nan"), float("nan"), 0
    top = sum(rows[0].label == 1 for rows in located) / len(located)
    among = sum(any(r.label == 1 for r in rows[:key]) for rows in located) / len(located)
    return top, among, len(located)


def lesion_free_remainders(slices: Sequence[SliceRecord], series: Sequence[SeriesRecord], key: int
                           ) -> dict[str, object] | None:
    """Each located lesion series again without its lesion: the study its lesion-free slices alone
    make, scored, calibrated and thresholded as the node would (the fold's cross-fitted fit).

    Why: where the data hold no lesion-free series (or only ones from another source), this is the
    one series-level negative from the same patient, scanner and protocol. How often such a remainder
    is flagged estimates how often a lesion-free study is; the AUC of each series against its own
    remainder is a series-level AUC no source shortcut can reach (the baseline beside it says how
    much the remaining slices alone still tell). The remainders come from patients with a lesion
    and are shorter than their series, so this is a proxy, not a measurement on lesion-free
    patients. None when no lesion series has slice labels.
    """
    fits = fold_fits(series, slices)
    grouped = by_series(slices)
    pairs = []
    for s in series:
        free = lesion_free_part(grouped[s.series], key) if s.lesion else None
        if free is None:
            continue
        slope, intercept, threshold, basis = fits[s.fold]
        # The remainder's key slices are ranked again among its own slices; a filter score keeps the
        # 3-D context of the whole series (a lesion's neighbours may still read it a little).
        shown = key_probabilities(free, key)
        score = top_mean(shown, key)  # summed as ``series_records`` sums: a tie stays a tie
        base = top_mean([r.baseline for r in free], key)
        flagged = study_value(shown, slope, intercept, basis, key) >= threshold
        pairs.append((s.patient, s.score, score, s.baseline, base, flagged))
    if not pairs:
        return None
    groups = [p[0] for p in pairs]
    flags = np.array([p[5] for p in pairs], float)
    paired_groups = groups + groups
    positive = np.r_[np.ones(len(pairs), bool), np.zeros(len(pairs), bool)]
    return {"series": len(pairs), "flagged": int(flags.sum()),
            "flagged_share": asdict(patient_bootstrap(lambda i: float(flags[i].mean()), groups)),
            "auc": asdict(auc_estimate(np.array([p[1] for p in pairs] + [p[2] for p in pairs]), positive,
                                       paired_groups)),
            "baseline_auc": asdict(auc_estimate(np.array([p[3] for p in pairs] + [p[4] for p in pairs]), positive,
                                                paired_groups))}


def summary(slices: Sequence[SliceRecord], series: Sequence[SeriesRecord], key: int = 3) -> dict[str, object]:
    """Every number of the card, from out-of-fold records; ``key`` is how many key slices the node shows."""
    counted = [r for r in slices if r.label >= 0]
    s_prob = np.array([r.probability for r in counted])
    s_base = np.array([r.baseline for r in counted])
    s_pos = np.array([r.label == 1 for r in counted])
    s_groups = [r.patient for r in counted]
    scores = np.array([s.score for s in series])
    base = np.array([s.baseline for s in series])
    positive = np.array([s.lesion for s in series])
    groups = [s.patient for s in series]
    calibrated_probs, point = cross_fitted(series, slices, key)
    ece_calibrated = ece(calibrated_probs, positive) if len(series) else float("nan")
    hits = np.array([r.pointing_hit for r in slices if r.label == 1 and not np.isnan(r.pointing_hit)])
    shares = np.array([r.heat_share for r in slices if r.label == 1 and not np.isnan(r.heat_share)])
    hit_groups = [r.patient for r in slices if r.label == 1 and not np.isnan(r.pointing_hit)]
    lesion_series = [s for s in series if s.lesion]
    # Lesion against lesion-free slices of the same lesion series: the scanner, protocol and patient
    # are shared, so a source shortcut cannot separate them; the baseline beside it says how much
    # intensity statistics still do.
    lesion_keys = {s.series for s in lesion_series}
    inside = np.array([r.series in lesion_keys for r in counted], bool)
    inside_groups = [g for g, keep in zip(s_groups, inside) if keep]
    top_share, key_share, located = key_slice_placement(slices, lesion_keys, key)
    s_position = position_baseline(slices)[[r.label >= 0 for r in slices]]
    out: dict[str, object] = {
        "slices": {"count": len(counted), "lesion": int(s_pos.sum()), "patients": len(set(s_groups)),
                   "auc": asdict(auc_estimate(s_prob, s_pos, s_groups)),
                   "baseline_auc": asdict(auc_estimate(s_base, s_pos, s_groups)),
                   "within_lesion_series_auc": asdict(auc_estimate(s_prob[inside], s_pos[inside], inside_groups)),
                   "within_lesion_series_baseline_auc": asdict(auc_estimate(s_base[inside], s_pos[inside],
                                                                            inside_groups)),
                   "within_lesion_series_position_auc": asdict(auc_estimate(s_position[inside], s_pos[inside],
                                                                            inside_groups)),
                   "same_level_auc": asdict(same_level_auc(slices))},
        "series": {"count": len(series), "lesion": int(positive.sum()), "patients": len(set(groups)),
                   "auc": asdict(auc_estimate(scores, positive, groups)),
                   "baseline_auc": asdict(auc_estimate(base, positive, groups)),
                   "ece_calibrated": ece_calibrated,
                   # Few series fill few bins: the interval says how far the point can be trusted.
                   "ece_calibrated_ci": asdict(patient_bootstrap(lambda i: ece(calibrated_probs[i], positive[i]),
                                                                groups)) if len(series) else None,
                   "ece_if_calibrated": ece_if_calibrated(calibrated_probs, ece_calibrated),
                   "ece_raw": ece(scores, positive) if len(series) else float("nan"),
                   "sensitivity": asdict(point.sensitivity), "specificity": asdict(point.specificity),
                   "fold_thresholds": list(point.thresholds),
                   "top_slice_is_lesion": top_share, "key_slices_include_lesion": key_share,
                   "key_slices": key, "located_lesion_series": located,
                   "lesion_free_remainder": lesion_free_remainders(slices, series, key)},
        "localisation": {
            "lesion_slices": len(hits),
            "pointing_game": asdict(patient_bootstrap(lambda i: float(hits[i].mean()), hit_groups))
            if len(hits) else None,
            "heat_share_mean": float(shares.mean()) if len(shares) else float("nan")},
    }
    if any(not np.isnan(r.blob) for r in slices):
        # The key slices are ranked by the model and the nodule filter together: what each adds.
        alone = [replace(r, blob=float("nan")) for r in slices]
        alone_top, alone_key, _ = key_slice_placement(alone, lesion_keys, key)
        only = [replace(r, probability=r.blob, blob=float("nan")) for r in slices]
        only_top, only_key, _ = key_slice_placement(only, lesion_keys, key)
        out["ranking"] = {"by": "model and nodule filter",
                          "same_level_auc": asdict(same_level_auc(slices, as_ranked=True)),
                          "model_alone": {"top_slice_is_lesion": alone_top, "key_slices_include_lesion": alone_key},
                          "filter_alone": {"top_slice_is_lesion": only_top, "key_slices_include_lesion": only_key,
                                           "same_level_auc": asdict(same_level_auc(only))}}
    by_sequence: dict[str, object] = {}
    for sequence in sorted({s.sequence for s in series}):
        chosen = [i for i, s in enumerate(series) if s.sequence == sequence]
        sub_pos = positive[chosen]
        by_sequence[sequence] = {"series": len(chosen), "lesion": int(sub_pos.sum()),
                                 "auc": asdict(auc_estimate(scores[chosen], sub_pos, [groups[i] for i in chosen]))}
    out["series_by_sequence"] = by_sequence
    return out
