"""The models committed in ``models/`` load in the node's registry as they are (onnxruntime only),
say what they find and accept, and the node reproduces the external check their cards report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onconode.folders import files_under
from onconode.inference.pipeline import analyze_study
from onconode.models import load_registry

MODELS = Path(__file__).resolve().parents[2] / "models"
SHIPPED = {"chest-ct-nodule": ("CT", "786838002"), "brain-mr-tumour": ("MR", "126952004")}


def test_registry_accepts_the_shipped_models_and_nothing_else() -> None:
    registry = load_registry(MODELS)
    assert set(registry) == set(SHIPPED)
    for name, model in registry.items():
        manifest = model.manifest
        assert model.onnx_path.stat().st_size <= 20_000_000
        assert (MODELS / str(manifest.card)).is_file()
        modality, finding = SHIPPED[name]
        assert manifest.modality == modality
        assert manifest.finding.code == finding
        # Two outputs: no lesion, lesion; the decision is the lesion's calibrated probability.
        assert [label.name for label in manifest.labels] == ["none", "lesion"]
        assert manifest.decision.positive_labels == ("lesion",)
        assert 0.0 < manifest.decision.threshold < 1.0
        # A study verdict only where the threshold was fit on series with and without the finding.
        basis = json.loads((MODELS / str(manifest.metrics)).read_text())["decision_basis"]
        assert manifest.decision.verdict == (basis == "series"), name


def test_features_have_the_shape_gradcam_weights_expect() -> None:
    import onnx
    import onnxruntime as ort

    for model in load_registry(MODELS).values():
        m = model.manifest
        weights = {i.name: i for i in onnx.load(str(model.onnx_path)).graph.initializer}[m.gradcam.weights]
        session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
        image = np.zeros((2, m.input.channels, *m.input.size), dtype=np.float32)
        logits, features = session.run([m.outputs.logits, m.outputs.features], {m.input.name: image})
        assert logits.shape == (2, len(m.labels))
        assert tuple(weights.dims) == (len(m.labels), features.shape[1])


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_node_reproduces_the_external_check_of_the_card(name: str, data: Path) -> None:
    """Every external study the card lists gets, from the node's own pipeline and the shipped files,
    the outcome, probability and key slices the card states: the card describes what ships."""
    card = json.loads((MODELS / f"{name}.metrics.json").read_text())
    registry = {name: load_registry(MODELS)[name]}
    assert card["external"], "the card reports no external study"
    for case in card["external"]:
        files = list(files_under([data / "dicom" / case["folder"]]))
        result = analyze_study(files, registry, [])
        assert result.outcome.value == case["outcome"] or case["probability"] is None, case["folder"]
        if case["probability"] is None:
            assert result.positive_probability is None, case["folder"]
            continue
        assert result.positive_probability == pytest.approx(case["probability"], abs=1e-4), case["folder"]
        assert result.positive == case["positive"], case["folder"]
        names = {str(p.resolve()): p.stem for p in files}
        assert [names[str(result.slice_paths[k.sop_instance_uid].resolve())] for k in result.key_slices] == \
            case["key_files"], case["folder"]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_node_reproduces_the_check_studies_of_the_card(name: str, tmp_path: Path) -> None:
    """The same for the card's studies from other sources, with the finding or without it
    (``release.check_studies``), where they have been gathered (``python -m training.gather <checks>``)."""
    from training.gather import load_sources, training_root
    from training.release import check_case
    from training.specs import SPECS

    spec = next(s for s in SPECS.values() if s.name == name and s.version == load_registry(MODELS)[name].manifest.version)
    card = json.loads((MODELS / f"{name}.metrics.json").read_text())
    if not spec.checks:
        assert not card.get("checks")
        return
    assert card["checks"], "the spec names check studies and the card reports none"
    root = training_root() / spec.checks
    if not root.is_dir():
        pytest.skip(f"{root} not gathered: python -m training.gather {spec.checks}")
    registry = {name: load_registry(MODELS)[name]}
    entries = {entry["key"]: entry for entry in load_sources(spec.checks)["series"]}
    for case in card["checks"]:
        _, folder = check_case(entries[case["folder"]], root, tmp_path)
        files = list(files_under([folder]))
        result = analyze_study(files, registry, [])
        assert result.positive_probability == pytest.approx(case["probability"], abs=1e-4), case["folder"]
        names = {str(p.resolve()): p.stem for p in files}
        assert [names[str(result.slice_paths[k.sop_instance_uid].resolve())] for k in result.key_slices] == \
            case["key_files"], case["folder"]
