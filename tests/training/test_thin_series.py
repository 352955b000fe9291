"""``training.thin_series.slabs``: the mean of the slices centred on each, edges repeated."""

from __future__ import annotations

import numpy as np


def test_slabs_average_the_centred_slices_and_repeat_the_edges() -> None:
    from training.thin_series import slabs
    ramp = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    out = slabs(ramp, 3)
    assert out.shape == ramp.shape and out.dtype == ramp.dtype
    assert np.allclose(out[:, 0, 0], [1 / 3, 1, 2, 3, 4, 14 / 3])
    assert np.array_equal(slabs(ramp, 1), ramp)
    assert np.allclose(slabs(np.full((4, 3, 3), 7.0, np.float32), 5), 7.0)
