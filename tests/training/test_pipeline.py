"""The training pipeline end to end on synthetic prepared series, small on purpose (64 px, a few
steps, 2 threads): the node's preprocessing makes the examples, folds keep patients apart, the
cross-validation gives out-of-fold records, the release writes a manifest the node loads, and the
exported graph is what the manifest promises (CAM from ONNX equals autograd Grad-CAM). Full
training is ``make train-chest|train-brain``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.training import synthetic

SIZE = (64, 64)


@pytest.fixture(scope="module")
def spec():  # type: ignore[no-untyped-def]
    from onconode.models import SliceSpec
    from training.specs import CHEST_CT

    return dataclasses.replace(CHEST_CT, size=SIZE, epochs=2, samples_per_epoch=16, batch_size=8, folds=3,
                               slices=SliceSpec(target="lung", max_analysed=400, key=2), external=(),
                               checks=None)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(prepared root, data manifests folder) of the synthetic series."""
    root, sources = tmp_path_factory.mktemp("prepared"), tmp_path_factory.mktemp("sources")
    synthetic.write(root, sources)
    return root, sources


@pytest.fixture(scope="module")
def series(torch_available: None, spec, prepared: tuple[Path, Path],  # type: ignore[no-untyped-def]
           tmp_path_factory: pytest.TempPathFactory):
    import os

    from training.examples import load_all

    root, sources = prepared
    os.environ["ONCONODE_TRAINING_SOURCES"] = str(sources)
    try:
        yield load_all(spec, root, cache=tmp_path_factory.mktemp("cache"))
    finally:
        del os.environ["ONCONODE_TRAINING_SOURCES"]


def test_examples_are_the_slices_the_node_would_analyse(series, spec) -> None:  # type: ignore[no-untyped-def]
    assert len(series) == 6 and {s.meta.patient for s in series} == {f"SYN-{p:02d}" for p in range(6)}
    first = series[0]
    assert first.planes.dtype == np.uint8 and first.planes.shape[1:] == (3, *SIZE)
    assert len(first.labels) == 16  # every synthetic slice shows lung
    lesion = first.labels == 1
    assert lesion.sum() == 4 and first.masks[lesion].any(axis=(1, 2)).all() and not first.masks[~lesion].any()
    # The three windows differ: lung, mediastinum and wide give three different planes.
    assert len({first.planes[0, c].tobytes() for c in range(3)}) == 3
    assert np.all(np.isfinite(first.mm_per_px)) and first.features.shape == (16, 8)


def test_folds_never_split_a_patient() -> None:
    from training.folds import inner_validation, split

    names = {f"P{i}": i < 7 for i in range(10)}
    folds = split(names, 5, seed=1)
    assert sorted(p for f in folds for p in f) == sorted(names) and len(folds) == 5
    assert all(any(names[p] for p in f) for f in folds)  # each fold has a lesion patient
    inner = inner_validation(names, 0.2, seed=1)
    assert any(names[p] for p in inner) and any(not names[p] for p in inner)


def test_cross_validation_gives_out_of_fold_records_and_a_summary(series, spec) -> None:  # type: ignore[no-untyped-def]
    import torch

    from training import crossval
    from training.evaluate import series_records, summary

    torch.set_num_threads(2)
    records, best = crossval.run(spec, series, max_steps=2, pretrained=False)
    assert len(records) == sum(len(s.labels) for s in series) and len(best) == 3
    by_patient: dict[str, set[int]] = {}
    for r in records:
        by_patient.setdefault(r.patient, set()).add(r.fold)
    assert all(len(folds) == 1 for folds in by_patient.values())  # one fold per patient
    assert all(0 <= r.probability <= 1 and 0 <= r.baseline <= 1 for r in records)
    lesion_rows = [r for r in records if r.label == 1]
    assert lesion_rows and all(np.isnan(r.heat_share) or 0 <= r.heat_share <= 1 for r in lesion_rows)
    out = summary(records, series_records(records, {s.meta.key: s.meta.lesion for s in series}, spec.slices.key))
    assert out["series"]["count"] == 6 and out["series"]["lesion"] == 4  # type: ignore[index]
    assert set(out["slices"]) >= {"auc", "baseline_auc"}  # type: ignore[arg-type]


def test_a_fixed_schedule_trains_every_fold_for_the_spec_epochs(series, spec) -> None:  # type: ignore[no-untyped-def]
    import torch

    from training import crossval

    torch.set_num_threads(2)
    fixed = dataclasses.replace(spec, select_epoch=False)  # 2 epochs of 2 steps: no step limit needed
    records, best = crossval.run(fixed, series, pretrained=False)
    assert best == [fixed.epochs] * fixed.folds  # no validation patients: the last epoch is kept
    assert len(records) == sum(len(s.labels) for s in series)


def test_release_writes_files_the_node_loads_and_cam_equals_gradcam(series, spec, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch

    from onconode.models import load_registry
    from training.export import head_initializers, session
    from training.fit import load, normalise
    from training.gradcam import cam_from_features, reference_gradcam
    from training.release import release, run_folder

    manifest = release(spec, series, tmp_path / "models", tmp_path / "no-dicom", max_steps=2, pretrained=False,
                       runs=tmp_path / "runs")
    registry = load_registry(tmp_path / "models")
    assert set(registry) == {spec.name} and registry[spec.name].manifest.decision.calibration is not None
    card = (tmp_path / "models" / f"{spec.name}.md").read_text()
    assert "Research use only" in card and "Withdrawn" in card and "patient-grouped" in card.lower()
    onnx_path = tmp_path / "models" / manifest.file
    images = normalise(series[0].planes[:2], spec).contiguous().numpy()
    features = session(onnx_path).run(["features"], {"image": images[:1]})[0][0]
    weights, _ = head_initializers(onnx_path)
    model = load(spec, torch.load(run_folder(tmp_path / "runs", spec) / "model.pt", weights_only=True))
    for class_index in range(2):
        cam = cam_from_features(features, weights, class_index)
        reference = reference_gradcam(model, torch.from_numpy(images[:1]), class_index)
        scale = features.shape[1] * features.shape[2]
        assert np.allclose(cam, reference * scale, atol=1e-4 * max(1.0, float(cam.max())))


def test_localisation_is_peak_within_a_centimetre_and_heat_share() -> None:
    from training.crossval import localisation

    mask = np.zeros((64, 64), bool)
    mask[30:34, 30:34] = True
    cam = np.zeros((64, 64), np.float32)
    cam[31, 31] = 1.0
    assert localisation(cam, mask, mm_per_px=1.0) == (1.0, 1.0)
    cam[31, 31], cam[31, 40] = 0.5, 1.0        # the peak 7 px from the lesion: 7 mm at 1 mm/px, inside 1 cm
    hit, share = localisation(cam, mask, mm_per_px=1.0)
    assert hit == 1.0 and share == pytest.approx(1 / 3)
    assert localisation(cam, mask, mm_per_px=2.0)[0] == 0.0   # 14 mm away at 2 mm/px
    cam[31, 40], cam[5, 5] = 0.0, 1.0         # far away
    assert localisation(cam, mask, mm_per_px=1.0)[0] == 0.0
    assert np.isnan(localisation(np.zeros((64, 64), np.float32), mask, 1.0)[0])


def test_failure_pictures_show_a_flagged_lesion_free_remainder_on_its_top_slice(series, spec,  # type: ignore[no-untyped-def]
                                                                                tmp_path: Path) -> None:
    """A lesion series whose lesion-free slices alone still pass the threshold is a failure, drawn on
    the lesion-free slice that scores highest, never on a lesion slice."""
    from training.evaluate import SeriesRecord, SliceRecord
    from training.release import failure_pictures

    lesion = next(s for s in series if (s.labels == 1).any() and (s.labels == 0).sum() >= spec.slices.key)
    top = int(lesion.index[np.flatnonzero(lesion.labels == 0)[0]])
    slices = [SliceRecord(lesion.meta.key, lesion.meta.patient, "ct", 0, int(i), int(label),
                          0.95 if i == top else (0.6 if label == 0 else 0.3), 0.5, float("nan"), float("nan"))
              for i, label in zip(lesion.index, lesion.labels)]
    record = SeriesRecord(lesion.meta.key, lesion.meta.patient, "ct", 0, True, 0.7, 0.5)
    out = failure_pictures(spec, [lesion], slices, [record], 0.5, (1.0, 0.0), "series", tmp_path)
    assert [f["kind"] for f in out] == ["lesion-free remainder flagged"]
    assert out[0]["slice"] == top + 1 and out[0]["slice_probability"] == 0.95
    assert (tmp_path / out[0]["picture"]).stat().st_size > 0
    # Under a higher threshold the remainder is no failure (and the series itself is missed).
    higher = failure_pictures(spec, [lesion], slices, [record], 0.9, (1.0, 0.0), "series", tmp_path)
    assert [f["kind"] for f in higher] == ["false negative"]


def test_recheck_refits_the_operating_point_and_releases_it_only_under_a_new_version(  # type: ignore[no-untyped-def]
        series, spec, tmp_path: Path) -> None:
    """The shipped calibration and threshold are refitted from the kept out-of-fold predictions: an
    unchanged fit leaves the manifest byte for byte; a fit that moved (here the shipped one is made
    stale) is refused under the same version, and written for the same ONNX file under a new one,
    whose run folder then holds the predictions it came from."""
    import json

    from onconode.models import load_registry
    from training.recheck import VersionUnchanged, recheck
    from training.release import release, run_folder

    models, runs, dicom = tmp_path / "models", tmp_path / "runs", tmp_path / "no-dicom"
    shipped = release(spec, series, models, dicom, max_steps=2, pretrained=False, runs=runs)
    manifest_file = models / f"{spec.name}.yaml"
    before = manifest_file.read_bytes()
    recheck(spec, models, runs, dicom, examples=[])
    assert manifest_file.read_bytes() == before

    metrics = models / f"{spec.name}.metrics.json"
    stale = json.loads(metrics.read_text())
    stale["calibration"] = [9.0, 9.0]
    metrics.write_text(json.dumps(stale))
    with pytest.raises(VersionUnchanged):
        recheck(spec, models, runs, dicom, examples=[])
    assert manifest_file.read_bytes() == before

    newer = dataclasses.replace(spec, version="9.9.9")
    manifest = recheck(newer, models, runs, dicom, examples=[])
    assert manifest.version == "9.9.9" and manifest.sha256 == shipped.sha256
    assert manifest.decision.calibration == shipped.decision.calibration
    assert manifest.decision.threshold == shipped.decision.threshold
    assert load_registry(models)[spec.name].manifest.version == "9.9.9"
    assert json.loads(metrics.read_text())["calibration"] == [shipped.decision.calibration.slope,
                                                             shipped.decision.calibration.intercept]
    assert (run_folder(runs, newer) / "oof-series.json").exists()


def test_recheck_ranks_key_slices_by_the_filter_when_the_spec_asks(  # type: ignore[no-untyped-def]
        series, spec, prepared: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec that ranks key slices by the model and the nodule filter, released from predictions
    kept without the filter's scores: the scores come from the prepared volumes through the node's
    own filter, the new version's run keeps them, the series values average the key slices so
    ranked, and the manifest and the card say how the key slices are chosen."""
    import json

    from onconode.models import BlobRanking, SliceSpec, load_registry
    from training.evaluate import SeriesRecord, SliceRecord, key_probabilities
    from training.nodule_filter import series_scores
    from training.recheck import recheck
    from training.release import release, run_folder

    models, runs, dicom = tmp_path / "models", tmp_path / "runs", tmp_path / "no-dicom"
    release(spec, series, models, dicom, max_steps=2, pretrained=False, runs=runs)
    ranking = BlobRanking(sigmas_mm=(1.5, 2.5))
    ranked_spec = dataclasses.replace(spec, version="9.8.0", slices=SliceSpec(
        target="lung", max_analysed=400, key=spec.slices.key, ranking=ranking))
    monkeypatch.setenv("ONCONODE_PREPARED", str(prepared[0]))
    manifest = recheck(ranked_spec, models, runs, dicom, examples=[])
    assert manifest.slices.ranking == ranking
    assert load_registry(models)[spec.name].manifest.slices.ranking == ranking

    run = run_folder(runs, ranked_spec)
    slices = [SliceRecord(**r) for r in json.loads((run / "oof-slices.json").read_text())]
    scores = {key: series_scores(prepared[0] / "chest-ct" / f"{key}.npz", ranking) for key in {r.series for r in slices}}
    assert all(r.blob == scores[r.series][r.index] for r in slices)
    grouped: dict[str, list[SliceRecord]] = {}
    for r in slices:
        grouped.setdefault(r.series, []).append(r)
    for record in (SeriesRecord(**r) for r in json.loads((run / "oof-series.json").read_text())):
        assert record.score == pytest.approx(float(np.mean(key_probabilities(grouped[record.series], spec.slices.key))))
    metrics = json.loads((models / f"{spec.name}.metrics.json").read_text())
    assert set(metrics["cv"]["ranking"]["model_alone"]) == {"top_slice_is_lesion", "key_slices_include_lesion"}
    card = (models / f"{spec.name}.md").read_text()
    assert "Key slices: the analysed slices with the highest mean of two ranks" in card
    # The kept predictions of the shipped version are untouched: they still carry no filter score.
    shipped = json.loads((run_folder(runs, spec) / "oof-slices.json").read_text())
    assert all(np.isnan(r.get("blob", float("nan"))) for r in shipped)
