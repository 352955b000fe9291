"""From a trained checkpoint to the shipped files: ONNX, manifest, card, plots and metrics.

Order matters and is the point of this module: temperature and threshold are chosen on validation
logits first, and only then is the test split scored, once, with those values frozen. Every number
is computed from the exported ONNX model, i.e. the artefact the node runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from onconode.inference.models import Decision, GradCamSpec, InputSpec, Manifest, Outputs, sha256_of
from training.card import render_card
from training.datasets import DedupReport, Record, data_root, split_sizes
from training.dicom_check import SliceResult, classify_series
from training.evaluate import Evaluation, evaluate, positive_score
from training.export import FEATURES, HEAD_BIAS, HEAD_WEIGHT, INPUT, LOGITS, export, onnx_outputs, session
from training.fit import predict_logits
from training.latency import Latency, measure
from training.metrics import ece, fit_temperature, softmax, youden_threshold
from training.network import LiteClassifier
from training.plots import reliability_plot, roc_plot
from training.specs import ModelSpec

log = logging.getLogger(__name__)

VERSION = "1.1.0"


@dataclass(frozen=True)
class Release:
    """Everything the card reports, besides the spec and the manifest."""

    dedup: DedupReport
    sizes: dict[str, dict[str, int]]
    history: list[dict[str, float]]
    best_epoch: int
    temperature: float
    threshold: float
    val_ece_before: float
    val_ece_after: float
    test: Evaluation
    onnx_max_abs_diff: float
    onnx_bytes: int
    latency: Latency
    sanity: dict[str, list[SliceResult]]


def load_trained(spec: ModelSpec, run_dir: Path) -> LiteClassifier:
    model = LiteClassifier(len(spec.labels), spec.size[0], pretrained=False)
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    return model.eval()


def build_manifest(spec: ModelSpec, onnx_path: Path, temperature: float, threshold: float) -> Manifest:
    return Manifest(
        name=spec.name, version=VERSION, modality=spec.modality, file=onnx_path.name,
        sha256=sha256_of(onnx_path),
        input=InputSpec(name=INPUT, size=spec.size, channels=3),
        preprocess=spec.preprocess,
        outputs=Outputs(logits=LOGITS, features=FEATURES),
        gradcam=GradCamSpec(weights=HEAD_WEIGHT, bias=HEAD_BIAS),
        labels=spec.labels,
        decision=Decision(positive_labels=spec.positive_labels, threshold=threshold, temperature=temperature),
        card=f"{spec.name}.md",
        metrics=f"{spec.name}.metrics.json",
    )


def release(spec: ModelSpec, records: list[Record], dedup: DedupReport,
            splits: dict[str, tuple[np.ndarray, np.ndarray]], run_dir: Path, out_dir: Path) -> Manifest:
    """Export, calibrate on validation, score test once, check real DICOM, write all files."""
    model = load_trained(spec, run_dir)
    onnx_path = out_dir / f"{spec.name}.onnx"
    export(model, spec.size, onnx_path)
    sess = session(onnx_path)
    (val_x, val_y), (test_x, test_y) = splits["valid"], splits["test"]
    val_logits, _ = onnx_outputs(sess, val_x)
    positive = [spec.class_names.index(n) for n in spec.positive_labels]

    # Rounded before use so that the manifest holds exactly the values the card's numbers come from.
    temperature = round(fit_temperature(val_logits, val_y), 4)
    val_scores = positive_score(softmax(val_logits, temperature), positive)
    threshold = round(youden_threshold(val_scores, np.isin(val_y, positive)), 4)
    log.info("model=%s temperature=%.3f threshold=%.4f (validation)", spec.name, temperature, threshold)

    test_logits, _ = onnx_outputs(sess, test_x)   # the only time the test split is scored
    result = evaluate(test_logits, test_y, temperature, threshold, positive)
    diff = float(np.abs(predict_logits(model, test_x[:64]) - test_logits[:64]).max())

    manifest = build_manifest(spec, onnx_path, temperature, threshold)
    manifest_path = out_dir / f"{spec.name}.yaml"
    manifest_path.write_text(yaml.safe_dump(manifest.model_dump(mode="json", exclude_none=True),
                                             sort_keys=False))

    test_probs = softmax(test_logits, temperature)
    reliability_plot({"test, T = 1": (softmax(test_logits), test_y),
                      f"test, T = {temperature:.2f}": (test_probs, test_y)},
                     out_dir / f"{spec.name}.reliability.png", f"{spec.name}: reliability (test)")
    is_positive = np.isin(test_y, positive)
    score = positive_score(test_probs, positive)
    curves = {"tumour/cancer vs rest" if len(positive) > 1 else spec.positive_labels[0]: (score, is_positive)}
    curves |= {f"{name} vs rest": (test_probs[:, k], test_y == k) for k, name in enumerate(spec.class_names)}
    roc_plot(curves, out_dir / f"{spec.name}.roc.png", f"{spec.name}: ROC (test)",
             (1 - result.specificity.value, result.sensitivity.value))

    dicom = data_root() / "dicom"
    sanity = {s.folder: classify_series(dicom / s.folder, manifest, sess) for s in spec.sanity}
    history = json.loads((run_dir / "history.json").read_text())
    best_epoch = min(history, key=lambda row: row["val_loss"])["epoch"]
    report = Release(
        dedup=dedup, sizes=split_sizes(records, spec.class_names), history=history, best_epoch=best_epoch,
        temperature=temperature, threshold=threshold,
        val_ece_before=ece(softmax(val_logits), val_y), val_ece_after=ece(softmax(val_logits, temperature), val_y),
        test=result, onnx_max_abs_diff=diff, onnx_bytes=onnx_path.stat().st_size,
        latency=measure(onnx_path, model, spec.size), sanity=sanity)
    (out_dir / f"{spec.name}.md").write_text(render_card(spec, manifest, report))
    (out_dir / f"{spec.name}.metrics.json").write_text(json.dumps(_jsonable(report), indent=1))
    return manifest


def _jsonable(report: Release) -> dict[str, object]:
    data = asdict(report)
    data["test"]["confusion"] = report.test.confusion.tolist()
    data["latency"]["ratio"] = report.latency.ratio
    return data
