"""Linear heads (logistic regression, linear SVM) fitted by streaming L-BFGS over the feature store's shards.

Same objective and solver family as scikit-learn's LogisticRegression(lbfgs) and LinearSVC (squared hinge, one-vs-rest,
intercept penalised as liblinear does), so head.C means what it meant; but the loss and gradient are summed chunk by
chunk from the shard files (tasks.training.feature_rows), in float32, never holding the matrix or a float64 copy.
The result is the same one-layer Head as before: weights on standardised features, the standardisation beside them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from tasks.core.params import Params
from tasks.core.progress import log
from tasks.model.head_format import Head
from tasks.training.class_weights import row_weights
from tasks.training.lbfgs import minimise, one_blas_thread
from tasks.training.linear_objective import LinearObjective, LinearProblem
from tasks.training.preconditioner import PRECONDITION_ROWS, Whitening, feature_correlation



@dataclass
class LinearFit:
    """How the head was fitted: what head.json records."""

    C: float
    iterations: int
    passes: int
    grad_norm: float
    converged: bool
    seconds: float
    C_scores: dict[str, float] | None = None
    cv_folds: int | None = None
    solver: str = "L-BFGS-B (scipy) on float32 features streamed from the feature store"


def standardisation(sums, dim: int, on: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the rows, streamed, or (0, 1) when off. A feature constant up to float noise (std below 1e-6
    of the median feature's) keeps scale 1: dividing by its noise (MiniLM has a dimension at ~1e-33) would multiply
    any later change of it, a fine-tuning step or a new text, by ~1e30."""
    if not on:
        return np.zeros(dim, np.float32), np.ones(dim, np.float32)
    m = sums.moments()
    scale = m.std()
    scale[scale == 0] = 1.0
    scale[scale < 1e-6 * np.median(scale)] = 1.0
    return m.mean.astype(np.float32), scale.astype(np.float32)


def as_head(problem: LinearProblem, theta: np.ndarray, classes: list[str], fingerprint: str, kind: str) -> Head:
    """The fitted model as a Head; two classes' one output w becomes logits (-w/2, w/2): the same softmax."""
    w, b = problem.unpack(theta)
    w, b = w.astype(np.float64), b.astype(np.float64)
    if problem.outputs == 1:
        w, b = np.vstack([-w / 2, w / 2]), np.array([-b[0] / 2, b[0] / 2])
    return Head([(w, b)], classes, fingerprint, problem.mean.astype(np.float64), problem.scale.astype(np.float64), kind)


def fit_linear(sums, labels: np.ndarray, params: Params, fingerprint: str = "") -> tuple[Head, LinearFit]:
    """Fit the configured linear head (`_fit_linear`), BLAS on one thread (tasks.training.lbfgs: why)."""
    with one_blas_thread():
        return _fit_linear(sums, labels, params, fingerprint)


def _fit_linear(sums, labels: np.ndarray, params: Params, fingerprint: str = "") -> tuple[Head, LinearFit]:
    """Fit the configured linear head on the rows behind `sums` (LocalSums or DaskSums), labelled `labels` (split
    order). C fixed, or chosen on the regularisation path (head.C=auto). Logs a warning line when the solver stops
    before the gradient is below tolerance; the fit record says so too."""
    t0 = time.perf_counter()
    h = params.head
    classes = sorted({str(c) for c in labels})
    index = {c: i for i, c in enumerate(classes)}
    y = np.fromiter((index[str(c)] for c in labels), np.int64, len(labels))
    mean, scale = standardisation(sums, sums.rows.dim, h.standardize)
    problem = LinearProblem(y, row_weights(h, classes, y), mean, scale, len(classes),
                            "squared_hinge" if h.type == "linear_svm" else "logistic")
    eigen = feature_correlation(sums.rows, mean, scale) if sums.rows.n >= PRECONDITION_ROWS else None
    theta0, c, path = np.zeros(problem.size()), h.C, None
    if c == "auto":
        from tasks.training.regularisation_path import choose_c

        path = choose_c(problem, sums, h, params.seed, eigen)
        c, theta0 = path.c, path.warm_start
    change = Whitening(problem, eigen) if eigen is not None else None
    solution = minimise(LinearObjective(problem, sums.for_problem(problem), c), theta0, h.tol, h.max_iter, change)
    if not solution.converged:
        log(f"head: WARNING: the solver stopped after {solution.iterations} iterations with gradient norm "
            f"{solution.grad_norm:.2g} > head.tol {h.tol:g} ({solution.message}); raise head.max_iter or lower head.C")
    fit = LinearFit(float(c), solution.iterations, solution.passes + (path.passes if path else 0),
                    solution.grad_norm, solution.converged, time.perf_counter() - t0,
                    {f"{k:g}": v for k, v in path.scores.items()} if path else None, path.folds if path else None)
    return as_head(problem, solution.theta, classes, fingerprint, h.type), fit
