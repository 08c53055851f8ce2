"""The model as it ships and trains: uint8 RGB NHWC images in, scaling and normalisation inside, features (or logits
and probabilities, with a head) out."""

from __future__ import annotations

import torch
from torch import nn


class ImageModel(nn.Module):
    """uint8 RGB NHWC images -> backbone features (and, with a head, logits and probabilities).

    Scaling and normalisation live here so the exported graph takes raw pixels: the same module computes training
    features and serves predictions. NHWC -> NCHW via permute yields channels_last memory, which convolutions prefer.
    """

    def __init__(self, backbone: nn.Module, mean, std, head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.register_buffer("scale", (1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))).view(1, 3, 1, 1))
        self.register_buffer("shift", (torch.tensor(mean, dtype=torch.float32) / torch.tensor(std)).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor):
        x = images.permute(0, 3, 1, 2).float() * self.scale - self.shift
        feats = self.backbone(x)
        if self.head is None:
            return feats
        logits = self.head(feats)
        return logits, torch.softmax(logits, dim=1)
