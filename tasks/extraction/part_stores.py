"""Part stores: how several workers extract into one feature store without racing on it.

Worker i writes its rows into a private sub-store `<store>/.part-<i>/` (an ordinary FeatureStore, so its shards are
atomic too); the coordinator, holding the store's writer lock, merges the parts into the main store as new shards and
deletes them. Parts left by an interrupted run hold only whole shards, keyed by sha256 under the same fingerprint, so
the next run merges them first.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from tasks.core.errors import UserError
from tasks.core.params import Params
from tasks.dataset.hash_cache import HashCache
from tasks.extraction.extract import extract_to_store, make_engine
from tasks.extraction.feature_store import FeatureStore
from tasks.modality.registry import modality_for

PART_PREFIX = ".part-"
_PART = re.compile(r"^\.part-(\d+)$")


def split_chunks(todo: list, shards: int, batch_size: int) -> list[list]:
    """At most `shards` contiguous, non-empty chunks of `todo`, as even as possible in whole batches."""
    if not todo:
        return []
    n_batches = -(-len(todo) // batch_size)
    k = max(1, min(shards, n_batches))
    bounds = [i * n_batches // k * batch_size for i in range(k)] + [len(todo)]
    return [todo[a:b] for a, b in zip(bounds, bounds[1:])]


def part_dirs(store: FeatureStore) -> list[Path]:
    """The per-worker part stores under `store`, in chunk order."""
    found = [(int(m.group(1)), p) for p in store.dir.iterdir() if p.is_dir() and (m := _PART.match(p.name))]
    return [p for _, p in sorted(found)]


def merge_parts(store: FeatureStore, shard_size: int) -> tuple[int, int]:
    """Move the rows of every part store into `store` (caller holds the writer lock); return (rows, shard files).

    Rows already in the store (from an earlier, interrupted merge) are skipped; new rows are appended in part order,
    `shard_size` rows per shard. The parts are deleted afterwards.
    """
    parts = part_dirs(store)
    part_stores = [FeatureStore(part.parent, part.name) for part in parts]
    # a merged shard may mix rows of several workers: it records every distinct provenance among them
    made_by = {json.dumps(p, sort_keys=True) for part in part_stores for p in part.provenances()}
    provenance = {"merged_from_workers": [json.loads(m) for m in sorted(made_by)]}
    rows = files = 0
    pending_keys: list[str] = []
    pending: list[np.ndarray] = []
    seen: set[str] = set()

    def flush(limit: int) -> None:
        nonlocal pending_keys, pending, rows, files
        while len(pending_keys) >= limit and pending_keys:
            feats = np.concatenate(pending) if len(pending) > 1 else np.asarray(pending[0])
            n = min(len(pending_keys), shard_size)
            store.append(pending_keys[:n], feats[:n], provenance)
            rows, files = rows + n, files + 1
            pending_keys, pending = pending_keys[n:], ([feats[n:]] if n < len(feats) else [])

    for part in part_stores:
        for keys, feats in part.shards():
            keep = [i for i, k in enumerate(keys) if k not in store and k not in seen]
            if not keep:
                continue
            seen.update(keys[i] for i in keep)
            pending_keys += [keys[i] for i in keep]
            pending.append(np.asarray(feats[keep] if len(keep) < len(keys) else feats))
            flush(shard_size)
    flush(1)
    for part in parts:
        shutil.rmtree(part)
    return rows, files


def extract_part(params: Params, store_dir: Path, index: int, todo: list[tuple[str, str]], hashes: Path) -> str:
    """On a worker: extract `todo` [(sha256, absolute path)] into the part store `<store_dir>/.part-<index>/` with the
    store's cached backbone graph, checking each file against its sha256 (`hashes`: the project's hash cache); never
    touches the main store. Returns the engine's name."""
    store = FeatureStore(store_dir.parent, store_dir.name)  # read-only here: only its cached backbone.onnx is used
    wanted, mine = store.recipe().get("decoder"), modality_for(params.backbone).decoder()
    if wanted is not None and wanted != mine:  # other pixels must not land under this fingerprint
        raise UserError(f"this worker decodes with {mine}, but {store_dir.name} was made with {wanted}: "
                        f"install the project's pinned versions on every worker")
    part_dir = store.dir / f"{PART_PREFIX}{index}"
    shutil.rmtree(part_dir, ignore_errors=True)  # a Dask retry of this chunk starts clean
    part = FeatureStore(store.dir, part_dir.name)
    engine = make_engine(params, store)
    extract_to_store(params, part, todo, engine, HashCache(hashes))
    return engine.name
