"""The MLP head on cached features: one hidden layer in torch, AdamW, the epoch with the best val accuracy kept.

Trained in mini-batches streamed from the feature store's shards (tasks.training.feature_rows): each epoch visits the
chunks in a seeded random order and shuffles the rows within each chunk, so memory stays flat in the data's size (a
split that fits head.memory_mb is read once and shuffled whole, as before).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tasks.core.errors import UserError
from tasks.core.params import Params
from tasks.core.progress import log
from tasks.model.head_format import Head
from tasks.model.torch_head import HeadModule, fresh_layers, module_to_head
from tasks.training.chunk_sums import LocalSums
from tasks.training.class_weights import class_weight_map
from tasks.training.feature_rows import FeatureRows
from tasks.training.linear_head import standardisation


def _holdout(y: np.ndarray, seed: int, share: float = 0.1) -> np.ndarray:
    """Boolean mask of a stratified `share` of rows (at least one per class with 2+ rows) for early stopping."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) >= 2:
            mask[rng.choice(idx, max(1, int(round(share * len(idx)))), replace=False)] = True
    return mask


def _epoch_batches(rows: FeatureRows, gen: torch.Generator, batch_size: int):
    """(positions, rows) mini-batches of one epoch: chunks in a random order, rows shuffled within each chunk. When
    the whole split is one cached chunk this is a plain random permutation of all rows."""
    order = torch.randperm(rows.n_chunks(), generator=gen).tolist()
    for positions, x in rows.chunks(order):
        xt = torch.from_numpy(np.ascontiguousarray(x))
        for batch in torch.randperm(len(positions), generator=gen).split(batch_size):
            yield positions[batch.numpy()], xt[batch]


def _val_scores(model, rows: FeatureRows, yv: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy over rows whose class the head knows) on the val rows."""
    right, loss, known_n = 0, 0.0, 0
    with torch.no_grad():
        for positions, x in rows.chunks():
            logits = model(torch.from_numpy(np.ascontiguousarray(x)))
            target = yv[torch.from_numpy(positions)]
            right += int((logits.argmax(1) == target).sum())
            known = target >= 0
            if known.any():
                loss += float(nn.functional.cross_entropy(logits[known], target[known], reduction="sum"))
                known_n += int(known.sum())
    return right / max(rows.n, 1), loss / max(known_n, 1)


def fit_mlp(train: FeatureRows, y: np.ndarray, val: FeatureRows, yv: np.ndarray, params: Params,
            fingerprint: str) -> Head:
    """Train a one-hidden-layer MLP on standardised features with AdamW (class-weighted cross-entropy per
    head.class_weight); keep the epoch with the best val accuracy (ties: lower val loss) and stop after
    `head.mlp.patience` epochs without one. Without val rows, a stratified 10 % of train is held out for this.
    Deterministic for a given seed (CPU)."""
    p = params.head.mlp
    if not val.n:
        held = _holdout(y, params.seed)
        if not held.any():
            raise UserError("head.type=mlp needs a val split (ingest.val_fraction > 0) or at least 2 train images in "
                            "some class to hold out for early stopping")
        train, val, yv = train.subset(~held), train.subset(held), y
        log(f"head: no val split; holding out {held.sum()} train images for early stopping")
    classes = sorted({str(c) for c in y[np.concatenate([s.positions for s in train.shards])]})
    index = {c: i for i, c in enumerate(classes)}
    mu, sigma = standardisation(LocalSums(train), train.dim, params.head.standardize)
    init = Head(fresh_layers([(train.dim, p.hidden), (p.hidden, len(classes))], params.seed), classes, fingerprint,
                mu.astype(np.float64), sigma.astype(np.float64), "mlp")
    model = HeadModule(init, dropout=p.dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    yt = torch.as_tensor([index.get(str(c), -1) for c in y])
    counts = np.bincount(yt.numpy()[yt.numpy() >= 0], minlength=len(classes))
    weight = class_weight_map(params.head, classes, counts)
    class_w = torch.as_tensor([weight[c] for c in classes], dtype=torch.float32) if weight else None
    yvt = torch.as_tensor([index.get(str(c), -1) for c in yv])
    gen = torch.Generator().manual_seed(params.seed)
    best, best_state, best_epoch, stale = (-1.0, float("inf")), None, 0, 0
    for epoch in range(1, p.max_epochs + 1):
        model.train()
        for positions, xb in _epoch_batches(train, gen, p.batch_size):
            loss = nn.functional.cross_entropy(model(xb), yt[torch.from_numpy(positions)], weight=class_w)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        acc, vloss = _val_scores(model, val, yvt)
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
