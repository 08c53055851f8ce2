"""The MLP head on cached features: one hidden layer in torch, AdamW, the epoch with the best val accuracy kept."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tasks.core.errors import UserError
from tasks.core.params import Params
from tasks.core.progress import log
from tasks.model.head_format import Head
from tasks.model.linear_fit import class_weights, standardisation
from tasks.model.torch_head import HeadModule, fresh_layers, module_to_head


def _holdout(y: np.ndarray, seed: int, share: float = 0.1) -> np.ndarray:
    """Boolean mask of a stratified `share` of rows (at least one per class with 2+ rows) for early stopping."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) >= 2:
            mask[rng.choice(idx, max(1, int(round(share * len(idx)))), replace=False)] = True
    return mask


def fit_mlp(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, params: Params, fingerprint: str) -> Head:
    """Train a one-hidden-layer MLP on standardised features with AdamW (class-weighted cross-entropy per
    head.class_weight); keep the epoch with the best val accuracy
    (ties: lower val loss) and stop after `head.mlp.patience` epochs without one. Without val rows, a stratified
    10 % of train is held out for this. Deterministic for a given seed (CPU)."""
    p = params.head.mlp
    if not len(yv):
        held = _holdout(y, params.seed)
        if not held.any():
            raise UserError("head.type=mlp needs a val split (ingest.val_fraction > 0) or at least 2 train images in "
                            "some class to hold out for early stopping")
        x, y, xv, yv = x[~held], y[~held], x[held], y[held]
        log(f"head: no val split; holding out {held.sum()} train images for early stopping")
    classes = sorted(set(y))
    index = {c: i for i, c in enumerate(classes)}
    mu, sigma = standardisation(x, params)
    init = Head(fresh_layers([(x.shape[1], p.hidden), (p.hidden, len(classes))], params.seed), classes, fingerprint,
                mu, sigma, "mlp")
    model = HeadModule(init, dropout=p.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor([index[c] for c in y])
    weight = class_weights(params.head, set(classes))
    if weight == "balanced":  # as scikit-learn: n / (classes * count)
        counts = np.bincount(yt.numpy(), minlength=len(classes))
        weight = {c: len(y) / (len(classes) * max(1, counts[i])) for i, c in enumerate(classes)}
    class_w = torch.as_tensor([weight[c] for c in classes], dtype=torch.float32) if weight else None
    xvt = torch.as_tensor(xv, dtype=torch.float32)
    yvt = torch.as_tensor([index.get(c, -1) for c in yv])
    gen = torch.Generator().manual_seed(params.seed)
    best, best_state, best_epoch, stale = (-1.0, float("inf")), None, 0, 0
    for epoch in range(1, p.max_epochs + 1):
        model.train()
        for batch in torch.randperm(len(yt), generator=gen).split(p.batch_size):
            loss = nn.functional.cross_entropy(model(xt[batch]), yt[batch], weight=class_w)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(xvt)
            acc = float((logits.argmax(1) == yvt).float().mean())
            known = yvt >= 0
            vloss = float(nn.functional.cross_entropy(logits[known], yvt[known])) if known.any() else 0.0
        if (acc, -vloss) > (best[0], -best[1]):
            best, best_epoch, stale = (acc, vloss), epoch, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= p.patience:
                break
    model.load_state_dict(best_state)
    log(f"head: mlp kept epoch {best_epoch} of {epoch} (val acc {best[0]:.3f}, val loss {best[1]:.3f})")
    return module_to_head(model, init)
