"""The models committed in ``models/`` load in the node's registry as they are (onnxruntime only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onconode.models import load_registry

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_registry_accepts_both_shipped_models() -> None:
    registry = load_registry(MODELS)
    assert {"chest-ct-cancer", "brain-mri-tumour"} <= set(registry)
    for model in registry.values():
        assert model.onnx_path.stat().st_size <= 20_000_000
        assert (MODELS / str(model.manifest.card)).is_file()


def test_chest_decision_is_cancer_vs_normal() -> None:
    manifest = load_registry(MODELS)["chest-ct-cancer"].manifest
    cancer = {label.name for label in manifest.labels if label.cancer}
    assert set(manifest.decision.positive_labels) == cancer == {
        "adenocarcinoma", "large_cell_carcinoma", "squamous_cell_carcinoma"}


def test_features_have_the_shape_gradcam_weights_expect() -> None:
    import onnx
    import onnxruntime as ort

    for model in load_registry(MODELS).values():
        m = model.manifest
        weights = {i.name: i for i in onnx.load(str(model.onnx_path)).graph.initializer}[m.gradcam.weights]
        session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
        image = np.zeros((2, m.input.channels, *m.input.size), dtype=np.float32)
        logits, features = session.run([m.outputs.logits, m.outputs.features], {m.input.name: image})
        assert logits.shape == (2, len(m.labels))
        assert tuple(weights.dims) == (len(m.labels), features.shape[1])
