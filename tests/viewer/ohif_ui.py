"""What a reader does and sees in OHIF Viewer 3 (3.13), in Playwright terms.

The selectors are OHIF's own ``data-cy`` attributes (its Cypress tests use them): the study browser's
thumbnails carry ``data-series`` (the Series Number), the viewport's overlay sits in
``viewport-overlay-top-left``, the image is drawn on ``canvas.cornerstone-canvas`` and annotations
(SR content) on the viewport's ``svg.svg-layer``. Every wait is bounded.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

VIEWPORT = '[data-cy="viewport-pane"]'
CANVAS = f"{VIEWPORT} canvas.cornerstone-canvas"
THUMBNAIL = '[data-cy="study-browser-thumbnail"], [data-cy="study-browser-thumbnail-no-image"]'
# A pixel is "coloured" when its channels differ by more than this: the CT is drawn in grey, so any
# colour on its canvas comes from an overlay (segment colours, a heat-map palette).
COLOURED = 40
LIT = 30  # r+g+b above this: not black
# What OHIF 3.13 logs when it drops a TID 1500 measurement that has no SCOORD/SCOORD3D
# (extensions/cornerstone-dicom-sr, _processNonGeometricallyDefinedMeasurement).
SR_SKIPPED = "contains no SCOORD or SCOORD3D entry"


@dataclass(frozen=True)
class CanvasStats:
    width: int
    height: int
    lit: int
    coloured: int

    @property
    def lit_fraction(self) -> float:
        return self.lit / max(1, self.width * self.height)


STATS_JS = f"""() => {{
  const c = document.querySelector('{CANVAS}');
  if (!c || !c.width || !c.height) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lit = 0, coloured = 0;
  for (let i = 0; i < d.length; i += 4) {{
    const r = d[i], g = d[i + 1], b = d[i + 2];
    if (r + g + b > {LIT}) lit++;
    if (Math.max(r, g, b) - Math.min(r, g, b) > {COLOURED}) coloured++;
  }}
  return {{width: c.width, height: c.height, lit, coloured}};
}}"""


def open_viewer(page: Any, base_url: str, study_uid: str) -> None:
    page.goto(f"{base_url}/viewer?StudyInstanceUIDs={study_uid}")


def thumbnail(page: Any, series_number: int) -> Any:
    """The study browser's entry for a series (OHIF writes the Series Number into ``data-series``)."""
    return page.locator(f'[data-series="{series_number}"]').and_(page.locator(THUMBNAIL))


def open_series(page: Any, series_number: int) -> None:
    """Double-click a series in the study browser: OHIF loads it into the active viewport."""
    entry = thumbnail(page, series_number)
    entry.wait_for()
    entry.dblclick()


def step_measurement(page: Any, step: int = 1) -> None:
    """Press the SR viewport's arrow to the next (1) or previous (-1) measurement, as a reader does."""
    side = "right" if step > 0 else "left"
    page.locator(f'{VIEWPORT} [data-cy="viewport-action-arrows-{side}"] svg').first.click()


def viewport_description(page: Any) -> str:
    return str(page.locator(f'{VIEWPORT} [data-cy="viewport-overlay-top-left"]').inner_text())


def wait_viewport_shows(page: Any, description: str, timeout_ms: int = 20_000) -> None:
    """Until the viewport's overlay names the series it displays."""
    page.locator(f'{VIEWPORT} [data-cy="viewport-overlay-top-left"]', has_text=description).wait_for(
        timeout=timeout_ms)


def canvas_stats(page: Any) -> CanvasStats | None:
    found = page.evaluate(STATS_JS)
    return None if found is None else CanvasStats(**found)


def settled_canvas(page: Any, ready: Any, timeout: float = 20.0) -> CanvasStats:
    """The canvas's statistics once ``ready(stats)`` holds and two reads 0.25 s apart agree (the
    image and any overlay have finished drawing). Fails naming the last statistics seen."""
    deadline = time.monotonic() + timeout
    previous: CanvasStats | None = None
    while time.monotonic() < deadline:
        stats = canvas_stats(page)
        if stats is not None and ready(stats) and stats == previous:
            return stats
        previous = stats
        page.wait_for_timeout(250)
    raise AssertionError(f"viewport canvas did not settle within {timeout} s (last: {previous})")


def canvas_pixels(page: Any) -> np.ndarray:
    """The viewport canvas as RGB uint8 (H, W, 3), read back through ``toDataURL`` (same origin)."""
    url = page.evaluate(f"() => document.querySelector('{CANVAS}').toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def coloured(pixels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose channels differ by more than ``COLOURED``."""
    wide = pixels.astype(np.int16)
    return (wide.max(axis=2) - wide.min(axis=2)) > COLOURED


def answer_prompt(page: Any, question: str, answer: str, timeout_ms: int = 10_000) -> None:
    """OHIF asks in the viewport before it opens a SEG ("Do you want to open this Segmentation?") or
    tracks an SR's measurements; answer when the question is there."""
    prompt = page.get_by_text(question)
    prompt.wait_for(timeout=timeout_ms)
    page.get_by_role("button", name=answer, exact=True).click()
    prompt.wait_for(state="hidden", timeout=timeout_ms)


def svg_text(page: Any) -> str:
    """All text drawn on the viewport's annotation layer (SR measurements' labels) now; empty when
    the viewport has no such layer (an SR viewport with nothing to draw has none)."""
    return str(page.evaluate(f"() => document.querySelector('{VIEWPORT} svg.svg-layer')?.textContent || ''"))
