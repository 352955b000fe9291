"""ONNX inference: one onnxruntime session per model, created once, run in batches.

Input: float32 (N, C, h, w) model inputs. Output: logits (N, L), and where asked features (N, K, h',
w'), as the manifest names them. The thread count is explicit because the node shares the CPU with the DICOM
listener and other workers; onnxruntime's default (all cores) would starve them.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import numpy as np
import onnxruntime as ort

from onconode.models import RegisteredModel

log = logging.getLogger(__name__)

# Slices per run. Per slice, batches of 4 to 32 cost the same (about 13 CPU-ms for the chest model
# on 2 threads); a smaller batch starts sooner and leaves a shorter tail after a streamed series'
# last slice: 8 took a median 0.1 s off a 133-slice CT's analysis against 16 (2 cores).
DEFAULT_BATCH = 8


class OnnxRunner:
    """A loaded model. Sessions are expensive (graph optimisation); build one and reuse it."""

    def __init__(self, model: RegisteredModel, intra_op_threads: int = 2, batch: int = DEFAULT_BATCH):
        """Raises ValueError if ``intra_op_threads`` or ``batch`` is below 1."""
        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be at least 1, got {intra_op_threads}")
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # onnxruntime's pool threads spin between runs by default; while a series streams, the
        # caller decodes the next slices on the same cores, and the spinning took their CPU: off,
        # a 133-slice CT's analysis used 0.35 CPU-s less and finished a median 0.15 s sooner.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.model = model
        self.session = ort.InferenceSession(str(model.onnx_path), options, providers=["CPUExecutionProvider"])
        fixed = self.session.get_inputs()[0].shape[0]
        # A graph exported with a fixed batch dimension accepts only that many inputs per run.
        self.fixed_batch = isinstance(fixed, int) and fixed > 0
        self.batch = int(fixed) if self.fixed_batch else batch
        outputs = model.manifest.outputs
        self._names = [outputs.logits, outputs.features]

    def run(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits (N, L) and features (N, K, h', w') for float32 inputs (N, C, h, w)."""
        logits, features = self._batches(inputs, self._names)
        return logits, features

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Logits (N, L) alone: a series' features are a megabyte per slice at stride 16, and only the
        key slices' are ever read (``run`` those again)."""
        (logits,) = self._batches(inputs, self._names[:1])
        return logits

    def _batches(self, inputs: np.ndarray, names: list[str]) -> list[np.ndarray]:
        out: list[list[np.ndarray]] = [[] for _ in names]
        for start in range(0, len(inputs), self.batch):
            chunk = np.ascontiguousarray(inputs[start:start + self.batch], dtype=np.float32)
            count = len(chunk)
            if self.fixed_batch and count < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - count, *chunk.shape[1:]), np.float32)])
            for kept, value in zip(out, self.session.run(names, {self.model.manifest.input.name: chunk})):
                kept.append(value[:count])
        return [np.concatenate(kept) for kept in out]

    def stream(self) -> Streamed:
        """Inputs given one at a time and run batch by batch while the caller prepares the next."""
        return Streamed(self)


class Streamed:
    """A series' inputs run as they are prepared: each full batch goes to one background thread, so
    onnxruntime (which releases the GIL) works while the caller decodes and preprocesses the next
    slices. On two cores this takes about a fifth off a CT's analysis. Use as a context manager: the
    thread is stopped however the caller leaves."""

    def __init__(self, runner: OnnxRunner):
        self._runner = runner
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="onconode-inference")
        self._chunk: list[np.ndarray] = []
        self._pending: list[Future[np.ndarray]] = []

    def add(self, model_input: np.ndarray) -> None:
        """One (C, h, w) input, in the order the results should come back."""
        self._chunk.append(model_input)
        if len(self._chunk) == self._runner.batch:
            self._submit()

    def _submit(self) -> None:
        if self._chunk:
            self._pending.append(self._pool.submit(self._runner.logits, np.stack(self._chunk)))
            self._chunk = []

    def results(self) -> np.ndarray:
        """Logits (N, L) of the inputs, in order; raises what a batch raised. No features: see
        ``OnnxRunner.logits``."""
        self._submit()
        if not self._pending:
            raise ValueError("no input was added")
        return np.concatenate([future.result() for future in self._pending])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)


@dataclass
class RunnerPool:
    """One ``OnnxRunner`` per model name, created on first use; the worker keeps one pool."""

    intra_op_threads: int = 2
    runners: dict[str, OnnxRunner] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self, model: RegisteredModel) -> OnnxRunner:
        name = model.manifest.name
        with self._lock:  # the start's rehearsal and the worker may ask at once: build one session
            if name not in self.runners or self.runners[name].model is not model:
                self.runners[name] = OnnxRunner(model, self.intra_op_threads)
            return self.runners[name]

    def warm(self, model: RegisteredModel) -> None:
        """Build the model's session and run one full batch of zeros: onnxruntime sizes its memory
        arena and picks its kernels on the first run, which would otherwise be the first study's."""
        runner = self.get(model)
        spec = model.manifest.input
        runner.run(np.zeros((runner.batch, spec.channels, *spec.size), np.float32))
