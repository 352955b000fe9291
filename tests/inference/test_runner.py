"""The onnxruntime runner: batching, fixed-batch graphs, argument checks."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from onconode.inference.runner import OnnxRunner, RunnerPool
from onconode.models import load_registry
from tests.inference.tiny_model import write_model


def test_batches_give_the_same_answer_as_one_run(registry) -> None:
    inputs = np.random.default_rng(1).normal(size=(7, 3, 64, 64)).astype(np.float32)
    logits_1, feats_1 = OnnxRunner(registry["test-ct"], batch=3).run(inputs)
    logits_all, feats_all = OnnxRunner(registry["test-ct"], batch=16).run(inputs)
    assert logits_1.shape == (7, 3) and feats_1.shape == (7, 8, 8, 8)
    np.testing.assert_allclose(logits_1, logits_all, atol=1e-5)
    np.testing.assert_allclose(feats_1, feats_all, atol=1e-5)


def test_the_session_uses_the_stated_threads_and_does_not_spin(registry) -> None:
    options = OnnxRunner(registry["test-ct"], intra_op_threads=1).session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_graph_with_a_fixed_batch_of_one_is_run_slice_by_slice(tmp_path: Path) -> None:
    manifest = write_model(tmp_path)
    path = tmp_path / "test-ct.onnx"
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(path))
    data = yaml.safe_load(manifest.read_text())
    manifest.write_text(yaml.safe_dump(data | {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}))
    runner = OnnxRunner(load_registry(tmp_path)["test-ct"])
    assert runner.batch == 1
    logits, _ = runner.run(np.zeros((3, 3, 64, 64), np.float32))
    assert logits.shape == (3, 3)


def test_pool_builds_one_session_per_model(registry) -> None:
    pool = RunnerPool(intra_op_threads=1)
    assert pool.get(registry["test-ct"]) is pool.get(registry["test-ct"])


@pytest.mark.parametrize(("threads", "batch", "message"), [(0, 4, "intra_op_threads"), (2, 0, "batch")])
def test_runner_refuses_bad_arguments(registry, threads: int, batch: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OnnxRunner(registry["test-ct"], intra_op_threads=threads, batch=batch)


def test_streamed_inputs_come_back_in_order_with_the_answers_of_one_run(registry) -> None:
    inputs = np.random.default_rng(2).normal(size=(7, 3, 64, 64)).astype(np.float32)
    runner = OnnxRunner(registry["test-ct"], batch=3)
    with runner.stream() as stream:
        for model_input in inputs:
            stream.add(model_input)
        logits = stream.results()
    expected_logits, expected_features = runner.run(inputs)
    np.testing.assert_array_equal(logits, expected_logits)
    # Logits alone are the same logits, without a series' worth of features to hold.
    np.testing.assert_array_equal(runner.logits(inputs), expected_logits)
    assert expected_features.shape[0] == len(inputs)


def test_a_stream_raises_what_a_batch_raised_and_stops_its_thread(registry) -> None:
    runner = OnnxRunner(registry["test-ct"], batch=2)
    before = threading.active_count()
    with pytest.raises(Exception, match="image"), runner.stream() as stream:
        for _ in range(2):
            stream.add(np.zeros((3, 32, 32), np.float32))  # the model takes 64 x 64
        stream.results()
    assert threading.active_count() == before
    with runner.stream() as empty, pytest.raises(ValueError, match="no input"):
        empty.results()


def test_warming_builds_the_session_once(registry) -> None:
    pool = RunnerPool(intra_op_threads=1)
    pool.warm(registry["test-ct"])
    runner = pool.runners["test-ct"]
    pool.warm(registry["test-ct"])
    assert pool.runners["test-ct"] is runner
