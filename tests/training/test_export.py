"""A few training steps at low resolution, then ONNX export checked against PyTorch.

Small on purpose (64 px, 3 steps, 2 threads): CI proves the pipeline runs end to end and that the
exported graph is what the manifest promises; full training is ``make train-chest|train-brain``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.specs import CHEST_CT

SIZE = (64, 64)


@pytest.fixture(scope="module")
def trained(torch_available: None, data_root: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[object, Path, np.ndarray]:
    import torch

    from training.datasets import load_splits, prepare
    from training.export import export
    from training.fit import fit
    from training.network import LiteClassifier

    torch.set_num_threads(2)
    records, _ = load_splits(CHEST_CT, data_root)
    train = [r for r in records if r.split == "train"][::8]
    valid = [r for r in records if r.split == "valid"][::4]
    train_x, val_x = prepare(train, CHEST_CT, SIZE), prepare(valid, CHEST_CT, SIZE)
    out = tmp_path_factory.mktemp("run")
    result = fit(CHEST_CT, train_x, np.array([r.label for r in train]), val_x, np.array([r.label for r in valid]),
                 out, epochs=1, max_steps=3)
    assert len(result.history) == 1 and (out / "model.pt").is_file()
    model = LiteClassifier(len(CHEST_CT.labels), SIZE[0], pretrained=False)
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    model.eval()
    onnx_path = out / "model.onnx"
    export(model, SIZE, onnx_path)
    return model, onnx_path, val_x[:4].astype(np.float32)


def test_onnx_logits_and_features_match_pytorch(trained: tuple[object, Path, np.ndarray]) -> None:
    import torch

    from training.export import session

    model, onnx_path, images = trained
    logits, features = session(onnx_path).run(["logits", "features"], {"image": images})
    with torch.inference_mode():
        ref_logits, ref_features = model(torch.from_numpy(images))  # type: ignore[operator]
    assert features.shape == (4, 1280, SIZE[0] // 32, SIZE[1] // 32)
    assert np.abs(logits - ref_logits.numpy()).max() < 1e-4
    assert np.abs(features - ref_features.numpy()).max() < 1e-4


def test_batch_axis_is_dynamic_and_ir_version_is_pinned(trained: tuple[object, Path, np.ndarray]) -> None:
    import onnx

    from training.export import IR_VERSION, session

    _, onnx_path, images = trained
    assert onnx.load(str(onnx_path)).ir_version == IR_VERSION
    sess = session(onnx_path)
    assert sess.run(["logits"], {"image": images[:1]})[0].shape == (1, 4)
    assert sess.run(["logits"], {"image": images})[0].shape == (4, 4)


def test_cam_from_onnx_features_equals_autograd_gradcam(trained: tuple[object, Path, np.ndarray]) -> None:
    import torch

    from training.export import head_initializers, session
    from training.gradcam import cam_from_features, reference_gradcam

    model, onnx_path, images = trained
    weights, bias = head_initializers(onnx_path)
    assert np.allclose(weights, model.classifier.weight.detach().numpy())  # type: ignore[attr-defined]
    assert np.allclose(bias, model.classifier.bias.detach().numpy())  # type: ignore[attr-defined]
    features = session(onnx_path).run(["features"], {"image": images[:1]})[0][0]
    for class_index in range(4):
        cam = cam_from_features(features, weights, class_index)
        reference = reference_gradcam(model, torch.from_numpy(images[:1]), class_index)  # type: ignore[arg-type]
        # Grad-CAM's channel weights are w[c, k] / (h * w) for a GAP + linear head: same map up to scale.
        scale = features.shape[1] * features.shape[2]
        assert np.allclose(cam, reference * scale, atol=1e-4 * max(1.0, float(cam.max())))
