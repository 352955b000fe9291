"""Model registry checks (every refusal) and the protobuf initializer reader."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from onconode.models import Manifest, ModelError, load_manifest, load_registry
from onconode.onnx_graph import InitializerError, read_initializers
from tests.inference.tiny_model import build_onnx, manifest_dict, write_model


def _write(folder: Path, data: dict[str, Any], name: str = "test-ct") -> None:
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))


def _rehash(data: dict[str, Any], onnx_path: Path) -> dict[str, Any]:
    return data | {"sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest()}


def test_registry_loads_the_head_for_gradcam(tmp_path: Path) -> None:
    write_model(tmp_path, k=5)
    model = load_registry(tmp_path)["test-ct"]
    assert model.head_weights is not None and model.head_weights.shape == (3, 5)
    assert model.head_bias is not None and model.head_bias.shape == (3,)


def test_missing_onnx_file_names_the_model(tmp_path: Path) -> None:
    write_model(tmp_path)
    (tmp_path / "test-ct.onnx").unlink()
    with pytest.raises(ModelError, match="model test-ct 0.0.1-test: ONNX file missing"):
        load_registry(tmp_path)


def test_wrong_hash_is_refused(tmp_path: Path) -> None:
    manifest = yaml.safe_load(write_model(tmp_path).read_text())
    _write(tmp_path, manifest | {"sha256": "0" * 64})
    with pytest.raises(ModelError, match="test-ct.*sha256"):
        load_registry(tmp_path)


def test_unloadable_graph_is_refused(tmp_path: Path) -> None:
    onnx_path = tmp_path / "test-ct.onnx"
    onnx_path.write_bytes(b"not a graph")
    data = manifest_dict("test-ct", build_onnx(tmp_path / "x.onnx")) | {"file": "test-ct.onnx"}
    _write(tmp_path, _rehash(data, onnx_path))
    with pytest.raises(ModelError, match="test-ct.*cannot load"):
        load_registry(tmp_path)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("input", {"name": "pixels", "size": [64, 64], "channels": 3}, "input 'pixels'"),
    ("outputs", {"logits": "scores", "features": "features"}, "output 'scores'"),
    ("outputs", {"logits": "logits", "features": "fmap"}, "output 'fmap'"),
    ("gradcam", {"weights": "fc.weight", "bias": "classifier.bias"}, "initializers not found.*fc.weight"),
    ("gradcam", {"weights": "classifier.bias", "bias": None}, "gradcam.weights .* shape"),
    ("gradcam", {"weights": "classifier.weight", "bias": "conv.bias"}, "gradcam.bias .* shape"),
])
def test_manifest_graph_mismatch_is_refused(tmp_path: Path, field: str, value: Any, message: str) -> None:
    manifest = yaml.safe_load(write_model(tmp_path).read_text())
    _write(tmp_path, manifest | {field: value})
    with pytest.raises(ModelError, match=message):
        load_registry(tmp_path)


def test_head_with_the_wrong_number_of_channels_is_refused(tmp_path: Path) -> None:
    write_model(tmp_path, k=6)
    manifest = yaml.safe_load((tmp_path / "test-ct.yaml").read_text())
    onnx_path = tmp_path / "test-ct.onnx"
    model = onnx.load(str(onnx_path))
    # A second 8-channel map named as the Grad-CAM features, while the (3, 6) head reads the first.
    model.graph.node.append(helper.make_node("Conv", ["image", "other.weight"], ["other"],
                                             kernel_shape=[8, 8], strides=[8, 8]))
    model.graph.initializer.append(numpy_helper.from_array(np.ones((8, 3, 8, 8), np.float32), "other.weight"))
    model.graph.output.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, ["N", 8, 8, 8]))
    onnx.save(model, str(onnx_path))
    _write(tmp_path, _rehash(manifest | {"outputs": {"logits": "logits", "features": "other"}}, onnx_path))
    with pytest.raises(ModelError, match="6 columns but output 'other' has 8 channels"):
        load_registry(tmp_path)


def test_same_name_twice_is_refused(tmp_path: Path) -> None:
    write_model(tmp_path)
    (tmp_path / "copy.yaml").write_text((tmp_path / "test-ct.yaml").read_text())
    with pytest.raises(ModelError, match="defined twice"):
        load_registry(tmp_path)


def test_unreadable_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ModelError, match="bad.yaml"):
        load_manifest(tmp_path / "bad.yaml")


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["preprocess"].update(kind="ct_window", window=None), "needs preprocess.window"),
    (lambda m: m["preprocess"].update(kind="mr_percentile", percentiles=None), "needs preprocess.percentiles"),
    (lambda m: m["preprocess"].update(kind="mr_percentile", percentiles={"low": 99, "high": 1}),
     "must be below high"),
    (lambda m: m["labels"].append(dict(m["labels"][0])), "duplicate names"),
    (lambda m: m["decision"].update(positive_labels=["sarcoma"]), "not among the labels"),
    (lambda m: m["preprocess"]["normalize"].update(mean=[0.5]), "need 3 mean and std"),
    (lambda m: m["slices"].update(ranking={"sigmas_mm": [0.0, 2.0]}), r"sigmas_mm: need values in \(0, 50\]"),
    (lambda m: m["slices"].update(ranking={"sigmas_mm": []}), "sigmas_mm"),
    (lambda m: m["slices"].update(ranking={"sigmas_mm": [2.0], "hu": [200, -1000]}), "need low < high"),
    (lambda m: m.update(modality="MR") or m["preprocess"].update(
        kind="mr_percentile", window=None, percentiles={"low": 1, "high": 99}) or m["slices"].update(
        ranking={"sigmas_mm": [2.0]}), "only a CT model has one"),
])
def test_manifest_validators_refuse(tmp_path: Path, change: Any, message: str) -> None:
    data = manifest_dict("test-ct", build_onnx(tmp_path / "test-ct.onnx"))
    change(data)
    with pytest.raises(ValidationError, match=message):
        Manifest.model_validate(data)


def test_reader_matches_onnx_numpy_helper(tmp_path: Path) -> None:
    path = build_onnx(tmp_path / "m.onnx", k=7)
    expected = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    got = read_initializers(path, set(expected))
    for name, array in expected.items():
        np.testing.assert_array_equal(got[name], array)


def test_reader_follows_external_data(tmp_path: Path) -> None:
    path = build_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    expected = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=0)
    got = read_initializers(tmp_path / "ext.onnx", {"classifier.weight", "conv.weight"})
    np.testing.assert_array_equal(got["classifier.weight"], expected["classifier.weight"])
    np.testing.assert_array_equal(got["conv.weight"], expected["conv.weight"])


def test_reader_refuses_a_file_without_graph(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"\x08\x08")  # ir_version only
    with pytest.raises(InitializerError, match="no graph"):
        read_initializers(path, {"w"})


def test_reader_refuses_a_non_float_initializer(tmp_path: Path) -> None:
    path = build_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 2], np.int64), "shape"))
    onnx.save(model, str(path))
    with pytest.raises(InitializerError, match="'shape': data type 7"):
        read_initializers(path, {"shape"})


def test_reader_refuses_truncated_files(tmp_path: Path) -> None:
    path = build_onnx(tmp_path / "m.onnx")
    (tmp_path / "cut.onnx").write_bytes(path.read_bytes()[:200])
    with pytest.raises(InitializerError, match="truncated"):
        read_initializers(tmp_path / "cut.onnx", {"classifier.weight"})


def test_reader_refuses_an_unknown_wire_type(tmp_path: Path) -> None:
    path = tmp_path / "odd.onnx"
    path.write_bytes(b"\x0b")  # field 1, wire type 3 (start group): never used by ONNX
    with pytest.raises(InitializerError, match="wire type 3"):
        read_initializers(path, {"w"})


def test_a_calibration_is_fitted_on_what_the_verdict_rests_on() -> None:
    """A verdict rests on a calibration fitted on series; a model without one was calibrated on slices
    (the node then calibrates each slice), and a manifest that mixes them is refused."""
    from onconode.models import Calibration, Decision

    Decision(positive_labels=("x",), calibration=Calibration(slope=1, intercept=0))
    Decision(positive_labels=("x",), verdict=False, calibration=Calibration(slope=1, intercept=0, fitted_on="slices"))
    Decision(positive_labels=("x",), verdict=False)
    with pytest.raises(ValueError, match="fitted on series goes with verdict: true"):
        Decision(positive_labels=("x",), verdict=False, calibration=Calibration(slope=1, intercept=0))
    with pytest.raises(ValueError, match="fitted on slices goes with verdict: false"):
        Decision(positive_labels=("x",), calibration=Calibration(slope=1, intercept=0, fitted_on="slices"))
