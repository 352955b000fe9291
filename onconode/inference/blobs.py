"""How nodule-like each slice of a chest CT is, by a fixed filter: the strongest 3-D "dot" in the lung.

Why: trained on 17 patients, the chest model ranks the slices of one series barely better than
their level does. A Hessian dot-enhancement filter (Li, Sone & Doi 2003, Med Phys 30:2040) has
nothing fitted to data: it answers whether the grey values curve down in all three directions (a
sphere, a nodule) rather than in two (a tube, a vessel) or one (a wall). The manifest's
``slices.ranking`` says when the node ranks key slices by the model and this filter together
(``slices.aggregate``); training scores its out-of-fold slices with these same functions.

Input: HU slices as decoded (``shrink`` each as it streams past), their spacing in mm. Output: a
float per slice. Pure numpy and OpenCV: no files, no clock. Memory stays bounded: the shrunk slices
up to ``MAX_BYTES``, and the filter runs over slabs of slices with enough overlap that the result
equals a run over the whole volume.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from onconode.models import BlobRanking
from onconode.selection.region import BODY_HU, largest_filled

# Inside the body, air darker than this is lung (or airway); a pocket under 1 cm² is bowel gas.
AIR_HU = -400.0
MIN_AIR_MM2 = 100.0
# The lung field is closed with a disk this wide so that a nodule on the pleura stays inside it.
CLOSE_MM = 10.0
SLAB = 48  # slices filtered at once, before the overlap
# The shrunk slices are kept while the series is read; a series that would need more is ranked by
# the model alone (``affordable``): 1024 slices of 512×512.
MAX_BYTES = 256 * 1024 * 1024


# Spacings (mm) the filter trusts: outside them a header is wrong, and a 1 cm disk or a 6 mm blur
# in pixels would be absurd (or unaffordably large).
SPACING_MM = (0.05, 20.0)


def plausible(dz_mm: float | None, pixel_mm: float | None) -> bool:
    """Whether the slice and pixel spacing are known and physical."""
    low, high = SPACING_MM
    return dz_mm is not None and pixel_mm is not None and low <= dz_mm <= high and low <= pixel_mm <= high


def shrunk_shape(shape: tuple[int, int], spec: BlobRanking) -> tuple[int, int]:
    """(rows, columns) of a slice of ``shape`` once ``shrink`` has reduced it."""
    return max(1, shape[0] // spec.shrink), max(1, shape[1] // spec.shrink)


def affordable(count: int, shape: tuple[int, int], spec: BlobRanking) -> bool:
    """Whether ``count`` slices of ``shape`` fit the filter's memory once shrunk."""
    rows, cols = shrunk_shape(shape, spec)
    return count * rows * cols * 4 <= MAX_BYTES


def shrink(hu: np.ndarray, spec: BlobRanking) -> np.ndarray:
    """One decoded HU slice, clipped to the manifest's range and reduced by its factor (float32). A
    value that is no number (a broken rescale) reads as the range's low end: never the top rank."""
    low, high = spec.hu
    clipped = np.clip(np.nan_to_num(hu.astype(np.float32, copy=False), nan=low), low, high)
    if spec.shrink == 1:
        return clipped
    rows, cols = shrunk_shape(clipped.shape, spec)
    return cv2.resize(clipped, (cols, rows), interpolation=cv2.INTER_AREA)


def lung_field(hu: np.ndarray, mm_per_px: float) -> np.ndarray:
    """The lungs on one HU slice (bool): the body's inner air, holes filled (vessels, nodules),
    closed with a 1 cm disk (nodules on the pleura)."""
    body = largest_filled(hu > BODY_HU)
    air = (body & (hu < AIR_HU)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(air, connectivity=8)
    keep = np.zeros_like(air)
    for component in range(1, count):
        if stats[component, cv2.CC_STAT_AREA] * mm_per_px * mm_per_px >= MIN_AIR_MM2:
            keep[labels == component] = 1
    filled = np.zeros_like(keep)
    contours, _ = cv2.findContours(keep, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(filled, contours, -1, 1, thickness=-1)
    radius = max(1, round(CLOSE_MM / mm_per_px))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.morphologyEx(filled, cv2.MORPH_CLOSE, disk) > 0


def _z_kernel(sigma: float) -> np.ndarray:
    if sigma <= 0.3:  # under a third of a slice: smoothing across slices would change nothing
        return np.ones(1)
    radius = int(np.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-x ** 2 / (2 * sigma ** 2))
    return kernel / kernel.sum()


def _smooth(slab: np.ndarray, z_kernel: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing: in plane per slice, then along z (``slab`` already padded in z)."""
    plane = np.stack([cv2.GaussianBlur(s, (0, 0), sigma_px) for s in slab])
    if len(z_kernel) == 1:
        return plane
    # Along z as one 2-D filter over (slices, pixels): OpenCV's is several times numpy's speed.
    pad = len(z_kernel) // 2
    columns = plane.reshape(len(slab), -1)
    out = cv2.filter2D(columns, cv2.CV_32F, z_kernel.astype(np.float32).reshape(-1, 1),
                       borderType=cv2.BORDER_REPLICATE)
    return out[pad:len(slab) - pad].reshape(len(slab) - 2 * pad, *slab.shape[1:])


def symmetric_eigenvalues(h: Sequence[np.ndarray]) -> np.ndarray:
    """Eigenvalues (N, 3), descending, of symmetric 3×3 matrices given as their six entries
    (zz, yy, xx, zy, zx, yx), each (N,), in closed form (Smith 1961): a per-voxel LAPACK call
    would cost more than the filter itself."""
    a11, a22, a33, a12, a13, a23 = (np.asarray(v, np.float64) for v in h)
    q = (a11 + a22 + a33) / 3.0
    p1 = a12 ** 2 + a13 ** 2 + a23 ** 2
    p2 = (a11 - q) ** 2 + (a22 - q) ** 2 + (a33 - q) ** 2 + 2.0 * p1
    p = np.sqrt(p2 / 6.0)
    safe = np.where(p > 0, p, 1.0)
    b11, b22, b33 = (a11 - q) / safe, (a22 - q) / safe, (a33 - q) / safe
    b12, b13, b23 = a12 / safe, a13 / safe, a23 / safe
    det = b11 * (b22 * b33 - b23 ** 2) - b12 * (b12 * b33 - b23 * b13) + b13 * (b12 * b23 - b22 * b13)
    phi = np.arccos(np.clip(det / 2.0, -1.0, 1.0)) / 3.0
    first = q + 2.0 * p * np.cos(phi)
    third = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    second = 3.0 * q - first - third
    return np.stack([first, second, third], axis=1)


def dot_strength(eigenvalues: np.ndarray) -> np.ndarray:
    """Li et al.'s dot measure |λ3|²/|λ1| (|λ1| ≥ |λ2| ≥ |λ3|) where every eigenvalue is negative
    (bright in all three directions), else 0."""
    by_size = np.take_along_axis(eigenvalues, np.argsort(-np.abs(eigenvalues), axis=1), axis=1)
    bright = eigenvalues[:, 0] < 0  # the largest is negative: so are the others
    return np.where(bright, by_size[:, 2] ** 2 / np.maximum(np.abs(by_size[:, 0]), 1e-9), 0.0)


def _hessian_at(smooth: np.ndarray, at: tuple[np.ndarray, np.ndarray, np.ndarray],
                spacing: tuple[float, float, float]) -> list[np.ndarray]:
    """The six second derivatives (zz, yy, xx, zy, zx, yx) of ``smooth`` at the voxels ``at``, by
    central differences as ``np.gradient`` takes them, one full-size array alive at a time."""
    found: dict[tuple[int, int], np.ndarray] = {}
    for first in range(3):
        once = np.gradient(smooth, spacing[first], axis=first)
        for second in range(first, 3):
            found[(first, second)] = np.gradient(once, spacing[second], axis=second)[at]
        del once
    return [found[(0, 0)], found[(1, 1)], found[(2, 2)], found[(0, 1)], found[(0, 2)], found[(1, 2)]]


def dot_response(volume: np.ndarray, lung: np.ndarray, dz_mm: float, dxy_mm: float,
                 sigmas_mm: Sequence[float]) -> np.ndarray:
    """The strongest scale-normalised dot measure per voxel of the lung field (0 outside), float32
    (Z, Y, X), over ``sigmas_mm``. ``volume``: shrunk HU slices, in spatial order."""
    out = np.zeros(volume.shape, np.float32)
    for start, stop, block in _slabs(volume, lung, dz_mm, dxy_mm, sigmas_mm):
        out[start:stop] = block
    return out


def _slabs(volume: np.ndarray, lung: np.ndarray, dz_mm: float, dxy_mm: float,
           sigmas_mm: Sequence[float]) -> Iterator[tuple[int, int, np.ndarray]]:
    """``dot_response`` slab by slab: (first slice, end, response of those slices)."""
    count = len(volume)
    kernels = {s: _z_kernel(s / dz_mm) for s in sigmas_mm}
    # The smoothing reads real slices beyond the slab (below), so only the two differences after it
    # reach further: one slice each.
    overlap = 2
    for start in range(0, count, SLAB):
        stop = min(count, start + SLAB)
        block = np.zeros((stop - start, *volume.shape[1:]), np.float32)
        where = np.nonzero(lung[start:stop])
        if not len(where[0]):
            yield start, stop, block
            continue
        low, high = max(0, start - overlap), min(count, stop + overlap)
        # Only the lung's box in plane, with a margin the in-plane blur (4 sigma in OpenCV) and the
        # two differences cannot see across: the result inside is the whole slice's.
        margin = int(np.ceil(4 * max(sigmas_mm) / dxy_mm)) + 3
        y0, x0 = max(0, int(where[1].min()) - margin), max(0, int(where[2].min()) - margin)
        y1 = min(volume.shape[1], int(where[1].max()) + 1 + margin)
        x1 = min(volume.shape[2], int(where[2].max()) + 1 + margin)
        best = np.zeros(len(where[0]))
        for sigma in sigmas_mm:
            kernel = kernels[sigma]
            pad = len(kernel) // 2
            # Beyond the volume's ends the end slice repeats, as in a run over the whole volume.
            rows = np.clip(np.arange(low - pad, high + pad), 0, count - 1)
            smooth = _smooth(volume[rows, y0:y1, x0:x1], kernel, sigma / dxy_mm)
            at = (where[0] + start - low, where[1] - y0, where[2] - x0)
            hzz, hyy, hxx, hzy, hzx, hyx = _hessian_at(smooth, at, (dz_mm, dxy_mm, dxy_mm))
            del smooth
            # A matrix whose eigenvalues are all negative has a negative diagonal: the others read 0.
            bright = np.flatnonzero((hzz < 0) & (hyy < 0) & (hxx < 0))
            values = symmetric_eigenvalues([h[bright] for h in (hzz, hyy, hxx, hzy, hzx, hyx)])
            best[bright] = np.maximum(best[bright], dot_strength(values) * sigma * sigma)
        block[where] = best
        yield start, stop, block


def slice_scores(shrunk: np.ndarray | Sequence[np.ndarray], dz_mm: float, dxy_mm: float,
                 spec: BlobRanking) -> np.ndarray:
    """Per slice, the strongest dot in its lung field (float64, one per slice of ``shrunk``: a float32
    (Z, Y, X) array is used as it is, slices are stacked). ``dxy_mm``: the shrunk slices' pixel size."""
    volume = np.asarray(shrunk, dtype=np.float32)
    lung = np.stack([lung_field(s, dxy_mm) for s in volume])
    out = np.zeros(len(volume))
    for start, stop, block in _slabs(volume, lung, dz_mm, dxy_mm, spec.sigmas_mm):
        out[start:stop] = block.reshape(stop - start, -1).max(axis=1)
    return out


def within_ranks(values: np.ndarray) -> np.ndarray:
    """Each value's rank in ``values`` scaled to [0, 1] (ties by position), so two scores on
    different scales can be averaged."""
    rank = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return rank / max(1, len(values) - 1)
