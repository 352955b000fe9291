"""What OncoNode concluded about a study: one record that every output renders and none recomputes.

Input: an ``AnalysisResult`` (per-slice probabilities, the study probability, the decision) and the
model's manifest. Output: a frozen ``Conclusion``: what was looked for (a coded finding), the
study-level probability, the threshold, positive or negative, the model, and the per-slice
probabilities, each named as per slice.

Why one record: a study probability in the status page, another label's probability in the SR
and a per-slice value unnamed on the captions are three numbers for one result, and a reader
cannot tell which one the decision used. The SR, the FHIR report, the captions, the API and the
page all take their numbers and wording from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from onconode.algorithm import Algorithm
from onconode.inference.pipeline import RANKED_BY_MODEL, AnalysisResult, SliceScore
from onconode.models import Manifest

NOT_FOR_DIAGNOSIS = "Research use only - NOT FOR DIAGNOSIS. Unverified AI result."
NO_VERDICT = "no verdict"


@dataclass(frozen=True)
class Finding:
    """The coded concept the model looks for (from its manifest)."""

    code: str
    scheme: str
    meaning: str
    display: str


@dataclass(frozen=True)
class Conclusion:
    study_uid: str
    series_uid: str
    modality: str
    finding: Finding
    probability: float          # with a verdict, the study probability; without, see ``value_name``
    threshold: float
    positive: bool | None       # probability >= threshold; None: the model states no verdict
    method: str                 # how ``probability`` comes from the slices
    algorithm: Algorithm
    slices: tuple[SliceScore, ...]   # every analysed slice, in volume order
    key: tuple[SliceScore, ...]      # the key slices, most suspicious first
    slices_total: int

    @property
    def verdict(self) -> str:
        if self.positive is None:
            return NO_VERDICT
        return "positive" if self.positive else "negative"

    @property
    def value_name(self) -> str:
        """What ``probability`` is, in words. Without a verdict it is no study probability: the
        calibration is a slice's, so the value is the mean of the key slices' own values."""
        if self.positive is None:
            return f"mean probability of the {len(self.key)} key slices"
        return "study probability"

    @property
    def value_scope(self) -> str:
        """What the value is about, for a coded observation's text."""
        if self.positive is None:
            return f"mean of the {len(self.key)} key slices, each per slice; not a probability for the study"
        return "whole study"

    def headline(self) -> str:
        """The one sentence every output leads with."""
        model = f"{self.algorithm.name} {self.algorithm.version}"
        if self.positive is None:
            return (f"{self.finding.display}: {NO_VERDICT.upper()} ({self.value_name} {self.probability:.2f}; "
                    f"{model} ranks the slices only: its study decision was never measured on studies "
                    "without the finding)")
        return f"{self.finding.display}: {self.verdict.upper()} ({self.probability_line()}; {model})"

    def probability_line(self) -> str:
        """The study value against the threshold, or said to be a ranking when there is no verdict."""
        if self.positive is None:
            return f"{self.value_name} {self.probability:.2f} (no threshold: slices ranked only)"
        return f"study probability {self.probability:.2f} {'>=' if self.positive else '<'} threshold {self.threshold:.2f}"

    def slice_line(self, score: SliceScore) -> str:
        """How one slice's own value is named wherever it is shown."""
        return f"this slice: probability {score.probability:.2f} (per slice)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the result row, the API and ``analyze --json``."""
        data = asdict(self)
        data["verdict"] = self.verdict
        data["headline"] = self.headline()
        data["value_name"] = self.value_name
        data["not_for_diagnosis"] = NOT_FOR_DIAGNOSIS
        return data


def from_dict(data: Mapping[str, Any]) -> Conclusion:
    """The inverse of ``Conclusion.to_dict`` (ignores the derived keys)."""
    scores = [tuple(SliceScore(**s) for s in data[name]) for name in ("slices", "key")]
    return Conclusion(
        study_uid=data["study_uid"], series_uid=data["series_uid"], modality=data["modality"],
        finding=Finding(**data["finding"]), probability=float(data["probability"]),
        threshold=float(data["threshold"]), positive=None if data["positive"] is None else bool(data["positive"]),
        method=data["method"],
        algorithm=Algorithm(**data["algorithm"]), slices=scores[0], key=scores[1],
        slices_total=int(data["slices_total"]))


def conclude(result: AnalysisResult, manifest: Manifest) -> Conclusion:
    """The conclusion of an analysed study.

    Raises
    ------
    ValueError
        When the result is not an analysis by this manifest's model (no slices, another model).
    """
    if result.model != manifest.name or result.positive_probability is None \
            or (result.positive is None and manifest.decision.verdict):
        raise ValueError(f"result of model {result.model!r} is no analysis by {manifest.name}")
    if not result.slice_scores or result.series_uid is None:
        raise ValueError("result has no analysed slices")
    by_index = {s.index: s for s in result.slice_scores}
    key = tuple(by_index[k.index] for k in result.key_slices if k.index in by_index)
    spec = manifest.finding
    return Conclusion(
        study_uid=result.study_uid, series_uid=result.series_uid, modality=manifest.modality,
        finding=Finding(spec.code, spec.scheme, spec.meaning, spec.display),
        probability=float(result.positive_probability), threshold=float(manifest.decision.threshold),
        # The manifest decides whether there is a verdict at all; the result only which one.
        positive=bool(result.positive) if manifest.decision.verdict else None,
        method=_method(result, manifest),
        algorithm=Algorithm.from_model(manifest.name, manifest.version, manifest.sha256),
        slices=result.slice_scores, key=key, slices_total=result.slices_total)


def _method(result: AnalysisResult, manifest: Manifest) -> str:
    """How the value comes from the slices, and what chose the slices it averages."""
    key, analysed = len(result.key_slices), len(result.slice_scores)
    if result.ranked_by == RANKED_BY_MODEL:
        return f"mean of the {key} highest per-slice probabilities of {analysed} analysed slices" \
               f"{_calibration_phrase(manifest)}"
    return (f"mean of the per-slice probabilities of the {key} key slices of {analysed} analysed slices"
            f"{_calibration_phrase(manifest)}; key slices ranked by the model's probability and a "
            "nodule-shape filter together")


def _calibration_phrase(manifest: Manifest) -> str:
    calibration = manifest.decision.calibration
    if calibration is None:
        return ""
    return ", calibrated on training series" if calibration.fitted_on == "series" else \
        ", each calibrated on training slices"
