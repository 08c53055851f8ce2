"""The torch twin of a saved Head (standardise + layers), and fresh layers for heads trained in torch.

`HeadModule(head)` computes exactly `head.logits` (float32): export puts it after the backbone, fine-tuning trains it.
`module_to_head` reads the (possibly fine-tuned) weights back into a Head.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tasks.model.head_format import Head


class HeadModule(nn.Module):
    """(features - mean) / scale, then the head's linear layers with ReLU (and dropout while training) between."""

    def __init__(self, head: Head, dropout: float = 0.0):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(head.mean, dtype=torch.float32))
        self.register_buffer("inv_scale", torch.as_tensor(1.0 / head.scale, dtype=torch.float32))
        layers: list[nn.Module] = []
        for i, (w, b) in enumerate(head.layers):
            linear = nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
                linear.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
            layers.append(linear)
            if i < len(head.layers) - 1:
                layers += [nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        self.net = nn.Sequential(*layers)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net((feats - self.mean) * self.inv_scale)


def module_to_head(module: HeadModule, like: Head) -> Head:
    """A Head with `module`'s current weights and `like`'s classes, fingerprint and kind."""
    linears = [m for m in module.net if isinstance(m, nn.Linear)]
    layers = [(m.weight.detach().cpu().double().numpy(), m.bias.detach().cpu().double().numpy()) for m in linears]
    return Head(layers, like.classes, like.fingerprint, module.mean.cpu().double().numpy(),
                1.0 / module.inv_scale.cpu().double().numpy(), like.kind)


def fresh_layers(shapes: list[tuple[int, int]], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of new nn.Linear(d_in, d_out) layers in order, with PyTorch's default initialisation, seeded."""
    torch.manual_seed(seed)
    layers = []
    for d_in, d_out in shapes:
        fresh = nn.Linear(d_in, d_out)
        layers.append((fresh.weight.detach().double().numpy(), fresh.bias.detach().double().numpy()))
    return layers


def random_like(head: Head, seed: int) -> Head:
    """A head of the same shape, freshly initialised: fine-tuning's `init: random`."""
    layers = fresh_layers([(w.shape[1], w.shape[0]) for w, _ in head.layers], seed)
    return Head(layers, head.classes, head.fingerprint, head.mean, head.scale, head.kind)
