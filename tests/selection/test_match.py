"""Model choice on real studies: manifests alone (no routing configured), pixels where headers fail,
the manifest's ranking, and rules that narrow or override."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
import yaml

from onconode.config import RoutingRule
from onconode.folders import files_under
from onconode.models import load_registry
from onconode.selection import match, probe, series
from tests.inference.tiny_model import write_model

STUDY = "1.2.826.0.1.3680043.8.498.777"


def _candidates(files: list[Path]) -> list[series.SeriesInfo]:
    return [info for info in series.scan(files).series if series.exclusion(info) is None]


def _choose(files: list[Path], registry, rules=()) -> match.Choice:
    return match.choose(_candidates(files), registry, list(rules), probe.look)


@pytest.mark.parametrize(("folder", "model"), [
    ("lidc-idri-0001", "test-ct"), ("lung-pet-ct-dx-a0002-ct", "test-ct"),
    ("brain-tumor-progression-pgbm-001-t1post", "test-mr"), ("upenn-gbm-00001-t1post", "test-mr")])
def test_every_image_study_reaches_its_model_with_no_routing_configured(dicom_dir: Path, registry, folder: str,
                                                                       model: str) -> None:
    choice = _choose(list(files_under([dicom_dir / folder])), registry)
    assert choice.offer is not None and choice.offer.model_name == model
    (taken,) = [d for d in choice.decisions if d.taken]
    assert taken.reason == f"read by {model}"
    assert any(line.startswith("region ") for line in taken.evidence)


def test_a_perfusion_map_and_objects_without_slices_reach_no_model(dicom_dir: Path, registry) -> None:
    choice = _choose(list(files_under([dicom_dir / "enhanced-multiframe"])), registry)
    assert choice.offer is None and choice.reason.startswith("no applicable model: ")
    assert "test-ct: " in choice.reason and "fewer than 10" in choice.reason
    assert "test-mr: modality CT is not MR" in choice.reason


def _edited(copy_series, files: list[Path], folder: str, **values: object) -> list[Path]:
    remove = [k for k, v in values.items() if v is None]

    def edit(ds: pydicom.Dataset, index: int) -> None:
        ds.StudyInstanceUID = STUDY
        for keyword in remove:
            if keyword in ds:
                delattr(ds, keyword)
        for keyword, value in values.items():
            if value is not None:
                setattr(ds, keyword, value)

    return copy_series(files, folder, edit)


def test_silent_headers_let_the_pixels_find_the_chest(dicom_dir: Path, registry, copy_series) -> None:
    files = _edited(copy_series, sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[::4], "silent",
                    BodyPartExamined=None)
    choice = _choose(files, registry)
    assert choice.offer is not None and choice.offer.model_name == "test-ct"
    assert choice.profile is not None and choice.profile.pixels_read
    assert "pixels: lung-density tissue on" in choice.decisions[0].evidence[0]


def test_contradicting_headers_are_settled_by_the_pixels(dicom_dir: Path, registry, copy_series) -> None:
    files = _edited(copy_series, sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[::4], "conflict",
                    BodyPartExamined="HEAD", SeriesDescription="Thorax 2.5 B31f")
    choice = _choose(files, registry)
    assert choice.offer is not None and choice.offer.model_name == "test-ct"
    region = choice.decisions[0].evidence[0]
    assert "header fields disagree" in region and "pixels:" in region


def test_pixels_overrule_a_header_that_names_the_wrong_region(dicom_dir: Path, registry, copy_series) -> None:
    # The upper abdomen below LIDC-IDRI-0001's lungs, under a series description that says thorax and
    # a body part that says abdomen: the pixels show no lung, so the chest model does not read it.
    files = _edited(copy_series, sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[105:133], "abdomen",
                    BodyPartExamined="ABDOMEN", SeriesDescription="CT Thorax")
    choice = _choose(files, registry)
    assert choice.offer is None
    assert "region abdomen not in chest" in choice.reason


def test_a_t1_without_contrast_is_not_a_t1post(dicom_dir: Path, registry, copy_series) -> None:
    files = _edited(copy_series, sorted((dicom_dir / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm")),
                    "pre", ContrastBolusAgent=None, SeriesDescription="T1 AX SE", ProtocolName="B T1 AXIAL SE")
    choice = _choose(files, registry)
    assert choice.offer is None and "test-mr: sequence t1 not in t1post/flair" in choice.reason


def test_manifest_ranking_prefers_t1post_to_flair_and_original_to_derived(dicom_dir: Path, registry,
                                                                           copy_series) -> None:
    pgbm = sorted((dicom_dir / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))
    t1post = _edited(copy_series, pgbm, "t1post")
    flair = _edited(copy_series, pgbm, "flair", SeriesInstanceUID="1.2.826.0.1.3680043.8.498.778",
                    SeriesDescription="AX FLAIR", ProtocolName="AX FLAIR", RepetitionTime=9000, EchoTime=120,
                    InversionTime=2500, ScanningSequence=["SE", "IR"], SliceThickness=3)
    choice = _choose(t1post + flair, registry)
    assert choice.profile is not None and choice.profile.kind == "t1post"
    by_kind = {d.description: d for d in choice.decisions}
    assert by_kind["T1post"].taken
    assert not by_kind["AX FLAIR"].taken and "ranked below the chosen series" in by_kind["AX FLAIR"].reason


def test_rules_narrow_the_manifest(dicom_dir: Path, registry) -> None:
    files = list(files_under([dicom_dir / "lidc-idri-0001"]))
    narrow = [RoutingRule(name="screening", model="test-ct", study_description="(?i)screening")]
    choice = _choose(files, registry, narrow)
    assert choice.offer is None and "rule screening: study_description '' does not match" in choice.reason
    both = [RoutingRule(name="mr-only", model="test-mr", modality="MR"), RoutingRule(name="ct", model="test-ct")]
    choice = _choose(files, registry, both)
    assert choice.offer is not None and choice.offer.name == "ct"


def test_a_rule_can_override_the_manifest(dicom_dir: Path, registry) -> None:
    files = sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[:4]  # too few slices for the manifest
    assert _choose(files, registry).offer is None
    override = [RoutingRule(name="all-ct", model="test-ct", modality="CT", use_manifest=False)]
    choice = _choose(files, registry, override)
    assert choice.offer is not None and choice.offer.name == "all-ct"


@pytest.fixture
def whole_organ_registry(tmp_path: Path):
    """The test models, asking what the shipped ones ask of a series' reach and of its gaps."""
    for name, modality, reach in (("test-mr", "MR", 100.0), ("test-ct", "CT", 180.0)):
        manifest = write_model(tmp_path / "models", name, modality)
        data = yaml.safe_load(manifest.read_text())
        data["accepts"] |= {"min_coverage_mm": reach, "min_imaged_fraction": 0.5}
        manifest.write_text(yaml.safe_dump(data))
    return load_registry(tmp_path / "models")


def _slab(copy_series, pgbm: list[Path]) -> list[Path]:
    """Twelve slices from the middle of PGBM-001 (78 mm) as their own thinner series: a slab planned
    on one part of the head, like the internal auditory canals."""
    def edit(ds: pydicom.Dataset, index: int) -> None:
        ds.StudyInstanceUID = STUDY
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.779"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.779.{index + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = "C+ IAC AX T1"
        ds.SliceThickness = 3

    return copy_series(pgbm[9:21], "slab", edit)


def test_a_slab_short_of_the_whole_organ_is_not_read_even_when_thinner(dicom_dir: Path, whole_organ_registry,
                                                                        copy_series) -> None:
    pgbm = sorted((dicom_dir / "brain-tumor-progression-pgbm-001-t1post").glob("*.dcm"))
    slab = _slab(copy_series, pgbm)
    choice = _choose(_edited(copy_series, pgbm, "whole") + slab, whole_organ_registry)
    by_description = {d.description: d for d in choice.decisions}
    assert by_description["T1post"].taken
    refused = by_description["C+ IAC AX T1"]
    assert not refused.taken
    assert "covers 78 mm along the slice normal, less than the 100 mm of the whole brain" in refused.reason
    assert any(line.endswith("24 slices over 156 mm") for line in by_description["T1post"].evidence)

    alone = _choose(slab, whole_organ_registry)
    assert alone.offer is None and "covers 78 mm along the slice normal" in alone.reason


def test_a_series_sampled_with_wide_gaps_is_not_read(dicom_dir: Path, whole_organ_registry, copy_series) -> None:
    # Every eighth slice of LIDC-IDRI-0001: 2.5 mm slices 20 mm apart, as a sequential HRCT samples the
    # lungs; a nodule between two slices is not in the series.
    files = copy_series(sorted((dicom_dir / "lidc-idri-0001").glob("*.dcm"))[::8], "sampled")
    choice = _choose(files, whole_organ_registry)
    assert choice.offer is None
    assert "slices 2.50 mm thick 20.00 mm apart image 12% of the volume, less than 50%" in choice.reason
    whole = _choose(list(files_under([dicom_dir / "lidc-idri-0001"])), whole_organ_registry)
    assert whole.offer is not None and whole.offer.model_name == "test-ct"
