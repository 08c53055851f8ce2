"""Intervals on every reported metric (issue 29): Wilson for accuracy, a seeded stratified bootstrap for the rest, on
the clip-art and BBC test splits; they hold their point, match Wilson's width for accuracy and shrink as n grows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.evaluate import HEADLINE
from tasks.evaluation.intervals import Z95, metric_intervals, paired_difference, resampled_cell_counts, wilson


def test_wilson_bounds_solve_the_score_equation():
    """At each Wilson bound p: (k/n - p)^2 = z^2 p (1 - p) / n, the definition of the score interval."""
    for k, n in ((81, 263), (0, 20), (20, 20), (181, 234)):
        for p in wilson(k, n):
            if 0 < p < 1:
                assert (k / n - p) ** 2 == pytest.approx(Z95 ** 2 * p * (1 - p) / n, rel=1e-9)
        low, high = wilson(k, n)
        assert low <= k / n <= high


def test_every_metric_carries_its_interval_and_n(modality_project):
    """metrics.json (what `dvc metrics show` prints) has <metric>_ci_low/_ci_high for each headline metric, holding
    the point; accuracy's is Wilson's at n; per_class.json has them for every class; images and texts alike."""
    paths, _, _ = modality_project
    metrics = json.loads((paths.metrics / "metrics.json").read_text())
    n = metrics["n"]
    assert n == len(pd.read_csv(paths.plots / "confusion_matrix.csv"))
    for m in HEADLINE:
        assert metrics[f"{m}_ci_low"] <= metrics[m] <= metrics[f"{m}_ci_high"], m
        assert metrics[f"{m}_ci_high"] - metrics[f"{m}_ci_low"] > 0, m  # a test split this size is not certain
    k = round(metrics["accuracy"] * n)
    assert (metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]) == pytest.approx(wilson(k, n))
    for c, scores in json.loads((paths.metrics / "per_class.json").read_text()).items():
        for m in ("precision", "recall", "f1-score"):
            assert scores[f"{m}_ci_low"] <= scores[m] <= scores[f"{m}_ci_high"], (c, m)
    assert 0 <= metrics["ece"] <= 1


def _test_predictions(paths) -> tuple[np.ndarray, np.ndarray]:
    table = pd.read_csv(paths.plots / "confusion_matrix.csv")
    return table["actual"].to_numpy(dtype=object), table["predicted"].to_numpy(dtype=object)


def test_the_bootstrap_has_wilsons_width_for_accuracy(built_project):
    """The bootstrap resampling the F1 intervals use, applied to accuracy, gives a binomial interval's width."""
    y, pred = _test_predictions(built_project[0])
    cells, _, reps = resampled_cell_counts(y, [pred], sorted(set(y) | set(pred)), seed=0)
    correct = reps[:, cells[:, 0] == cells[:, 1]].sum(1) / len(y)
    boot_width = np.subtract(*np.percentile(correct, [97.5, 2.5]))
    low, high = wilson(int((y == pred).sum()), len(y))
    assert boot_width == pytest.approx(high - low, rel=0.2)


def test_intervals_shrink_as_n_grows_and_are_seeded(built_project):
    """The same model's real test predictions, stacked 1x, 4x and 16x (same accuracy, n x4 each step): every
    interval narrows, roughly by half each time (1/sqrt(n)); the same seed gives the same numbers."""
    y, pred = _test_predictions(built_project[0])
    classes = sorted(set(y))
    widths = []
    for times in (1, 4, 16):
        headline, _ = metric_intervals(np.tile(y, times), np.tile(pred, times), classes, seed=0)
        widths.append({m: headline[f"{m}_ci_high"] - headline[f"{m}_ci_low"] for m in HEADLINE})
    for m in HEADLINE:
        assert widths[0][m] > widths[1][m] > widths[2][m], m
        assert 0.35 < widths[1][m] / widths[0][m] < 0.65, m
    assert metric_intervals(y, pred, classes, seed=3) == metric_intervals(y, pred, classes, seed=3)


def test_a_paired_difference_cancels_what_both_models_share(built_project):
    """Two models that differ on a handful of samples: the paired interval of their difference is much narrower
    than either model's own interval; identical models differ by exactly 0; swapping them negates it."""
    y, pred = _test_predictions(built_project[0])
    classes = sorted(set(y))
    other = pred.copy()
    wrong = np.flatnonzero(y != pred)[:3]
    other[wrong] = y[wrong]  # the other model fixes three errors
    d = paired_difference(y, other, pred, "accuracy", classes)
    assert d["difference"] == pytest.approx(3 / len(y)) and d["disagree"] == 3 and d["n"] == len(y)
    own_low, own_high = wilson(int((y == pred).sum()), len(y))
    assert d["ci_low"] >= 0 and d["ci_high"] - d["ci_low"] < (own_high - own_low) / 2
    back = paired_difference(y, pred, other, "accuracy", classes)
    assert back["difference"] == -d["difference"]
    same = paired_difference(y, pred, pred, "f1_macro", classes)
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0
