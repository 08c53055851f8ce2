"""Stage `head`: train a classifier on cached train features.

The head is saved framework-neutral in `models/head.npz`: the feature standardisation (mean, scale), then its layers
(`weight_i`, `bias_i`), plus the class names. Logistic regression's and the linear SVM's decision functions are exactly
one linear layer; the MLP is two with a ReLU between. The exported ONNX graph is backbone + standardise + the same
layers + softmax (tasks.model.head_format, tasks.model.torch_head): one graph, no sklearn at serving time.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np

from tasks.core.errors import UserError
from tasks.core.files import atomic_write_text
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths, default_paths
from tasks.core.progress import log
from tasks.core.stage_cli import run_stage_cli
from tasks.extraction.feature_store import split_features
from tasks.model.linear_fit import fit_linear


@dataclass
class HeadSummary:
    """What the head stage trained."""

    classes: list[str]
    n_train: int
    train_accuracy: float
    val_accuracy: float | None
    seconds: float
    path: str


def run_head(params: Params, paths: ProjectPaths | None = None) -> HeadSummary:
    """Train the head on train features and save it as a linear layer; report train and val accuracy."""
    paths = paths or default_paths()
    t0 = time.perf_counter()
    x, y, _, fp = split_features(params, paths, "train")
    if len(set(y)) < 2:
        raise UserError(f"{paths.manifest}: train split has {len(set(y))} class(es); need at least 2")
    xv, yv, _, _ = split_features(params, paths, "val")
    if params.head.type == "mlp":
        from tasks.model.mlp_fit import fit_mlp

        head = fit_mlp(x, y, xv, yv, params, fp)
    else:
        head = fit_linear(x, y, params, fp)
    classes = head.classes
    train_acc = float((np.array(classes)[head.logits(x).argmax(1)] == y).mean())
    val_acc = float((np.array(classes)[head.logits(xv).argmax(1)] == yv).mean()) if len(yv) else None
    head.save(paths.head)
    summary = HeadSummary(classes, len(y), train_acc, val_acc, time.perf_counter() - t0, str(paths.head))
    atomic_write_text(paths.models / "head.json", json.dumps(asdict(summary) | {"params": params.head.model_dump(),
                                                                                "fingerprint": fp}, indent=2))
    val = f"{val_acc:.3f}" if val_acc is not None else "n/a"
    what = f"mlp ({len(head.layers[0][1])} hidden)" if head.kind == "mlp" else f"{head.kind} (C={params.head.C})"
    log(f"head: {what} on {len(y)} train samples, {len(classes)} classes: "
        f"train acc {train_acc:.3f}, val acc {val} in {summary.seconds:.1f}s -> {paths.head.relative_to(paths.root)}")
    return summary


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_head, __name__, argv)


if __name__ == "__main__":
    main()
