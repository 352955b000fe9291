"""A small, real ONNX classifier with the shape the node expects, built with ``onnx.helper``.

image (N, C, S, S) → Conv(kernel = stride = P) → Relu = ``features`` (N, K, S/P, S/P)
→ GlobalAveragePool → Flatten → Gemm(classifier.weight (L, K), classifier.bias (L,)) = ``logits``.

It stands in for the trained models (which arrive later from the models issue) in tests and in
``bench/analyze.py``; its head is exactly the GAP + linear head the Grad-CAM derivation assumes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

LABELS = ("malignant", "benign", "normal")


def build_onnx(path: Path, size: int = 64, channels: int = 3, k: int = 8, patch: int = 8,
               labels: int = len(LABELS), seed: int = 0, head_names: tuple[str, str] = (
                   "classifier.weight", "classifier.bias")) -> Path:
    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 0.5, (k, channels, patch, patch)).astype(np.float32) / patch
    conv_b = rng.normal(0, 0.1, (k,)).astype(np.float32)
    fc_w = rng.normal(0, 1.0, (labels, k)).astype(np.float32)
    fc_b = rng.normal(0, 0.1, (labels,)).astype(np.float32)
    grid = size // patch
    nodes = [
        helper.make_node("Conv", ["image", "conv.weight", "conv.bias"], ["conv_out"],
                         kernel_shape=[patch, patch], strides=[patch, patch]),
        helper.make_node("Relu", ["conv_out"], ["features"]),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", head_names[0], head_names[1]], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny-classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", labels]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", k, grid, grid])],
        initializer=[numpy_helper.from_array(conv_w, "conv.weight"),
                     numpy_helper.from_array(conv_b, "conv.bias"),
                     numpy_helper.from_array(fc_w, head_names[0]),
                     numpy_helper.from_array(fc_b, head_names[1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def manifest_dict(name: str, onnx_path: Path, modality: str = "CT", size: int = 64,
                  channels: int = 3) -> dict[str, Any]:
    if modality == "CT":
        pre: dict[str, Any] = {"kind": "ct_window", "window": {"center": -600, "width": 1500}}
    else:
        pre = {"kind": "mr_percentile", "percentiles": {"low": 1, "high": 99}}
    pre |= {"resize": {"keep_aspect": True, "pad_value": 0.0},
            "normalize": {"mean": [0.5] * channels, "std": [0.25] * channels}}
    return {
        "name": name, "version": "0.0.1-test", "modality": modality, "file": onnx_path.name,
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "input": {"name": "image", "size": [size, size], "channels": channels, "layout": "NCHW"},
        "preprocess": pre,
        "outputs": {"logits": "logits", "features": "features"},
        "gradcam": {"weights": "classifier.weight", "bias": "classifier.bias"},
        "labels": [{"name": n, "cancer": n == "malignant",
                    "snomed": {"code": str(100000 + i), "display": n}} for i, n in enumerate(LABELS)],
        "decision": {"positive_labels": ["malignant"], "threshold": 0.5, "temperature": 1.0},
        "accepts": ({"regions": ["chest"]} if modality == "CT" else
                    {"regions": ["brain"], "sequences": ["t1post", "flair"]}),
        "slices": {"target": "lung" if modality == "CT" else "brain", "max_analysed": 8, "key": 3},
        "finding": {"code": "786838002" if modality == "CT" else "126952004", "scheme": "SCT",
                    "meaning": "Pulmonary nodule" if modality == "CT" else "Neoplasm of brain",
                    "display": "test finding"},
        "display": ({"window": {"center": -600, "width": 1500}} if modality == "CT"
                    else {"percentiles": {"low": 0.5, "high": 99.5}}),
    }


def write_model(folder: Path, name: str = "test-ct", modality: str = "CT", size: int = 64,
                **build: Any) -> Path:
    """``folder/<name>.onnx`` + ``folder/<name>.yaml``; returns the manifest path."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = build_onnx(folder / f"{name}.onnx", size=size, **build)
    manifest = folder / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump(manifest_dict(name, onnx_path, modality, size)))
    return manifest
