"""Stage `features`: extract pooled backbone features for every manifest sample (image or text) not already in the
feature store.

Reads `data/prepared/manifest.parquet`; writes `data/features/<fingerprint>/` (see
`tasks.extraction.feature_store`). Only images whose sha256 has no row yet are decoded and run, so renames cost
nothing and new images cost only themselves.
Decoding/resizing runs in a thread pool one batch ahead of the model, so the two overlap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tasks.core.params import Params
from tasks.core.paths import ProjectPaths, default_paths
from tasks.core.progress import log
from tasks.core.stage_cli import run_stage_cli
from tasks.dataset.hash_cache import HashCache
from tasks.dataset.manifest import read_manifest, read_rejected
from tasks.extraction.backbone_graph import ensure_backbone_graph
from tasks.extraction.engines import resolve_engine
from tasks.extraction.extract import extract_to_store, make_engine
from tasks.extraction.feature_store import acquire, open_store
from tasks.modality.registry import modality_for
from tasks.modality.samples import parity_samples


@dataclass
class FeaturesSummary:
    """What the features stage did."""

    fingerprint: str
    store: str
    engine: str
    samples: int
    cache_hits: int
    extracted: int
    rejected: int  # files ingest rejected (see data/prepared/rejected.csv)
    seconds: float
    samples_per_s: float


def run_features(params: Params, paths: ProjectPaths | None = None) -> FeaturesSummary:
    """Ensure every manifest sample has a feature row under the current fingerprint.

    Guarantees: after success `FeatureStore.get(manifest.sha256)` succeeds; existing rows are never rewritten; an
    interrupted run leaves only whole shards behind and the next run resumes with the missing images.
    """
    paths = paths or default_paths()
    t0 = time.perf_counter()
    manifest = read_manifest(paths)
    modality = modality_for(params.backbone)
    store = open_store(params, paths)
    lock = acquire(store)
    try:
        store.clean_orphans()
        todo = store.missing_samples(manifest, paths.root, modality)
        engine_name = resolve_engine(params.features.engine)
        sample = lambda: parity_samples(params, paths)  # noqa: E731
        if todo:
            engine = make_engine(params, store, sample)
            engine_name = engine.name
            extract_to_store(params, store, todo, engine, HashCache(paths.hashes))
        # whatever the engine, the store holds the checked backbone graph that export composes with the head, so
        # no later stage writes into this stage's output
        ensure_backbone_graph(params, store, sample)
    finally:
        lock.release()
    seconds = time.perf_counter() - t0
    n_unique = int(manifest["sha256"].nunique())
    rejected = len(read_rejected(paths))
    summary = FeaturesSummary(store.fingerprint, str(store.dir), engine_name, n_unique, n_unique - len(todo),
                              len(todo), rejected, seconds, len(todo) / seconds if todo else 0.0)
    log(f"features: {summary.samples} {modality.noun}, {summary.cache_hits} cache hits, {summary.extracted} extracted, "
        f"{rejected} rejected by ingest [{engine_name}] in {seconds:.1f}s ({summary.samples_per_s:.1f} {modality.unit}/s) "
        f"-> {Path(summary.store).name}")
    return summary


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_features, __name__, argv)


if __name__ == "__main__":
    main()
