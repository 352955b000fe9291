"""The nodule filter: a sphere answers, a vessel does not; slabs change nothing; ranks combine."""

from __future__ import annotations

import numpy as np
import pytest

from onconode.inference import blobs
from onconode.models import BlobRanking

SPEC = BlobRanking(sigmas_mm=(1.5, 2.5, 4.0, 6.0))


def _chest(slices: int = 40, size: int = 96) -> np.ndarray:
    """A crude chest: soft tissue with an air-filled lung in the middle (HU), 1 mm pixels."""
    hu = np.full((slices, size, size), 40.0, np.float32)
    hu[:, :2], hu[:, -2:], hu[:, :, :2], hu[:, :, -2:] = -1000, -1000, -1000, -1000  # air around the body
    hu[:, 15:81, 15:81] = -850.0
    return hu


def _ball(hu: np.ndarray, centre: tuple[float, float, float], radius_mm: float, dz: float) -> None:
    z, y, x = np.ogrid[:hu.shape[0], :hu.shape[1], :hu.shape[2]]
    inside = ((z - centre[0]) * dz) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius_mm ** 2
    hu[inside] = 30.0


def test_eigenvalues_in_closed_form_match_lapack() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 3, 3))
    a = a + a.transpose(0, 2, 1)
    a[:5] = np.diag([2.0, 2.0, 2.0])  # repeated eigenvalues: the formula's special case
    entries = [a[:, 0, 0], a[:, 1, 1], a[:, 2, 2], a[:, 0, 1], a[:, 0, 2], a[:, 1, 2]]
    assert np.allclose(blobs.symmetric_eigenvalues(entries), np.linalg.eigvalsh(a)[:, ::-1], atol=1e-9)


def test_a_nodule_answers_and_a_vessel_does_not() -> None:
    dz = 2.0
    hu = _chest()
    hu[:, 47:51, 30:34] = 30.0          # a vessel: a 4 mm tube through every slice
    _ball(hu, (20, 48, 62), 4.0, dz)    # a nodule: an 8 mm ball around slice 20
    scores = blobs.slice_scores([blobs.shrink(s, SPEC) for s in hu], dz, 2.0, SPEC)
    vessel_only = np.r_[scores[:15], scores[26:]]
    assert scores[20] == scores.max() and scores[20] > 4 * vessel_only.max()
    response = blobs.dot_response(np.stack([blobs.shrink(s, SPEC) for s in hu]),
                                  np.ones((40, 48, 48), bool), dz, 2.0, SPEC.sigmas_mm)
    peak = np.unravel_index(int(np.argmax(response)), response.shape)
    assert abs(peak[0] - 20) <= 1 and abs(peak[1] - 24) <= 1 and abs(peak[2] - 31) <= 1  # the ball, halved


def test_slab_by_slab_equals_the_whole_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    volume = rng.normal(-700, 200, size=(30, 40, 40)).astype(np.float32)
    lung = np.ones(volume.shape, bool)
    monkeypatch.setattr(blobs, "SLAB", 1000)
    whole = blobs.dot_response(volume, lung, 1.25, 1.4, SPEC.sigmas_mm)
    monkeypatch.setattr(blobs, "SLAB", 7)
    assert np.array_equal(blobs.dot_response(volume, lung, 1.25, 1.4, SPEC.sigmas_mm), whole)


def test_nothing_outside_the_lung_field_counts() -> None:
    hu = np.full((20, 64, 64), 40.0, np.float32)  # soft tissue only: no lung anywhere
    _ball(hu, (10, 32, 32), 4.0, 2.0)
    assert not blobs.slice_scores([blobs.shrink(s, SPEC) for s in hu], 2.0, 2.0, SPEC).any()


def test_shrink_clips_and_halves() -> None:
    out = blobs.shrink(np.array([[-3000, 5000], [0, 0]] * 2, np.int16).repeat(2, axis=1), SPEC)
    assert out.shape == (2, 2) and out.dtype == np.float32
    assert out.min() >= -1000 and out.max() <= 200
    broken = blobs.shrink(np.array([[np.nan, np.inf], [-np.inf, 0.0]], np.float32).repeat(2, 0).repeat(2, 1), SPEC)
    assert broken.tolist() == [[-1000.0, 200.0], [-1000.0, 0.0]]


def test_within_ranks_scale_any_scores_to_zero_one() -> None:
    assert blobs.within_ranks(np.array([5.0, -1.0, 100.0])).tolist() == [0.5, 0.0, 1.0]
    assert blobs.within_ranks(np.array([3.0])).tolist() == [0.0]


def test_the_lung_box_alone_gives_what_the_whole_slice_gives() -> None:
    """The filter runs only over the lung's box (with a margin): inside the lung the response is the
    one a run over the whole slice gives."""
    rng = np.random.default_rng(2)
    volume = rng.normal(-700, 200, size=(12, 80, 90)).astype(np.float32)
    lung = np.zeros(volume.shape, bool)
    lung[:, 30:45, 50:70] = True
    everywhere = blobs.dot_response(volume, np.ones(volume.shape, bool), 2.0, 1.4, SPEC.sigmas_mm)
    boxed = blobs.dot_response(volume, lung, 2.0, 1.4, SPEC.sigmas_mm)
    assert np.allclose(boxed[lung], everywhere[lung], rtol=1e-5, atol=1e-6) and not boxed[~lung].any()
