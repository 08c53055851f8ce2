"""Stage `evaluate`: score the model on a held-out split (default test), by default the exported ONNX artifact.

When the artifact is a frozen backbone's composed graph whose backbone provably computed the cached features, its
own head sub-graph runs on those features, checked end to end from image files on a sample
(`tasks.evaluation.cached_scoring`); otherwise every image file runs through the whole graph.

Writes DVC metrics `models/metrics/metrics.json` (numbers only: accuracy; macro and weighted F1, precision, recall,
each with its 95 % interval `<metric>_ci_low`/`_ci_high` (`tasks.evaluation.intervals`: Wilson for accuracy, a seeded
stratified bootstrap for the rest); n; the expected calibration error `ece`), `models/metrics/evaluation.json` (what
was scored and how: split, artifact, end-to-end check, classes absent), `models/metrics/per_class.json` (with
intervals), and DVC plots (`tasks.evaluation.plots`): `models/plots/confusion_matrix.csv` (actual,predicted rows),
`reliability.csv`, `per_class_f1.csv`, `top_losses.csv`, each with a rendered PNG (DVC's HTML plots need a CDN; a PNG
does not): the normalised confusion matrix, the reliability diagram, per-class F1 with intervals, the top-loss gallery
(a table picture for texts).
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
from tasks.evaluation.intervals import metric_intervals, paired_difference
from tasks.evaluation.plots import (
    per_class_f1_table,
    plot_confusion,
    plot_per_class_f1,
    plot_reliability,
    plot_top_losses,
    reliability,
    top_losses,
)
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


def _write_pictures(paths: ProjectPaths, split: str, rows, probs: np.ndarray, classes: list[str], per_class: dict,
                    curve: pd.DataFrame, ece: float) -> None:
    """The reliability diagram, per-class F1 with intervals and the top losses: each a CSV DVC plots and a PNG."""
    for name, table in (("reliability", curve), ("per_class_f1", per_class_f1_table(per_class)),
                        ("top_losses", top_losses(rows, probs, classes))):
        with atomic_path(paths.plots / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)
        if name == "reliability":
            plot_reliability(table, ece, f"{split} (n={len(rows)})", paths.plots / "reliability.png")
        elif name == "per_class_f1":
            plot_per_class_f1(table, f"{split}: F1 per class, 95 % stratified bootstrap", paths.plots / f"{name}.png")
        else:
            plot_top_losses(table, paths.root, f"{split}: the {len(table)} highest losses (-ln p(given label))",
                            paths.plots / f"{name}.png")


def _rows_to_score(manifest: pd.DataFrame, split: str, head: Head, paths: ProjectPaths) -> pd.DataFrame:
    """The manifest rows of `split`; a one-line UserError when it is empty or holds a label the head does not know."""
    rows = split_rows(manifest, split)
    if not len(rows):
        raise UserError(f"{paths.manifest}: the {split} split is empty; raise ingest.{split}_fraction")
    unknown = sorted(set(rows["label"]) - set(head.classes))
    if unknown:
        raise UserError(f"label '{unknown[0]}' in the {split} split is not a class of {paths.head}; re-run head")
    return rows


def _metrics_with_intervals(y: np.ndarray, pred: np.ndarray, classes: list[str], seed: int,
                            split: str) -> tuple[dict, dict, list[str]]:
    """The headline metrics, each followed by its 95 % interval (the order `dvc metrics show` / `dvc exp show` list
    them in), per-class metrics with theirs, and the classes absent from the split (warned about)."""
    metrics, per_class = compute_metrics(y, pred, classes)
    absent = metrics.pop("classes_absent")
    if absent:
        log(f"evaluate: warning: class(es) {', '.join(absent)} have no image in the {split} split: averages cover "
            f"the {len(per_class)} classes present; add {split} samples of them to score them")
    intervals, class_intervals = metric_intervals(y, pred, classes, seed=seed)
    for c, ci in class_intervals.items():
        per_class[c] |= ci
    headline = {k: v for m in HEADLINE for k, v in ((m, metrics[m]), (f"{m}_ci_low", intervals[f"{m}_ci_low"]),
                                                    (f"{m}_ci_high", intervals[f"{m}_ci_high"]))}
    return headline, per_class, absent


def _int8_metrics(params: Params, paths: ProjectPaths, rows, head: Head, y: np.ndarray, pred: np.ndarray) -> dict:
    """The int8 copy on the same samples: accuracy and macro F1 with their 95 % intervals, and its accuracy minus
    the fp32 model's, paired on the same samples (`tasks.evaluation.intervals.paired_difference`), with its interval
    and how many predictions differ."""
    p8, _, _ = _score(params, paths, rows, head, "int8")
    pred8 = np.array(head.classes)[p8.argmax(1)]
    m8, _ = compute_metrics(y, pred8, head.classes)
    ci8, _ = metric_intervals(y, pred8, head.classes, seed=params.seed)
    diff = paired_difference(y, pred8, pred, "accuracy", head.classes, seed=params.seed)
    return {"int8_accuracy": m8["accuracy"], "int8_accuracy_ci_low": ci8["accuracy_ci_low"],
            "int8_accuracy_ci_high": ci8["accuracy_ci_high"], "int8_f1_macro": m8["f1_macro"],
            "int8_f1_macro_ci_low": ci8["f1_macro_ci_low"], "int8_f1_macro_ci_high": ci8["f1_macro_ci_high"],
            "int8_minus_fp32_accuracy": diff["difference"], "int8_minus_fp32_accuracy_ci_low": diff["ci_low"],
            "int8_minus_fp32_accuracy_ci_high": diff["ci_high"], "int8_predictions_differ": diff["disagree"]}


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
    rows = _rows_to_score(manifest, split, head, paths)
    y = rows["label"].to_numpy()
    probs, scored, end_to_end = _score(params, paths, rows, head, artifact)
    pred = np.array(head.classes)[probs.argmax(1)]
    metrics, per_class, classes_absent = _metrics_with_intervals(y, pred, head.classes, params.seed, split)
    how = {"split": split, "artifact": scored, "classes_absent": classes_absent}
    curve, ece = reliability(probs, pred == y)
    metrics |= {"n": int(len(y)), "ece": ece}
    if end_to_end:
        how["end_to_end_check"] = end_to_end
    int8_path = paths.models / "int8" / "model.onnx"
    if artifact == "onnx" and int8_path.exists():
        metrics |= _int8_metrics(params, paths, rows, head, y, pred)
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
    _write_pictures(paths, split, rows, probs, head.classes, per_class, curve, ece)
    write_model_card(params, paths, manifest, metrics | how, per_class)

    def ci(m: str) -> str:
        return f"{metrics[m]:.3f} [{metrics[f'{m}_ci_low']:.3f}, {metrics[f'{m}_ci_high']:.3f}]"

    int8 = (f", int8 accuracy {ci('int8_accuracy')} (int8 - fp32 {metrics['int8_minus_fp32_accuracy']:+.3f} "
            f"[{metrics['int8_minus_fp32_accuracy_ci_low']:+.3f}, {metrics['int8_minus_fp32_accuracy_ci_high']:+.3f}], "
            f"paired)" if "int8_accuracy" in metrics else "")
    log(f"evaluate: {split} accuracy {ci('accuracy')}, macro F1 {ci('f1_macro')}, weighted F1 {ci('f1_weighted')} "
        f"(95 % intervals) on {len(y)} {modality.noun} ({scored}){int8} in "
        f"{time.perf_counter() - t0:.1f}s -> {(paths.metrics / 'metrics.json').relative_to(paths.root)}, "
        f"{png.relative_to(paths.root)}")
    return EvaluateSummary(split, int(len(y)), metrics["accuracy"], metrics["f1_macro"],
                           str(paths.metrics / "metrics.json"), str(png))


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_evaluate, __name__, argv)


if __name__ == "__main__":
    main()
