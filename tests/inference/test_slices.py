"""Slice selection and study aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from onconode.inference import slices
from onconode.models import Decision

LABELS = ["malignant", "benign", "normal"]


def test_choose_keeps_slices_showing_the_organ_capped_and_spread() -> None:
    fractions = [0.0] * 10 + [0.2] * 50 + [0.0] * 10
    picked = slices.choose(fractions, "lung", cap=5)
    assert picked == (10, 22, 34, 47, 59)


def test_choose_runs_nothing_when_no_slice_shows_the_organ() -> None:
    assert slices.choose([0.0] * 9, "brain", cap=3) == ()
    assert slices.choose([0.02] * 9, "lung", cap=3) == ()  # under the 3% a lung slice shows


def test_choose_refuses_a_cap_below_one() -> None:
    with pytest.raises(ValueError, match="cap"):
        slices.choose([0.5], "body", cap=0)


def test_lung_fraction_counts_aerated_lung_only() -> None:
    hu = np.array([[-1000.0, -800.0], [-600.0, 40.0]])
    assert slices.tissue_fraction(hu, "lung", hounsfield=True) == 0.5
    assert slices.tissue_fraction(hu, "body", hounsfield=True) == 0.25
    assert slices.tissue_fraction(np.array([[0.1, 0.5]]), "brain", hounsfield=False) == 0.5


def test_aggregate_averages_the_most_suspicious_slices() -> None:
    logits = np.log(np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2], [0.1, 0.8, 0.1]]))
    score = slices.aggregate(logits, LABELS, Decision(positive_labels=("malignant",), threshold=0.5), 2)
    assert score.key == (0, 2)
    np.testing.assert_allclose(score.probabilities, [0.7, 0.15, 0.15])
    assert score.positive and score.predicted == 0 and score.positive_probability == pytest.approx(0.7)


def test_temperature_softens_the_probabilities() -> None:
    logits = np.array([[2.0, 0.0, 0.0]])
    sharp = slices.aggregate(logits, LABELS, Decision(positive_labels=("malignant",)), 1)
    soft = slices.aggregate(logits, LABELS, Decision(positive_labels=("malignant",), temperature=4.0), 1)
    assert soft.positive_probability < sharp.positive_probability
    assert sum(soft.probabilities) == pytest.approx(1.0)


def test_threshold_decides() -> None:
    logits = np.log(np.array([[0.6, 0.3, 0.1]]))
    assert not slices.aggregate(logits, LABELS, Decision(positive_labels=("malignant",), threshold=0.7), 1).positive


def test_aggregate_refuses_logits_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="logits"):
        slices.aggregate(np.zeros((2, 4)), LABELS, Decision(positive_labels=("malignant",)), 1)


def test_calibration_maps_the_study_probability_and_keeps_the_order() -> None:
    from onconode.inference.slices import calibrate
    from onconode.models import Calibration

    assert calibrate(0.3, None) == 0.3
    c = Calibration(slope=2.0, intercept=-1.0)
    values = [calibrate(p, c) for p in (0.1, 0.3, 0.5, 0.9)]
    assert values == sorted(values) and abs(values[2] - 1 / (1 + np.exp(1.0))) < 1e-9


def test_with_a_verdict_the_calibration_maps_the_mean_of_the_key_slices() -> None:
    from onconode.models import Calibration

    logits = np.log(np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]]))
    c = Calibration(slope=0.5, intercept=-1.0)
    score = slices.aggregate(logits, LABELS, Decision(positive_labels=("malignant",), calibration=c), 2)
    assert score.positive_probability == pytest.approx(slices.calibrate(0.7, c))
    assert sum(score.probabilities) == pytest.approx(1.0)
    np.testing.assert_allclose(score.slice_probabilities, np.exp(logits))  # the slices stay as the model gave them


def test_without_a_verdict_each_slice_is_calibrated_and_the_study_value_is_their_mean() -> None:
    from onconode.models import Calibration

    raw = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2], [0.3, 0.3, 0.4]])
    c = Calibration(slope=0.5, intercept=-1.0, fitted_on="slices")
    score = slices.aggregate(np.log(raw), LABELS,
                             Decision(positive_labels=("malignant",), calibration=c, verdict=False), 2)
    positive = score.slice_probabilities[:, 0]
    np.testing.assert_allclose(positive, [slices.calibrate(p, c) for p in raw[:, 0]])
    np.testing.assert_allclose(score.slice_probabilities.sum(axis=1), 1.0)
    assert score.key == (0, 2)  # a calibration never reorders the slices
    assert score.positive_probability == pytest.approx(positive[[0, 2]].mean())
    assert score.positive_probability != pytest.approx(slices.calibrate(0.7, c))


def test_aggregate_ranks_key_slices_by_model_and_filter_together() -> None:
    """With the nodule filter's scores, a slice the model ranks second and the filter first leads."""
    logits = np.log(np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.2, 0.4, 0.4], [0.1, 0.1, 0.8]]))
    decision = Decision(positive_labels=("malignant",), threshold=0.5)
    by_model = slices.aggregate(logits, LABELS, decision, 2)
    both = slices.aggregate(logits, LABELS, decision, 2, np.array([1.0, 9.0, 3.0, 0.0]))
    assert by_model.key == (0, 1)
    assert both.key == (1, 0)  # mean ranks: 1 -> (2/3 + 1)/2, 0 -> (1 + 0.33)/2
    # The value is the mean of the key slices' own probabilities, whichever ranking chose them.
    assert both.positive_probability == pytest.approx((0.7 + 0.9) / 2)
    # A slice the model ranks third leads where only the filter sees anything in it.
    assert slices.aggregate(logits, LABELS, decision, 1, np.array([0.0, 0.0, 5.0, 0.0])).key == (2,)


def test_aggregate_refuses_filter_scores_that_do_not_fit_the_slices() -> None:
    logits = np.zeros((3, 3))
    with pytest.raises(ValueError, match="blob_scores"):
        slices.aggregate(logits, LABELS, Decision(positive_labels=("malignant",), threshold=0.5), 2, np.zeros(2))
