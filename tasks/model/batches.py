"""How a batch of raw inputs becomes the tensor a fine-tuning step feeds the model: images through augmentation
(uint8 in, uint8 out: the model normalises), token ids as they are."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torchvision.transforms import v2

from tasks.core.params import AugmentParams


def make_augment(a: AugmentParams, size: int) -> v2.Compose:
    """Per-image augmentation of uint8 CHW tensors: random resized crop, horizontal flip, colour jitter (each
    optional); output size `size`, dtype uint8."""
    steps = []
    if a.crop_scale < 1:
        steps.append(v2.RandomResizedCrop(size, scale=(a.crop_scale, 1.0), antialias=True))
    if a.flip:
        steps.append(v2.RandomHorizontalFlip())
    if a.color_jitter:
        steps.append(v2.ColorJitter(a.color_jitter, a.color_jitter, a.color_jitter))
    return v2.Compose(steps) if steps else v2.Identity()


def augmented_batches(augment) -> Callable[[np.ndarray], torch.Tensor]:
    """uint8 NHWC array -> the batch tensor a train step feeds the model: each image through `augment`."""
    def make(images: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        return torch.stack([augment(img) for img in pixels]).permute(0, 2, 3, 1)
    return make


def token_batches(ids: np.ndarray) -> torch.Tensor:
    """int64 (N, L) token ids padded with [PAD] -> the batch tensor a text model's train step takes (no augmentation:
    the model cuts the batch to its longest row)."""
    return torch.from_numpy(np.ascontiguousarray(ids))
