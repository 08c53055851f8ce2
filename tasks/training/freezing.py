"""Which parts of the backbone train, at which learning rate, and what BatchNorm does: the fine-tuning strategies.

For a text backbone the units are its encoder layers (top first) and, last, the embeddings (`encoder_units`);
dropout is handled as BatchNorm is: every module of a frozen unit is in eval mode, so frozen layers compute exactly
the features the head was trained on.

The backbone is cut into units from the top: unit 0 is the last block together with everything after it (timm's
`conv_head`/`bn2`), unit 1 the block below, ..., and the last unit is everything before the first block (the stem).
A strategy says how many units train (`depth`): freeze 0, last_n n, full all, gradual one more every k epochs.
Unit i trains at `body_lr * layer_decay**i` (discriminative learning rates, as timm's --layer-decay and fastai's
`slice`); the head at `lr`.

BatchNorm in a frozen unit stays in eval mode: its running statistics do not move and its affine parameters do not
train (the bug behind Lightning #13902/#15062 is forgetting the first half). With `bn: eval`, BatchNorm in trainable
units keeps its running statistics too and trains only its affine parameters; with `bn: train` it updates them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from tasks.core.errors import UserError
from tasks.core.params import FinetuneParams


@dataclass
class Units:
    """Backbone parameters and modules grouped into units, top (nearest the head) first."""

    modules: list[list[nn.Module]]
    names: list[str]
    loose: list[nn.Parameter] = field(default_factory=list)  # held by the backbone itself (ViT cls_token, pos_embed)

    def __len__(self) -> int:
        return len(self.modules)

    def parameters(self, i: int) -> list[nn.Parameter]:
        """Unit i's parameters; the backbone's own (loose) parameters belong to the bottom unit, with the stem."""
        seen, out = set(), []
        for p in self.loose if i == len(self.modules) - 1 else []:
            seen.add(id(p))
            out.append(p)
        for m in self.modules[i]:
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out


def backbone_units(backbone: nn.Module, blocks: list[nn.Module]) -> Units:
    """Group a backbone's direct children and blocks into top-first units (see module docstring). Without a known
    block list the whole backbone is one unit."""
    if not blocks:
        return Units([[backbone]], ["backbone"])
    loose = list(backbone.parameters(recurse=False))
    block_ids = {id(b) for b in blocks}
    container = next((c for c in backbone.children() if any(id(m) in block_ids for m in c.children())), None)
    before, after, seen_blocks = [], [], False
    for child in backbone.children():
        if child is container or id(child) in block_ids:
            seen_blocks = True
            continue
        (after if seen_blocks else before).append(child)
    units = [[blocks[-1], *after]] + [[b] for b in reversed(blocks[:-1])]
    names = [f"block {len(blocks) - 1} + neck"] + [f"block {i}" for i in range(len(blocks) - 2, -1, -1)]
    if before or loose:
        units.append(before)
        names.append("stem")
    return Units(units, names, loose)


def encoder_units(encoder: nn.Module, layers: list[nn.Module]) -> Units:
    """A transformer encoder's units, top first: the last layer (with any pooler after it), each layer below, then
    the embeddings (the "stem")."""
    hf = getattr(encoder, "hf", encoder)
    after = [m for m in (getattr(hf, "pooler", None),) if m is not None]
    units = [[layers[-1], *after]] + [[layer] for layer in reversed(layers[:-1])] + [[hf.embeddings]]
    names = [f"layer {len(layers) - 1}"] + [f"layer {i}" for i in range(len(layers) - 2, -1, -1)] + ["embeddings"]
    return Units(units, names)


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
