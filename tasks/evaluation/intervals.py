"""95 % intervals for classification metrics, and for the paired difference of two models scored on the same samples.

Methods (docs/intervals.md):
- **proportions** (accuracy; each class's recall and precision): the Wilson score interval, closed form, at the
  number of samples (predictions, for precision) they count: it stays honest at 10/10, where a bootstrap collapses
  to [1, 1];
- **F1 per class, the macro and weighted averages** and **paired differences** (challenger minus champion, on one
  metric): a seeded *stratified* percentile bootstrap. Each replicate resamples, within each true
  class, as many samples as that class has (so every replicate keeps the split's class counts, which the split
  itself fixed), and recomputes the metric; the interval is the 2.5th-97.5th percentile of `N_BOOT` replicates.

A sample enters a metric only through its (true label, prediction[, other model's prediction]) cell, so resampling the
samples of one class with replacement is drawing a multinomial over that class's cells with their observed shares:
the bootstrap costs O(replicates x distinct cells), not O(replicates x samples), and is the same distribution.

A percentile interval can miss its own point estimate for a skewed statistic; the interval reported is widened to
hold it (a bound equal to the point), so `low <= point <= high` always.
"""

from __future__ import annotations

import numpy as np

N_BOOT = 2000
Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
AVERAGED = ("precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted", "f1_weighted")


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95 % by default); (0, 1) when n is 0. Always holds k/n."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, min(centre - half, p))), float(min(1.0, max(centre + half, p)))


def _codes(values, labels: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(labels)}
    return np.fromiter((index[v] for v in values), np.int64, len(values))


def resampled_cell_counts(y_true, columns: list, labels: list[str], n_boot: int = N_BOOT,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cells, observed, replicates): the distinct (true, *columns) code tuples (cells x (1 + len(columns))), their
    observed counts, and `n_boot` stratified bootstrap replicates of those counts (n_boot x cells), seeded. Every
    value of `y_true` and `columns` must be in `labels`."""
    t = _codes(y_true, labels)
    stacked = np.stack([t] + [_codes(c, labels) for c in columns], axis=1)
    cells, observed = np.unique(stacked, axis=0, return_counts=True)
    rng = np.random.default_rng(seed)
    replicates = np.zeros((n_boot, len(cells)), np.int64)
    for c in np.unique(cells[:, 0]):  # cells are sorted by true label, so each class is one block of columns
        block = cells[:, 0] == c
        counts = observed[block]
        replicates[:, block] = rng.multinomial(counts.sum(), counts / counts.sum(), size=n_boot)
    return cells, observed, replicates


def _class_counts(weights: np.ndarray, t: np.ndarray, p: np.ndarray, n_labels: int) -> tuple[np.ndarray, ...]:
    """(tp, predicted, support), each (..., n_labels), from cell weights (..., cells) and the cells' codes."""
    eye = np.eye(n_labels)
    hit = (t == p)[:, None] * eye[t]
    return weights @ hit, weights @ eye[p], weights @ eye[t]


def _scores(tp: np.ndarray, predicted: np.ndarray, support: np.ndarray, present: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision/recall/F1 and the headline metrics (scikit-learn's definitions, zero_division=0; averages
    over the `present` labels, as tasks.evaluation.scoring.compute_metrics does), vectorised over leading axes."""
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        f1 = np.where(predicted + support > 0, 2 * tp / np.maximum(predicted + support, 1), 0.0)
    sup = support[..., present]
    weights = sup / np.maximum(sup.sum(-1, keepdims=True), 1)
    out = {"accuracy": tp.sum(-1) / np.maximum(support.sum(-1), 1),
           "precision": precision, "recall": recall, "f1-score": f1}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"{name}_macro"] = values[..., present].mean(-1) if present.size else np.zeros(values.shape[:-1])
        out[f"{name}_weighted"] = (values[..., present] * weights).sum(-1)
    return out


def _bounds(replicates: np.ndarray, point: float) -> tuple[float, float]:
    low, high = np.percentile(replicates, [2.5, 97.5])
    return float(min(low, point)), float(max(high, point))


def metric_intervals(y_true, y_pred, labels: list[str], n_boot: int = N_BOOT, seed: int = 0) -> tuple[dict, dict]:
    """95 % intervals of one model's metrics on the samples given: ({"accuracy_ci_low", "accuracy_ci_high",
    "<avg metric>_ci_low/high" ...}, {class: {"precision_ci_low", ..., "f1-score_ci_high"}}) for the classes present
    in `y_true`. Proportions (accuracy; a class's recall, of its samples; a class's precision, of its predictions):
    Wilson; averages and F1: the seeded stratified bootstrap. Predictions outside `labels` count as errors, as in
    compute_metrics."""
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    labels = list(labels) + sorted((set(y_true) | set(y_pred)) - set(labels))
    cells, observed, reps = resampled_cell_counts(y_true, [y_pred], labels, n_boot, seed)
    t, p = cells[:, 0], cells[:, 1]
    present = np.unique(t)
    point = _scores(*_class_counts(observed.astype(float), t, p, len(labels)), present)
    boot = _scores(*_class_counts(reps.astype(float), t, p, len(labels)), present)
    n, k = int(len(y_true)), int(np.sum(y_true == y_pred))
    headline = dict(zip(("accuracy_ci_low", "accuracy_ci_high"), wilson(k, n)))
    for m in AVERAGED:
        headline[f"{m}_ci_low"], headline[f"{m}_ci_high"] = _bounds(boot[m], float(point[m]))
    tp, predicted, support = _class_counts(observed.astype(float), t, p, len(labels))
    per_class = {}
    for i in present:
        (p_lo, p_hi), (r_lo, r_hi) = wilson(int(tp[i]), int(predicted[i])), wilson(int(tp[i]), int(support[i]))
        f_lo, f_hi = _bounds(boot["f1-score"][:, i], float(point["f1-score"][i]))
        per_class[labels[i]] = {"precision_ci_low": p_lo, "precision_ci_high": p_hi, "recall_ci_low": r_lo,
                                "recall_ci_high": r_hi, "f1-score_ci_low": f_lo, "f1-score_ci_high": f_hi}
    return headline, per_class


def paired_difference(y_true, pred_a, pred_b, metric: str, labels: list[str], n_boot: int = N_BOOT,
                      seed: int = 0) -> dict:
    """`metric`(a) - `metric`(b) on the same samples, with its 95 % interval from the seeded stratified bootstrap
    that resamples samples, not models: each replicate scores both models on the same resampled samples, so what
    they share cancels. Returns {"metric", "a", "b", "difference", "ci_low", "ci_high", "n", "disagree"} (disagree:
    samples on which the two predictions differ)."""
    y_true = np.asarray(y_true, dtype=object)
    pred_a, pred_b = np.asarray(pred_a, dtype=object), np.asarray(pred_b, dtype=object)
    labels = list(labels) + sorted((set(y_true) | set(pred_a) | set(pred_b)) - set(labels))
    cells, observed, reps = resampled_cell_counts(y_true, [pred_a, pred_b], labels, n_boot, seed)
    t = cells[:, 0]
    present = np.unique(t)
    values = {}
    for name, col in (("a", 1), ("b", 2)):
        point = _scores(*_class_counts(observed.astype(float), t, cells[:, col], len(labels)), present)[metric]
        boot = _scores(*_class_counts(reps.astype(float), t, cells[:, col], len(labels)), present)[metric]
        values[name] = (float(point), boot)
    diff = values["a"][0] - values["b"][0]
    low, high = _bounds(values["a"][1] - values["b"][1], diff)
    return {"metric": metric, "a": values["a"][0], "b": values["b"][0], "difference": diff, "ci_low": low,
            "ci_high": high, "n": int(len(y_true)), "disagree": int(np.sum(pred_a != pred_b))}
