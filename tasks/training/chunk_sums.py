"""Evaluate the per-chunk sums of a linear problem over all rows, in this process: `local_sums`."""

from __future__ import annotations

import numpy as np

from tasks.training.feature_rows import FeatureRows
from tasks.training.linear_objective import LinearProblem, chunk_logits, chunk_sums, on_raw_rows
from tasks.training.moments import Moments, chunk_moments


def add_sums(problem: LinearProblem, rows: FeatureRows, theta: np.ndarray):
    """(loss sums, gradient sums, weight sums) of `problem` over every chunk of `rows`."""
    loss, wsum = np.zeros(problem.models), np.zeros(problem.models)
    grad = np.zeros((problem.models * problem.outputs, problem.dim + 1))
    for positions, x in rows.chunks():
        l, g, w = chunk_sums(problem, positions, x, theta)
        loss += l
        grad += g
        wsum += w
    return loss, grad, wsum


def predicted_ids(problem: LinearProblem, rows: FeatureRows, theta: np.ndarray) -> np.ndarray:
    """(positions, models) predicted class id of every row by every model (-1 where a position is not in `rows`)."""
    out = np.full((len(problem.y), problem.models), -1, np.int64)
    a, c = on_raw_rows(problem, theta)
    for positions, x in rows.chunks():
        f = chunk_logits(x, a, c).reshape(len(x), problem.models, -1)
        out[positions] = f.argmax(axis=2) if problem.outputs > 1 else (f[..., 0] > 0).astype(np.int64)
    return out


class LocalSums:
    """Sums and moments computed in this process, chunk by chunk (the chunks the rows keep in memory are reused)."""

    def __init__(self, rows: FeatureRows):
        self.rows = rows

    def moments(self) -> Moments:
        return chunk_moments(self.rows.chunks())

    def for_problem(self, problem: LinearProblem):
        """theta -> (loss sums, gradient sums, weight sums) over all rows."""
        return lambda theta: add_sums(problem, self.rows, theta)

    def predictions(self, problem: LinearProblem, theta: np.ndarray) -> np.ndarray:
        return predicted_ids(problem, self.rows, theta)

    def close(self) -> None:
        pass
