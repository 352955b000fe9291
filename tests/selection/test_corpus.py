"""The header corpus (tests/corpus: 91 real series of 26 public repositories, truths set by looking
at the pixels): what selection makes of each from its headers alone, against the truth.

Pixels are not in the corpus, so a series whose headers name no region (or contradict each other)
must say so (``needs_pixels``) rather than guess: selection then looks at a few slices, which
tests/selection/test_match.py checks on real pixels.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pydicom
import pytest

from onconode.selection.profile import classify
from onconode.selection.series import SeriesInfo, exclusion, header_of

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "series"
CASES = sorted(CORPUS.glob("*.json"))
# Cases the region check cannot judge from headers, listed rather than hidden: a truth that describes
# only the one slice the corpus kept, and headers that are confidently wrong (selection asks the
# pixels only when the headers are silent or disagree, so a phantom labelled BRAIN stays "brain").
HEADERS_MISLEAD = {
    "ct-abdomen-lctsc-bodypart-lung-no-manufacturer": "one abdominal slice kept of a chest CT labelled LUNG "
                                                      "(the header is right for the series)",
    "mr-other-ge-pioneer-3d-ax-t1-mprage-phantom": "a phantom scanned with a full brain protocol (BRAIN)",
}


def load(path: Path) -> tuple[dict, SeriesInfo]:  # type: ignore[type-arg]
    data = json.loads(path.read_text())
    first = pydicom.Dataset.from_json(data["first"])
    headers = []
    for item in data["instances"]:
        ds = copy.deepcopy(first)
        for keyword, value in item.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        headers.append(header_of(ds, path))
    return data, SeriesInfo(headers[0].series_uid, tuple(headers))


def test_the_corpus_is_there_and_varied() -> None:
    truths = [json.loads(p.read_text())["truth"] for p in CASES]
    assert len(truths) >= 40
    assert {t["modality"] for t in truths} >= {"CT", "MR"}
    assert len({json.loads(p.read_text())["first"].get("00080070", {}).get("Value", [""])[0] for p in CASES}) >= 8


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_selection_reads_each_real_series_as_its_truth(path: Path) -> None:
    data, info = load(path)
    truth = data["truth"]
    why_not = exclusion(info)
    if truth["localizer"]:
        assert why_not is not None and "localizer" in why_not
        return
    if why_not is not None:  # a secondary capture, a dose screen: no slice to read, whatever the truth says
        assert truth["orientation"] in ("projection", None) or not info.first.has_pixels or \
            "secondary capture" in why_not, why_not
        return
    profile = classify(info)
    evidence = "; ".join(profile.evidence())
    if truth["orientation"] in ("axial", "sagittal", "coronal"):
        assert profile.geometry.plane == truth["orientation"], evidence
    # The region a model is routed by: chest for CT, brain for MR (no model reads CT heads or MR chests).
    routed = {"CT": "chest", "MR": "brain"}.get(truth["modality"])
    if routed is not None and not profile.region.needs_pixels and path.stem not in HEADERS_MISLEAD:
        read = profile.region.regions
        truth_regions = {truth["region"]} | ({"brain"} if truth["region"] == "head-neck" else set())
        if len(read) == 1:
            assert (routed in read) == (routed in truth_regions), f"read {sorted(read)}, truth {truth}: {evidence}"
        else:  # a series over several regions (chest-abdomen-pelvis): the kept slice is one of them
            assert read & truth_regions or len(data["instances"]) == 1, f"read {sorted(read)}: {evidence}"
    if truth["modality"] == "MR" and profile.sequence is not None and truth["mr_sequence"] is not None:
        expected = "t1post" if truth["mr_sequence"] == "t1" and truth["contrast"] else truth["mr_sequence"]
        routed_kinds = {"t1post", "flair"}
        # What routing needs: whether the series is one of the sequences the brain model reads.
        assert (profile.kind in routed_kinds) == (expected in routed_kinds), \
            f"read {profile.kind}, truth {expected}: {evidence}"
