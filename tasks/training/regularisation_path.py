"""head.C=auto: the regularisation path over C_grid, all cross-validation folds fitted at once, warm-started.

The grid is walked from the largest penalty (smallest C) up; each C starts from the previous C's solution, which is
close, so later points cost a fraction of a cold fit. The k fold models are one block-separable problem
(`LinearProblem.models = k`): one read of each chunk per solver step serves every fold. Folds are stratified index sets
over the same rows (scikit-learn's StratifiedKFold, shuffled with the seed), never copies. A C's score is the mean over
folds of the macro F1 on the held-out fold, as cross_val_score(scoring="f1_macro") computes it; ties go to the smaller C.
The walk stops once PATIENCE C in a row have scored below the best so far (the larger C, the slower a fit: they are
the ones skipped), and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from tasks.core.errors import UserError
from tasks.core.progress import log
from tasks.training.lbfgs import minimise
from tasks.training.linear_objective import LinearObjective, LinearProblem
from tasks.training.preconditioner import Whitening

# Fold models are fitted to 1e-3, not head.tol: on Fashion-MNIST 70k the scores agreed with a 1e-4 path to 4e-4
# at every C but the largest (C=1: 0.8619 against 0.8576, the choice the same), at a quarter of the cost.
PATH_TOL = 1e-3
PATIENCE = 2  # stop the path after this many C in a row score below the best (scores rise, peak, then fall)



@dataclass(frozen=True)
class PathResult:
    """The chosen C, the score of every C tried, and the fold models' mean at the chosen C (a warm start)."""

    c: float
    scores: dict[float, float]
    folds: int
    passes: int
    warm_start: np.ndarray


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """int8 fold of each row: scikit-learn's StratifiedKFold(folds, shuffle=True, random_state=seed)."""
    from sklearn.model_selection import StratifiedKFold

    fold = np.empty(len(y), np.int8)
    for i, (_, held) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)):
        fold[held] = i
    return fold


def macro_f1_by_fold(y: np.ndarray, predicted: np.ndarray, fold: np.ndarray, folds: int) -> float:
    """Mean over folds of the macro F1 of fold i's model on fold i's rows."""
    from sklearn.metrics import f1_score

    return float(np.mean([f1_score(y[fold == i], predicted[fold == i, i], average="macro") for i in range(folds)]))


def choose_c(base: LinearProblem, sums, h, seed: int, eigen=None) -> PathResult:
    """Walk head.C_grid as the module says; log each C's score and the choice. `eigen`: the features' correlation
    spectrum, to precondition each fit (tasks.training.preconditioner), or None."""
    counts = np.bincount(base.y, minlength=base.n_classes)
    folds = min(h.cv_folds, int(counts[counts > 0].min()))
    if folds < 2:
        raise UserError("head.C=auto needs at least 2 train samples per class; set head.C to a number")
    fold = stratified_folds(base.y, folds, seed)
    problem = replace(base, fold=fold, models=folds)
    evaluate = sums.for_problem(problem)
    change = Whitening(problem, eigen) if eigen is not None else None
    theta = np.zeros(problem.size())
    scores, best, passes = {}, None, 0
    for c in sorted(h.C_grid):
        objective = LinearObjective(problem, evaluate, c)
        solution = minimise(objective, theta, max(h.tol, PATH_TOL), h.max_iter, change)
        theta = solution.theta
        scores[c] = macro_f1_by_fold(base.y, sums.predictions(problem, theta), fold, folds)
        passes += solution.passes + 1
        log(f"head: C={c:g}: {folds}-fold macro F1 {scores[c]:.4f} ({solution.iterations} iterations)")
        if best is None or round(scores[c], 6) > round(scores[best[0]], 6):
            best = (c, theta.reshape(folds, -1).mean(axis=0))
        elif all(round(scores[k], 6) < round(scores[best[0]], 6) for k in list(scores)[-PATIENCE:]) \
                and len(scores) > PATIENCE and c != max(h.C_grid):
            log(f"head: the path stops at C={c:g}: {PATIENCE} C in a row scored below C={best[0]:g}; larger C "
                f"({', '.join(f'{k:g}' for k in sorted(h.C_grid) if k > c)}) not tried")
            break
    log(f"head: C by {folds}-fold CV (macro F1): " + ", ".join(f"{k:g}: {v:.3f}" for k, v in scores.items())
        + f" -> C={best[0]:g}")
    return PathResult(best[0], scores, folds, passes, best[1])
