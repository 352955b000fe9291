"""Grad-CAM from the ONNX outputs alone: no autograd, no PyTorch at the node.

Input: one slice's last feature map A, float32 (K, h', w'), the classifier weight W (L, K) from the
model registry, a label index c, and the slice's ``Placement``. Output: float32 (H, W) in [0, 1] on
the slice's own pixel grid.

Why this is Grad-CAM: our models end in global average pooling and one linear layer, so
y_c = b_c + Σ_k w_ck · (1 / (h'·w')) Σ_ij A_k(i, j). Hence ∂y_c / ∂A_k(i, j) = w_ck / (h'·w') for
every position, and Grad-CAM's channel weight α_k = (1 / (h'·w')) Σ_ij ∂y_c/∂A_k(i, j) =
w_ck / (h'·w'). Grad-CAM = ReLU(Σ_k α_k A_k) = ReLU(Σ_k w_ck A_k) / (h'·w'): the class activation
map (CAM) up to a positive constant, which the normalisation to [0, 1] removes. The bias does not
depend on A and drops out of the gradient. ``tests/inference/test_gradcam.py`` checks this against a
gradient computed numerically through onnxruntime.
"""

from __future__ import annotations

import cv2
import numpy as np

from onconode.inference.preprocess import Placement, to_slice_geometry


def class_activation(features: np.ndarray, weights: np.ndarray, label: int) -> np.ndarray:
    """ReLU(Σ_k w_ck A_k) for features (K, h', w') and weights (L, K); float32 (h', w'), unnormalised.

    Raises
    ------
    ValueError
        If the shapes disagree or ``label`` is out of range.
    """
    if features.ndim != 3 or weights.ndim != 2 or weights.shape[1] != features.shape[0]:
        raise ValueError(f"features {features.shape} and weights {weights.shape}: need (K, h, w) and (L, K)")
    if not 0 <= label < weights.shape[0]:
        raise ValueError(f"label index {label} outside 0..{weights.shape[0] - 1}")
    cam = np.tensordot(weights[label].astype(np.float32), features.astype(np.float32), axes=(0, 0))
    return np.maximum(cam, 0.0).astype(np.float32)


def normalise(cam: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the maximum; an all-zero map (no positive evidence) stays zero."""
    peak = float(cam.max()) if cam.size else 0.0
    return (cam / peak).astype(np.float32) if peak > 0 else np.zeros_like(cam, dtype=np.float32)


def heat_map(features: np.ndarray, weights: np.ndarray, label: int, placement: Placement) -> np.ndarray:
    """The normalised map of ``label``, upsampled to the model input and placed back on the slice.

    The feature grid covers the whole model input (h, w), padding included, so it is first resized
    bilinearly to the input size, then ``to_slice_geometry`` undoes crop, scale and padding.
    """
    cam = normalise(class_activation(features, weights, label))
    height, width = placement.input_shape
    on_input = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(to_slice_geometry(on_input, placement), 0.0, 1.0)
