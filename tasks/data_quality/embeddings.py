"""The cached feature rows of manifest samples, read whole: what the audit and the drift check compare.

Features come from the feature store by sha256 (tasks.training.feature_rows reads them in bounded chunks); only the
rows asked for are held. The label audit streams instead (its folds are index sets over the shards); the all-pairs
near-duplicate search and the two-sample test need the rows they compare in memory (n x dim float32: 8 MB for the
demo's 1,570 images).
"""

from __future__ import annotations

import numpy as np

from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.extraction.feature_store import open_store
from tasks.training.feature_rows import CHUNK_BYTES, FeatureRows


def feature_rows(params: Params, paths: ProjectPaths, keys, cache_bytes: int = 0) -> tuple[FeatureRows, str]:
    """(FeatureRows of `keys` in that order, keeping up to `cache_bytes` of chunks between passes; the store's
    fingerprint). A key without cached features is a one-line UserError from the store (run the features stage)."""
    store = open_store(params, paths)
    store.check_recipe(params)
    return FeatureRows.from_store(store, np.asarray(keys, dtype="S64"), CHUNK_BYTES, cache_bytes), store.fingerprint


def read_embeddings(params: Params, paths: ProjectPaths, keys) -> np.ndarray:
    """float32 (len(keys), dim) feature rows of `keys`, in order."""
    rows, _ = feature_rows(params, paths, keys)
    out = np.empty((rows.n, rows.dim), np.float32)
    for positions, x in rows.chunks():
        out[positions] = x
    return out
