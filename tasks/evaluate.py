"""Stage `evaluate`: score the model on a held-out split (default test), by default the exported ONNX artifact.

When the artifact is a frozen backbone's composed graph whose backbone provably computed the cached features, its
own head sub-graph runs on those features, checked end to end from image files on a sample
(`tasks.evaluation.cached_scoring`); otherwise every image file runs through the whole graph.

Writes DVC metrics `models/metrics/metrics.json` (numbers only: accuracy; macro and weighted F1, precision, recall; n),
`models/metrics/evaluation.json` (what was scored and how: split, artifact, end-to-end check, classes absent),
`models/metrics/per_class.json`, and DVC plots `models/plots/confusion_matrix.csv` (actual,predicted rows) plus a
rendered `models/plots/confusion_matrix.png` (DVC's HTML plots need a CDN; a PNG does not).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.core.errors import UserError
from tasks.core.files import atomic_path, atomic_write_text
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths, default_paths
from tasks.core.progress import log
from tasks.core.stage_cli import run_stage_cli
from tasks.dataset.manifest import read_manifest, split_rows
from tasks.evaluation.cached_scoring import score_cached
from tasks.evaluation.classification_metrics import confusion_matrix
from tasks.evaluation.scoring import compute_metrics
from tasks.extraction.feature_store import open_store
from tasks.modality.registry import modality_for
from tasks.model.finetune_record import finetune_summary
from tasks.model.head_format import Head
from tasks.registry.model_card import write_model_card
from tasks.runtime.onnx_classifier import OnnxClassifier

# the order `dvc exp show` lists them in: what decides between experiments first
HEADLINE = ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "precision_weighted",
            "recall_weighted")


@dataclass
class EvaluateSummary:
    """Headline metrics of one evaluation."""

    split: str
    n: int
    accuracy: float
    f1_macro: float
    metrics_path: str
    confusion_png: str


def plot_confusion(cm: np.ndarray, classes: list[str], title: str, dest) -> None:
    """Render a row-normalised confusion matrix with counts to PNG, atomically."""
    from matplotlib.figure import Figure  # not pyplot: no GUI backend machinery, ~0.5 s less to import

    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    fig = Figure(figsize=(1.0 + 0.75 * n, 0.8 + 0.65 * n), dpi=110)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title, fontsize=10)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of actual class")
    fig.tight_layout()
    with atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


def _score(params: Params, paths: ProjectPaths, rows, head: Head, artifact: str) -> tuple[np.ndarray, str, dict]:
    """Probabilities of `rows` from the chosen artifact, a description of what was scored and how it was checked."""
    if artifact == "head":
        store = open_store(params, paths)
        head.require_features(store.fingerprint, paths.head)
        return head.probs(store.get(rows["sha256"].tolist())), f"{paths.head.name} on cached features", {}
    onnx_path = paths.onnx if artifact == "onnx" else paths.models / "int8" / "model.onnx"
    clf = OnnxClassifier(onnx_path)
    if clf.classes != head.classes:
        raise UserError(f"{onnx_path} predicts {clf.classes}, {paths.head} has {head.classes}; re-run export")
    rel = onnx_path.relative_to(paths.root).as_posix()
    if artifact == "onnx" and params.evaluate.cached_features:
        cached = score_cached(params, paths, clf, rows)
        if cached is not None:
            probs, check = cached
            return probs, (f"{rel}: its head sub-graph on cached features computed by its own backbone graph; the "
                           f"whole graph from the samples agrees on {check['images']} of them (max |dp| "
                           f"{check['max_abs_diff_probs']:.1e})"), check
    samples = clf.load_rows(rows, paths, params.ingest.max_pixels)
    return clf.probs_batched(samples), f"{rel} via ONNX Runtime from {clf.modality.stored_as}", {}


def run_evaluate(params: Params, paths: ProjectPaths | None = None) -> EvaluateSummary:
    """Score `evaluate.artifact` (default: the exported ONNX model, as a server would run it) on `evaluate.split`;
    write metrics JSON, per-class JSON, confusion CSV and PNG, and the model card. An int8 variant, when exported, is
    scored on the same images and reported beside it."""
    paths = paths or default_paths()
    t0 = time.perf_counter()
    head = Head.load(paths.head)
    modality = modality_for(params.backbone)
    split = params.evaluate.split
    artifact = params.evaluate.artifact
    if artifact == "head" and finetune_summary(paths).get("kept") == "finetuned":
        log("evaluate: the backbone was fine-tuned, so cached features no longer describe the model; scoring the ONNX")
        artifact = "onnx"
    manifest = read_manifest(paths)
    rows = split_rows(manifest, split)
    y = rows["label"].to_numpy()
    if not len(y):
        raise UserError(f"{paths.manifest}: the {split} split is empty; raise ingest.{split}_fraction")
    unknown = sorted(set(y) - set(head.classes))
    if unknown:
        raise UserError(f"label '{unknown[0]}' in the {split} split is not a class of {paths.head}; re-run head")
    probs, scored, end_to_end = _score(params, paths, rows, head, artifact)
    pred = np.array(head.classes)[probs.argmax(1)]
    metrics, per_class = compute_metrics(y, pred, head.classes)
    if metrics["classes_absent"]:
        log(f"evaluate: warning: class(es) {', '.join(metrics['classes_absent'])} have no image in the {split} split: "
            f"averages cover the {len(per_class)} classes present; add {split} samples of them to score them")
    how = {"split": split, "artifact": scored, "classes_absent": metrics.pop("classes_absent")}
    metrics = {k: metrics[k] for k in HEADLINE} | {"n": int(len(y))}
    if end_to_end:
        how["end_to_end_check"] = end_to_end
    int8_path = paths.models / "int8" / "model.onnx"
    if artifact == "onnx" and int8_path.exists():
        p8, _, _ = _score(params, paths, rows, head, "int8")
        m8, _ = compute_metrics(y, np.array(head.classes)[p8.argmax(1)], head.classes)
        metrics |= {"int8_accuracy": m8["accuracy"], "int8_f1_macro": m8["f1_macro"]}
    cm = confusion_matrix(y, pred, labels=head.classes)

    # metrics.json holds numbers only, quality first: what `dvc exp show` compares; how they were obtained is beside
    atomic_write_text(paths.metrics / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(paths.metrics / "evaluation.json", json.dumps(how, indent=2))
    atomic_write_text(paths.metrics / "per_class.json", json.dumps(per_class, indent=2))
    with atomic_path(paths.plots / "confusion_matrix.csv") as tmp:
        pd.DataFrame({"actual": y, "predicted": pred}).to_csv(tmp, index=False)
    png = paths.plots / "confusion_matrix.png"
    plot_confusion(cm, head.classes, f"{split}: accuracy {metrics['accuracy']:.3f}, macro F1 "
                                     f"{metrics['f1_macro']:.3f} (n={len(y)})", png)
    write_model_card(params, paths, manifest, metrics | how, per_class)
    int8 = f", int8 accuracy {metrics['int8_accuracy']:.3f}" if "int8_accuracy" in metrics else ""
    log(f"evaluate: {split} accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['f1_macro']:.3f}, "
        f"weighted F1 {metrics['f1_weighted']:.3f} on {len(y)} {modality.noun} ({scored}){int8} in "
        f"{time.perf_counter() - t0:.1f}s -> {(paths.metrics / 'metrics.json').relative_to(paths.root)}, "
        f"{png.relative_to(paths.root)}")
    return EvaluateSummary(split, int(len(y)), metrics["accuracy"], metrics["f1_macro"],
                           str(paths.metrics / "metrics.json"), str(png))


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_evaluate, __name__, argv)


if __name__ == "__main__":
    main()
