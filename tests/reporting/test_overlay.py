"""overlay.render: pure array in, array out."""

from __future__ import annotations

import numpy as np
import pytest

from onconode.reporting import overlay


def test_render_adds_a_caption_band_and_tints_only_the_heat() -> None:
    image = np.full((64, 80), 0.5, dtype=np.float32)
    heat = np.zeros((64, 80), dtype=np.float32)
    heat[10:20, 10:20] = 1.0
    out = overlay.render(image, heat, overlay.caption_lines("m", "1.0", "malignant", 0.9))
    assert out.dtype == np.uint8 and out.shape[1:] == (80, 3) and out.shape[0] > 64
    assert (out[40, 60] == 128).all()  # no heat: the grey slice as it was
    assert not (out[15, 15] == 128).all()  # heat: tinted
    assert out[64:].any()  # the caption is drawn


def test_caption_opens_with_the_not_for_diagnosis_warning() -> None:
    lines = overlay.caption_lines("chest-ct-cancer", "1.0.0", "adenocarcinoma", 0.8123)
    assert lines[0] == "AI RESULT - NOT FOR DIAGNOSIS"
    assert "chest-ct-cancer 1.0.0" in lines and "adenocarcinoma: P=0.812" in lines


@pytest.mark.parametrize("image, heat, lines, message", [
    (np.zeros((4, 4, 3)), np.zeros((4, 4)), ["x"], "2-D"),
    (np.zeros((4, 4)), np.zeros((4, 5)), ["x"], "differ in shape"),
    (np.zeros((4, 4)), np.zeros((4, 4)), [], "warning line"),
])
def test_render_refuses_bad_input(image: np.ndarray, heat: np.ndarray, lines: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        overlay.render(image, heat, lines)
