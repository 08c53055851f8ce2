"""Two ways to make the streamed linear head's fit cheaper, each against the shipped fit in the same run. (RESULTS.md
section 24a, run E)

The blocked products were adopted (`tasks.training.linear_objective.BLOCK_ROWS`: since then `chunk_sums` itself is
blocked, so the "whole" side here is a stand-alone copy of the old computation); the warm start was not (0.71x, then
1.21x of the fit: its iteration count is chaotic). This bench measures what each buys on a built Fashion-MNIST project (`bench.
head_at_scale_fmnist` builds one under `<workdir>/project-1`):

- **warm start from a subsample**: fit the same problem on a seeded `--fraction` of the train rows (C scaled by the
  fraction so the penalty per row matches, tolerance x3), then the full problem to head.tol from there; against the
  shipped fit from zeros. Prints both walls, iterations and passes, and how far apart the two solutions are.
- **blocked chunk products**: one chunk's two matrix products (rows x dim by dim x classes, and back) on the whole
  chunk, as `tasks.training.linear_objective.chunk_sums` does, against the same products in 1,024-row blocks whose
  second product finds the rows still in cache; one BLAS thread, best of 5.

Run:  python -m bench.head_pass_cost_leads [--project bench/out/has_fmnist_vnni/project-1] [--fraction 0.1]
Benchmarks report, they do not gate.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench._harness import OUT, emit, stage_params

QUESTION = "What would a subsample warm start and blocked chunk products buy the streamed head's fit?"


def warm_start(project: Path, fraction: float, c: float) -> dict:
    """The shipped fit from zeros against subsample-then-full, on the project's train rows."""
    from tasks.core.paths import ProjectPaths
    from tasks.dataset.manifest import split_keys_and_labels
    from tasks.extraction.feature_store import open_store
    from tasks.head import split_feature_rows
    from tasks.training.chunk_sums import LocalSums
    from tasks.training.class_weights import row_weights
    from tasks.training.feature_rows import CHUNK_BYTES, FeatureRows
    from tasks.training.lbfgs import minimise, one_blas_thread
    from tasks.training.linear_head import standardisation
    from tasks.training.linear_objective import LinearObjective, LinearProblem
    from tasks.training.preconditioner import Whitening, feature_correlation

    paths = ProjectPaths(project)
    params = stage_params(paths, [f"head.C={c}"])
    h = params.head
    train, labels, _ = split_feature_rows(params, paths, "train", h.memory_mb << 20)
    classes = sorted({str(v) for v in labels})
    y = np.array([classes.index(str(v)) for v in labels])
    with one_blas_thread():
        sums = LocalSums(train)
        mean, scale = standardisation(sums, train.dim, True)
        problem = LinearProblem(y, row_weights(h, classes, y), mean, scale, len(classes), "logistic")
        eigen = feature_correlation(train, mean, scale)
        t0 = time.perf_counter()
        cold = minimise(LinearObjective(problem, sums.for_problem(problem), c), np.zeros(problem.size()), h.tol,
                        h.max_iter, Whitening(problem, eigen))
        cold_s = time.perf_counter() - t0
        keys, _ = split_keys_and_labels(paths, "train")
        pick = np.sort(np.random.default_rng(params.seed).choice(len(keys), int(len(keys) * fraction), replace=False))
        t0 = time.perf_counter()
        rows = FeatureRows.from_store(open_store(params, paths), keys[pick], CHUNK_BYTES, h.memory_mb << 20)
        sub = LinearProblem(y[pick], problem.weight[pick], mean, scale, len(classes), "logistic")
        first = minimise(LinearObjective(sub, LocalSums(rows).for_problem(sub), c * fraction),
                         np.zeros(problem.size()), h.tol * 3, h.max_iter, Whitening(sub, eigen))
        sub_s = time.perf_counter() - t0
        full = minimise(LinearObjective(problem, sums.for_problem(problem), c), first.theta, h.tol, h.max_iter,
                        Whitening(problem, eigen))
        warm_s = time.perf_counter() - t0
        sums.close()
    return {"rows": int(train.n), "C": c, "fraction": fraction, "cold_s": round(cold_s, 2),
            "cold_iterations": cold.iterations, "cold_passes": cold.passes, "subsample_s": round(sub_s, 2),
            "subsample_iterations": first.iterations, "warm_total_s": round(warm_s, 2),
            "warm_full_iterations": full.iterations, "warm_full_passes": full.passes,
            "both_converged": bool(cold.converged and full.converged),
            "max_abs_theta_diff": float(np.abs(full.theta - cold.theta).max()),
            "warm_over_cold": round(warm_s / cold_s, 3)}


def blocked_products(rows: int = 27_000, dim: int = 1280, classes: int = 10, block: int = 1024) -> dict:
    """Best-of-5 seconds of one chunk's two products, whole vs in `block`-row pieces, one BLAS thread."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    a = rng.standard_normal((classes, dim), dtype=np.float32) * 0.01

    def products(part: np.ndarray) -> np.ndarray:
        f = part @ a.T
        return (f - f.max(1, keepdims=True)).T @ part

    def whole():
        return products(x)

    def blocked():
        return sum(products(x[i:i + block]) for i in range(0, rows, block))

    best = {}
    with threadpool_limits(1, "blas"):
        for name, run in (("whole", whole), ("blocked", blocked)):
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            best[name] = min(times)
    return {"rows": rows, "block": block, "whole_ms": round(best["whole"] * 1e3, 1),
            "blocked_ms": round(best["blocked"] * 1e3, 1), "blocked_over_whole": round(best["blocked"] / best["whole"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=OUT / "has_fmnist_vnni" / "project-1")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--C", type=float, default=0.1)
    args = ap.parse_args()
    emit(QUESTION, what="blocked chunk products", **blocked_products())
    emit(QUESTION, what="warm start from a subsample", project=str(args.project),
         **warm_start(args.project, args.fraction, args.C))


if __name__ == "__main__":
    main()
