"""Label audit: which samples' given label looks wrong, from out-of-fold probabilities of a head on cached features.

Confident learning (Northcutt et al. 2021), written on numpy and the project's own streamed head solver (cleanlab is
AGPL-3.0: not a dependency):

1. Out-of-fold probabilities: train+val are cut into `audit.folds` stratified, seeded folds (index sets over the
   feature store's shards, never copies); a logistic head (tasks.training.linear_head.fit_linear, `audit.C`, not
   head.C: a head change must not re-run the audit) is fitted on all folds but one and predicts the one left out.
   Every sample is scored by a model that never saw its label.
2. Per-class thresholds: t_j = the mean probability of class j over the samples labelled j (the model's typical
   confidence in a correct j).
3. A sample is a label issue when its given-label probability is below its class's threshold; the suggested label is
   the other class k furthest above its own threshold (largest p_k - t_k). Requiring also that some other class be
   confidently predicted (p_k >= t_k, cleanlab's confident joint) was measured to rank worse on the demo: precision at
   N 0.56-0.60 against 0.59-0.63 at 10 % moved labels (docs/data-quality.md), since a moved sample often leaves the
   model unsure among the other classes.
4. Most suspect first: ranked by the given-label probability (cleanlab's "self-confidence"), lowest first; that
   probability is the row's `score`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.core.errors import UserError
from tasks.core.params import HeadParams, Params
from tasks.training.chunk_sums import LocalSums
from tasks.training.feature_rows import FeatureRows
from tasks.training.linear_head import fit_linear

LABEL_ISSUES_CSV = "label_issues.csv"  # under data/reports/ (ProjectPaths.reports)
LABEL_ISSUE_COLUMNS = ["path", "split", "given_label", "suggested_label", "score", "threshold", "sha256"]
# The fold models rank samples, they are not shipped: fitted to 1e-2, they take half the iterations of 1e-3 (13 vs 30
# on a demo fold) and rank the same within the draws' spread (precision at N 0.56-0.60 both, 10 % moved labels)
FOLD_TOL = 1e-2


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """int fold (0..folds-1) of each sample: each class's samples shuffled (seeded) and dealt round-robin, so every
    fold holds each class's share to within one sample."""
    fold = np.empty(len(labels), np.int64)
    rng = np.random.default_rng([seed, 2929])
    start = 0
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        fold[idx] = (start + np.arange(len(idx))) % folds
        start = (start + len(idx)) % folds  # the next class starts where this one stopped: folds stay equal-sized
    return fold


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def out_of_fold_probabilities(rows: FeatureRows, labels: np.ndarray, classes: list[str], folds: int, C: float,
                              seed: int, fingerprint: str = "") -> np.ndarray:
    """(n, len(classes)) probabilities, row i from the head fitted on every fold but row i's (module docstring)."""
    fold = stratified_folds(labels, folds, seed)
    fit_params = Params(seed=seed, head=HeadParams(type="logreg", C=C, tol=FOLD_TOL))
    column = {c: j for j, c in enumerate(classes)}
    probs = np.zeros((rows.n, len(classes)))
    for i in range(folds):
        train = rows.subset(fold != i)
        sums = LocalSums(train)
        try:
            # labels stay full length: the subset's positions index them (tasks.training.feature_rows)
            head, _ = fit_linear(sums, labels, fit_params, fingerprint)
        finally:
            sums.close()
        cols = np.array([column[c] for c in head.classes])
        for positions, x in rows.subset(fold == i).chunks():
            probs[np.ix_(positions, cols)] = _softmax(head.logits(x))
    return probs


@dataclass(frozen=True)
class Audit:
    """The audit of n samples: each one's given-label probability, threshold, suggested class and issue flag."""

    given: np.ndarray       # class index of the given label
    suggested: np.ndarray   # class index of the suggested label (the given one where nothing else is confident)
    score: np.ndarray       # probability of the given label (lower = more suspect)
    threshold: np.ndarray   # the given class's threshold
    issue: np.ndarray       # bool
    thresholds: np.ndarray  # per class

    def ranked_issues(self) -> np.ndarray:
        """Indices of the issues, most suspect (lowest given-label probability) first; ties by index."""
        idx = np.flatnonzero(self.issue)
        return idx[np.lexsort((idx, self.score[idx]))]


def confident_learning(probs: np.ndarray, given: np.ndarray) -> Audit:
    """The issues among samples with out-of-fold `probs` (n, k) and given class indices `given` (module docstring)."""
    n, k = probs.shape
    thresholds = np.array([probs[given == j, j].mean() if (given == j).any() else 1.0 for j in range(k)])
    score = probs[np.arange(n), given]
    margin = probs - thresholds  # >= 0: confidently this class
    margin[np.arange(n), given] = -np.inf
    suggested = margin.argmax(axis=1) if k > 1 else given
    issue = score < thresholds[given]
    return Audit(given, suggested, score, thresholds[given], issue, thresholds)


def audit_labels(params: Params, rows: FeatureRows, labels: np.ndarray,
                 fingerprint: str = "") -> tuple[Audit, list[str], int]:
    """(the audit, the classes, the folds used) of samples `rows` labelled `labels`. Folds are `audit.folds`, fewer
    when a class has fewer samples than that; a class with a single sample cannot be audited (UserError)."""
    classes = sorted({str(c) for c in labels})
    labels = np.array([str(c) for c in labels], dtype=object)
    counts = np.array([(labels == c).sum() for c in classes])
    folds = int(min(params.audit.folds, counts.min()))
    if folds < 2 or len(classes) < 2:
        raise UserError(f"label audit: needs 2 classes with at least 2 train+val samples each (smallest class: "
                        f"{counts.min()}); add samples of the smallest class")
    probs = out_of_fold_probabilities(rows, labels, classes, folds, params.audit.C, params.seed, fingerprint)
    index = {c: j for j, c in enumerate(classes)}
    given = np.array([index[c] for c in labels], np.int64)
    return confident_learning(probs, given), classes, folds
