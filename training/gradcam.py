"""Reference Grad-CAM with autograd on the PyTorch model, to check the node's CAM shortcut.

The node computes heat maps from the ONNX ``features`` output and the ``classifier`` weights
(CAM), with no gradients. That equals Grad-CAM only because the head is GAP + one linear layer;
this module computes the textbook Grad-CAM (gradient of the class logit with respect to the last
feature map, averaged per channel) so tests can confirm the equality on the exported model.
"""

from __future__ import annotations

import numpy as np
import torch

from training.network import LiteClassifier


def reference_gradcam(model: LiteClassifier, image: torch.Tensor, class_index: int) -> np.ndarray:
    """Grad-CAM (h, w) for one image (1, 3, H, W): ReLU(sum_k mean(dlogit/dA_k) * A_k)."""
    model.eval()
    gradients: list[torch.Tensor] = []
    logits, features = model(image)
    features.register_hook(gradients.append)  # autograd hook: d logit / d features
    logits[0, class_index].backward()
    channel_weights = gradients[0][0].mean(dim=(1, 2))
    cam = torch.relu((channel_weights[:, None, None] * features[0].detach()).sum(0))
    return cam.numpy()


def cam_from_features(features: np.ndarray, weights: np.ndarray, class_index: int) -> np.ndarray:
    """CAM (h, w) as the node computes it: ReLU(sum_k w[c, k] * A_k) for features (K, h, w)."""
    return np.maximum(np.tensordot(weights[class_index], features, axes=1), 0.0)
