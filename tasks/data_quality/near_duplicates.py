"""Near-duplicates by embedding: pairs of samples whose cached feature vectors have cosine similarity >= a threshold.

Exact duplicates (same bytes) are caught by ingest's sha256; a resized, re-encoded or lightly edited copy is not,
and if it sits in train while its twin is in test, the test score is inflated. The backbone's embedding of a resized
copy is nearly the same vector (cosine ~0.99 on the demo), so pairs above `audit.near_duplicate_cosine` are reported
and (tasks.dataset.splits) kept in one split by the next ingest.

All pairs are found by blocks of the normalised rows' Gram matrix: O(n^2 dim) arithmetic and O(n dim) memory (the
demo's 1,570 images: ~0.1 s).
"""

from __future__ import annotations

import numpy as np

BLOCK = 2048


def normalised(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def cosine_pairs(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, cosine) of every pair i < j of rows of `x` whose cosine similarity is >= `threshold`, most similar
    first (ties by i, j)."""
    u = normalised(x.astype(np.float32))
    found_i, found_j, found_c = [], [], []
    for a in range(0, len(u), BLOCK):
        sims = u[a:a + BLOCK] @ u[a:].T  # rows a.. against every row from a on: each pair once
        ii, jj = np.nonzero(sims >= threshold)
        keep = a + ii < a + jj
        ii, jj = ii[keep], jj[keep]
        found_i.append(a + ii)
        found_j.append(a + jj)
        found_c.append(sims[ii, jj])
    i, j, c = (np.concatenate(v) if v else np.zeros(0) for v in (found_i, found_j, found_c))
    order = np.lexsort((j, i, -c))
    return i[order].astype(np.int64), j[order].astype(np.int64), np.minimum(c[order].astype(np.float64), 1.0)
