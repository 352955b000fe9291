"""Routing rules: validation in the configuration and each condition's own check."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from onconode.config import RoutingRule, load_settings
from onconode.selection import routing, series


@pytest.fixture(scope="module")
def studies(dicom_dir: Path) -> dict[str, series.SeriesInfo]:
    out = {}
    for name in ("lidc-idri-0001", "upenn-gbm-00001-t1post", "brain-tumor-progression-pgbm-001-t1post"):
        out[name] = series.scan(sorted((dicom_dir / name).glob("*.dcm"))).series[0]
    return out


def test_conditions_each_can_refuse(studies) -> None:
    ct = studies["lidc-idri-0001"]
    assert routing.mismatch(RoutingRule(name="r", model="m", body_part="(?i)chest"), ct) is None
    assert "body_part" in (routing.mismatch(RoutingRule(name="r", model="m", body_part="HEAD"), ct) or "")
    assert "ImageType" in (routing.mismatch(RoutingRule(name="r", model="m", image_type=["!AXIAL"]), ct) or "")
    assert routing.mismatch(RoutingRule(name="r", model="m", image_type=["ORIGINAL"]), ct) is None
    assert "SOP class" in (routing.mismatch(RoutingRule(name="r", model="m", sop_class=["1.2.3"]), ct) or "")
    assert "slices" in (routing.mismatch(RoutingRule(name="r", model="m", max_slices=100), ct) or "")
    assert "study_description" in (routing.mismatch(
        RoutingRule(name="r", model="m", study_description="."), ct) or "")  # LIDC has none


def test_rule_with_bad_regex_is_refused() -> None:
    with pytest.raises(ValidationError, match="regular expression"):
        RoutingRule(name="r", model="m", series_description="(unclosed")


def test_rule_with_max_below_min_slices_is_refused() -> None:
    with pytest.raises(ValidationError, match="max_slices"):
        RoutingRule(name="r", model="m", min_slices=10, max_slices=5)


def test_settings_read_the_routing_section(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("routing:\n  - {name: chest, modality: CT, model: chest-ct-cancer, target: lung}\n")
    settings = load_settings(config)
    assert [r.model for r in settings.routing] == ["chest-ct-cancer"]
    assert settings.analysis.intra_op_threads == 2


def test_shipped_configuration_leaves_routing_to_the_manifests() -> None:
    settings = load_settings(Path(__file__).resolve().parents[2] / "config" / "onconode.yaml")
    assert settings.routing == []
