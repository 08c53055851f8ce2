"""Stage `head`: train a classifier on cached train features.

The head is saved framework-neutral in `models/head.npz`: the feature standardisation (mean, scale), then its layers
(`weight_i`, `bias_i`), plus the class names. Logistic regression's and the linear SVM's decision functions are exactly
one linear layer; the MLP is two with a ReLU between. The exported ONNX graph is backbone + standardise + the same
layers + softmax (tasks.model.head_format, tasks.model.torch_head): one graph, no sklearn at serving time.

Features are never loaded whole: the fit streams them from the feature store's shards in bounded chunks
(tasks.training.feature_rows), so the stage's memory is flat in the data's size. `--dask ADDRESS` (or `local`, or
$HEADSTART_HEAD_DASK) computes the linear head's loss and gradient shard by shard on a Dask cluster instead.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from tasks.core.errors import UserError
from tasks.core.files import atomic_write_text
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths, default_paths
from tasks.core.progress import log
from tasks.core.stage_cli import run_stage_cli
from tasks.dataset.manifest import split_keys_and_labels
from tasks.extraction.feature_store import open_store
from tasks.model.finetune_record import write_finetune_start
from tasks.model.head_format import Head
from tasks.training.chunk_sums import LocalSums
from tasks.training.feature_rows import CHUNK_BYTES, FeatureRows
from tasks.training.linear_head import fit_linear


@dataclass
class HeadSummary:
    """What the head stage trained."""

    classes: list[str]
    n_train: int
    train_accuracy: float
    val_accuracy: float | None
    seconds: float
    path: str


def split_feature_rows(params: Params, paths: ProjectPaths, split: str, cache_bytes: int = 0):
    """(FeatureRows, labels, fingerprint) of one split: index sets over the store's shards, nothing read yet."""
    keys, labels = split_keys_and_labels(paths, split)
    store = open_store(params, paths)
    store.check_recipe(params)
    return FeatureRows.from_store(store, keys, CHUNK_BYTES, cache_bytes), labels, store.fingerprint


def accuracy(head: Head, rows: FeatureRows, labels: np.ndarray) -> float | None:
    """Share of `rows` whose top logit names their label (None without rows), chunk by chunk."""
    if not rows.n:
        return None
    names, right = np.array(head.classes), 0
    for positions, x in rows.chunks():
        right += int((names[head.logits(x).argmax(1)] == labels[positions]).sum())
    return right / rows.n


def run_head(params: Params, paths: ProjectPaths | None = None, dask: str | None = None) -> HeadSummary:
    """Train the head on train features and save it; report train and val accuracy. head.json records how it was
    fitted (the C used, and with head.C=auto every C's score; iterations, passes over the data, convergence);
    finetune_start.json what the fine-tune stage starts from (`write_finetune_start`)."""
    paths = paths or default_paths()
    t0 = time.perf_counter()
    train, y, fp = split_feature_rows(params, paths, "train", params.head.memory_mb << 20)
    if len(set(y)) < 2:
        raise UserError(f"{paths.manifest}: train split has {len(set(y))} class(es); need at least 2")
    val, yv, _ = split_feature_rows(params, paths, "val", 0)
    fit = None
    if params.head.type == "mlp":
        from tasks.training.mlp_fit import fit_mlp

        head = fit_mlp(train, y, val, yv, params, fp)
    else:
        dask = dask or os.environ.get("HEADSTART_HEAD_DASK") or None
        if dask:
            from tasks.training.dask_sums import DaskSums

            sums = DaskSums(train, dask)
        else:
            sums = LocalSums(train)
        try:
            head, fit = fit_linear(sums, y, params, fp)
        finally:
            sums.close()
    train_acc, val_acc = accuracy(head, train, y), accuracy(head, val, yv)
    head.save(paths.head)
    write_finetune_start(paths, params.finetune.strategy)
    summary = HeadSummary(head.classes, len(y), train_acc, val_acc, time.perf_counter() - t0, str(paths.head))
    record = asdict(summary) | {"params": params.head.model_dump(), "fingerprint": fp}
    if fit is not None:
        record["fit"] = asdict(fit) | ({"dask": dask} if dask else {})
    atomic_write_text(paths.models / "head.json", json.dumps(record, indent=2))
    val_text = f"{val_acc:.3f}" if val_acc is not None else "n/a"
    what = f"mlp ({len(head.layers[0][1])} hidden)" if head.kind == "mlp" else f"{head.kind} (C={fit.C:g})"
    log(f"head: {what} on {len(y)} train samples, {len(head.classes)} classes: "
        f"train acc {train_acc:.3f}, val acc {val_text} in {summary.seconds:.1f}s -> {paths.head.relative_to(paths.root)}")
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--dask", default=None, metavar="ADDRESS",
                    help="fit the linear head's loss and gradient on this Dask scheduler (or 'local')")
    known, rest = ap.parse_known_args(argv)
    run_stage_cli(lambda params: run_head(params, dask=known.dask), __name__, rest)


if __name__ == "__main__":
    main()
