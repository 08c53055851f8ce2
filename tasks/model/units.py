"""A backbone cut into trainable units, top (nearest the head) first: what fine-tuning unfreezes one by one.

An image backbone is cut from the top: unit 0 is the last block together with everything after it (timm's
`conv_head`/`bn2`), unit 1 the block below, ..., and the last unit is everything before the first block (the stem).
A text encoder's units are its layers (top first) and, last, the embeddings. Which cut applies is the modality's
choice (`tasks.modality`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


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
