"""overlay.blend and render: pure array in, array out; heat only over the body, faded at its edge."""

from __future__ import annotations

import numpy as np
import pytest

from onconode.reporting import overlay


def test_render_adds_a_caption_band_and_tints_only_the_heat() -> None:
    image = np.full((64, 80), 0.5, dtype=np.float32)
    heat = np.zeros((64, 80), dtype=np.float32)
    heat[10:20, 10:20] = 1.0
    out = overlay.render(image, heat, ["AI RESULT - NOT FOR DIAGNOSIS", "x"])
    assert out.dtype == np.uint8 and out.shape[1:] == (80, 3) and out.shape[0] > 64
    assert (out[40, 60] == 128).all()  # no heat: the grey slice as it was
    assert not (out[15, 15] == 128).all()  # heat: tinted
    assert out[64:].any()  # the caption is drawn


def test_heat_never_tints_outside_the_body_and_fades_at_its_edge() -> None:
    image = np.full((64, 64), 0.5, dtype=np.float32)
    heat = np.ones((64, 64), dtype=np.float32)
    body = np.zeros((64, 64), bool)
    body[16:48, 16:48] = True
    out = overlay.blend(image, heat, body)
    outside = out[~body]
    assert (outside == 128).all()
    tint_edge = np.abs(out[32, 16].astype(int) - 128).sum()
    tint_centre = np.abs(out[32, 32].astype(int) - 128).sum()
    assert 0 < tint_edge < tint_centre


def test_weak_heat_is_not_drawn() -> None:
    image = np.full((8, 8), 0.25, dtype=np.float32)
    out = overlay.blend(image, np.full((8, 8), overlay.HEAT_FLOOR * 0.9, np.float32))
    assert (out == 64).all()


@pytest.mark.parametrize("image, heat, lines, message", [
    (np.zeros((4, 4, 3)), np.zeros((4, 4)), ["x"], "2-D"),
    (np.zeros((4, 4)), np.zeros((4, 5)), ["x"], "one shape"),
    (np.zeros((4, 4)), np.zeros((4, 4)), [], "warning line"),
])
def test_render_refuses_bad_input(image: np.ndarray, heat: np.ndarray, lines: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        overlay.render(image, heat, lines)


@pytest.mark.parametrize("width", [96, 128, 256, 384, 512, 640, 1024])
def test_every_caption_line_ends_inside_the_picture(width: int) -> None:
    """A long caption line is drawn smaller, never cut at the right edge (a 512-wide CT slice cut the
    closing parenthesis of the study line): its last drawn column keeps clear of the edge."""
    lines = [overlay.WARNING_LINE, "mean probability of the 3 key slices 0.33 (no threshold: slices ranked only)",
             "this slice: probability 0.34 (per slice)", "chest-ct-nodule 2.1.3"]
    out = overlay.render(np.zeros((width, width), np.float32), np.zeros((width, width), np.float32), lines)
    band = out[width:]
    drawn = np.where(band.max(axis=(0, 2)) > 0)[0]
    assert drawn.max() < width - 2
