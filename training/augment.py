"""Light, batch-wise augmentation on already-normalised tensors.

Images are cached after ``to_model_input`` (normalised, padded), so geometry is applied with the
padding value kept (the node pads with ``pad_value`` too) and intensity changes are applied in the
[0, 1] scale and normalised again. Kept light: flips, small rotation/scale/shift, gain/offset.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from onconode.inference.models import Preprocess


class Augmenter:
    """Random flips, small affine and brightness/contrast, driven by one seeded generator."""

    def __init__(self, spec: Preprocess, generator: torch.Generator, max_degrees: float = 10.0,
                 max_scale: float = 0.1, max_shift: float = 0.05, max_gain: float = 0.15,
                 max_offset: float = 0.05):
        self.mean = torch.tensor(spec.normalize.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(spec.normalize.std).view(1, -1, 1, 1)
        self.pad = float(spec.resize.pad_value)
        self.generator = generator
        self.max_degrees, self.max_scale, self.max_shift = max_degrees, max_scale, max_shift
        self.max_gain, self.max_offset = max_gain, max_offset

    def _uniform(self, n: int, bound: float) -> torch.Tensor:
        return (torch.rand(n, generator=self.generator) * 2 - 1) * bound

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        n = batch.shape[0]
        unit = batch * self.std + self.mean   # back to [0, 1]
        flip = torch.rand(n, generator=self.generator) < 0.5
        unit = torch.where(flip.view(-1, 1, 1, 1), unit.flip(3), unit)
        angle = self._uniform(n, math.radians(self.max_degrees))
        scale = 1 + self._uniform(n, self.max_scale)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, self._uniform(n, self.max_shift)], 1),
                             torch.stack([sin, cos, self._uniform(n, self.max_shift)], 1)], 1)
        grid = F.affine_grid(theta, list(unit.shape), align_corners=False)
        unit = F.grid_sample(unit - self.pad, grid, align_corners=False, padding_mode="zeros") + self.pad
        gain = (1 + self._uniform(n, self.max_gain)).view(-1, 1, 1, 1)
        offset = self._uniform(n, self.max_offset).view(-1, 1, 1, 1)
        unit = (unit * gain + offset).clamp(0, 1)
        return ((unit - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
