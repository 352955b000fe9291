"""Grad-CAM from ONNX outputs equals Grad-CAM computed from gradients.

The reference does what autograd would do, without torch: the classifier head (GAP → Flatten →
Gemm, with the model's own weights read by ``onnx``, not by the node's reader) is rebuilt as a
separate float64 ONNX graph taking the feature map as input. ∂y_c/∂A_k(i, j) is measured by
central finite differences through onnxruntime: one run with every element of A nudged by ±ε.
The head is linear in A, so central differences carry no truncation error and only float64
rounding (~1e-12) remains. Grad-CAM then follows Selvaraju et al. (2017) literally:
α_k = mean_ij ∂y_c/∂A_k(i, j), map = ReLU(Σ_k α_k A_k), normalised by its maximum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onconode.inference import gradcam
from onconode.inference.preprocess import Placement, scale_intensities, to_model_input
from onconode.inference.runner import OnnxRunner
from onconode.selection import series, volume

EPS = 1e-3


def _head_session(onnx_path: Path, k: int, h: int, w: int) -> tuple[ort.InferenceSession, np.ndarray]:
    model = onnx.load(str(onnx_path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight = inits["classifier.weight"].astype(np.float64)
    bias = inits["classifier.bias"].astype(np.float64)
    graph = helper.make_graph(
        # GlobalAveragePool + Flatten as one ReduceMean: onnxruntime has no float64 GlobalAveragePool.
        [helper.make_node("ReduceMean", ["A"], ["flat"], axes=[2, 3], keepdims=0),
         helper.make_node("Gemm", ["flat", "W", "b"], ["y"], transB=1)],
        "head",
        [helper.make_tensor_value_info("A", TensorProto.DOUBLE, ["N", k, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", weight.shape[0]])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")])
    head = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    head.ir_version = 8
    return ort.InferenceSession(head.SerializeToString(), providers=["CPUExecutionProvider"]), weight


def _gradient(head: ort.InferenceSession, features: np.ndarray, label: int) -> np.ndarray:
    """∂y_label/∂A by central differences, all K·h·w elements in one batched run."""
    n = features.size
    nudges = np.eye(n, dtype=np.float64).reshape(n, *features.shape) * EPS
    batch = np.concatenate([features[None] + nudges, features[None] - nudges])
    (y,) = head.run(None, {"A": batch})
    return ((y[:n, label] - y[n:, label]) / (2 * EPS)).reshape(features.shape)


def _reference_gradcam(features: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    alpha = gradient.mean(axis=(1, 2))
    cam = np.maximum(np.tensordot(alpha, features, axes=(0, 0)), 0.0)
    return cam / cam.max()


@pytest.fixture(scope="module")
def real_slice_features(dicom_dir: Path, registry) -> tuple[np.ndarray, np.ndarray, Placement, tuple[int, int]]:
    model = registry["test-ct"]
    vol = volume.build_volume(series.scan([dicom_dir / "lidc-idri-0001" / "IM-0060.dcm"]).series[0])
    hu = volume.read_slice(vol.slices[0])
    spec = model.manifest.preprocess
    x, placement = to_model_input(scale_intensities(hu, spec), spec, model.manifest.input.size,
                                  model.manifest.input.channels)
    logits, features = OnnxRunner(model).run(x[None])
    return features[0].astype(np.float64), logits[0], placement, hu.shape


def test_onnx_only_map_equals_gradient_gradcam(registry, real_slice_features) -> None:
    features, logits, _, _ = real_slice_features
    model = registry["test-ct"]
    head, weight = _head_session(model.onnx_path, *features.shape)
    (y,) = head.run(None, {"A": features[None]})
    np.testing.assert_allclose(y[0], logits, atol=1e-4)  # the rebuilt head is the model's head
    _, h, w = features.shape
    for label in range(weight.shape[0]):
        gradient = _gradient(head, features, label)
        # The derivation in gradcam.py: the gradient is w_ck / (h·w) at every position.
        np.testing.assert_allclose(gradient, np.broadcast_to((weight[label] / (h * w))[:, None, None],
                                                             gradient.shape), atol=1e-9)
        reference = _reference_gradcam(features, gradient)
        node = gradcam.normalise(gradcam.class_activation(features.astype(np.float32), model.head_weights,
                                                          label))
        assert reference.max() > 0
        np.testing.assert_allclose(node, reference, atol=1e-4)


def test_heat_map_lands_on_the_slice_grid(registry, real_slice_features) -> None:
    features, _, placement, shape = real_slice_features
    heat = gradcam.heat_map(features.astype(np.float32), registry["test-ct"].head_weights, 0, placement)
    assert heat.shape == shape and heat.dtype == np.float32
    assert 0.0 <= float(heat.min()) and float(heat.max()) <= 1.0 and float(heat.max()) > 0.5


def test_no_positive_evidence_gives_a_zero_map() -> None:
    cam = gradcam.class_activation(np.ones((2, 3, 3), np.float32), np.array([[-1.0, -1.0]], np.float32), 0)
    assert not gradcam.normalise(cam).any()


def test_class_activation_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="need"):
        gradcam.class_activation(np.ones((2, 3, 3), np.float32), np.ones((4, 3), np.float32), 0)


def test_class_activation_refuses_a_label_out_of_range() -> None:
    with pytest.raises(ValueError, match="label index 4"):
        gradcam.class_activation(np.ones((2, 3, 3), np.float32), np.ones((4, 2), np.float32), 4)
