"""Which parts of the backbone train, at which learning rate, and what BatchNorm does: the fine-tuning strategies.

The backbone comes cut into units, top first (`tasks.model.units`, chosen by the modality). Dropout is handled as
BatchNorm is: every module of a frozen unit is in eval mode, so frozen layers compute exactly the features the head
was trained on. A strategy says how many units train (`depth`): freeze 0, last_n n, full all, gradual one more every k epochs.
Unit i trains at `body_lr * layer_decay**i` (discriminative learning rates, as timm's --layer-decay and fastai's
`slice`); the head at `lr`.

BatchNorm in a frozen unit stays in eval mode: its running statistics do not move and its affine parameters do not
train (the bug behind Lightning #13902/#15062 is forgetting the first half). With `bn: eval`, BatchNorm in trainable
units keeps its running statistics too and trains only its affine parameters; with `bn: train` it updates them.
"""

from __future__ import annotations

import math

from torch import nn

from tasks.core.errors import UserError
from tasks.core.params import FinetuneParams
from tasks.model.units import Units


def depth_at(p: FinetuneParams, epoch: int, n_units: int) -> int:
    """How many units (from the top) train in `epoch` (1-based) under the strategy."""
    if p.strategy == "freeze":
        return 0
    if p.strategy == "full":
        return n_units
    if p.strategy == "last_n":
        return min(p.last_n, n_units)
    if p.strategy == "gradual":
        return min(n_units, 1 + (epoch - 1) // p.gradual_every)
    raise UserError(f"finetune.strategy: '{p.strategy}' does not train")


def check_strategy(p: FinetuneParams, units: Units, backbone_name: str) -> None:
    """Block-wise strategies need a block list; say so in one line when the backbone has none."""
    if p.strategy in ("last_n", "gradual") and len(units) == 1 and units.names == ["backbone"]:
        raise UserError(f"finetune.strategy={p.strategy}: backbone '{backbone_name}' has no known block list; "
                        f"use finetune.strategy=full or freeze")


def apply_depth(units: Units, depth: int) -> None:
    """Units [0, depth) train; the rest are frozen (requires_grad False)."""
    for i in range(len(units)):
        for param in units.parameters(i):
            param.requires_grad_(i < depth)


def set_train_modes(model: nn.Module, units: Units, depth: int, bn: str) -> None:
    """model.train(), then eval mode wherever the forward pass must stay what it was: every module of a frozen unit
    (BatchNorm statistics, and no dropout or stochastic depth on frozen features), the backbone's own forward (its
    pre-logits dropout) when no unit trains, and BatchNorm of trainable units when `bn == "eval"`."""
    model.train()
    if depth == 0 and hasattr(model, "backbone"):
        model.backbone.train(False)
    for i, unit in enumerate(units.modules):
        for m in unit:
            if i >= depth:
                m.eval()
            elif bn == "eval":
                for sub in m.modules():
                    if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                        sub.eval()


def param_groups(head: nn.Module, units: Units, p: FinetuneParams) -> list[dict]:
    """AdamW groups: the head at `lr`, unit i at `body_lr * layer_decay**i`; biases and norm weights (1-D tensors)
    without weight decay, as timm and fastai do."""
    groups = []

    def add(params, lr, name):
        decay = [q for q in params if q.ndim > 1]
        no_decay = [q for q in params if q.ndim <= 1]
        for ps, wd, tag in ((decay, p.weight_decay, ""), (no_decay, 0.0, " (no decay)")):
            if ps:
                groups.append({"params": ps, "lr": lr, "initial_lr": lr, "weight_decay": wd, "name": name + tag})

    add(list(head.parameters()), p.lr, "head")
    for i in range(len(units)):
        add(units.parameters(i), p.body_lr * p.layer_decay**i, units.names[i])
    return groups


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warm-up over `warmup` steps, then cosine decay to zero at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
