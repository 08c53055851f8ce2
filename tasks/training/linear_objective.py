"""The loss and gradient of linear heads on standardised features, summed chunk by chunk.

One evaluation is one pass over the rows. `LinearProblem` describes what is fitted; `chunk_sums` is the pure per-chunk
computation (the same function runs in-process and as a Dask task); `LinearObjective` adds the chunks up and the
L2 penalty, and is what the quasi-Newton solver calls.

Objective per model, as scikit-learn's (so its C means the same thing):
    logistic:       sum_i w_i * logloss_i + ||W||^2 / (2C)              (the intercept is not penalised)
    squared hinge:  sum_i w_i * sum_k max(0, 1 - s_ik f_ik)^2 + ||[W b]||^2 / (2C)   (LinearSVC: one-vs-rest, and
                    liblinear penalises the intercept as a feature of value 1)
divided by sum_i w_i, which changes the scale, not the minimiser, and makes one tolerance fit every data size. Two
classes are fitted as one output (binary logistic, or one SVM), as scikit-learn does; `tasks.training.linear_head`
turns it into two logits with the same softmax.

Several models can be fitted at once (`models` > 1): model m is trained on the rows whose fold is not m. The logits of
all models come from one matrix product per chunk, so k cross-validation folds cost one read of the data per step,
not k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinearProblem:
    """What is fitted: labels as class ids, sample weights, the standardisation, the loss, the models."""

    y: np.ndarray  # int64 class id per split position
    weight: np.ndarray  # float32 sample weight per split position
    mean: np.ndarray  # float32 (dim,)
    scale: np.ndarray  # float32 (dim,)
    n_classes: int
    loss: str  # "logistic" | "squared_hinge"
    fold: np.ndarray | None = None  # int8 fold per position: model m is trained without fold m (None: one model)
    models: int = 1

    @property
    def outputs(self) -> int:
        """Outputs per model: one for two classes, else one per class."""
        return 1 if self.n_classes == 2 else self.n_classes

    @property
    def dim(self) -> int:
        return len(self.mean)

    def size(self) -> int:
        """Parameters of all models: models x outputs x (dim weights + 1 intercept)."""
        return self.models * self.outputs * (self.dim + 1)

    def unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(W: models*outputs x dim, b: models*outputs) float32 views of the flat parameter vector."""
        t = np.asarray(theta, np.float32).reshape(self.models * self.outputs, self.dim + 1)
        return t[:, :-1], t[:, -1]

    def train_mask(self, positions: np.ndarray) -> np.ndarray:
        """(rows, models) bool: which rows each model is trained on."""
        if self.fold is None:
            return np.ones((len(positions), 1), bool)
        return self.fold[positions][:, None] != np.arange(self.models)[None, :]


def on_raw_rows(problem: LinearProblem, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, c) such that raw rows x give the logits x @ A.T + c, equal to standardised rows z @ W.T + b: the
    standardisation folded into the weights, so a pass never rewrites the rows."""
    w, b = problem.unpack(theta)
    a = w / problem.scale
    return a, b - a @ problem.mean


def chunk_logits(x: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Logits of every model for raw rows `x` (rows x models*outputs), from `on_raw_rows`."""
    out = x @ a.T
    out += c
    return out


BLOCK_ROWS = 1024  # rows per piece of a chunk: the second product finds them still in cache (0.83x a chunk's time)


def chunk_sums(problem: LinearProblem, positions: np.ndarray, x: np.ndarray, theta: np.ndarray):
    """(loss sums per model, gradient of the sums w.r.t. (W, b), weight sums per model) over one chunk of raw rows.

    Two float32 matrix products on the rows as stored (the standardisation is folded into the weights and out of
    the gradient), piece by piece of BLOCK_ROWS rows so that the rows the first product read are still in the CPU's
    cache for the second (bench.head_pass_cost_leads); the loss and the per-row derivatives in float64 (they are
    rows x outputs, small)."""
    a, c = on_raw_rows(problem, theta)
    k, m = problem.outputs, problem.models
    loss, wsum = np.zeros(m), np.zeros(m)
    grad_rx = np.zeros((m * k, problem.dim), np.float64)
    grad_b = np.zeros(m * k)
    for i in range(0, len(x), BLOCK_ROWS):
        xb, pb = x[i:i + BLOCK_ROWS], positions[i:i + BLOCK_ROWS]
        block_loss, r, sw = _derivatives(problem, pb, chunk_logits(xb, a, c).astype(np.float64).reshape(len(xb), m, k))
        loss += block_loss
        wsum += sw
        grad_b += r.sum(axis=0)
        grad_rx += (r.astype(np.float32).T @ xb).astype(np.float64)
    # d/dW of z @ W.T with z = (x - mean) / scale: (r.T @ x - grad_b * mean) / scale
    grad_w = (grad_rx - np.outer(grad_b, problem.mean)) / problem.scale
    return loss, np.hstack([grad_w, grad_b[:, None]]), wsum


def _derivatives(problem: LinearProblem, positions: np.ndarray, f: np.ndarray):
    """(weighted loss sums per model, d loss / d logits (rows x models*outputs, weighted), weight sums per model) of
    the logits `f` (rows x models x outputs, float64) of the rows at `positions`."""
    k, m = problem.outputs, problem.models
    y = problem.y[positions]
    sw = problem.weight[positions].astype(np.float64)[:, None] * problem.train_mask(positions)  # rows x models
    if problem.loss == "logistic" and k > 1:
        top = f.max(axis=2, keepdims=True)
        e = np.exp(f - top)
        norm = e.sum(axis=2, keepdims=True)
        true = np.take_along_axis(f, y[:, None, None].repeat(m, 1), axis=2)[..., 0]
        loss = (np.log(norm[..., 0]) + top[..., 0] - true)  # rows x models
        r = e / norm
        r[np.arange(len(y)), :, y] -= 1.0
    else:
        s = (y[:, None] == np.arange(k)[None, :]) if k > 1 else (y == 1)[:, None]
        s = np.where(s, 1.0, -1.0)[:, None, :]  # rows x 1 x outputs
        margin = s * f
        if problem.loss == "logistic":  # binary: log(1 + exp(-margin)), stably
            loss = np.logaddexp(0.0, -margin)[..., 0]
            r = -s * np.exp(-np.logaddexp(0.0, margin))
        else:
            slack = np.maximum(0.0, 1.0 - margin)
            loss = (slack ** 2).sum(axis=2)
            r = -2.0 * s * slack
    r *= sw[:, :, None]
    return (loss * sw).sum(axis=0), r.reshape(len(f), m * k), sw.sum(axis=0)


class LinearObjective:
    """f(theta) and its gradient over all rows: the per-chunk sums from a `map_chunks` evaluator, divided by each
    model's weight sum, plus the L2 penalty for C. Counts its passes over the data."""

    def __init__(self, problem: LinearProblem, evaluate_sums, c: float):
        self.problem, self.evaluate_sums, self.c = problem, evaluate_sums, c
        self.passes = 0

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        p = self.problem
        loss, grad, wsum = self.evaluate_sums(theta)
        self.passes += 1
        t = np.asarray(theta, np.float64).reshape(p.models, p.outputs, p.dim + 1)
        grad = grad.reshape(p.models, p.outputs, p.dim + 1)
        penalised = t.copy()
        if p.loss == "logistic":
            penalised[..., -1] = 0.0  # the intercept is not penalised (scikit-learn's lbfgs)
        wsum = np.maximum(wsum, 1e-12)
        value = float(((loss + (penalised ** 2).sum(axis=(1, 2)) / (2 * self.c)) / wsum).sum())
        gradient = (grad + penalised / self.c) / wsum[:, None, None]
        return value, gradient.ravel()
