"""Drift of incoming data: are the new samples' embeddings drawn from the distribution the champion was trained on?

Method: the maximum mean discrepancy (MMD, Gretton et al. 2012) between the two sets of cached feature vectors, with
a Gaussian kernel whose bandwidth is the median pairwise distance of the pooled sample, and its p-value from a
permutation test (the pooled rows' set labels shuffled `drift.permutations` times, seeded).

Why MMD with a permutation test and not a domain classifier's AUC: the permutation p-value is exact under the null
whatever the kernel or the sample sizes, so `drift.alpha` IS the false-alarm rate (a classifier's AUC needs its own
null distribution, i.e. refits per permutation, or a threshold tuned by hand); nothing is fitted, so a batch of 30
new images gets as honest an answer as a batch of 3,000; and it costs one kernel matrix plus one matrix product of
it with all the permuted weight vectors at once (~1 s at 2,000 rows). The statistic is the biased (V-) estimate
MMD^2 = w'Kw with w = 1/n on the reference rows and -1/m on the new ones.

What it sees: any change in the embeddings' distribution, including a change of class proportions (new samples that
are all of one class differ from a balanced training set). `drifted` is p < alpha.
"""

from __future__ import annotations

import numpy as np

from tasks.core.errors import UserError

METHOD = "mmd-permutation"


def _squared_distances(z: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", z, z)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    np.maximum(d2, 0.0, out=d2)
    return d2


def subsample(x: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """At most `cap` rows of `x`, drawn without replacement (all of them when there are fewer)."""
    return x if len(x) <= cap else x[np.sort(rng.choice(len(x), cap, replace=False))]


def mmd_test(reference: np.ndarray, new: np.ndarray, permutations: int, seed: int,
             max_samples: int | None = None) -> dict:
    """MMD^2 of `reference` vs `new` rows and its permutation p-value (module docstring). Each side is first
    subsampled (seeded) to `max_samples` rows. Returns {statistic, p_value, bandwidth, n_reference, n_new,
    permutations}; deterministic for a given seed."""
    if len(reference) < 2 or len(new) < 2:
        raise UserError(f"drift check: needs at least 2 samples on each side (reference {len(reference)}, "
                        f"new {len(new)})")
    rng = np.random.default_rng([seed, 29])
    if max_samples:
        reference, new = subsample(reference, max_samples, rng), subsample(new, max_samples, rng)
    n, m = len(reference), len(new)
    z = np.vstack([reference, new]).astype(np.float64)
    z -= z.mean(axis=0)
    d2 = _squared_distances(z)
    off = d2[np.triu_indices(len(z), 1)]
    bandwidth = float(np.median(off[off > 0])) if (off > 0).any() else 1.0
    k = np.exp(-d2 / bandwidth)
    del d2, off
    base = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
    observed = float(base @ k @ base)
    exceed, done, block = 0, 0, 256
    while done < permutations:
        b = min(block, permutations - done)
        w = np.stack([base[rng.permutation(n + m)] for _ in range(b)], axis=1)
        stats = np.einsum("ij,ij->j", w, k @ w)
        exceed += int((stats >= observed - 1e-12).sum())
        done += b
    return {"statistic": observed, "p_value": (exceed + 1) / (permutations + 1), "bandwidth": bandwidth,
            "n_reference": n, "n_new": m, "permutations": permutations}


def drift_report(reference: np.ndarray, new: np.ndarray, alpha: float, permutations: int, seed: int,
                 max_samples: int | None = None) -> dict:
    """What models/metrics/drift.json holds: {drifted, statistic, p_value, alpha, method, n_reference, n_new, ...}.
    `drifted` is p_value < alpha."""
    result = mmd_test(reference, new, permutations, seed, max_samples)
    return {"drifted": bool(result["p_value"] < alpha), "method": METHOD, "statistic": result["statistic"],
            "p_value": result["p_value"], "alpha": alpha, "n_reference": result["n_reference"],
            "n_new": result["n_new"], "permutations": permutations,
            "kernel": "gaussian exp(-d^2 / bandwidth), bandwidth = median squared pairwise distance",
            "bandwidth": result["bandwidth"]}
