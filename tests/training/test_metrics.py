"""Metric code against hand-computed values (numpy only, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    bootstrap,
    confusion,
    ece,
    fit_temperature,
    per_class,
    roc_auc,
    softmax,
    youden_threshold,
)


def test_roc_auc_counts_pairs_and_half_ties() -> None:
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    positive = np.array([True, True, False, False])
    # pairs (pos, neg): (0.9,0.5)=1 (0.9,0.1)=1 (0.5,0.5)=0.5 (0.5,0.1)=1 -> 3.5/4
    assert roc_auc(scores, positive) == pytest.approx(0.875)


def test_roc_auc_is_nan_without_negatives() -> None:
    assert np.isnan(roc_auc(np.array([0.2, 0.3]), np.array([True, True])))


def test_per_class_precision_recall_f1_from_confusion() -> None:
    matrix = confusion(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2)
    assert matrix.tolist() == [[1, 0], [1, 2]]
    first, second = per_class(matrix)
    assert (first.precision, first.recall) == (0.5, 1.0)
    assert second.precision == 1.0 and second.recall == pytest.approx(2 / 3)
    assert second.f1 == pytest.approx(0.8)


def test_ece_is_zero_when_confidence_equals_accuracy() -> None:
    probs = np.array([[0.75, 0.25]] * 4)
    labels = np.array([0, 0, 0, 1])
    assert ece(probs, labels) == pytest.approx(0.0)


def test_temperature_recovers_the_scale_of_overconfident_logits() -> None:
    rng = np.random.default_rng(1)
    true_logits = rng.normal(size=(4000, 4)) * 2
    labels = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    assert fit_temperature(true_logits * 3, labels) == pytest.approx(3, rel=0.1)


def test_youden_threshold_separates_perfectly_separable_scores() -> None:
    threshold = youden_threshold(np.array([0.1, 0.2, 0.7, 0.9]), np.array([False, False, True, True]))
    assert 0.2 < threshold <= 0.7


def test_bootstrap_interval_contains_the_estimate() -> None:
    values = np.arange(100) % 2
    estimate = bootstrap(lambda i: float(values[i].mean()), len(values), resamples=500)
    assert estimate.value == 0.5
    assert estimate.low < 0.5 < estimate.high


def _slice(series: str, fold: int, label: int, probability: float):
    from training.evaluate import SliceRecord
    return SliceRecord(series, series, "ct", fold, 0, label, probability, 0.5, float("nan"), float("nan"))


def _series(name: str, fold: int, lesion: bool, score: float):
    from training.evaluate import SeriesRecord
    return SeriesRecord(name, name, "ct", fold, lesion, score, 0.5)


def test_operating_point_of_one_class_series_comes_from_the_slices() -> None:
    """Data whose every series shows a lesion still get a threshold, fit on lesion against
    lesion-free slices and said to be so; the cross-validated point is fit the same way per fold."""
    from training.evaluate import cross_fitted, operating_fit
    rng = np.random.default_rng(0)
    slices, series = [], []
    for i in range(9):
        fold = i % 3
        lesion = rng.uniform(0.5, 0.9, 5)
        clear = rng.uniform(0.02, 0.3, 20)
        slices += [_slice(f"s{i}", fold, 1, p) for p in lesion] + [_slice(f"s{i}", fold, 0, p) for p in clear]
        series.append(_series(f"s{i}", fold, True, float(np.sort(lesion)[-3:].mean())))
    scores = np.array([s.score for s in series])
    positive = np.ones(len(series), bool)
    slope, _, threshold, basis = operating_fit(
        scores, positive, np.array([r.probability for r in slices]), np.array([r.label == 1 for r in slices]))
    assert basis == "slices" and slope > 0 and 0 < threshold < 1
    _, point = cross_fitted(series, slices)
    assert len(point.thresholds) == 3 and all(0.3 < t < 1 for t in point.thresholds)
    assert point.sensitivity.value == 1.0
    assert np.isnan(point.specificity.value)


def test_operating_point_without_any_negative_says_none() -> None:
    from training.evaluate import operating_fit
    ones = np.ones(4, bool)
    assert operating_fit(np.full(4, 0.7), ones, np.full(4, 0.7), ones)[3] == "none"


def test_key_slice_placement_counts_only_series_that_say_where_the_lesion_is() -> None:
    """A series labelled only as a whole (every slice -1) is neither a hit nor a miss; an ignored
    slice (-1) on top of a located series is a miss, and a lesion slice second of three is a key hit."""
    from training.evaluate import key_slice_placement
    slices = [
        _slice("hit", 0, 1, 0.9), _slice("hit", 0, 0, 0.2),
        _slice("second", 0, 0, 0.9), _slice("second", 0, 1, 0.8), _slice("second", 0, 0, 0.1),
        _slice("ignored-top", 1, -1, 0.9), _slice("ignored-top", 1, 0, 0.7), _slice("ignored-top", 1, 0, 0.6),
        _slice("ignored-top", 1, 0, 0.5), _slice("ignored-top", 1, 1, 0.1),
        _slice("whole", 1, -1, 0.9), _slice("whole", 1, -1, 0.1),
        _slice("lesion-free", 2, 0, 0.9),
    ]
    top, among, located = key_slice_placement(slices, {"hit", "second", "ignored-top", "whole"}, key=3)
    assert located == 3
    assert top == pytest.approx(1 / 3) and among == pytest.approx(2 / 3)
    assert np.isnan(key_slice_placement(slices, {"whole"}, key=3)[0])


def test_lesion_free_remainders_score_each_lesion_series_without_its_lesion() -> None:
    """The remainder of a series keeps only its lesion-free slices and is decided with the fold's
    cross-fitted fit; a model that fires on lesion-free slices flags its remainders, one that does not
    ranks every series above its own remainder; series without slice labels are left out."""
    from training.evaluate import lesion_free_remainders

    def data(clear_high: float) -> tuple[list, list]:
        rng = np.random.default_rng(1)
        slices, series = [], []
        for i in range(9):
            fold = i % 3
            lesion = rng.uniform(0.6, 0.9, 4)
            clear = np.r_[rng.uniform(0.02, 0.2, 20), [clear_high] * 3]
            slices += [_slice(f"s{i}", fold, 1, p) for p in lesion] + [_slice(f"s{i}", fold, 0, p) for p in clear]
            probs = np.r_[lesion, clear]
            series.append(_series(f"s{i}", fold, True, float(np.sort(probs)[-3:].mean())))
        slices += [_slice("whole", 0, -1, 0.9)] * 5
        series.append(_series("whole", 0, True, 0.9))
        return slices, series

    quiet = lesion_free_remainders(*data(0.1), key=3)
    assert quiet is not None and quiet["series"] == 9
    assert quiet["flagged"] == 0 and quiet["auc"]["value"] == 1.0
    noisy = lesion_free_remainders(*data(0.95), key=3)
    assert noisy is not None and noisy["flagged"] == 9
    assert noisy["auc"]["value"] <= 0.5 and noisy["flagged_share"]["value"] == 1.0
    slices, series = data(0.1)
    assert lesion_free_remainders([r for r in slices if r.label != 1], series, key=3) is None


@pytest.mark.parametrize("verdict", [True, False])
def test_the_study_value_of_training_is_the_nodes(verdict: bool) -> None:
    """What the card measures is what the node states: a series fit (with a verdict) calibrates the
    mean of the key slices, a slice fit (without one) averages the calibrated key slices."""
    from onconode.inference.slices import aggregate
    from onconode.models import Calibration, Decision
    from training.evaluate import study_value

    lesion = np.random.default_rng(3).uniform(0.01, 0.99, 40)
    logits = np.log(np.c_[1 - lesion, lesion])
    decision = Decision(positive_labels=("lesion",), verdict=verdict, calibration=Calibration(
        slope=0.35, intercept=-1.3, fitted_on="series" if verdict else "slices"))
    node = aggregate(logits, ["none", "lesion"], decision, 3).positive_probability
    basis = "series" if verdict else "slices"
    assert study_value(lesion, 0.35, -1.3, basis, 3) == pytest.approx(node, abs=1e-9)
    assert study_value(lesion, 0.35, -1.3, "slices", 3) != pytest.approx(study_value(lesion, 0.35, -1.3, "series", 3))


def test_the_ece_floor_is_what_a_perfectly_calibrated_model_shows_on_as_many_series() -> None:
    """Certain probabilities have no floor; a few dozen uncertain ones have one well above zero,
    which an honestly drawn outcome reaches often and a model confidently wrong never does."""
    from training.evaluate import ece, ece_if_calibrated

    certain = ece_if_calibrated(np.r_[np.zeros(10), np.ones(10)], observed=0.0)
    assert certain is not None and certain["median"] == 0.0 and certain["at_or_above"] == 1.0
    p = np.random.default_rng(5).uniform(0.2, 0.8, 40)
    floor = ece_if_calibrated(p, observed=ece(p, np.random.default_rng(6).random(40) < p))
    assert floor is not None and 0.05 < floor["low"] <= floor["median"] <= floor["high"]
    assert floor["at_or_above"] > 0.025
    wrong = ece_if_calibrated(p, observed=ece(p, p < 0.5))
    assert wrong is not None and wrong["at_or_above"] == 0.0
    assert ece_if_calibrated(np.zeros(0), observed=0.0) is None


def test_level_alone_and_what_the_model_sees_beyond_it() -> None:
    """Lesions always at the same level: the position baseline finds them without looking; a model
    scoring by level alone ties its neighbours at that level (0.5), one that sees the lesion wins."""
    from training.evaluate import SliceRecord, position_baseline, same_level_auc, series_records, summary

    def data(sees: bool) -> list[SliceRecord]:
        rng = np.random.default_rng(2)
        rows = []
        for i in range(12):
            for index in range(40):
                lesion = index in (21, 22)  # the same tenth as slices 20..23
                level = 0.8 if 20 <= index <= 23 else 0.1
                p = (0.9 if lesion else level) if sees else level
                rows.append(SliceRecord(f"s{i}", f"p{i}", "ct", i % 3, index, int(lesion), p + rng.uniform(0, 0.01),
                                        0.5, float("nan"), float("nan")))
        return rows

    blind, seeing = data(False), data(True)
    position = position_baseline(blind)
    labels = np.array([r.label == 1 for r in blind])
    assert roc_auc(position, labels) > 0.9
    assert abs(same_level_auc(blind).value - 0.5) < 0.15
    assert same_level_auc(seeing).value == 1.0
    series = series_records(seeing, {f"s{i}": True for i in range(12)}, 3)
    assert summary(seeing, series, 3)["slices"]["same_level_auc"]["value"] == 1.0
    assert np.isnan(same_level_auc([r for r in blind if r.label != 1]).value)


def test_platt_on_separable_series_keeps_the_order_and_stays_short_of_certainty() -> None:
    """Ten lesion series all above ten lesion-free ones: hard targets would send the slope to its
    ridge limit and every series to 0.000 or 1.000; with Platt's targets ((N+1)/(N+2), 1/(N+2)) the
    slope stays finite, no series is called certain, and the order is kept."""
    from training.evaluate import calibrated, platt
    scores = np.concatenate([np.linspace(0.05, 0.45, 10), np.linspace(0.55, 0.95, 10)])
    positive = np.arange(20) >= 10
    out = calibrated(scores, *platt(scores, positive))
    assert np.all(np.diff(out) > 0)
    assert 1e-3 < out.min() and out.max() < 1 - 1e-3
    assert 0.75 < out[positive].mean() < 0.95 and 0.05 < out[~positive].mean() < 0.25


def test_key_slices_ranked_by_model_and_filter_as_the_node_ranks_them() -> None:
    """Records with the nodule filter's scores are ranked by the mean of both ranks in the series,
    exactly as ``slices.aggregate`` ranks them; the series value averages those key slices' own
    probabilities; the summary says what the filter adds over the model alone."""
    from dataclasses import replace

    from onconode.inference.slices import aggregate
    from onconode.models import Decision
    from training.evaluate import key_probabilities, ranked, series_records, summary

    probability = [0.9, 0.8, 0.3, 0.2, 0.1]
    blob = [0.0, 5.0, 9.0, 1.0, 2.0]
    labels = [0, 1, 1, 0, 0]
    rows = [replace(_slice("s", 0, label, p), index=i, blob=b)
            for i, (p, b, label) in enumerate(zip(probability, blob, labels))]
    logits = np.log(np.c_[probability, 1 - np.array(probability)])
    node = aggregate(logits, ["lesion", "none"], Decision(positive_labels=("lesion",), threshold=0.5), 2,
                     np.array(blob))
    assert [r.index for r in ranked(rows)[:2]] == list(node.key) == [1, 2]
    assert key_probabilities(rows, 2) == [0.8, 0.3]
    assert series_records(rows, {"s": True}, 2)[0].score == pytest.approx(0.55)
    # Without the filter's scores the model's probability alone ranks: the old behaviour.
    alone = [replace(r, blob=float("nan")) for r in rows]
    assert [r.index for r in ranked(alone)[:2]] == [0, 1]

    other = [replace(_slice("t", 1, label, p), index=i, blob=b)
             for i, (p, b, label) in enumerate(zip([0.5, 0.9, 0.2], [8.0, 0.0, 1.0], [1, 0, 0]))]
    everything = rows + other
    out = summary(everything, series_records(everything, {"s": True, "t": True}, 2), key=2)
    assert out["series"]["top_slice_is_lesion"] == 1.0          # s: slice 1, t: slice 0
    assert out["ranking"]["model_alone"]["top_slice_is_lesion"] == 0.0
    assert "ranking" not in summary(alone, series_records(alone, {"s": True}, 2), key=2)
