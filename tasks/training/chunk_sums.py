"""Evaluate the per-chunk sums of a linear problem over all rows, in this process: `local_sums`."""

from __future__ import annotations

import numpy as np

from tasks.training.feature_rows import FeatureRows
from tasks.training.linear_objective import LinearProblem, chunk_logits, chunk_sums, on_raw_rows
from tasks.training.moments import Moments, chunk_moments


PARTS = 2  # each chunk is summed as this many fixed slices on as many threads, whatever the machine's cores


def add_sums(problem: LinearProblem, rows: FeatureRows, theta: np.ndarray, pool=None):
    """(loss sums, gradient sums, weight sums) of `problem` over every chunk of `rows`.

    With a thread pool, each chunk is cut into PARTS fixed slices summed on the pool's threads (numpy releases the GIL
    in its matrix products) and added in slice order: two cores work on a chunk, yet the sums are the same bits on
    every run, as they would not be with a multi-threaded BLAS, whose split follows the thread count (and whose
    spinning threads measured 14x slower on a busy machine; tasks.training.lbfgs)."""
    loss, wsum = np.zeros(problem.models), np.zeros(problem.models)
    grad = np.zeros((problem.models * problem.outputs, problem.dim + 1))
    for positions, x in rows.chunks():
        if pool is None or len(x) < 2 * PARTS:
            parts = [chunk_sums(problem, positions, x, theta)]
        else:
            cuts = np.linspace(0, len(x), PARTS + 1).astype(int)
            parts = list(pool.map(lambda i: chunk_sums(problem, positions[cuts[i]:cuts[i + 1]],
                                                       x[cuts[i]:cuts[i + 1]], theta), range(PARTS)))
        for l, g, w in parts:
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
        from concurrent.futures import ThreadPoolExecutor

        self.rows = rows
        self._pool = ThreadPoolExecutor(PARTS, thread_name_prefix="head-sums")

    def moments(self) -> Moments:
        return chunk_moments(self.rows.chunks())

    def for_problem(self, problem: LinearProblem):
        """theta -> (loss sums, gradient sums, weight sums) over all rows."""
        return lambda theta: add_sums(problem, self.rows, theta, self._pool)

    def predictions(self, problem: LinearProblem, theta: np.ndarray) -> np.ndarray:
        return predicted_ids(problem, self.rows, theta)

    def close(self) -> None:
        self._pool.shutdown()
