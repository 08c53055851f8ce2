"""The extraction loop shared by the features stage and the Dask flow: decode a batch ahead of the model (images;
texts come decoded from the manifest), run the engine, append rows to a feature store a shard at a time."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tasks.core.files import sha256_file
from tasks.core.modality_api import Modality
from tasks.core.params import Params
from tasks.core.progress import Progress
from tasks.dataset.hash_cache import HashCache
from tasks.extraction.backbone_graph import backbone_model, ensure_backbone_graph
from tasks.extraction.engines import OrtEngine, TorchEngine, resolve_engine
from tasks.extraction.feature_store import FeatureStore
from tasks.modality.registry import modality_for


def make_engine(params: Params, store: FeatureStore, sample: Callable[[], np.ndarray] | None = None):
    """Build the configured engine. ONNX Runtime runs the store's backbone graph, made and checked against torch on
    `sample()` the first time (`tasks.extraction.backbone_graph`); with it in place, no torch is imported at all."""
    name = resolve_engine(params.features.engine)
    if name == "torch":
        to_inputs = modality_for(params.backbone).torch_input(params)
        return TorchEngine(backbone_model(params), params.features.threads, to_inputs)
    ensure_backbone_graph(params, store, sample)
    return OrtEngine(store.graph, params.features.threads, spin=params.features.decode_workers == 0)


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def provenance(engine, modality: Modality) -> dict:
    """What computes features with `engine`: the engine and its version, the decoder (and its Pillow), numpy, the
    device. Recorded with every shard."""
    import platform

    if engine.name == "onnxruntime":
        import onnxruntime as runtime
    else:
        import torch as runtime
    made_by = {"engine": engine.name, "engine_version": runtime.__version__, "decoder": modality.decoder(),
               "numpy": np.__version__, "device": str(getattr(engine, "device", "cpu")),
               "python": platform.python_version()}
    if engine.name == "onnxruntime":  # the exact graph: evaluate can prove a shipped model computed these rows
        made_by["graph_sha256"] = sha256_file(engine.path)
    return made_by


def extract_to_store(params: Params, store: FeatureStore, todo: list[tuple[str, str]], engine,
                     hashes: HashCache) -> int:
    """Decode, run and append `todo` [(sha256, source)] (`FeatureStore.missing_samples`) to the store, a shard every
    `features.shard_size` rows. Each image file must still hold the bytes its sha256 names (checked through
    `hashes`), or the run stops naming it."""
    p = params.features
    modality = modality_for(params.backbone)

    def decode(batch):
        return modality.decode_batch(batch, params, hashes)

    made_by = provenance(engine, modality)
    pending_keys: list[str] = []
    pending_feats: list[np.ndarray] = []
    n_pending = 0
    workers = max(1, p.decode_workers)
    with Progress(len(todo), f"features[{engine.name}]", modality.unit) as bar, ThreadPoolExecutor(workers) as pool:
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
                store.append(pending_keys, np.concatenate(pending_feats), made_by)
                pending_keys, pending_feats, n_pending = [], [], 0
            bar.update(len(batch))
        if pending_keys:
            store.append(pending_keys, np.concatenate(pending_feats), made_by)
    return len(todo)
