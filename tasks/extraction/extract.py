"""The extraction loop shared by the features stage and the Dask flow: decode a batch ahead of the model, run the
engine, append rows to a feature store a shard at a time."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tasks.core.params import Params
from tasks.core.progress import Progress
from tasks.dataset.hash_cache import HashCache
from tasks.dataset.images import decoder_identity
from tasks.dataset.manifest_images import load_listed
from tasks.extraction.engines import OrtEngine, TorchEngine, resolve_engine
from tasks.extraction.feature_store import FeatureStore
from tasks.model.onnx_export import export_onnx


def _torch_model(params: Params):
    from tasks.model.backbones import build_backbone
    from tasks.model.image_model import ImageModel

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


def provenance(engine) -> dict:
    """What computes features with `engine`: the engine and its version, the decoder (and its Pillow), numpy, the
    device. Recorded with every shard."""
    import platform

    if engine.name == "onnxruntime":
        import onnxruntime as runtime
    else:
        import torch as runtime
    return {"engine": engine.name, "engine_version": runtime.__version__, "decoder": decoder_identity(),
            "numpy": np.__version__, "device": str(getattr(engine, "device", "cpu")), "python": platform.python_version()}


def extract_to_store(params: Params, store: FeatureStore, todo: list[tuple[str, str]], engine,
                     hashes: HashCache) -> int:
    """Decode, run and append `todo` [(sha256, path)] to the store, a shard every `features.shard_size` rows. Each
    file must still hold the bytes its sha256 names (checked through `hashes`), or the run stops naming it."""
    p = params.features
    size, mode, limit = params.backbone.input_size, params.backbone.resize, params.ingest.max_pixels

    def decode(batch):
        return np.stack([load_listed(Path(path), sha, size, mode, limit, hashes) for sha, path in batch])

    made_by = provenance(engine)
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
                store.append(pending_keys, np.concatenate(pending_feats), made_by)
                pending_keys, pending_feats, n_pending = [], [], 0
            bar.update(len(batch))
        if pending_keys:
            store.append(pending_keys, np.concatenate(pending_feats), made_by)
    return len(todo)
