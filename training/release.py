"""From cross-validated evidence to the shipped files: ONNX, manifest, card, plots, pictures, metrics.

Order matters and is the point of this module: the cross-validation's out-of-fold predictions give
every number of the card and, pooled, the calibration and the threshold; the shipped model is then
trained on every patient for the median best epoch of the folds, exported, and run by the node's
own ``analyze_study`` on the external studies of ``$ONCONODE_DATA/dicom``, which nothing was
trained, tuned or thresholded on. Every number on those studies comes from the exported ONNX model.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import torch
import yaml
from pydicom.uid import generate_uid

from onconode.conclusion import conclude
from onconode.folders import files_under
from onconode.inference.pipeline import AnalysisResult, Outcome, analyze_study
from onconode.models import (
    Calibration,
    Decision,
    GradCamSpec,
    InputSpec,
    Label,
    Manifest,
    Outputs,
    SnomedCode,
    load_registry,
    sha256_of,
)
from onconode.reporting import overlay
from onconode.selection.series import identity_problem, scan
from training import crossval, nodule_filter
from training.card import render_card
from training.evaluate import (
    SeriesRecord,
    SliceRecord,
    by_series,
    calibrated,
    key_probabilities,
    lesion_free_part,
    operating_fit,
    ranked,
    series_records,
    study_value,
    summary,
)
from training.examples import SeriesExamples, node_reads_only
from training.export import FEATURES, HEAD_BIAS, HEAD_WEIGHT, INPUT, LOGITS, export, onnx_outputs, session
from training.fit import fit, load, logits_of, normalise
from training.gather import load_sources, training_root
from training.latency import Latency, measure
from training.mask_series import lesion_case
from training.plots import reliability_plot, roc_plot
from training.specs import ExternalCase, ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExternalResult:
    folder: str
    description: str
    outcome: str
    positive: bool | None
    probability: float | None
    key_files: tuple[str, ...]          # file stems of the key slices, most suspicious first
    key_on_lesion: tuple[bool, ...]
    peak_in_box: tuple[bool | None, ...]  # per key slice with a lesion box: the heat peak inside it (+1 cm)
    picture: str | None                 # the first key slice's overlay, next to the card
    lesion: bool = False                # the study shows the finding (its case names lesion slices)


@dataclass(frozen=True)
class Release:
    spec_name: str
    data: dict[str, Any]                # patients, series, slices per source and overall
    cv: dict[str, Any]                  # evaluate.summary of the out-of-fold predictions
    epochs: list[int]                   # best epoch of each fold
    final_epochs: int
    calibration: tuple[float, float]
    threshold: float
    external: list[ExternalResult]
    latency: Latency
    onnx_bytes: int
    onnx_max_abs_diff: float
    failures: list[dict[str, Any]]
    # Where calibration and threshold come from: out-of-fold series, or slices when every series
    # has the same label (no series-level operating point can be measured then).
    decision_basis: str = "series"
    checks: list[ExternalResult] = field(default_factory=list)  # ``check_studies``: studies from other sources


def data_facts(series: list[SeriesExamples]) -> dict[str, Any]:
    by_source: dict[str, dict[str, Any]] = {}
    for s in series:
        row = by_source.setdefault(s.meta.collection or "unknown", {"patients": set(), "series": 0,
                                                                      "lesion_series": 0, "slices": 0,
                                                                      "lesion_slices": 0})
        row["patients"].add(s.meta.patient)
        row["series"] += 1
        row["lesion_series"] += int(s.meta.lesion)
        row["slices"] += int((s.labels >= 0).sum())
        row["lesion_slices"] += int((s.labels == 1).sum())
    out = {k: {**v, "patients": len(v["patients"])} for k, v in sorted(by_source.items())}
    return {"by_source": out, "patients": len({s.meta.patient for s in series}), "series": len(series),
            "lesion_series": sum(s.meta.lesion for s in series),
            "sequences": sorted({s.meta.sequence for s in series})}


def build_manifest(spec: ModelSpec, onnx_path: Path, calibration: tuple[float, float], threshold: float,
                   basis: str = "series") -> Manifest:
    """The shipped manifest; a study verdict only where ``basis`` says the threshold was fit on series
    with and without the finding (``evaluate.operating_fit``)."""
    finding = spec.finding
    return Manifest(
        name=spec.name, version=spec.version, modality=spec.modality, file=onnx_path.name,  # type: ignore[arg-type]
        sha256=sha256_of(onnx_path), input=InputSpec(name=INPUT, size=spec.size, channels=3),
        preprocess=spec.preprocess, outputs=Outputs(logits=LOGITS, features=FEATURES),
        gradcam=GradCamSpec(weights=HEAD_WEIGHT, bias=HEAD_BIAS),
        labels=(Label(name=spec.labels[0], cancer=False, snomed=SnomedCode(code="260413007", display="None")),
                Label(name=spec.labels[1], cancer=True, snomed=SnomedCode(code=finding.code, display=finding.meaning))),
        decision=Decision(positive_labels=(spec.labels[1],), threshold=threshold,
                          calibration=Calibration(slope=calibration[0], intercept=calibration[1],
                                                  fitted_on="series" if basis == "series" else "slices"),
                          verdict=basis == "series"),
        accepts=spec.accepts, slices=spec.slices, finding=spec.finding, display=spec.display,
        card=f"{spec.name}.md", metrics=f"{spec.name}.metrics.json")


def external_check(spec: ModelSpec, models: Path, dicom: Path, out_dir: Path) -> list[ExternalResult]:
    """The node's own analysis of each external study, with the released model and no routing rules."""
    return _analysed([(case, dicom / case.folder) for case in spec.external], models, out_dir, spec, "external")


def check_studies(spec: ModelSpec, models: Path, out_dir: Path) -> list[ExternalResult]:
    """The same analysis of the studies from other sources that ``spec.checks`` names
    (``training/sources/<checks>.yaml``, gathered under ``training_root()/<checks>/<key>/``).

    Why beside the external check: where every training series shows the finding, the studies without
    it are the only ones on which anyone can see what the model says of such a study; studies with it
    from a scanner no training series comes from say whether the key slices still find the lesion."""
    if not spec.checks:
        return []
    root = training_root() / spec.checks
    with tempfile.TemporaryDirectory() as folder:
        cases = [check_case(entry, root, Path(folder)) for entry in load_sources(spec.checks)["series"]]
        return _analysed(cases, models, out_dir, spec, "check")


def check_case(entry: dict[str, Any], root: Path, scratch: Path) -> tuple[ExternalCase, Path]:
    """One check study as gathered under ``root``: its case (the lesion slices and boxes of its mask
    series, where it has one) and the folder the node is given. That folder leaves the mask out (it is
    the answer, not what a PACS sends) and renames broken UIDs (``named_copy``); copies go to ``scratch``."""
    study, label = root / entry["key"], entry.get("label_folder")
    case = ExternalCase(entry["key"], entry["description"], ())
    if label and (study / label).is_dir():
        case = lesion_case(entry["key"], entry["description"], study, label, entry["label_of"])
        sent = scratch / "sent" / entry["key"]
        shutil.copytree(study, sent, ignore=lambda at, names: [label] if Path(at) == study else [])
        study = sent
    return case, named_copy(study, scratch / entry["key"])


def named_copy(study: Path, into: Path) -> Path:
    """``study`` itself, or, where its instances cannot be named (``series.identity_problem``: UIDs a
    de-identification emptied or wrote as UUIDs), a copy in ``into`` whose UIDs alone are replaced by
    valid ones derived from the folder's name and each file's: the pixels and every other attribute
    stay as the source has them. The node refuses such instances on receipt, so a PACS must have
    renamed them before sending; the gathered bytes stay as committed."""
    files = list(files_under([study]))
    if not files or not any(identity_problem(s) for s in scan(files).series):
        return study
    into.mkdir(parents=True)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = generate_uid(entropy_srcs=[study.name, "study"])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study.name, "series"])
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[study.name, path.name])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(into / path.name, enforce_file_format=True)
    return into


def _analysed(cases: list[tuple[ExternalCase, Path]], models: Path, out_dir: Path, spec: ModelSpec,
              kind: str) -> list[ExternalResult]:
    registry = load_registry(models)
    results = []
    for case, folder in cases:
        files = list(files_under([folder]))
        if not files:
            log.warning("%s study %s not found under %s", kind, case.folder, folder.parent)
            continue
        result = analyze_study(files, registry, [])
        results.append(_external(case, files, result, registry, out_dir, spec, kind))
    return results


def _external(case: ExternalCase, files: list[Path], result: AnalysisResult, registry: Any, out_dir: Path,
              spec: ModelSpec, kind: str) -> ExternalResult:
    if result.outcome is not Outcome.ANALYSED:
        return ExternalResult(case.folder, case.description, result.reason, None, None, (), (), (), None,
                              bool(case.lesion_slices))
    stems = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f.stem for f in files}
    key_files = tuple(stems.get(k.sop_instance_uid, "?") for k in result.key_slices)
    boxes = dict(case.boxes)
    peaks: list[bool | None] = []
    for key, stem in zip(result.key_slices, key_files):
        box = boxes.get(stem)
        if box is None:
            peaks.append(None)
            continue
        y, x = np.unravel_index(int(np.argmax(key.heat_map)), key.heat_map.shape)
        # The key slice's own file: series of one study may share file names (T1, T2 and FLAIR folders).
        spacing = float(pydicom.dcmread(result.slice_paths[key.sop_instance_uid], stop_before_pixels=True)
                        .PixelSpacing[0])
        margin = 10.0 / spacing
        peaks.append(bool(box[0] - margin <= x <= box[2] + margin and box[1] - margin <= y <= box[3] + margin))
    picture = None
    if result.key_slices:
        conclusion = conclude(result, registry[result.model].manifest)
        from onconode.reporting.sc import caption_lines

        key = result.key_slices[0]
        score = next(s for s in conclusion.slices if s.index == key.index)
        rgb = overlay.render(key.image, key.heat_map, caption_lines(conclusion, score), key.body)
        name = f"{spec.name}.{kind}-{case.folder}.png"
        cv2.imwrite(str(out_dir / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        picture = name
    return ExternalResult(case.folder, case.description, result.outcome.value, result.positive,
                          result.positive_probability, key_files,
                          tuple(stem in case.lesion_slices for stem in key_files), tuple(peaks), picture,
                          bool(case.lesion_slices))


def _first(pair: tuple[float, SeriesRecord]) -> float:
    """Sort key of (probability, record) pairs: records themselves have no order."""
    return pair[0]


def failure_pictures(spec: ModelSpec, series: list[SeriesExamples], slices: list[SliceRecord],
                      records: list[SeriesRecord], threshold: float, calibration: tuple[float, float],
                      basis: str, out_dir: Path) -> list[dict[str, Any]]:
    """The worst out-of-fold errors, as pictures: lesion-free series scored highest, lesion series
    scored lowest, each shown on its most suspicious slice (or its lesion slice the model scored lowest),
    and the lesion series still flagged on their lesion-free slices alone
    (``evaluate.lesion_free_remainders``), shown on the lesion-free slice that drives the score."""
    by_key = {s.meta.key: s for s in series}
    grouped = by_series(slices)
    key = spec.slices.key
    probs = [study_value(key_probabilities(grouped[s.series], key), *calibration, basis, key) for s in records]
    false_pos = sorted(((p, r) for p, r in zip(probs, records) if not r.lesion and p >= threshold), key=_first,
                       reverse=True)[:3]
    false_neg = sorted(((p, r) for p, r in zip(probs, records) if r.lesion and p < threshold), key=_first)[:3]
    flagged_rest = []
    for record in records:
        free = lesion_free_part(grouped[record.series], spec.slices.key) if record.lesion else None
        if free is not None:
            score = study_value(key_probabilities(free, key), *calibration, basis, key)
            if score >= threshold:
                flagged_rest.append((float(score), record))
    flagged_rest = sorted(flagged_rest, key=_first, reverse=True)[:3]
    out: list[dict[str, Any]] = []
    for kind, chosen in (("false positive", false_pos), ("false negative", false_neg),
                         ("lesion-free remainder flagged", flagged_rest)):
        for probability, record in chosen:
            examples = by_key[record.series]
            rows = grouped[record.series]
            if kind == "false negative":
                lesion_rows = [r for r in rows if r.label == 1] or rows
                row = min(lesion_rows, key=lambda r: r.probability)
            elif kind == "false positive":
                row = ranked(rows)[0]
            else:
                row = ranked([r for r in rows if r.label == 0])[0]
            i = int(np.flatnonzero(examples.index == row.index)[0])
            image = examples.planes[i, 0].astype(np.float32) / 255.0
            picture = np.repeat((image * 255).astype(np.uint8)[:, :, None], 3, axis=2)
            contours, _ = cv2.findContours(examples.masks[i].astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(picture, contours, -1, (0, 255, 0), 1)
            name = f"{spec.name}.failure-{len(out) + 1}.png"
            cv2.imwrite(str(out_dir / name), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            out.append({"kind": kind, "series": record.series, "sequence": record.sequence,
                        "study_probability": float(probability), "slice": row.index + 1,
                        # As the node shows it: calibrated too when the calibration is a slice's.
                        "slice_probability": study_value([row.probability], *calibration, basis, 1)
                        if basis == "slices" else row.probability, "picture": name})
    return out


def run_folder(runs: Path, spec: ModelSpec) -> Path:
    """Where a training run keeps its out-of-fold predictions and weights, one folder per version."""
    return runs / f"{spec.name}-{spec.version}"


def operating_point(slices: list[SliceRecord], records: list[SeriesRecord]) -> tuple[tuple[float, float], float, str]:
    """The shipped ((slope, intercept), threshold, basis): ``operating_fit`` on every out-of-fold
    series (or slice), rounded as the manifest keeps them; ``training.recheck`` refits it the same way."""
    labelled = [r for r in slices if r.label >= 0]
    slope, intercept, threshold, basis = operating_fit(
        np.array([r.score for r in records]), np.array([r.lesion for r in records]),
        np.array([r.probability for r in labelled]), np.array([r.label == 1 for r in labelled]))
    return (round(slope, 4), round(intercept, 4)), round(threshold, 4), basis


def write_manifest(manifest: Manifest, out_dir: Path) -> None:
    (out_dir / f"{manifest.name}.yaml").write_text(yaml.safe_dump(manifest.model_dump(mode="json", exclude_none=True),
                                                                  sort_keys=False))


def fit_plots(spec: ModelSpec, slices: list[SliceRecord], records: list[SeriesRecord],
              calibration: tuple[float, float], out_dir: Path) -> None:
    """The card's ROC and reliability pictures from the out-of-fold predictions."""
    scores = np.array([r.score for r in records])
    positive = np.array([r.lesion for r in records])
    labelled = [r for r in slices if r.label >= 0]
    probs = calibrated(scores, *calibration)
    roc_plot({"series (out of fold)": (scores, positive),
              "slices (out of fold)": (np.array([r.probability for r in labelled]),
                                       np.array([r.label == 1 for r in labelled])),
              "metadata-only baseline, series": (np.array([r.baseline for r in records]), positive)},
             out_dir / f"{spec.name}.roc.png", f"{spec.name}: ROC, patient-grouped cross-validation")
    reliability_plot({"series, calibrated (pooled fit)": (np.stack([1 - probs, probs], 1), positive.astype(int))},
                     out_dir / f"{spec.name}.reliability.png", f"{spec.name}: reliability, out of fold")


def release(spec: ModelSpec, series: list[SeriesExamples], out_dir: Path, dicom: Path,
            epochs: int | None = None, max_steps: int | None = None, pretrained: bool = True,
            runs: Path = Path("runs")) -> Manifest:
    """Cross-validate, train the shipped model, export, check externally, write every file; the
    out-of-fold predictions and the weights go to ``runs/<name>-<version>/`` (a candidate of the next
    version never overwrites the shipped model's)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    slices, fold_epochs = crossval.run(spec, series, epochs=epochs, max_steps=max_steps, pretrained=pretrained)
    slices = nodule_filter.attach(spec, slices)
    slices = node_reads_only(spec, slices)
    lesion_of = {s.meta.key: s.meta.lesion for s in series}
    records = series_records(slices, lesion_of, spec.slices.key)
    cv = summary(slices, records, spec.slices.key)
    calibration, threshold, decision_basis = operating_point(slices, records)
    if decision_basis != "series":
        log.warning("model=%s: series of one class only; calibration and threshold from the %s",
                    spec.name, decision_basis)
    final_epochs = epochs or max(1, int(statistics.median(fold_epochs)))
    final = fit(spec, series, [], spec.seed, epochs=final_epochs, max_steps=max_steps, pretrained=pretrained)
    model = load(spec, final.state)
    onnx_path = out_dir / f"{spec.name}.onnx"
    export(model, spec.size, onnx_path)
    sample = np.concatenate([s.planes[:16] for s in series[:4]])
    onnx_logits, _ = onnx_outputs(session(onnx_path), normalise(sample, spec).contiguous().numpy())
    diff = float(np.abs(logits_of(model, sample, spec) - onnx_logits).max())
    manifest = build_manifest(spec, onnx_path, calibration, threshold, decision_basis)
    write_manifest(manifest, out_dir)
    with tempfile.TemporaryDirectory() as folder:
        staged = Path(folder)
        for suffix in (".onnx", ".yaml"):
            shutil.copy(out_dir / f"{spec.name}{suffix}", staged)
        external = external_check(spec, staged, dicom, out_dir)
        checks = check_studies(spec, staged, out_dir)
    fit_plots(spec, slices, records, calibration, out_dir)
    report = Release(
        spec_name=spec.name, data=data_facts(series), cv=cv, epochs=fold_epochs, final_epochs=final_epochs,
        calibration=calibration, threshold=threshold, decision_basis=decision_basis, external=external, checks=checks,
        latency=measure(onnx_path, model, spec.size), onnx_bytes=onnx_path.stat().st_size, onnx_max_abs_diff=diff,
        failures=failure_pictures(spec, series, slices, records, threshold, calibration, decision_basis, out_dir))
    (out_dir / f"{spec.name}.md").write_text(render_card(spec, manifest, report))
    (out_dir / f"{spec.name}.metrics.json").write_text(json.dumps(asdict(report), indent=1, default=str))
    run_dir = run_folder(runs, spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "oof-series.json").write_text(json.dumps([asdict(r) for r in records], indent=0))
    (run_dir / "oof-slices.json").write_text(json.dumps([asdict(r) for r in slices], indent=0))
    torch.save(final.state, run_dir / "model.pt")
    return manifest
