"""Scoring classifiers: headline and per-class metrics (scikit-learn), and exported ONNX models compared on the same
samples of a split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.core.errors import UserError
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.core.progress import log
from tasks.dataset.hash_cache import HashCache
from tasks.dataset.manifest import read_manifest, split_rows
from tasks.evaluation.classification_metrics import averaged, per_label_scores
from tasks.modality.registry import modality_of_rows
from tasks.runtime.onnx_classifier import OnnxClassifier


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> tuple[dict, dict]:
    """(headline metrics, per-class report): scikit-learn's definitions (tasks.evaluation.classification_metrics).

    Averages cover the classes present in `y_true`: a class with no sample in the evaluated split has no recall to
    measure, and counting it as F1 0 would only drag the macro average down. Predictions of such a class still count
    as errors of the class they were made for. The absent classes are listed under `classes_absent`."""
    seen = set(y_true)
    present = [c for c in classes if c in seen] + sorted(seen - set(classes))
    out = {"accuracy": float(np.mean(np.asarray(y_true, dtype=object) == np.asarray(y_pred, dtype=object)))}
    scores = per_label_scores(y_true, y_pred, present)
    for avg in ("macro", "weighted"):
        p, r, f = averaged(scores, avg)
        out |= {f"precision_{avg}": p, f"recall_{avg}": r, f"f1_{avg}": f}
    out["classes_absent"] = [c for c in classes if c not in seen]
    per_class = {c: {k: float(v[i]) for k, v in scores.items()} for i, c in enumerate(present)}
    return out, per_class


def score_models(models: dict[str, Path], params: Params, paths: ProjectPaths, split: str | None = None,
                 subsets: dict[str, set[str]] | None = None,
                 predictions: dict | None = None) -> dict[str, dict[str, dict]]:
    """Headline metrics of exported ONNX models on a split of the current manifest, through ONNX Runtime from the
    split's samples, read once per input size for all models of the split's modality. `subsets` name extra views (rows whose sha256 is in the set);
    the view "all" is the whole split. Labels a model does not know count as errors (a model that lacks a new class
    pays for it). Returns {model name: {view: metrics}}. A `predictions` dict passed in is filled with what the
    metrics were computed from, for paired comparisons: {"labels": the true labels (split order), "views": {view:
    boolean mask}, "predicted": {model name: predicted labels}}."""
    split = split or params.evaluate.split
    rows = split_rows(read_manifest(paths), split)
    if not len(rows):
        raise UserError(f"{paths.manifest}: the {split} split is empty; raise ingest.{split}_fraction")
    views = {"all": np.ones(len(rows), dtype=bool)}
    views |= {name: rows["sha256"].isin(keys).to_numpy() for name, keys in (subsets or {}).items()}
    classifiers = {name: OnnxClassifier(path) for name, path in models.items()}
    modality = modality_of_rows(rows)
    readers = {(c.input_size, c.resize): c for c in classifiers.values() if c.modality is modality}
    hashes = HashCache(paths.hashes)
    arrays = {key: c.load_rows(rows, paths, params.ingest.max_pixels, hashes) for key, c in readers.items()}
    y = rows["label"].to_numpy()
    out: dict[str, dict[str, dict]] = {}
    if predictions is not None:
        predictions |= {"labels": y, "views": views, "predicted": {}}
    for name, clf in classifiers.items():
        if clf.modality is not modality:  # e.g. an image champion on a text project: it cannot classify these at all
            log(f"scoring: {models[name]} reads {clf.modality.noun} and the {split} split holds {modality.noun}: "
                f"every prediction counts as wrong")
            pred = np.full(len(y), f"<{clf.modality.name} model>", dtype=object)
        else:
            probs = clf.probs_batched(arrays[(clf.input_size, clf.resize)])
            pred = np.array(clf.classes)[probs.argmax(1)]
        labels = sorted(set(y) | set(clf.classes))
        if predictions is not None:
            predictions["predicted"][name] = pred
        out[name] = {}
        for view, mask in views.items():
            if mask.any():
                m, _ = compute_metrics(y[mask], pred[mask], labels)
                out[name][view] = m | {"n": int(mask.sum()), "split": split, "model": str(models[name])}
    return out
