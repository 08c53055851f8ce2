"""Stage `features`: extract pooled backbone features for every manifest image not already in the feature store.

Reads `data/prepared/manifest.parquet`; writes `data/features/<fingerprint>/` (see `tasks.feature_store`). Only
images whose sha256 has no row yet are decoded and run, so renames cost nothing and new images cost only themselves.
Decoding/resizing runs in a thread pool one batch ahead of the model, so the two overlap.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.engines import OrtEngine, TorchEngine, export_onnx, resolve_engine
from tasks.feature_store import FeatureStore, acquire, open_store
from tasks.ingest import read_manifest, read_rejected
from tasks.images import load_many
from tasks.params import Params
from tasks.paths import ProjectPaths, default_paths
from tasks.stage_cli import run_stage_cli
from tasks.progress import Progress, log


@dataclass
class FeaturesSummary:
    """What the features stage did."""

    fingerprint: str
    store: str
    engine: str
    images: int
    cache_hits: int
    extracted: int
    rejected: int  # files ingest rejected (see data/prepared/rejected.csv)
    seconds: float
    images_per_s: float


def _torch_model(params: Params):
    from tasks.backbones import ImageModel, build_backbone

    loaded = build_backbone(params.backbone, params.seed)
    return ImageModel(loaded.model, loaded.spec.mean, loaded.spec.std)


def make_engine(params: Params, store: FeatureStore):
    """Build the configured engine. The ONNX backbone is exported once per fingerprint and cached in the store;
    with it cached, the ONNX Runtime engine needs no torch at all."""
    name = resolve_engine(params.features.engine)
    if name == "torch":
        return TorchEngine(_torch_model(params), params.features.threads)
    onnx_path = store.dir / "backbone.onnx"
    if not onnx_path.exists():
        export_onnx(_torch_model(params), onnx_path, params.backbone.input_size, ["features"], params.export.opset)
    return OrtEngine(onnx_path, params.features.threads, spin=params.features.decode_workers == 0)


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def extract_to_store(params: Params, store: FeatureStore, todo: list[tuple[str, str]], engine) -> int:
    """Decode, run and append `todo` [(sha256, path)] to the store, a shard every `features.shard_size` rows."""
    p = params.features
    size, mode = params.backbone.input_size, params.backbone.resize

    def decode(batch):
        return load_many([path for _, path in batch], size, mode)

    pending_keys: list[str] = []
    pending_feats: list[np.ndarray] = []
    n_pending = 0
    workers = max(1, p.decode_workers)
    with Progress(len(todo), f"features[{engine.name}]") as bar, ThreadPoolExecutor(workers) as pool:
        queue: deque = deque()
        batches = _batches(todo, p.batch_size)
        for b in batches:  # keep up to `workers` batches decoding ahead of the model
            queue.append((b, pool.submit(decode, b)))
            if len(queue) > workers:
                break
        while queue:
            batch, fut = queue.popleft()
            nxt = next(batches, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(decode, nxt)))
            feats = engine.run(fut.result())
            pending_keys += [k for k, _ in batch]
            pending_feats.append(feats)
            n_pending += len(batch)
            if n_pending >= p.shard_size:
                store.append(pending_keys, np.concatenate(pending_feats))
                pending_keys, pending_feats, n_pending = [], [], 0
            bar.update(len(batch))
        if pending_keys:
            store.append(pending_keys, np.concatenate(pending_feats))
    return len(todo)


def run_features(params: Params, paths: ProjectPaths | None = None) -> FeaturesSummary:
    """Ensure every manifest image has a feature row under the current fingerprint.

    Guarantees: after success `FeatureStore.get(manifest.sha256)` succeeds; existing rows are never rewritten; an
    interrupted run leaves only whole shards behind and the next run resumes with the missing images.
    """
    paths = paths or default_paths()
    t0 = time.perf_counter()
    manifest = read_manifest(paths)
    store = open_store(params, paths)
    lock = acquire(store)
    try:
        store.clean_orphans()
        keys = manifest["sha256"].tolist()
        missing = set(store.missing(keys))
        first_path = dict(zip(manifest["sha256"], manifest["path"]))
        todo = [(k, str(paths.root / first_path[k])) for k in dict.fromkeys(keys) if k in missing]
        engine_name = resolve_engine(params.features.engine)
        if todo:
            engine = make_engine(params, store)
            engine_name = engine.name
            extract_to_store(params, store, todo, engine)
    finally:
        lock.release()
    seconds = time.perf_counter() - t0
    n_unique = len(set(keys))
    rejected = len(read_rejected(paths))
    summary = FeaturesSummary(store.fingerprint, str(store.dir), engine_name, n_unique, n_unique - len(todo),
                              len(todo), rejected, seconds, len(todo) / seconds if todo else 0.0)
    log(f"features: {summary.images} images, {summary.cache_hits} cache hits, {summary.extracted} extracted, "
        f"{rejected} rejected by ingest [{engine_name}] in {seconds:.1f}s ({summary.images_per_s:.1f} img/s) "
        f"-> {Path(summary.store).name}")
    return summary


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_features, __name__, argv)


if __name__ == "__main__":
    main()
