"""Single-slice latency of the ONNX model and of PyTorch eager, measured in the same process.

Batch 1 on 2 threads is the node's case: one slice at a time on a small server. The ratio is
only meaningful when both are timed in the same run on the same machine state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.export import INPUT, session
from training.network import LiteClassifier


@dataclass(frozen=True)
class Latency:
    onnx_ms: float     # median per slice
    torch_ms: float
    threads: int
    repeats: int

    @property
    def ratio(self) -> float:
        """How many times faster ONNX Runtime is than PyTorch eager."""
        return self.torch_ms / self.onnx_ms


def _median_ms(run: object, repeats: int) -> float:
    assert callable(run)
    for _ in range(5):  # warm-up: allocator, thread pool, lazy init
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def measure(onnx_path: Path, model: LiteClassifier, size: tuple[int, int], threads: int = 2,
            repeats: int = 50) -> Latency:
    torch.set_num_threads(threads)
    image = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    sess = session(onnx_path, threads)
    model = model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs lack memory_format
    tensor = torch.from_numpy(image).contiguous(memory_format=torch.channels_last)

    def run_torch() -> None:
        with torch.inference_mode():
            model(tensor)

    onnx_ms = _median_ms(lambda: sess.run(None, {INPUT: image}), repeats)
    torch_ms = _median_ms(run_torch, repeats)
    return Latency(onnx_ms=onnx_ms, torch_ms=torch_ms, threads=threads, repeats=repeats)
