"""PyTorch classifier to ONNX with ``logits`` and ``features`` outputs and named head initializers.

The legacy TorchScript exporter (``dynamo=False``) is used because the dynamo exporter needs
onnxscript, which is not installed, and would split the weights into a side file. onnx 1.23 can
stamp IR versions that older onnxruntime builds refuse, so the IR version is pinned to one every
supported runtime reads.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from training.network import LiteClassifier

log = logging.getLogger(__name__)

INPUT, LOGITS, FEATURES = "image", "logits", "features"
HEAD_WEIGHT, HEAD_BIAS = "classifier.weight", "classifier.bias"
OPSET = 17
IR_VERSION = 8  # opset 17 needs IR >= 8; onnxruntime >= 1.14 reads it


class OnnxExportError(RuntimeError):
    """The exported graph does not have the names or numbers the manifest promises."""


def export(model: LiteClassifier, size: tuple[int, int], path: Path) -> None:
    """Write ``path`` with a dynamic batch axis and check the head initializers are present.

    Raises
    ------
    OnnxExportError
        If ``classifier.weight``/``classifier.bias`` are not graph initializers.
    """
    model = model.eval().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # stubs lack memory_format
    dummy = torch.zeros(1, 3, *size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Known and harmless with the legacy exporter: its deprecation notice, and TF-"SAME" padding
        # slices that cannot be constant-folded.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[LOGITS, FEATURES],
                          dynamic_axes={INPUT: {0: "batch"}, LOGITS: {0: "batch"}, FEATURES: {0: "batch"}},
                          do_constant_folding=True)
    graph = onnx.load(str(path))
    graph.ir_version = IR_VERSION
    names = {init.name for init in graph.graph.initializer}
    missing = {HEAD_WEIGHT, HEAD_BIAS} - names
    if missing:
        raise OnnxExportError(f"{path}: head initializers {sorted(missing)} missing from the graph")
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


def session(path: Path, threads: int = 2) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_outputs(sess: ort.InferenceSession, images: np.ndarray, batch_size: int = 64
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(logits float64 (N, K), pooled features float32 (N, 1280)) for float (N, 3, h, w) images."""
    logits, pooled = [], []
    for start in range(0, len(images), batch_size):
        out_logits, out_features = sess.run([LOGITS, FEATURES],
                                            {INPUT: images[start:start + batch_size].astype(np.float32)})
        logits.append(out_logits.astype(np.float64))
        pooled.append(out_features.mean(axis=(2, 3)))
    return np.concatenate(logits), np.concatenate(pooled)


def head_initializers(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(weights (K, 1280), bias (K,)) read from the graph by their manifest names."""
    inits = {init.name: onnx.numpy_helper.to_array(init) for init in onnx.load(str(path)).graph.initializer}
    return inits[HEAD_WEIGHT], inits[HEAD_BIAS]
