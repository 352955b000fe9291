"""The one place selection looks at pixels: a few slices of a series whose headers cannot say what
body region it shows. Decoding is the costly part, so it samples ``SAMPLES`` slices evenly along
the series and stops there; every other decision is made from headers.
"""

from __future__ import annotations

import numpy as np

from onconode.selection import volume
from onconode.selection.profile import PixelLook
from onconode.selection.region import lung_share, outline_mm
from onconode.selection.series import SeriesInfo

SAMPLES = 9


def look(info: SeriesInfo) -> PixelLook:
    """Lung shares (CT) or head outlines (MR) of up to ``SAMPLES`` slices spread over the series.

    A slice that cannot be decoded is skipped: selection must not fail a study that the analysis
    itself would then report on with a proper reason.
    """
    try:
        vol = volume.build_volume(info)
    except ValueError:
        return PixelLook()
    count = len(vol.slices)
    picks = sorted({int(i) for i in np.linspace(0, count - 1, min(SAMPLES, count)).round()})
    shares: list[float] = []
    outlines: list[tuple[float, float]] = []
    spacing = info.first.pixel_spacing
    for index in picks:
        try:
            values = volume.read_slice(vol.slices[index])
        except volume.PixelDecodeError:
            continue
        if vol.modality == "CT":
            shares.append(lung_share(values))
        elif vol.modality == "MR":
            size = outline_mm(values, spacing)
            if size is not None:
                outlines.append(size)
    return PixelLook(tuple(shares), tuple(outlines))
