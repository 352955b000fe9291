"""Real DICOM series through the node's preprocessing and the exported ONNX model.

Input: a series folder and a manifest. Output: one ``SliceResult`` per slice. This is the check that
the Kaggle-trained model still means something on scanner data, where the Kaggle cues (image size,
marks, screenshot crops) do not exist. It reads pixels the way the node does: pydicom decode,
Rescale Slope/Intercept, the manifest's intensity scaling, then ``to_model_input``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pydicom

from onconode.inference.models import Manifest
from onconode.inference.preprocess import scale_intensities, to_model_input
from training.metrics import softmax


@dataclass(frozen=True)
class SliceResult:
    file: str
    label: str            # top class
    probability: float    # its calibrated probability
    positive: float       # calibrated probability mass on decision.positive_labels


def read_slice(path: Path) -> np.ndarray:
    """float32 (H, W) in modality units (HU for CT) after Rescale Slope/Intercept."""
    ds = pydicom.dcmread(path)
    return pydicom.pixels.apply_rescale(ds.pixel_array, ds).astype(np.float32)


def classify_series(folder: Path, manifest: Manifest, sess: ort.InferenceSession) -> list[SliceResult]:
    """Every ``*.dcm`` in ``folder`` (sorted by name) through the node pipeline."""
    names = [label.name for label in manifest.labels]
    positive = [names.index(n) for n in manifest.decision.positive_labels]
    results = []
    for path in sorted(folder.glob("*.dcm")):
        unit = scale_intensities(read_slice(path), manifest.preprocess)
        image, _ = to_model_input(unit, manifest.preprocess, manifest.input.size, manifest.input.channels)
        logits = sess.run([manifest.outputs.logits], {manifest.input.name: image[None]})[0]
        probs = softmax(logits.astype(np.float64), manifest.decision.temperature)[0]
        top = int(probs.argmax())
        results.append(SliceResult(path.stem, names[top], float(probs[top]), float(probs[positive].sum())))
    return results
