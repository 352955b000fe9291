"""The analysis of one stable study: route → select series → volume → preprocess → slices → ONNX →
key slices (by the model, or with the nodule filter where the manifest says) → Grad-CAM. The only
module that wires the inference stages together.

Input: the file paths of one study, the verified model registry and the routing rules.
Output: a frozen ``AnalysisResult``. The node's worker calls ``analyze_study`` for each queued
study (keeping one ``RunnerPool`` so onnxruntime sessions are built once); ``onconode analyze``
calls it for each study in a folder. "No applicable model" is a result, not an exception;
undecodable pixels raise ``PixelDecodeError`` so the worker can mark the study failed with a reason.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from onconode.config import RoutingRule
from onconode.inference import blobs, gradcam, slices
from onconode.inference.preprocess import (
    Placement,
    Scaling,
    context_indices,
    context_neighbours,
    context_offset,
    display_scale,
    prepare_slice,
    sample_indices,
    scale_intensities,
    series_scaling,
)
from onconode.inference.runner import OnnxRunner, RunnerPool
from onconode.models import BlobRanking, Manifest, Preprocess, RegisteredModel
from onconode.selection import match, probe, series, volume
from onconode.selection.region import body_outline
from onconode.selection.series import InstanceHeader

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    ANALYSED = "analysed"
    NO_APPLICABLE_MODEL = "no_applicable_model"


@dataclass(frozen=True, eq=False)
class KeySlice:
    """A slice shown in the report: where it is, what the model said, and why (Grad-CAM)."""

    sop_instance_uid: str
    frame: int | None            # frame index in a multi-frame instance, else None
    index: int                   # position in the ordered volume (0 = first along the normal)
    position: tuple[float, float, float] | None
    probabilities: tuple[float, ...]  # per label, manifest order
    positive_probability: float
    heat_map: np.ndarray         # float32 (H, W) in [0, 1], slice pixel grid, for the predicted label
    image: np.ndarray            # float32 (H, W) in [0, 1]: the slice in the manifest's display window
    body: np.ndarray             # bool (H, W): the patient's outline on the slice


@dataclass(frozen=True)
class SliceScore:
    """One analysed slice and the model's probability that it shows the finding (per slice)."""

    index: int                   # position in the ordered volume
    sop_instance_uid: str
    frame: int | None
    probability: float


RANKED_BY_MODEL = "model"
RANKED_BY_MODEL_AND_FILTER = "model and nodule filter"
UNRANKED_NOTE = ("key slices ranked by the model alone: the slice or pixel spacing is unknown or "
                 "not physical, and the nodule filter measures in mm")


@dataclass(frozen=True, eq=False)
class AnalysisResult:
    study_uid: str
    outcome: Outcome
    reason: str                          # one line a person can read
    series: tuple[series.SeriesDecision, ...]
    rule: str | None = None
    model: str | None = None
    model_version: str | None = None
    series_uid: str | None = None
    labels: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()  # per label, same order as ``labels``
    predicted_label: str | None = None
    # decision: positive_probability >= threshold; None when not analysed, or when the manifest states
    # no verdict (``Decision.verdict``), and then no predicted label either
    positive: bool | None = None
    positive_probability: float | None = None
    threshold: float | None = None
    slices_total: int = 0
    slices_analysed: tuple[int, ...] = ()  # volume indices that went through the model
    key_slices: tuple[KeySlice, ...] = ()
    slice_scores: tuple[SliceScore, ...] = ()  # every analysed slice, in volume order
    slice_paths: Mapping[str, Path] = field(default_factory=dict)  # SOP Instance UID → file, analysed slices
    # Every readable instance of the study as scanned: reports list and cite them without reading the
    # files again.
    instances: tuple[InstanceHeader, ...] = ()
    volume_notes: tuple[str, ...] = ()
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    # What the key slices were ranked by: "model" (its probability) or "model and nodule filter"
    # (``slices.aggregate``), as the manifest asks and the series allows.
    ranked_by: str = RANKED_BY_MODEL

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no pixel arrays), as ``onconode analyze --json`` prints it."""
        return {
            "study_uid": self.study_uid, "outcome": self.outcome.value, "reason": self.reason,
            "series": [vars(d) for d in self.series], "rule": self.rule,
            "model": self.model, "model_version": self.model_version, "series_uid": self.series_uid,
            "probabilities": dict(zip(self.labels, (round(p, 6) for p in self.probabilities))),
            "predicted_label": self.predicted_label, "positive": self.positive,
            "positive_probability": self.positive_probability, "threshold": self.threshold,
            "slices_total": self.slices_total, "slices_analysed": len(self.slices_analysed),
            "key_slices": [{"sop_instance_uid": k.sop_instance_uid, "frame": k.frame, "index": k.index,
                            "position": k.position, "positive_probability": round(k.positive_probability, 6)}
                           for k in self.key_slices],
            "ranked_by": self.ranked_by if self.key_slices else None,
            "volume_notes": list(self.volume_notes),
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
        }


class _Clock:
    """Milliseconds per stage; a stage entered several times (per slice) accumulates."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000.0


def _screen(scan: series.StudyScan) -> tuple[list[series.SeriesInfo], list[series.SeriesDecision]]:
    candidates, left = [], []
    for info in scan.series:
        why = series.identity_problem(info) or series.exclusion(info)
        if why is None:
            candidates.append(info)
        else:
            left.append(series.decide(info, False, why))
    return candidates, left


def analyze_study(paths: Sequence[Path], registry: Mapping[str, RegisteredModel],
                  rules: Sequence[RoutingRule], runners: RunnerPool | None = None) -> AnalysisResult:
    """Analyse one study from its files; see the module docstring.

    Raises
    ------
    ValueError
        If the paths hold no readable DICOM file or more than one study.
    PixelDecodeError
        If a chosen slice cannot be decoded (missing codec, corrupt data).
    """
    clock = _Clock()
    with clock.stage("scan"):
        scan = series.scan(paths)
    with clock.stage("select"):
        candidates, excluded = _screen(scan)
        choice = match.choose(candidates, registry, rules, probe.look)
    decisions = (*choice.decisions, *excluded)
    offer = choice.offer
    model = offer.model if offer is not None else None
    if offer is None or model is None or choice.series is None:
        return AnalysisResult(scan.study_uid, Outcome.NO_APPLICABLE_MODEL, choice.reason, decisions,
                              timings_ms=clock.ms)
    manifest = model.manifest
    organ = slices.organ_wanted(_target(offer.rule, manifest))
    pool = runners or RunnerPool()  # one session for every series tried
    passed: list[series.SeriesInfo] = []
    for chosen in (choice.series, *choice.runners_up):
        shown = _passed_over(decisions, passed, chosen, manifest.name, organ)
        result = _run_model(scan, shown, offer.rule, model, chosen, pool, clock)
        if result is not None:
            return result
        log.info("event=series_shows_no_organ study=%s series=%s model=%s", scan.study_uid, chosen.series_uid,
                 manifest.name)
        passed.append(chosen)
    which = "the chosen series" if len(passed) == 1 else f"the {len(passed)} series {manifest.name} accepted"
    reason = (f"no applicable model: no slice of {which} shows {organ}, which {manifest.name} {manifest.version} "
              f"needs; it was not run")
    log.info("event=study_not_applicable study=%s model=%s series_tried=%d", scan.study_uid, manifest.name,
             len(passed))
    return AnalysisResult(scan.study_uid, Outcome.NO_APPLICABLE_MODEL, reason,
                          _passed_over(decisions, passed, None, manifest.name, organ), timings_ms=clock.ms)


def _target(rule: RoutingRule | None, manifest: Manifest) -> slices.Target:
    return (rule.target if rule else None) or manifest.slices.target


def _passed_over(decisions: tuple[series.SeriesDecision, ...], passed: Sequence[series.SeriesInfo],
                 chosen: series.SeriesInfo | None, model_name: str, organ: str) -> tuple[series.SeriesDecision, ...]:
    """The selection's decisions once the pixels of ``passed`` showed nothing the model reads, and
    ``chosen``, ranked below them, is read instead (None: no series is)."""
    if not passed:
        return decisions
    skipped = {info.series_uid for info in passed}
    out = []
    for decision in decisions:
        if decision.series_uid in skipped:
            decision = replace(decision, taken=False, reason=f"accepted by {model_name}, but no slice shows "
                                                              f"{organ}: passed over")
        elif chosen is not None and decision.series_uid == chosen.series_uid:
            above = "the series ranked above it shows" if len(passed) == 1 else \
                f"the {len(passed)} series ranked above it show"
            decision = replace(decision, taken=True, reason=f"read by {model_name}: {above} no {organ}")
        out.append(decision)
    return tuple(out)


def _run_model(scan: series.StudyScan, decisions: tuple[series.SeriesDecision, ...], rule: RoutingRule | None,
               model: RegisteredModel, chosen: series.SeriesInfo, runners: RunnerPool,
               clock: _Clock) -> AnalysisResult | None:
    """The analysis of ``chosen``, or None when no slice of it shows what the model reads."""
    study_uid = scan.study_uid
    manifest = model.manifest
    target = _target(rule, manifest)
    cap = (rule.max_analysed_slices if rule else None) or manifest.slices.max_analysed
    key_count = (rule.key_slices if rule else None) or manifest.slices.key
    with clock.stage("scan"):
        vol = volume.build_volume(chosen)
    scaling = _scaling(vol, manifest.preprocess, clock)
    runner = runners.get(model)
    nodule_filter, notes = _nodule_filter(vol, chosen, manifest)
    prepared = _prepare_and_run(vol, manifest, target, cap, scaling, runner, clock,
                                nodule_filter.ranking if nodule_filter else None)
    if prepared is None:
        return None
    chosen_idx, logits, shrunk = prepared
    blob_scores = None
    if nodule_filter is not None and shrunk is not None:
        with clock.stage("rank"):
            every = blobs.slice_scores(shrunk, nodule_filter.dz_mm, nodule_filter.pixel_mm, nodule_filter.ranking)
        blob_scores = every[list(chosen_idx)]
    with clock.stage("inference"):
        labels = [label.name for label in manifest.labels]
        score = slices.aggregate(logits, labels, manifest.decision, key_count, blob_scores)
    positive_columns = [labels.index(n) for n in manifest.decision.positive_labels]
    # The heat map shows the evidence for the finding the model looks for, whatever the verdict.
    explained = max(positive_columns, key=lambda c: score.probabilities[c])
    key_indices = [chosen_idx[row] for row in score.key]
    seen = _key_inputs(vol, manifest, key_indices, scaling, clock)
    with clock.stage("inference"):
        _, features = runner.run(np.stack([model_input for _, model_input, _ in seen]))
    keys = [_key_slice(vol, index, score.slice_probabilities[row], positive_columns,
                       _gradcam_map(features[k], model, explained, placement, clock), values, manifest, scaling,
                       clock)
            for k, (row, index, (values, _, placement)) in enumerate(zip(score.key, key_indices, seen))]
    scores = tuple(SliceScore(i, vol.slices[i].sop_instance_uid, vol.slices[i].frame,
                              float(score.slice_probabilities[row, positive_columns].sum()))
                   for row, i in enumerate(chosen_idx))
    reason = f"analysed {len(chosen_idx)} of {len(vol.slices)} slices with {manifest.name} {manifest.version}"
    log.info("event=study_analysed study=%s series=%s model=%s slices=%d ms=%.0f", study_uid,
             chosen.series_uid, manifest.name, len(chosen_idx), sum(clock.ms.values()))
    return AnalysisResult(
        study_uid, Outcome.ANALYSED, reason, decisions, rule=rule.name if rule else None, model=manifest.name,
        model_version=manifest.version, series_uid=chosen.series_uid, labels=tuple(labels),
        probabilities=score.probabilities,
        predicted_label=labels[score.predicted] if manifest.decision.verdict else None,
        positive=score.positive if manifest.decision.verdict else None,
        positive_probability=score.positive_probability, threshold=manifest.decision.threshold,
        slices_total=len(vol.slices), slices_analysed=chosen_idx, key_slices=tuple(keys), slice_scores=scores,
        slice_paths={vol.slices[i].sop_instance_uid: vol.slices[i].path for i in chosen_idx},
        instances=scan.instances, volume_notes=vol.notes + notes, timings_ms=dict(clock.ms),
        ranked_by=RANKED_BY_MODEL if blob_scores is None else RANKED_BY_MODEL_AND_FILTER)


@dataclass(frozen=True)
class _NoduleFilter:
    ranking: BlobRanking
    dz_mm: float      # between slices
    pixel_mm: float   # of a shrunk slice


def _nodule_filter(vol: volume.Volume, chosen: series.SeriesInfo, manifest: Manifest
                   ) -> tuple[_NoduleFilter | None, tuple[str, ...]]:
    """Whether the nodule filter ranks this series' key slices (decided before any slice is read),
    with its spacing, or None and a note where the manifest asks for it but the series cannot have
    it: too large to hold, or a spacing that is unknown or not physical (the filter measures in mm)."""
    ranking = manifest.slices.ranking
    if ranking is None or vol.modality != "CT":
        return None, ()
    if not blobs.affordable(len(vol.slices), vol.shape, ranking):
        too_many = (f"key slices ranked by the model alone: {len(vol.slices)} slices of {vol.shape[0]}x"
                    f"{vol.shape[1]} are more than the nodule filter holds")
        return None, (too_many,)
    dz, pixel = volume.slice_spacing(vol), chosen.first.pixel_spacing
    row_mm = float(pixel[0]) if pixel else None
    if dz is None or row_mm is None or not blobs.plausible(dz, row_mm):
        return None, (UNRANKED_NOTE,)
    return _NoduleFilter(ranking, dz, row_mm * ranking.shrink), ()


def _scaling(vol: volume.Volume, spec: Preprocess, clock: _Clock) -> Scaling | None:
    """The series' own intensity reference, for ``mr_volume`` (from a sample of its slices)."""
    if spec.kind != "mr_volume":
        return None
    with clock.stage("decode"):
        sample = [volume.read_slice(vol.slices[i]) for i in sample_indices(len(vol.slices))]
    with clock.stage("preprocess"):
        return series_scaling(sample, spec)


def _prepare_and_run(vol: volume.Volume, manifest: Manifest, target: slices.Target, cap: int,
                     scaling: Scaling | None, runner: OnnxRunner, clock: _Clock, ranking: BlobRanking | None
                     ) -> tuple[tuple[int, ...], np.ndarray, np.ndarray | None] | None:
    """The slices to run (``slices.choose``), their logits and, given the nodule filter's
    ``ranking`` (``_nodule_filter``), every slice shrunk for it (``blobs.shrink``; about a quarter of a megabyte
    each at 512×512); None when no slice shows the target organ. No features: a megabyte per slice
    at stride 16, and only the key slices' are read (``_key_inputs`` prepares those again).

    Decode and preprocess alternate slice by slice, one decoded slice alive at a time (with context,
    those between a slice and its neighbours). When the series has no more slices than the cap, every
    eligible slice is chosen, so each is sent to the model as soon as it is prepared (``Streamed``)
    and the clock's "inference" is only the wait after the last one; a longer series is run once its
    evenly spread choice is known.
    """
    spec = manifest.preprocess
    hounsfield = vol.modality == "CT"
    count = len(vol.slices)
    offset = _context_offset(vol, spec)
    inputs: dict[int, np.ndarray] = {}
    fractions: list[float] = []
    decoded: dict[int, np.ndarray] = {}  # the slices a waiting input still needs: 2·offset + 1 at most
    waiting: list[int] = []              # eligible slices whose later neighbour is not decoded yet
    eager = count <= cap
    # Filled slice by slice as the series is read: the filter takes it as it is, with no second copy.
    shrunk = np.empty((count, *blobs.shrunk_shape(vol.shape, ranking)), np.float32) if ranking is not None else None

    def prepare(index: int) -> None:
        model_input, _ = prepare_slice(
            decoded[index], spec, manifest.input.size, manifest.input.channels, vol.modality, scaling,
            context_neighbours(index, count, offset, decoded))
        if eager:
            stream.add(model_input)
        else:
            inputs[index] = model_input

    with runner.stream() as stream:
        slice_iter = volume.iter_slices(vol)
        while True:
            with clock.stage("decode"):
                item = next(slice_iter, None)
            if item is None:
                break
            index, _, values = item
            with clock.stage("preprocess"):
                seen = values if hounsfield else scale_intensities(values, spec, scaling)  # CT masks read HU
                fraction = slices.tissue_fraction(seen, target, hounsfield)
                fractions.append(fraction)
                if shrunk is not None and ranking is not None:
                    shrunk[index] = blobs.shrink(values, ranking)
                decoded[index] = values
                if slices.is_eligible(fraction, target):
                    waiting.append(index)
                while waiting and context_indices(waiting[0], count, offset)[1] <= index:
                    prepare(waiting.pop(0))
                oldest = (waiting[0] if waiting else index + 1) - offset
                for stale in [k for k in decoded if k < oldest]:
                    del decoded[stale]
            del values, seen
        with clock.stage("preprocess"):
            for index in waiting:  # the last slices: their later neighbours are the series' end
                prepare(index)
        decoded.clear()
        chosen_idx = slices.choose(fractions, target, cap)
        if not chosen_idx:
            return None
        with clock.stage("inference"):
            if eager:
                logits = stream.results()
                if len(logits) != len(chosen_idx):  # every eligible slice is chosen when eager
                    raise RuntimeError(f"{len(logits)} slices run, {len(chosen_idx)} chosen")
            else:  # batch by batch, each input let go once run: never two copies of them all
                step = runner.batch
                logits = np.concatenate([runner.logits(np.stack([inputs.pop(i) for i in chosen_idx[at:at + step]]))
                                         for at in range(0, len(chosen_idx), step)])
    return chosen_idx, logits, shrunk


def _context_offset(vol: volume.Volume, spec: Preprocess) -> int:
    """How many slices away a context model's neighbours lie in this series (0 without context)."""
    return context_offset(volume.slice_spacing(vol), spec.context_mm) if spec.context_mm is not None else 0


def _key_inputs(vol: volume.Volume, manifest: Manifest, indices: Sequence[int], scaling: Scaling | None,
                clock: _Clock) -> list[tuple[np.ndarray, np.ndarray, Placement]]:
    """(decoded values, model input, placement) of each key slice, prepared again exactly as in
    ``_prepare_and_run`` (with its neighbours where the model reads context): a few slices decoded
    twice cost less than holding every slice's features."""
    spec = manifest.preprocess
    count = len(vol.slices)
    offset = _context_offset(vol, spec)
    out = []
    for index in indices:
        with clock.stage("decode"):
            needed = sorted({index, *context_indices(index, count, offset)})
            decoded = {i: volume.read_slice(vol.slices[i]) for i in needed}
        with clock.stage("preprocess"):
            model_input, placement = prepare_slice(
                decoded[index], spec, manifest.input.size, manifest.input.channels, vol.modality, scaling,
                context_neighbours(index, count, offset, decoded))
        out.append((decoded[index], model_input, placement))
    return out


def _gradcam_map(features: np.ndarray, model: RegisteredModel, class_index: int, placement: Placement,
                clock: _Clock) -> np.ndarray:
    with clock.stage("gradcam"):
        return gradcam.heat_map(features, model.head_weights, class_index, placement)


def _key_slice(vol: volume.Volume, index: int, probabilities: np.ndarray, positive_columns: list[int],
               heat: np.ndarray, values: np.ndarray, manifest: Manifest, scaling: Scaling | None,
               clock: _Clock) -> KeySlice:
    """A key slice with its picture (``values``: the slice decoded again), in the display window."""
    ref = vol.slices[index]
    with clock.stage("decode"):
        image = display_scale(values, manifest.display, manifest.preprocess, scaling)
        body = body_outline(values, vol.modality)
    return KeySlice(ref.sop_instance_uid, ref.frame, index, ref.position, tuple(float(p) for p in probabilities),
                    float(probabilities[positive_columns].sum()), heat, image, body)
