"""OncoNode's results in a real viewer: OHIF Viewer 3 on Orthanc's DICOMweb, in headless Chromium.

A real CT series (``lung-pet-ct-dx-a0002-ct``) and the outputs OncoNode prepares for it (heat-map
Secondary Captures, a TID 1500 Comprehensive 3D SR, and any overlay or KOS added later) are stored in
Orthanc; each test opens OHIF as a radiologist would and checks what is on the screen. Screenshots
are kept in the test's tmp_path and in ``var/artifacts/viewer/``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from tests.support import wait_for
from tests.viewer import ohif_ui as ui
from tests.viewer.conftest import COMPREHENSIVE_3D_SR, PARAMETRIC_MAP, SEG, Series, Study, Viewer

pytestmark = pytest.mark.peers
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSIS"
FIRST_DRAW_S = 10  # seconds OHIF gets to draw an SR's labels on opening it, before a reader steps on
# Secondary Capture and its multi-frame variants (PS3.4 B.5)
SC_CLASSES = ("1.2.840.10008.5.1.4.1.1.7", *(f"1.2.840.10008.5.1.4.1.1.7.{n}" for n in range(1, 5)))


def words(text: str) -> str:
    """Text as a browser lays it out: runs of white space collapse to one space."""
    return " ".join(text.split())


def the_sc(study: Study) -> Series:
    (sc,) = study.outputs_of(*SC_CLASSES)
    return sc


def open_study(page: Any, viewer: Viewer, study: Study) -> ui.CanvasStats:
    """The viewer on the study, with the source CT drawn in its viewport (OHIF's default layout)."""
    ui.open_viewer(page, viewer.url, study.uid)
    ui.wait_viewport_shows(page, study.source.description)
    return ui.settled_canvas(page, lambda s: s.lit_fraction > 0.05)


def test_study_list_shows_the_study(page: Any, viewer: Viewer, study: Study,
                                    shoot: Callable[[Any, str], Path]) -> None:
    page.goto(f"{viewer.url}/")
    row = page.locator("tbody tr").filter(has=page.get_by_role("cell", name=study.patient_name, exact=True))
    row.wait_for()
    cells = [cell.strip() for cell in row.locator("td").all_inner_texts()]
    shoot(page, "study-list")
    modalities = {study.source.modality, *(s.modality for s in study.outputs)}
    assert any(set(cell.split("\\")) == modalities for cell in cells), (modalities, cells)
    assert str(study.instances) in cells, (study.instances, cells)


def test_viewer_draws_the_ct_and_lists_every_series_by_description(page: Any, viewer: Viewer, study: Study,
                                                                   shoot: Callable[[Any, str], Path]) -> None:
    stats = open_study(page, viewer, study)
    for series in (study.source, *study.outputs):
        entry = ui.thumbnail(page, series.number)
        entry.wait_for()
        assert words(series.description) in words(entry.inner_text()), series
        assert entry.locator('[data-cy="series-modality-label"]').inner_text().strip() == series.modality, series
    # The CT's and the SC's thumbnails are pictures, drawn from their frames.
    for series in (study.source, the_sc(study)):
        image = ui.thumbnail(page, series.number).locator("img").first
        image.wait_for()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    shoot(page, "ct")
    # A CT slice in grey: a good part of the viewport lit, nothing coloured.
    assert stats.lit_fraction > 0.15, stats
    assert stats.coloured == 0, stats
    pixels = ui.canvas_pixels(page)
    assert pixels.std() > 20, "the CT slice is flat"


def test_heat_map_secondary_capture_opens_and_draws(page: Any, viewer: Viewer, study: Study,
                                                   shoot: Callable[[Any, str], Path]) -> None:
    sc = the_sc(study)
    assert NOT_FOR_DIAGNOSIS in sc.description
    open_study(page, viewer, study)
    ui.open_series(page, sc.number)
    ui.wait_viewport_shows(page, sc.description)
    stats = ui.settled_canvas(page, lambda s: s.coloured > 0)
    shoot(page, "heat-map-sc")
    # The viewer draws the colours the SC holds: over the lit picture, at least half the coloured
    # share of the least coloured SC frame (the heat map covers only the evidence, not a fixed area).
    share = min(ui.coloured(frame).mean() for frame in sc_frames(sc))
    assert share > 0, "the SC holds no colour"
    assert stats.coloured >= 0.5 * share * stats.lit, (stats, share)


def sc_frames(sc: Series) -> list[np.ndarray]:
    """Every SC picture as RGB uint8 (H, W, 3), as sent."""
    return [pydicom.dcmread(path).pixel_array for path in sc.files]


def sr_labels(path: Path) -> tuple[list[str], bool]:
    """The labels OHIF writes next to an SR measurement ("<concept>: <value to 2 places>"), one per NUM
    in a TID 1500 measurement group, and whether any group has an image region (SCOORD/SCOORD3D)."""
    ds = pydicom.dcmread(path)
    labels: list[str] = []
    has_region = False

    def walk(items: Any, in_group: bool) -> None:
        nonlocal has_region
        for item in items:
            name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
            group = in_group or (name is not None and name.CodeValue == "125007")  # Measurement Group
            if group and item.ValueType in ("SCOORD", "SCOORD3D"):
                has_region = True
            if group and item.ValueType == "NUM" and name is not None and "MeasuredValueSequence" in item:
                value = float(item.MeasuredValueSequence[0].NumericValue)
                labels.append(f"{name.CodeMeaning}: {value:.2f}")
            walk(item.get("ContentSequence", []), group)

    walk(ds.ContentSequence, False)
    return labels, has_region


def test_opening_the_sr_shows_its_findings(page: Any, viewer: Viewer, study: Study,
                                           shoot: Callable[[Any, str], Path], request: pytest.FixtureRequest) -> None:
    (sr,) = study.outputs_of(COMPREHENSIVE_3D_SR)
    assert NOT_FOR_DIAGNOSIS in sr.description
    labels, has_region = sr_labels(sr.files[0])
    assert labels, "the SR has no measurement"
    if not has_region:
        # OHIF 3.13 (extensions/cornerstone-dicom-sr) draws a TID 1500 measurement group only from its
        # SCOORD/SCOORD3D: a NUM whose content is an image reference alone is skipped ("ContentSequence
        # array contains no SCOORD or SCOORD3D entry"), and the SR viewport stays black.
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "OncoNode's SR has no image region (SCOORD/SCOORD3D) in its measurement groups, and OHIF "
            "shows TID 1500 measurements only with one")))
    # OHIF says in the console when it drops an SR's measurements; for an SR without regions that
    # ends the wait (it will draw nothing), for one with regions only the labels do.
    skipped: list[str] = []
    page.on("console", lambda m: skipped.append(m.text) if ui.SR_SKIPPED in m.text else None)
    open_study(page, viewer, study)
    ui.open_series(page, sr.number)
    try:
        def drawn_or_dropped() -> str | None:
            text = ui.svg_text(page)
            if any(label in text for label in labels):
                return text
            return "(nothing drawn)" if not has_region and skipped else None

        what = f"the SR's labels {labels} in the viewport"
        try:
            shown = wait_for(drawn_or_dropped, FIRST_DRAW_S, what, interval=0.25)
        except AssertionError:
            # OHIF 3.13 at times opens the SR on its first measured image and draws nothing there (seen
            # in about one full test run in two, never alone; its SR viewport races its annotation
            # layer, cf. OHIF/Viewers#5635). A reader then steps to the next measurement; so does this.
            print(f"OHIF drew nothing in {FIRST_DRAW_S} s on opening the SR; stepping to its next measurement")
            ui.step_measurement(page, 1)
            try:
                shown = wait_for(drawn_or_dropped, 20, what, interval=0.25)
            except AssertionError as err:
                raise AssertionError(f"{err}; the viewport's text: {ui.svg_text(page)!r}") from None
    finally:
        shoot(page, "sr")
    assert shown and any(label in shown for label in labels), f"OHIF drew none of {labels}; console: {skipped}"
    # Drawn on the image it refers to: the source series, not a blank viewport.
    assert words(study.source.description) in words(ui.viewport_description(page))
    assert ui.settled_canvas(page, lambda s: s.lit_fraction > 0.05).coloured == 0


def segment_labels(path: Path) -> list[str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return [str(s.SegmentLabel) for s in ds.SegmentSequence]


def test_overlay_draws_on_the_source_series(page: Any, viewer: Viewer, study: Study,
                                            shoot: Callable[[Any, str], Path]) -> None:
    overlays = study.outputs_of(SEG, PARAMETRIC_MAP)
    if not overlays:
        pytest.skip("no SEG/Parametric Map among the outputs yet")
    for overlay in overlays:  # each on a freshly opened viewer, so that one's colour cannot pass for another's
        before = open_study(page, viewer, study)
        assert before.coloured == 0, "the CT alone is drawn in colour"
        ui.open_series(page, overlay.number)
        if overlay.sop_class == SEG:
            check_segmentation(page, study, overlay, shoot)
        else:
            check_parametric_map(page, study, overlay, shoot)


def check_segmentation(page: Any, study: Study, seg: Series, shoot: Callable[[Any, str], Path]) -> None:
    """The SEG opens on the CT at its first segmented slice, its segments are listed, and hiding the
    segmentation takes exactly the coloured pixels away."""
    ui.answer_prompt(page, "Do you want to open this Segmentation?", "Yes")
    ui.wait_viewport_shows(page, study.source.description)
    page.locator('[data-cy="panelSegmentation-btn"]').click()
    titles = page.locator('[data-cy="data-row-title"]')
    for label in segment_labels(seg.files[0]):
        titles.filter(has_text=label).first.wait_for()
    # (Not a click on a segment's row: OHIF then moves to the segment's centre of mass, which for
    # segments on separate key slices is a slice that holds none of it.)
    ui.settled_canvas(page, lambda s: s.coloured > 0)
    shown = ui.canvas_pixels(page)
    shoot(page, f"overlay-seg-{seg.number}")
    page.locator('[data-cy="all-segments-visibility-toggle"]').click()
    page.mouse.move(0, 0)
    ui.settled_canvas(page, lambda s: s.coloured == 0)
    hidden = ui.canvas_pixels(page)
    shoot(page, f"overlay-seg-{seg.number}-hidden")
    assert shown.shape == hidden.shape
    changed = np.any(shown != hidden, axis=2)
    assert changed.sum() >= 50, f"the segmentation changed only {changed.sum()} pixels"
    # Where the pixels changed, the segment's colour was drawn over the grey CT.
    assert ui.coloured(shown)[changed].mean() > 0.9
    assert not ui.coloured(hidden).any()


def check_parametric_map(page: Any, study: Study, pmap: Series, shoot: Callable[[Any, str], Path]) -> None:
    """The Parametric Map is fused on the CT: the viewport still names the CT, and colour appears on
    a canvas that held none."""
    ui.wait_viewport_shows(page, study.source.description)
    stats = ui.settled_canvas(page, lambda s: s.coloured > 0)
    shoot(page, f"overlay-pmap-{pmap.number}")
    assert stats.coloured >= 50, stats
