"""Figures count only series the node would read: a prepared series shorter along its normal than the
spec's ``min_coverage_mm`` is trained on but left out of every figure."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path


def test_only_series_that_reach_the_whole_organ_are_evaluated(tmp_path: Path, torch_available: None) -> None:
    from training.examples import coverage_mm, read_by_node
    from training.specs import BRAIN_MR

    folder = tmp_path / BRAIN_MR.data
    folder.mkdir()
    prepared = {
        "iac-slab": {"shape": [17, 512, 512], "spacing_mm": [3.3, 0.31, 0.31]},        # 56 mm
        "whole-brain": {"shape": [24, 320, 260], "spacing_mm": [6.5, 0.7, 0.7]},       # 156 mm
        "spacing-lost": {"shape": [20, 256, 256], "spacing_mm": [None, None, None]},   # unknown: kept
        "chest-layout": {"volume": {"shape": [99, 512, 512], "spacing_mm": [3.0, 0.98, 0.98]}},
    }
    for key, info in prepared.items():
        (folder / f"{key}.json").write_text(json.dumps(info))
    assert coverage_mm(prepared["iac-slab"]) == 17 * 3.3
    assert coverage_mm(prepared["chest-layout"]) == 297.0
    assert coverage_mm(prepared["spacing-lost"]) is None
    keys = [*prepared, "not-prepared"]
    assert read_by_node(BRAIN_MR, keys, root=tmp_path) == {"whole-brain", "spacing-lost", "chest-layout",
                                                           "not-prepared"}
    asks_nothing = replace(BRAIN_MR, accepts=BRAIN_MR.accepts.model_copy(update={"min_coverage_mm": 0.0}))
    assert read_by_node(asks_nothing, keys, root=tmp_path) == set(keys)
