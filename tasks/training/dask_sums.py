"""The linear head's per-shard sums computed as tasks on a `dask.distributed` cluster: `DaskSums`.

The solver stays here (L-BFGS steps are cheap: a few thousand parameters); each evaluation of the loss and gradient
fans out as one task per shard file, and the partial sums come back and are added. Workers read their shard's rows
from the file themselves, so they must see the project's `data/features/` at the same absolute path (a shared
filesystem, as for distributed extraction in flows.distributed). The problem (labels, weights, standardisation) is
sent to every worker once; each step sends only the parameters. `address` "local" starts a LocalCluster of 2
single-threaded worker processes on 127.0.0.1 for the run.

Same numbers as LocalSums up to the order of float additions: the head agrees to ~1e-6 (tests/test_head.py).
dask-ml's LogisticRegression is binary-only (dask/dask-ml#761) and Incremental(SGDClassifier) is approximate; this
is the exact multinomial fit, distributed.
"""

from __future__ import annotations

import numpy as np

from tasks.core.errors import UserError
from tasks.training.chunk_sums import add_sums, predicted_ids
from tasks.training.feature_rows import FeatureRows
from tasks.training.lbfgs import one_blas_thread
from tasks.training.linear_objective import LinearProblem
from tasks.training.moments import Moments, chunk_moments


def _part(rows: FeatureRows, i: int) -> FeatureRows:
    """Shard i of `rows` alone (no cache: a worker reads it from its file on each pass)."""
    return FeatureRows([rows.shards[i]], rows.dim, rows.chunk_rows * 4 * rows.dim, 0)


def part_moments(part: FeatureRows) -> Moments:
    with one_blas_thread():
        return chunk_moments(part.chunks())


def part_sums(part: FeatureRows, problem: LinearProblem, theta: np.ndarray):
    with one_blas_thread():
        return add_sums(problem, part, theta)


def part_predictions(part: FeatureRows, problem: LinearProblem, theta: np.ndarray) -> np.ndarray:
    with one_blas_thread():
        return predicted_ids(problem, part, theta)


class DaskSums:
    """Sums and moments computed shard by shard on a Dask cluster (module docstring)."""

    def __init__(self, rows: FeatureRows, address: str):
        from distributed import Client, LocalCluster

        self.rows = rows
        self._cluster = None
        try:
            if address == "local":
                self._cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                             dashboard_address=None)
                self.client = Client(self._cluster)
            else:
                self.client = Client(address, timeout="20s")
        except OSError as exc:
            raise UserError(f"--dask {address}: cannot reach the Dask scheduler ({exc})") from None
        self.parts = [self.client.scatter(_part(rows, i)) for i in range(len(rows.shards))]
        self._problem = None

    def _problem_future(self, problem: LinearProblem):
        if self._problem is None or self._problem[0] is not problem:
            self._problem = (problem, self.client.scatter(problem, broadcast=True, hash=False))
        return self._problem[1]

    def _theta(self, theta: np.ndarray):
        return self.client.scatter(np.array(theta), broadcast=True, hash=False)

    def moments(self) -> Moments:
        total = Moments(0, np.zeros(0), np.zeros(0))
        for m in self.client.gather(self.client.map(part_moments, self.parts, pure=False)):
            total = total.merge(m)
        return total

    def for_problem(self, problem: LinearProblem):
        """theta -> (loss sums, gradient sums, weight sums), each shard's sums computed on a worker."""
        def evaluate(theta):
            prob, t = self._problem_future(problem), self._theta(theta)
            parts = self.client.gather(self.client.map(part_sums, self.parts, problem=prob, theta=t, pure=False))
            return tuple(sum(p[j] for p in parts) for j in range(3))
        return evaluate

    def predictions(self, problem: LinearProblem, theta: np.ndarray) -> np.ndarray:
        prob = self._problem_future(problem)
        parts = self.client.gather(self.client.map(part_predictions, self.parts, problem=prob,
                                                   theta=self._theta(theta), pure=False))
        return np.max(np.stack(parts), axis=0)

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()
