"""Stage `head`: train a classifier on cached train features.

The head is saved framework-neutral in `models/head.npz`: the feature standardisation (mean, scale), then its layers
(`weight_i`, `bias_i`), plus the class names. Logistic regression's and the linear SVM's decision functions are exactly
one linear layer; the MLP is two with a ReLU between. The exported ONNX graph is backbone + standardise + the same
layers + softmax (tasks.head_module builds the torch twin): one graph, no sklearn at serving time.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import LinearSVC
from sklearn.preprocessing import StandardScaler

from tasks.atomic import atomic_path, atomic_write_text
from tasks.errors import UserError
from tasks.feature_store import open_store
from tasks.ingest import read_manifest
from tasks.params import Params
from tasks.paths import ProjectPaths, default_paths
from tasks.stage_cli import run_stage_cli
from tasks.progress import log


@dataclass
class Head:
    """logits = layers applied in turn to standardised features ((x - mean) / scale), ReLU between layers.

    A linear head (logreg, linear SVM) has one layer; the MLP head has two. `classes[i]` names logit i.
    """

    layers: list[tuple[np.ndarray, np.ndarray]]  # (weight: out x in, bias: out), input to output
    classes: list[str]
    fingerprint: str
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    kind: str = "linear"

    def __post_init__(self):
        d = self.layers[0][0].shape[1]
        self.mean = np.zeros(d) if self.mean is None else np.asarray(self.mean)
        self.scale = np.ones(d) if self.scale is None else np.asarray(self.scale)

    def require_features(self, fingerprint: str, path) -> None:
        """One-line UserError unless this head was fitted on features with `fingerprint` (what params select)."""
        if self.fingerprint != fingerprint:
            raise UserError(f"{path} was trained on features {self.fingerprint}, but params select {fingerprint}; "
                            f"re-run the head stage first")

    @property
    def feature_dim(self) -> int:
        return int(self.layers[0][0].shape[1])

    def logits(self, feats: np.ndarray) -> np.ndarray:
        z = (feats.astype(np.float64) - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            z = z @ w.T.astype(np.float64) + b
            if i < len(self.layers) - 1:
                z = np.maximum(z, 0.0)
        return z

    def probs(self, feats: np.ndarray) -> np.ndarray:
        z = self.logits(feats)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, path) -> None:
        arrays = {f"weight_{i}": w.astype(np.float32) for i, (w, _) in enumerate(self.layers)}
        arrays |= {f"bias_{i}": b.astype(np.float32) for i, (_, b) in enumerate(self.layers)}
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **arrays, mean=self.mean.astype(np.float32), scale=self.scale.astype(np.float32),
                     classes=np.array(self.classes), fingerprint=np.array(self.fingerprint), kind=np.array(self.kind))

    @classmethod
    def load(cls, path) -> "Head":
        """The head saved by the head stage (or a one-layer head in the earlier weight/bias format)."""
        if not path.exists():
            raise UserError(f"{path} not found; run the head stage first (python -m tasks.head)")
        z = np.load(path, allow_pickle=False)
        if "weight" in z:  # earlier format: one linear layer on raw features
            layers, mean, scale, kind = [(z["weight"], z["bias"])], None, None, "linear"
        else:
            n = sum(1 for k in z.files if k.startswith("weight_"))
            layers = [(z[f"weight_{i}"], z[f"bias_{i}"]) for i in range(n)]
            mean, scale, kind = z["mean"], z["scale"], str(z["kind"])
        return cls(layers, [str(c) for c in z["classes"]], str(z["fingerprint"]), mean, scale, kind)


@dataclass
class HeadSummary:
    """What the head stage trained."""

    classes: list[str]
    n_train: int
    train_accuracy: float
    val_accuracy: float | None
    seconds: float
    path: str


def split_features(params: Params, paths: ProjectPaths, split: str):
    """(features, labels, manifest rows) of one split under the current fingerprint."""
    manifest = read_manifest(paths)
    rows = manifest[manifest["split"] == split].reset_index(drop=True)
    store = open_store(params, paths)
    return store.get(rows["sha256"].tolist()), rows["label"].to_numpy(), rows, store.fingerprint


def class_weights(h, classes: set[str]):
    """None, 'balanced' or {class: weight} from head.class_weight; unknown classes are a one-line error."""
    if h.class_weight == "none":
        return None
    if h.class_weight == "balanced":
        return "balanced"
    unknown = sorted(set(h.class_weight) - classes)
    if unknown:
        raise UserError(f"head.class_weight: '{unknown[0]}' is not a class of the train split ({', '.join(sorted(classes))})")
    return {c: float(h.class_weight.get(c, 1.0)) for c in classes}


def _estimator(params: Params, c: float, y: np.ndarray):
    h = params.head
    weight = class_weights(h, set(y))
    if h.type == "linear_svm":
        return LinearSVC(C=c, max_iter=h.max_iter * 5, class_weight=weight, random_state=params.seed)
    return LogisticRegression(C=c, max_iter=h.max_iter, class_weight=weight, random_state=params.seed)


def choose_c(x: np.ndarray, y: np.ndarray, params: Params) -> tuple[float, dict[str, float]]:
    """C with the best mean macro F1 over stratified folds of the train split (ties: the smaller C)."""
    h = params.head
    folds = min(h.cv_folds, int(pd.Series(y).value_counts().min()))
    if folds < 2:
        raise UserError("head.C=auto needs at least 2 train images per class; set head.C to a number")
    cv = StratifiedKFold(folds, shuffle=True, random_state=params.seed)
    scores = {c: float(cross_val_score(_estimator(params, c, y), x, y, cv=cv, scoring="f1_macro").mean())
              for c in sorted(h.C_grid)}
    best = max(scores.items(), key=lambda kv: (round(kv[1], 6), -kv[0]))[0]
    return best, scores


def standardisation(x: np.ndarray, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the train features, or (0, 1) when head.standardize is off."""
    if params.head.standardize:
        scaler = StandardScaler().fit(x)
        return scaler.mean_, scaler.scale_
    return np.zeros(x.shape[1]), np.ones(x.shape[1])


def fit_linear(x: np.ndarray, y: np.ndarray, params: Params, fingerprint: str = "") -> Head:
    """Fit the configured linear head (logistic regression or linear SVM, C fixed or by CV) as a one-layer Head."""
    h = params.head
    mu, sigma = standardisation(x, params)
    z = (x - mu) / sigma
    c = h.C
    if c == "auto":
        c, scores = choose_c(z, y, params)
        log(f"head: C by {min(h.cv_folds, int(pd.Series(y).value_counts().min()))}-fold CV (macro F1): "
            + ", ".join(f"{k:g}: {v:.3f}" for k, v in scores.items()) + f" -> C={c:g}")
    clf = _estimator(params, c, y)
    clf.fit(z, y)
    coef, intercept = clf.coef_, clf.intercept_
    if coef.shape[0] == 1:  # binary: sklearn keeps one row; make it a 2-logit layer with the same softmax
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    return Head([(coef, intercept)], [str(c) for c in clf.classes_], fingerprint, mu, sigma, h.type)


def run_head(params: Params, paths: ProjectPaths | None = None) -> HeadSummary:
    """Train the head on train features and save it as a linear layer; report train and val accuracy."""
    paths = paths or default_paths()
    t0 = time.perf_counter()
    x, y, _, fp = split_features(params, paths, "train")
    if len(set(y)) < 2:
        raise UserError(f"{paths.manifest}: train split has {len(set(y))} class(es); need at least 2")
    xv, yv, _, _ = split_features(params, paths, "val")
    if params.head.type == "mlp":
        from tasks.head_module import fit_mlp

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
    log(f"head: {what} on {len(y)} train images, {len(classes)} classes: "
        f"train acc {train_acc:.3f}, val acc {val} in {summary.seconds:.1f}s -> {paths.head.relative_to(paths.root)}")
    return summary


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_head, __name__, argv)


if __name__ == "__main__":
    main()
