"""Per-slice latency of the shipped ONNX models vs PyTorch eager, batch 1, 2 threads, same run.

Usage: ``python bench/model_latency.py`` (or ``make bench-models``); needs the ``[train]`` extra.
PyTorch runs the checkpoint in ``runs/<name>/model.pt`` that produced ``models/<name>.onnx`` where
training left one, else the same network with untrained weights: latency does not depend on the
weights' values, only on the graph.
Prints one line per model: ONNX and PyTorch medians and their ratio. Target: ONNX ≤ 10 ms/slice.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from training.latency import measure
from training.network import LiteClassifier
from training.release import load_trained
from training.specs import SPECS


def main() -> None:
    for key, spec in SPECS.items():
        onnx_path = ROOT / "models" / f"{spec.name}.onnx"
        run_dir = ROOT / "runs" / spec.name
        if not onnx_path.is_file():
            print(f"{key}: skipped, no {onnx_path.name}")
            continue
        trained = (run_dir / "model.pt").is_file()
        model = load_trained(spec, run_dir) if trained else LiteClassifier(len(spec.labels), spec.size[0],
                                                                             pretrained=False)
        latency = measure(onnx_path, model, spec.size)
        print(f"{spec.name}: onnx {latency.onnx_ms:.2f} ms/slice, torch eager {latency.torch_ms:.2f} ms/slice "
              f"({'trained checkpoint' if trained else 'same network, untrained weights'}), "
              f"ratio {latency.ratio:.1f}x ({latency.threads} threads, median of {latency.repeats})")


if __name__ == "__main__":
    main()
