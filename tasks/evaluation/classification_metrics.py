"""Accuracy, precision, recall and F1 from the confusion counts, in numpy: scikit-learn's numbers without its import.

`sklearn.metrics` costs 1.4 s to import on these machines, a fifth of what a head change costs end to end (evaluate
runs on every one); the arithmetic is a few lines over the confusion matrix. tests/test_evaluate.py checks these
functions against scikit-learn's precision_recall_fscore_support, classification_report and confusion_matrix on
labels with absent and unknown classes.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> np.ndarray:
    """Counts (len(labels) x len(labels)): row = actual, column = predicted; pairs naming other labels are left out
    (scikit-learn's confusion_matrix with `labels`)."""
    index = {c: i for i, c in enumerate(labels)}
    t = np.fromiter((index.get(c, -1) for c in y_true), np.int64, len(y_true))
    p = np.fromiter((index.get(c, -1) for c in y_pred), np.int64, len(y_pred))
    keep = (t >= 0) & (p >= 0)
    out = np.zeros((len(labels), len(labels)), np.int64)
    np.add.at(out, (t[keep], p[keep]), 1)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def per_label_scores(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict[str, np.ndarray]:
    """precision, recall, f1-score and support of each of `labels`, as scikit-learn computes them with
    zero_division=0: a prediction of a label outside `labels` is a false negative of the true one."""
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    tp = np.array([np.sum((y_true == c) & (y_pred == c)) for c in labels], float)
    predicted = np.array([np.sum(y_pred == c) for c in labels], float)
    support = np.array([np.sum(y_true == c) for c in labels], float)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    return {"precision": precision, "recall": recall, "f1-score": _ratio(2 * tp, predicted + support),
            "support": support}


def averaged(scores: dict[str, np.ndarray], average: str) -> tuple[float, float, float]:
    """(precision, recall, F1) averaged over the labels: 'macro' (plain mean) or 'weighted' (by support)."""
    weights = scores["support"] if average == "weighted" else np.ones(len(scores["support"]))
    if weights.sum() == 0:
        return 0.0, 0.0, 0.0
    return tuple(float(np.average(scores[k], weights=weights)) for k in ("precision", "recall", "f1-score"))
