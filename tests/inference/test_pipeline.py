"""pipeline.analyze_study end to end on real series, as the worker will call it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pydicom
import pytest
import yaml

from onconode.conclusion import conclude
from onconode.folders import files_under
from onconode.inference import blobs, pipeline
from onconode.inference.preprocess import context_indices, context_offset, prepare_slice
from onconode.inference.slices import softmax
from onconode.models import load_registry
from onconode.selection import series, volume
from tests.inference.tiny_model import write_model


def test_result_of_a_real_ct_series(dicom_dir: Path, registry, rules) -> None:
    files = sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[::3]
    result = pipeline.analyze_study(files, registry, rules)
    assert result.outcome is pipeline.Outcome.ANALYSED
    assert result.study_uid == str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    assert result.model == "test-ct" and result.rule == "ct" and result.labels == ("malignant", "benign", "normal")
    assert abs(sum(result.probabilities) - 1) < 1e-9
    assert 0 < len(result.slices_analysed) <= 8 and result.slices_total == len(files)
    assert result.positive == (result.positive_probability >= 0.5)  # type: ignore[operator]
    uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    assert len(result.key_slices) == 3
    for key in result.key_slices:
        assert key.sop_instance_uid in uids
        assert key.heat_map.shape == (512, 512) == key.image.shape
        assert key.index in result.slices_analysed
    assert set(result.timings_ms) == {"scan", "select", "decode", "preprocess", "inference", "gradcam"}
    json.dumps(result.summary())  # JSON-ready


def test_rule_whose_model_is_not_installed_ends_no_applicable_model(dicom_dir: Path, rules) -> None:
    files = sorted((dicom_dir / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))
    result = pipeline.analyze_study(files, {}, rules)
    assert result.outcome is pipeline.Outcome.NO_APPLICABLE_MODEL
    assert "rule mr wants model test-mr, which is not installed" in result.reason
    assert "rule mr wants model test-mr, which is not installed" in result.series[0].reason


def test_study_no_rule_matches_names_each_rule_that_failed(dicom_dir: Path, registry, rules) -> None:
    ct_only = [r for r in rules if r.modality == "CT"]
    files = sorted((dicom_dir / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))
    result = pipeline.analyze_study(files, registry, ct_only)
    assert result.outcome is pipeline.Outcome.NO_APPLICABLE_MODEL
    assert "rule ct: modality MR is not CT" in result.series[0].reason


def test_multiframe_key_slices_carry_the_frame(dicom_dir: Path, registry) -> None:
    from onconode.config import RoutingRule

    # A 2-frame perfusion map is no chest CT: only a rule that overrides the manifest sends it.
    override = [RoutingRule(name="any-ct", modality="CT", model="test-ct", use_manifest=False, target="body")]
    result = pipeline.analyze_study(list(files_under([dicom_dir / "enhanced-multiframe"])), registry, override)
    assert result.outcome is pipeline.Outcome.ANALYSED
    assert sorted(k.frame for k in result.key_slices) == [0, 1]  # type: ignore[type-var]


def test_rule_sending_mr_to_a_ct_model_is_not_run(dicom_dir: Path, registry) -> None:
    from onconode.config import RoutingRule

    wrong = [RoutingRule(name="oops", modality="MR", model="test-ct")]
    files = sorted((dicom_dir / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))
    result = pipeline.analyze_study(files, registry, wrong)
    assert result.outcome is pipeline.Outcome.NO_APPLICABLE_MODEL
    assert "test-ct: modality MR is not CT" in result.reason


def _uniform(value_hu: float, size: int | None = None):
    """An edit that keeps a real CT header and replaces its pixels with one value (HU)."""
    import numpy as np

    def edit(ds: pydicom.Dataset, index: int) -> None:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        side = size or int(ds.Rows)
        ds.Rows = ds.Columns = side
        stored = (value_hu - float(ds.RescaleIntercept)) / float(ds.RescaleSlope)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.full((side, side), stored, np.int16).tobytes()
    return edit


def test_a_series_without_the_organ_gets_no_finding(dicom_dir: Path, registry, rules, copy_series) -> None:
    """Real chest CT headers, pixels all water or all air: no slice shows lung, so the model is not
    run and the study ends 'no applicable model' with the reason, never with a finding."""
    sources = sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[40:60]
    for value in (0.0, -1000.0):
        files = copy_series(sources, f"uniform{value:g}", _uniform(value))
        result = pipeline.analyze_study(files, registry, rules)
        assert result.outcome is pipeline.Outcome.NO_APPLICABLE_MODEL
        assert result.positive is None and not result.key_slices
        assert "no slice of the chosen series shows aerated lung" in result.reason
        assert "test-ct" in result.reason


def _mask_series(series_uid: str):
    """An edit that turns a real MR slice into a reader's mask stored as an image of the same study,
    as OsiriX exports an ROI: the header kept (ORIGINAL, same geometry), the pixels 0 with a square of 1."""

    def edit(ds: pydicom.Dataset, index: int) -> None:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        mask = np.zeros((int(ds.Rows), int(ds.Columns)), np.uint16)
        mask[100:130, 100:130] = 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = mask.tobytes()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{series_uid}.{index + 1}"
        ds.SeriesDescription = "FLAIR_ROI"
    return edit


def test_a_mask_series_ranked_first_is_passed_over_for_the_real_one(dicom_dir: Path, registry, rules,
                                                                    copy_series) -> None:
    """A mask series that the headers cannot tell from the acquisition (and whose UID sorts first)
    shows no brain on any slice: the next accepted series is read, and each decision says why."""
    sources = sorted((dicom_dir / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))
    real = copy_series(sources, "real")
    mask = copy_series(sources, "mask", _mask_series("1.2.826.0.1.3680043.8.498.4242"))
    result = pipeline.analyze_study(real + mask, registry, rules)
    assert result.outcome is pipeline.Outcome.ANALYSED
    assert result.series_uid == str(pydicom.dcmread(sources[0], stop_before_pixels=True).SeriesInstanceUID)
    by_uid = {d.series_uid: d for d in result.series}
    skipped = by_uid["1.2.826.0.1.3680043.8.498.4242"]
    assert not skipped.taken and "no slice shows tissue brighter than" in skipped.reason
    assert "passed over" in skipped.reason
    read = by_uid[result.series_uid]
    assert read.taken and read.reason.startswith("read by test-mr: the series ranked above it shows no ")

    alone = pipeline.analyze_study(mask + copy_series(sources, "mask2", _mask_series("1.2.826.0.1.3680043.8.498.4243")),
                                   registry, rules)
    assert alone.outcome is pipeline.Outcome.NO_APPLICABLE_MODEL and not alone.key_slices
    assert "no slice of the 2 series test-mr accepted shows" in alone.reason
    assert all(not d.taken and "passed over" in d.reason for d in alone.series)


def test_a_thumbnail_series_is_not_offered_to_a_model(dicom_dir: Path, registry, copy_series) -> None:
    """A 2×2 'CT' with a chest header: below every model's minimum matrix, named in the reason."""
    sources = sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[40:60]
    files = copy_series(sources, "tiny", _uniform(-800.0, size=2))
    result = pipeline.analyze_study(files, registry, [])
    assert result.outcome is pipeline.Outcome.NO_APPLICABLE_MODEL
    assert "matrix 2×2, smaller than 128×128" in result.reason


def test_a_context_model_sees_each_slice_between_its_neighbours(dicom_dir: Path, tmp_path: Path) -> None:
    """The node's streamed path gives a ``context_mm`` model the same input as preparing each slice
    with its neighbours from the whole decoded series (training's path): every analysed slice's
    probability is the model's answer on that input."""
    manifest_path = write_model(tmp_path / "models", "test-context", "CT")
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["preprocess"] |= {"context_mm": 5.0, "crop": {"region": "lungs", "margin": 0.08}}
    manifest["slices"]["max_analysed"] = 400  # every slice, streamed
    manifest_path.write_text(yaml.safe_dump(manifest))
    registry = load_registry(tmp_path / "models")
    files = sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[40:70]
    result = pipeline.analyze_study(files, registry, [])
    assert result.outcome is pipeline.Outcome.ANALYSED and len(result.slice_scores) > 10

    spec = registry["test-context"].manifest
    vol = volume.build_volume(series.scan(files).series[0])
    offset = context_offset(volume.slice_spacing(vol), 5.0)
    assert offset == 2  # 2.5 mm slices
    values = [volume.read_slice(ref) for ref in vol.slices]
    inputs = []
    for score in result.slice_scores:
        before, after = context_indices(score.index, len(values), offset)
        model_input, _ = prepare_slice(values[score.index], spec.preprocess, spec.input.size, 3, "CT", None,
                                       (values[before], values[after]))
        inputs.append(model_input)
    session = ort.InferenceSession(str(registry["test-context"].onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"image": np.stack(inputs)})
    expected = softmax(logits, spec.decision.temperature)[:, 0]  # "malignant", the positive label
    assert np.allclose([s.probability for s in result.slice_scores], expected, atol=1e-5)
    # And the neighbours matter: the slice alone, repeated, gives other answers.
    alone = [prepare_slice(values[s.index], spec.preprocess, spec.input.size, 3, "CT")[0] for s in result.slice_scores]
    (alone_logits,) = session.run(["logits"], {"image": np.stack(alone)})
    assert not np.allclose(softmax(alone_logits, 1.0)[:, 0], expected, atol=1e-5)


def _ranking_model(folder: Path) -> dict:
    manifest_path = write_model(folder, "test-ranked", "CT")
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["slices"] |= {"max_analysed": 400, "ranking": {"sigmas_mm": [1.5, 2.5, 4.0, 6.0]}}
    manifest_path.write_text(yaml.safe_dump(manifest))
    return load_registry(folder)


def test_a_ranking_model_shows_the_slices_model_and_filter_rank_highest(dicom_dir: Path, tmp_path: Path) -> None:
    """The key slices are the highest mean of two ranks: the model's probability and the nodule
    filter run over the whole series the way training scores it (``blobs.slice_scores`` on every
    decoded slice); the value still averages the key slices' own probabilities, and the conclusion
    says what ranked them."""
    registry = _ranking_model(tmp_path / "models")
    files = sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[25:65]
    result = pipeline.analyze_study(files, registry, [])
    assert result.outcome is pipeline.Outcome.ANALYSED and result.ranked_by == pipeline.RANKED_BY_MODEL_AND_FILTER
    assert "rank" in result.timings_ms and result.summary()["ranked_by"] == "model and nodule filter"

    spec = registry["test-ranked"].manifest
    ranking = spec.slices.ranking
    vol = volume.build_volume(series.scan(files).series[0])
    pixel = float(pydicom.dcmread(files[0], stop_before_pixels=True).PixelSpacing[0])
    filter_scores = blobs.slice_scores([blobs.shrink(volume.read_slice(ref), ranking) for ref in vol.slices],
                                       volume.slice_spacing(vol), pixel * ranking.shrink, ranking)
    analysed = [s.index for s in result.slice_scores]
    probability = np.array([s.probability for s in result.slice_scores])
    mean_rank = (blobs.within_ranks(probability) + blobs.within_ranks(filter_scores[analysed])) / 2
    expected = [analysed[i] for i in np.argsort(-mean_rank, kind="stable")[:3]]
    assert [k.index for k in result.key_slices] == expected
    by_model = [analysed[i] for i in np.argsort(-probability, kind="stable")[:3]]
    assert expected != by_model  # the filter changed the choice here, so the test can tell them apart
    assert result.positive_probability == pytest.approx(float(np.mean([probability[analysed.index(i)]
                                                                       for i in expected])), abs=1e-9)
    told = conclude(result, spec)
    assert "nodule-shape filter" in told.method and "highest per-slice" not in told.method


def test_without_slice_positions_the_model_alone_ranks_and_says_so(dicom_dir: Path, tmp_path: Path,
                                                                    copy_series) -> None:
    registry = _ranking_model(tmp_path / "models")

    def no_position(ds: pydicom.Dataset, index: int) -> None:
        del ds.ImagePositionPatient

    files = copy_series(sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[25:45], edit=no_position)
    result = pipeline.analyze_study(files, registry, [])
    assert result.outcome is pipeline.Outcome.ANALYSED and result.ranked_by == pipeline.RANKED_BY_MODEL
    assert pipeline.UNRANKED_NOTE in result.volume_notes
    probability = np.array([s.probability for s in result.slice_scores])
    assert [k.index for k in result.key_slices] == \
        [result.slice_scores[i].index for i in np.argsort(-probability, kind="stable")[:3]]
    assert "highest per-slice" in conclude(result, registry["test-ranked"].manifest).method


def test_a_series_too_large_for_the_filter_is_ranked_by_the_model_alone(dicom_dir: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The shrunk slices are held while the series is read; beyond ``blobs.MAX_BYTES`` none are kept,
    the model alone ranks, and the result says why."""
    registry = _ranking_model(tmp_path / "models")
    files = sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[25:45]
    monkeypatch.setattr(blobs, "MAX_BYTES", 19 * 256 * 256 * 4)  # 19 of the 20 shrunk slices
    result = pipeline.analyze_study(files, registry, [])
    assert result.outcome is pipeline.Outcome.ANALYSED and result.ranked_by == pipeline.RANKED_BY_MODEL
    assert any("20 slices of 512x512 are more than the nodule filter holds" in n for n in result.volume_notes)
    assert "rank" not in result.timings_ms


def test_a_spacing_that_is_not_physical_leaves_the_ranking_to_the_model(dicom_dir: Path, tmp_path: Path,
                                                                        copy_series) -> None:
    """A hostile PixelSpacing (a micrometre) would make the filter's 1 cm disk a million pixels wide."""
    registry = _ranking_model(tmp_path / "models")

    def tiny_pixels(ds: pydicom.Dataset, index: int) -> None:
        ds.PixelSpacing = [0.001, 0.001]

    files = copy_series(sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[25:45], edit=tiny_pixels)
    result = pipeline.analyze_study(files, registry, [])
    assert result.outcome is pipeline.Outcome.ANALYSED and result.ranked_by == pipeline.RANKED_BY_MODEL
    assert pipeline.UNRANKED_NOTE in result.volume_notes


def test_plausible_and_affordable_bounds() -> None:
    from onconode.models import BlobRanking
    spec = BlobRanking(sigmas_mm=(2.0,))
    assert blobs.plausible(2.5, 0.7) and not blobs.plausible(None, 0.7) and not blobs.plausible(2.5, 0.001)
    assert not blobs.plausible(50.0, 0.7)
    assert blobs.affordable(1024, (512, 512), spec) and not blobs.affordable(1025, (512, 512), spec)


def test_key_slice_heat_maps_are_the_model_features_of_those_slices(dicom_dir: Path, registry, rules) -> None:
    """No series' worth of features is held: each key slice is prepared again and run for its
    features; its heat map is Grad-CAM of exactly what the model saw on it."""
    from onconode.inference import gradcam
    from onconode.inference.runner import OnnxRunner

    files = sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[::3]
    result = pipeline.analyze_study(files, registry, rules)
    model = registry["test-ct"]
    spec = model.manifest
    vol = volume.build_volume(series.scan(files).series[0])
    runner = OnnxRunner(model)
    for key in result.key_slices:
        model_input, placement = prepare_slice(volume.read_slice(vol.slices[key.index]), spec.preprocess,
                                               spec.input.size, spec.input.channels, "CT")
        _, features = runner.run(model_input[None])
        expected = gradcam.heat_map(features[0], model.head_weights, 0, placement)  # "malignant"
        assert np.allclose(key.heat_map, expected, atol=1e-5)
