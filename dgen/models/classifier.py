"""A small digit classifier whose penultimate layer is dgen's feature space for FID/KID.

No Inception weights can be downloaded where dgen is often run, so `dgen.eval.fid` trains this
network on the labelled dataset itself and measures "FID (classifier features)" in its 128-d
feature space (never to be reported as Inception FID).

    from dgen.models.classifier import DigitClassifier
    net = DigitClassifier(channels=1, image_size=32)
    logits = net(x)            # x: [B, 1, 32, 32] in [-1, 1] -> [B, 10]
    feats = net.features(x)    # [B, 128], after the ReLU of the feature layer

Three blocks Conv(3x3, pad 1) + BatchNorm + ReLU + MaxPool(2) with 16, 32, 64 channels, an adaptive
average pool to 4x4 (so 28, 32 and 64 px all work: 32 -> 4x4 exactly, 28 -> 3x3 -> 4x4, 64 -> 8x8 ->
4x4), Linear(1024 -> feature_dim) + ReLU, and a Linear head. About 0.36 M parameters at 1 channel.
"""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = (16, 32, 64)
POOL = 4  # side of the adaptive pool before the feature layer


class DigitClassifier(nn.Module):
    def __init__(self, channels: int = 1, image_size: int = 32, num_classes: int = 10, feature_dim: int = 128):
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"DigitClassifier takes 1 or 3 channels, got {channels}")
        if image_size < 8:
            raise ValueError(f"DigitClassifier needs images of at least 8 px, got {image_size}")
        # Recorded so that FID can bring other images to what the classifier was trained on.
        self.channels, self.image_size = channels, image_size
        self.num_classes, self.feature_dim = num_classes, feature_dim
        blocks, cin = [], channels
        for w in WIDTHS:
            blocks.append(nn.Sequential(nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                                        nn.MaxPool2d(2)))
            cin = w
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(POOL), nn.Flatten())
        self.feature = nn.Sequential(nn.Linear(WIDTHS[-1] * POOL * POOL, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] in [-1, 1] -> [B, feature_dim] (penultimate layer, after its activation)."""
        return self.feature(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
