"""A split's feature rows as index sets over the feature store's shard files, read in bounded chunks.

Fitting a head never loads a split's feature matrix whole. `FeatureRows` knows, for each shard file, which of its rows
belong to the split (and where each sits in the split's order); `chunks()` reads them with plain file reads into a
buffer of at most `chunk_bytes` and yields (positions, rows). Plain reads rather than a memory map: a mapped page
counts towards the process's resident memory until the kernel needs it back, so a pass over a 5 GB store through a
map would grow RSS by 5 GB; a read goes through the page cache, which the process does not hold.

Chunks are kept between passes up to `cache_bytes`, in order: a split smaller than that is read from disk once, a larger
one keeps its first chunks and streams the rest on every pass. Memory is bounded by chunk_bytes + cache_bytes whatever
the store's size.

A fold or any other subset is an index set over the same rows (`positions` select labels and weights), never a copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from tasks.core.errors import UserError

CHUNK_BYTES = 32 << 20


@dataclass(frozen=True)
class ShardRows:
    """The rows of one shard file that belong to a split: `rows` (sorted) in the file, `positions` in the split."""

    path: Path
    offset: int  # byte offset of row 0 (after the .npy header)
    rows: np.ndarray
    positions: np.ndarray


def shard_header(path: Path) -> tuple[int, int, int]:
    """(rows, dim, data offset) of a float32 C-order 2-D .npy file. A missing, truncated or foreign file is a one-line
    UserError naming it."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except FileNotFoundError:
        raise UserError(f"{path} is missing; run the features stage to recompute its rows") from None
    except (ValueError, OSError) as exc:
        raise UserError(f"{path} is not a readable feature shard ({exc}); delete it and its .keys.json, then run the "
                        f"features stage") from None
    if len(shape) != 2 or fortran or dtype != np.float32:
        raise UserError(f"{path} holds {dtype} {shape}, not float32 rows x features; it is not a feature shard")
    needed = offset + shape[0] * shape[1] * 4
    size = path.stat().st_size
    if size < needed:
        raise UserError(f"{path} is truncated ({size} of {needed} bytes); delete it and its .keys.json, then run the "
                        f"features stage to recompute its rows")
    return shape[0], shape[1], offset


class FeatureRows:
    """Rows of a split, by shard file, read chunk by chunk (module docstring)."""

    def __init__(self, shards: list[ShardRows], dim: int, chunk_bytes: int = CHUNK_BYTES, cache_bytes: int = 0):
        self.shards = shards
        self.dim = dim
        self.n = int(sum(len(s.rows) for s in shards))
        self.chunk_rows = max(1, chunk_bytes // (4 * max(dim, 1)))
        self.cache_bytes = cache_bytes
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._held = 0
        self._plan_cache: list[tuple[ShardRows, int, int]] | None = None
        self.bytes_read = 0

    @classmethod
    def from_store(cls, store, keys: list[str], chunk_bytes: int = CHUNK_BYTES, cache_bytes: int = 0) -> "FeatureRows":
        """The rows of `keys` (in that order) in `store`, validated: every shard present, whole and of one width."""
        sids, rows = store.locate(keys)
        shards, dims = [], {}
        for sid in np.unique(sids):
            path = store.shard_file(int(sid))
            n_rows, dim, offset = shard_header(path)
            dims[path.name] = dim
            mine = np.flatnonzero(sids == sid)
            order = np.argsort(rows[mine], kind="stable")
            shard_rows, positions = rows[mine][order], mine[order]
            if len(shard_rows) and shard_rows[-1] >= n_rows:
                raise UserError(f"{path} has {n_rows} rows but its keys file names row {shard_rows[-1]}; delete it "
                                f"and its .keys.json, then run the features stage")
            shards.append(ShardRows(path, offset, shard_rows, positions))
        if len(set(dims.values())) > 1:
            widths = ", ".join(f"{name}: {d}" for name, d in sorted(dims.items())[:4])
            raise UserError(f"feature store {store.dir} mixes feature widths ({widths}): shards of another backbone "
                            f"were copied in; delete that folder and run the features stage")
        return cls(shards, next(iter(dims.values()), 0), chunk_bytes, cache_bytes)

    def subset(self, keep: np.ndarray) -> "FeatureRows":
        """The rows whose split position is True in `keep` (an index set over the same files; positions unchanged)."""
        shards = []
        for s in self.shards:
            mine = keep[s.positions]
            if mine.any():
                shards.append(ShardRows(s.path, s.offset, s.rows[mine], s.positions[mine]))
        out = FeatureRows(shards, self.dim, self.chunk_rows * 4 * self.dim, self.cache_bytes)
        return out

    def _plan(self) -> list[tuple[ShardRows, int, int]]:
        """(shard, start, stop): each chunk's slice of its shard's selected rows, spanning < chunk_rows file rows."""
        plan = []
        for shard in self.shards:
            start = 0
            while start < len(shard.rows):
                stop = int(np.searchsorted(shard.rows, int(shard.rows[start]) + self.chunk_rows, side="left"))
                plan.append((shard, start, stop))
                start = stop
        return plan

    def _read(self, shard: ShardRows, start: int, stop: int, block: np.ndarray) -> np.ndarray:
        first = int(shard.rows[start])
        span = int(shard.rows[stop - 1]) - first + 1
        with open(shard.path, "rb", buffering=0) as f:
            got = os.preadv(f.fileno(), [memoryview(block[:span]).cast("B")], shard.offset + first * self.dim * 4)
        if got != span * self.dim * 4:
            raise UserError(f"{shard.path} ended while reading it (another process rewriting it?); re-run the head "
                            f"stage")
        self.bytes_read += got
        picked = shard.rows[start:stop] - first
        return block[:span] if span == len(picked) else block[picked]

    def n_chunks(self) -> int:
        """How many chunks a pass yields."""
        if self._plan_cache is None:
            self._plan_cache = self._plan()
        return len(self._plan_cache)

    def chunks(self, order: list[int] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions in the split, float32 rows) covering every row once (chunk indices in `order`, default in file
        order), each chunk at most `chunk_rows` rows. A yielded array is only valid until the next one is requested
        (the read buffer is reused)."""
        plan = self._plan_cache if self._plan_cache is not None else self._plan()
        self._plan_cache = plan
        block = None
        for i in (range(len(plan)) if order is None else order):
            if i in self._cache:
                yield self._cache[i]
                continue
            shard, start, stop = plan[i]
            if block is None:
                block = np.empty((self.chunk_rows, self.dim), np.float32)
            x = self._read(shard, start, stop, block)
            positions = shard.positions[start:stop]
            if self._held + x.nbytes <= self.cache_bytes:
                self._cache[i] = (positions, np.array(x))
                self._held += x.nbytes
                yield self._cache[i]
            else:
                yield positions, x
