"""Batch-wise augmentation for scanner variation, on already-normalised tensors.

Slices are cached after the node's preprocessing (cropped, resized, padded), so geometry is applied
with the padding value kept (the node pads with ``pad_value`` too) and intensity changes are applied
in the [0, 1] scale and normalised again: flips, small rotation/scale/shift, gain/offset (a window
or a coil that sits a little differently), Gaussian noise (dose, field strength) and blur or
sharpening (reconstruction kernels, slice thickness). Lesion masks, when given, follow the same
flip and affine, so a loss on where the heat falls sees the lesion where the image shows it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from onconode.models import Preprocess


class Augmenter:
    """Random flips, small affine and brightness/contrast, driven by one seeded generator."""

    def __init__(self, spec: Preprocess, generator: torch.Generator, max_degrees: float = 10.0,
                 max_scale: float = 0.1, max_shift: float = 0.05, max_gain: float = 0.15,
                 max_offset: float = 0.05, max_noise: float = 0.03, kernel_probability: float = 0.5):
        self.mean = torch.tensor(spec.normalize.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(spec.normalize.std).view(1, -1, 1, 1)
        self.pad = float(spec.resize.pad_value)
        self.generator = generator
        self.max_degrees, self.max_scale, self.max_shift = max_degrees, max_scale, max_shift
        self.max_gain, self.max_offset = max_gain, max_offset
        self.max_noise, self.kernel_probability = max_noise, kernel_probability

    def _uniform(self, n: int, bound: float) -> torch.Tensor:
        return (torch.rand(n, generator=self.generator) * 2 - 1) * bound

    def __call__(self, batch: torch.Tensor, masks: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augmented batch (N, C, h, w), and the masks (N, h, w) moved with it (float, 0 or 1)."""
        n = batch.shape[0]
        unit = batch * self.std + self.mean   # back to [0, 1]
        flip = torch.rand(n, generator=self.generator) < 0.5
        unit = torch.where(flip.view(-1, 1, 1, 1), unit.flip(3), unit)
        if masks is not None:
            masks = torch.where(flip.view(-1, 1, 1), masks.flip(2), masks).float()
        angle = self._uniform(n, math.radians(self.max_degrees))
        scale = 1 + self._uniform(n, self.max_scale)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, self._uniform(n, self.max_shift)], 1),
                             torch.stack([sin, cos, self._uniform(n, self.max_shift)], 1)], 1)
        grid = F.affine_grid(theta, list(unit.shape), align_corners=False)
        unit = F.grid_sample(unit - self.pad, grid, align_corners=False, padding_mode="zeros") + self.pad
        if masks is not None:
            masks = F.grid_sample(masks[:, None], grid, mode="nearest", align_corners=False)[:, 0]
        gain = (1 + self._uniform(n, self.max_gain)).view(-1, 1, 1, 1)
        offset = self._uniform(n, self.max_offset).view(-1, 1, 1, 1)
        unit = unit * gain + offset
        unit = self._kernel(unit)
        noise = torch.rand(n, 1, 1, 1, generator=self.generator) * self.max_noise
        unit = (unit + noise * torch.randn(unit.shape, generator=self.generator)).clamp(0, 1)
        return ((unit - self.mean) / self.std).contiguous(memory_format=torch.channels_last), masks

    def _kernel(self, unit: torch.Tensor) -> torch.Tensor:
        """Blur (a soft kernel, a thick slice) or sharpen (a bone kernel) some of the images."""
        n, channels = unit.shape[:2]
        weights = torch.tensor([1.0, 2.0, 1.0])
        kernel = (weights[:, None] * weights[None, :] / 16.0).view(1, 1, 3, 3).repeat(channels, 1, 1, 1)
        blurred = F.conv2d(F.pad(unit, (1, 1, 1, 1), mode="replicate"), kernel, groups=channels)
        amount = (torch.rand(n, 1, 1, 1, generator=self.generator) * 2 - 1)  # < 0 sharpen, > 0 blur
        used = (torch.rand(n, 1, 1, 1, generator=self.generator) < self.kernel_probability).float()
        return unit + used * amount * (blurred - unit)
