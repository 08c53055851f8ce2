"""Content-addressed feature store: rows keyed by image sha256, in a few large memory-mappable shards.

Layout of `data/features/<fingerprint>/`:
    recipe.json              what the fingerprint hashes (backbone, weights, preprocessing, ...)
    shard-000000.npy           float32 (rows, dim), written to a temp name and renamed
    shard-000000.keys.json     the rows' sha256 keys; written after its .npy: a shard exists once this file does
    shard-000000.provenance.json  what computed the rows (engine and version, decoder, graph sha256, ...)
    backbone.onnx              the backbone graph (uint8 NHWC -> features), checked against torch when made
    backbone.parity.json       that check, and the sha256 of the graph it checked (tasks.extraction.backbone_graph)
A crash loses at most the shard being written (an .npy without keys is an orphan, removed on the next open).
Writers hold a file lock under `data/.locks/`, outside the DVC-tracked directory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from filelock import FileLock, Timeout

from tasks.core.errors import UserError
from tasks.core.files import atomic_path, atomic_write_text, sha256_file
from tasks.core.modality_api import Modality
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.dataset.manifest import read_manifest, split_rows
from tasks.extraction.fingerprint import feature_fingerprint, feature_recipe

if TYPE_CHECKING:
    import pandas as pd

_SHARD = re.compile(r"^\.?shard-(\d{6})")  # shard-000042.npy, its .keys.json, and their temp files (.shard-...)


class FeatureStore:
    """Read and append feature rows for one fingerprint."""

    def __init__(self, root: Path, fingerprint: str, recipe: dict | None = None):
        self.dir = Path(root) / fingerprint
        self.fingerprint = fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)
        if recipe is not None and not (self.dir / "recipe.json").exists():
            atomic_write_text(self.dir / "recipe.json", json.dumps(recipe, indent=2, sort_keys=True))
        self._index_dict: dict[str, tuple[int, int]] | None = None  # built on first use (`_index`)
        self._shards: dict[int, np.ndarray] = {}

    def _shard_path(self, sid: int) -> Path:
        return self.dir / f"shard-{sid:06d}.npy"

    def _committed_shards(self) -> list[tuple[int, list[str]]]:
        """(shard id, its keys) of every shard whose keys file exists, in id order. An .npy without its keys file is
        the orphan of an interrupted write: ignored here, removed by `clean_orphans`."""
        out = []
        for npy in sorted(self.dir.glob("shard-*.npy")):
            keys_file = npy.with_suffix(".keys.json")
            if (m := _SHARD.match(npy.name)) and keys_file.exists():
                out.append((int(m.group(1)), json.loads(keys_file.read_text())))
        return out

    @property
    def graph(self) -> Path:
        """The store's backbone graph (made and checked by `tasks.extraction.backbone_graph`)."""
        return self.dir / "backbone.onnx"

    @property
    def graph_record_path(self) -> Path:
        return self.dir / "backbone.parity.json"

    def graph_record(self) -> dict | None:
        """The parity record of the backbone graph; None when there is no graph or record, or when the graph's
        bytes are no longer the ones that were checked."""
        if not self.graph.exists() or not self.graph_record_path.exists():
            return None
        record = json.loads(self.graph_record_path.read_text())
        return record if record.get("sha256") == sha256_file(self.graph) else None

    def recipe(self) -> dict:
        """What this store's fingerprint hashes ({} for a store made without one, such as a worker's part store)."""
        f = self.dir / "recipe.json"
        return json.loads(f.read_text()) if f.exists() else {}

    def check_recipe(self, params: Params) -> None:
        """One-line UserError when this folder's recipe.json is not what `params` select (features of another
        backbone or preprocessing copied or renamed into this fingerprint's folder)."""
        found, wanted = self.recipe(), feature_recipe(params.backbone, params.seed)
        if found and found != wanted:
            diff = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
            raise UserError(f"feature store {self.dir} holds features of another recipe ({diff[0]}: "
                            f"{found.get(diff[0])!r}, params select {wanted.get(diff[0])!r}); move that folder away "
                            f"and run the features stage")

    def provenance(self, sid: int) -> dict:
        """What computed shard `sid` ({} for shards written before provenance was recorded)."""
        f = self._shard_path(sid).with_suffix(".provenance.json")
        return json.loads(f.read_text()) if f.exists() else {}

    def provenances(self) -> list[dict]:
        """The distinct provenances of the committed shards."""
        found = {json.dumps(self.provenance(sid), sort_keys=True) for sid, _ in self._committed_shards()}
        return [json.loads(p) for p in sorted(found)]

    def provenance_for(self, keys: list[str]) -> list[dict]:
        """The distinct provenances of the shards holding `keys` (a merged Dask shard contributes each of its
        workers'; a shard written before provenance was recorded contributes {})."""
        found: set[str] = set()
        for sid in {self._index[k][0] for k in keys if k in self._index}:
            made_by = self.provenance(sid)
            for p in made_by.get("merged_from_workers", [made_by]):
                found.add(json.dumps(p, sort_keys=True))
        return [json.loads(p) for p in sorted(found)]

    def shards(self):
        """(keys, memory-mapped rows) of each committed shard, in id order."""
        for sid, keys in self._committed_shards():
            yield keys, self._shard(sid)

    @property
    def _index(self) -> dict[str, tuple[int, int]]:
        if self._index_dict is None:
            self._load_index()
        return self._index_dict

    def _load_index(self) -> None:
        self._index_dict = {}
        self._shards.clear()
        for sid, keys in self._committed_shards():
            for row, key in enumerate(keys):
                self._index_dict.setdefault(key, (sid, row))

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def missing(self, keys: list[str]) -> list[str]:
        """Keys (deduplicated, order kept) that have no row yet."""
        seen, out = set(), []
        for k in keys:
            if k not in self._index and k not in seen:
                seen.add(k)
                out.append(k)
        return out

    def missing_samples(self, manifest: pd.DataFrame, root: Path, modality: Modality) -> list[tuple[str, str]]:
        """(sha256, source) of each manifest sample with no row yet, once per content, in the modality's extraction
        order (`Modality.sources`: an image's absolute path in manifest order; a text itself, shortest first)."""
        return modality.sources(manifest, self.missing(manifest["sha256"].tolist()), root)

    def _shard(self, sid: int) -> np.ndarray:
        if sid not in self._shards:
            self._shards[sid] = np.load(self._shard_path(sid), mmap_mode="r")
        return self._shards[sid]

    def get(self, keys: list[str]) -> np.ndarray:
        """Feature rows for `keys`, in that order (float32, copied out of the memory maps)."""
        absent = [k for k in keys if k not in self._index]
        if absent:
            raise UserError(f"feature store {self.dir}: {len(absent)} image(s) have no features "
                            f"(e.g. sha256 {absent[0][:12]}); run the features stage first")
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        dim = self._shard(self._index[keys[0]][0]).shape[1]
        out = np.empty((len(keys), dim), dtype=np.float32)
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for i, k in enumerate(keys):
            sid, row = self._index[k]
            by_shard.setdefault(sid, []).append((i, row))
        for sid, pairs in by_shard.items():
            idx = np.array([p[0] for p in pairs])
            rows = np.array([p[1] for p in pairs])
            out[idx] = self._shard(sid)[rows]
        return out

    def key_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sorted keys as 64-byte strings, their shard ids, their rows): the index as three flat arrays, about 72
        bytes a row (a dict of Python strings costs several times that; at a million rows it is what a head's
        memory would grow by)."""
        keys, sids, rows = [], [], []
        for sid, shard_keys in self._committed_shards():
            keys.append(np.array(shard_keys, dtype="S64"))
            sids.append(np.full(len(shard_keys), sid, np.int32))
            rows.append(np.arange(len(shard_keys), dtype=np.int32))
        if not keys:
            return np.zeros(0, "S64"), np.zeros(0, np.int32), np.zeros(0, np.int32)
        keys, sids, rows = np.concatenate(keys), np.concatenate(sids), np.concatenate(rows)
        order = np.argsort(keys, kind="stable")  # stable: a key in two shards resolves to the first, as `_index`
        return keys[order], sids[order], rows[order]

    def locate(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """(shard id, row) of each key (a list of str, or an array of 64-byte strings), in order, without reading
        any rows or building the dict index. A key with no row is a one-line UserError that names the shard file
        that should hold it when that file is gone."""
        wanted = np.asarray(keys, dtype="S64")
        table, sids, rows = self.key_table()
        at = np.minimum(np.searchsorted(table, wanted, side="left"), max(len(table) - 1, 0))
        found = (table[at] == wanted) if len(table) else np.zeros(len(wanted), bool)
        if not found.all():
            absent = [k.decode() for k in wanted[~found]]
            lost = [keys_file.name.replace(".keys.json", ".npy") for keys_file in self.dir.glob("shard-*.keys.json")
                    if not keys_file.with_name(keys_file.name.replace(".keys.json", ".npy")).exists()]
            where = f"; {lost[0]} is missing (its keys file is there)" if lost else ""
            raise UserError(f"feature store {self.dir}: {len(absent)} sample(s) have no features "
                            f"(e.g. sha256 {absent[0][:12]}){where}; run the features stage to compute them")
        return sids[at].astype(np.int64), rows[at].astype(np.int64)

    def shard_file(self, sid: int) -> Path:
        """The .npy file of shard `sid`."""
        return self._shard_path(sid)

    def lock(self) -> FileLock:
        """An exclusive writer lock for this fingerprint (a second writer gets a clear error, not corruption)."""
        lock_dir = self.dir.parent.parent / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_dir / f"{self.fingerprint}.lock"), timeout=0)

    def clean_orphans(self) -> int:
        """Remove shard files whose keys file never got written (call while holding the lock)."""
        n = 0
        for orphan in [*self.dir.glob("shard-*.npy"), *self.dir.glob("shard-*.provenance.json")]:
            if not self.dir.joinpath(orphan.name.split(".")[0] + ".keys.json").exists():
                orphan.unlink(missing_ok=True)
                n += orphan.suffix == ".npy"
        for tmp in self.dir.glob(".shard-*"):
            tmp.unlink(missing_ok=True)
        return n

    def append(self, keys: list[str], features: np.ndarray, provenance: dict | None = None) -> int:
        """Write one new shard atomically (features, then its provenance, then keys = commit). Returns its id.

        `provenance` says what computed the rows (engine and its version, decoder, library versions): it is not part
        of the fingerprint (engines agree within 1e-4), but every committed shard can say where it came from."""
        if len(keys) != len(features):
            raise ValueError("keys and features differ in length")
        ids = [int(m.group(1)) for p in self.dir.iterdir() if (m := _SHARD.match(p.name))]
        sid = max(ids, default=-1) + 1
        npy = self._shard_path(sid)
        with atomic_path(npy, suffix=".npy", needs=4 * np.size(features) + 128) as tmp:  # float32 rows + .npy header
            np.save(tmp, np.ascontiguousarray(features, dtype=np.float32))
        if provenance is not None:
            atomic_write_text(npy.with_suffix(".provenance.json"), json.dumps(provenance, indent=1, sort_keys=True))
        atomic_write_text(npy.with_suffix(".keys.json"), json.dumps(list(keys)))
        for row, key in enumerate(keys):
            self._index.setdefault(key, (sid, row))
        return sid


def acquire(store: FeatureStore) -> FileLock:
    """Take the store's writer lock or raise a one-line UserError saying another run holds it."""
    lock = store.lock()
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"feature store {store.dir} is being written by another run (lock {lock.lock_file}); "
                        f"wait for it to finish") from None
    return lock


def open_store(params: Params, paths: ProjectPaths) -> FeatureStore:
    """The feature store for the configured backbone (created if new)."""
    fp = feature_fingerprint(params.backbone, params.seed)
    return FeatureStore(paths.features, fp, feature_recipe(params.backbone, params.seed))


def split_features(params: Params, paths: ProjectPaths, split: str):
    """(features, labels, manifest rows) of one split under the current fingerprint."""
    manifest = read_manifest(paths)
    rows = split_rows(manifest, split)
    store = open_store(params, paths)
    return store.get(rows["sha256"].tolist()), rows["label"].to_numpy(), rows, store.fingerprint
