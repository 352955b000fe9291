"""The one conclusion record: its numbers are the analysis's, said once, and survive the result row."""

from __future__ import annotations

import pytest

from onconode import conclusion as conclusion_module
from onconode.conclusion import conclude, from_dict
from onconode.inference.pipeline import AnalysisResult, Outcome


def test_conclusion_carries_the_study_decision_and_names_slice_values(ct_result, ct_conclusion, registry) -> None:
    c = ct_conclusion
    manifest = registry["test-ct"].manifest
    assert c.probability == ct_result.positive_probability and c.threshold == manifest.decision.threshold
    assert c.positive == (c.probability >= c.threshold) == ct_result.positive
    assert [s.index for s in c.slices] == list(ct_result.slices_analysed)
    assert [s.index for s in c.key] == [k.index for k in ct_result.key_slices]
    assert all(abs(s.probability - k.positive_probability) < 1e-9 for s, k in zip(c.key, ct_result.key_slices))
    assert c.finding.code == manifest.finding.code and c.algorithm.sha256 == manifest.sha256
    headline = c.headline()
    assert c.verdict.upper() in headline and f"{c.probability:.2f}" in headline and f"{c.threshold:.2f}" in headline
    assert "(per slice)" in c.slice_line(c.key[0])


def test_the_result_row_form_round_trips(ct_conclusion) -> None:
    data = ct_conclusion.to_dict()
    assert data["headline"] == ct_conclusion.headline()
    assert data["not_for_diagnosis"] == conclusion_module.NOT_FOR_DIAGNOSIS
    assert from_dict(data) == ct_conclusion


def test_only_an_analysis_by_the_model_concludes(ct_result, registry) -> None:
    none = AnalysisResult(ct_result.study_uid, Outcome.NO_APPLICABLE_MODEL, "no applicable model: x", ())
    with pytest.raises(ValueError):
        conclude(none, registry["test-ct"].manifest)
    with pytest.raises(ValueError):
        conclude(ct_result, registry["test-mr"].manifest)


def test_a_model_that_states_no_verdict_concludes_with_its_probability_alone(no_verdict, ct_result,
                                                                              registry) -> None:
    """A manifest with ``decision.verdict: false``: the conclusion keeps the study probability and the
    key slices, and says in every form that there is no positive or negative."""
    result, _, c = no_verdict
    assert c.positive is None and c.verdict == "no verdict"
    assert c.probability == result.positive_probability and c.key
    # The value is the mean of the key slices' own (calibrated) values, and is named so.
    assert c.probability == pytest.approx(sum(k.probability for k in c.key) / len(c.key))
    assert c.value_name == f"mean probability of the {len(c.key)} key slices"
    assert "each calibrated on training slices" in c.method
    headline = c.headline()
    assert "NO VERDICT" in headline and f"{c.value_name} {c.probability:.2f}" in headline
    assert "threshold" not in headline and "study probability" not in headline
    assert "no threshold" in c.probability_line() and "study probability" not in c.probability_line()
    assert from_dict(c.to_dict()) == c
    # A result without its decision is no analysis by a model that states one.
    with pytest.raises(ValueError):
        conclude(result, registry["test-ct"].manifest)
