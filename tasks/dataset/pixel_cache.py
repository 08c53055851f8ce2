"""Decoded, resized uint8 pixels of a split, cached on disk for training epochs that read every image many times.

Fine-tuning reads each image once per epoch; decoding a PNG costs about as much as a forward pass at 64 px, so the
pixels are decoded once (in parallel threads) into `data/.cache/pixels/<key>.npy` and memory-mapped after that. The key
is the sha256 of the images' content hashes in order plus size and resize mode, so any change to the split or the
input contract gets a new file. The file is written to a temp path and renamed; a killed run leaves nothing
half-written.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.files import atomic_path
from tasks.core.paths import ProjectPaths
from tasks.core.progress import Progress
from tasks.dataset.hash_cache import HashCache
from tasks.dataset.images import decoder_identity
from tasks.dataset.manifest_samples import load_listed


def cache_key(sha256s: list[str], size: int, mode: str) -> str:
    """Content key of a pixel array: which images, in which order, at which size and resize mode, decoded by which
    decoder (`decoder_identity`: a changed decoder must not train on pixels serving will not see)."""
    h = hashlib.sha256(f"{size}:{mode}:{decoder_identity()}:".encode())
    for s in sha256s:
        h.update(s.encode())
    return h.hexdigest()[:24]


def split_pixels(rows: pd.DataFrame, paths: ProjectPaths, size: int, mode: str, max_pixels: int, desc: str,
                 workers: int = 2) -> np.ndarray:
    """uint8 (N, size, size, 3) pixels of manifest `rows` in row order, memory-mapped from the cache (decoded and
    cached first if needed)."""
    cache = paths.root / "data" / ".cache" / "pixels"
    target = cache / f"{cache_key(rows['sha256'].tolist(), size, mode)}.npy"
    if target.exists():
        return np.load(target, mmap_mode="r")
    cache.mkdir(parents=True, exist_ok=True)
    files = list(zip([paths.root / p for p in rows["path"]], rows["sha256"]))
    hashes = HashCache(paths.hashes)
    with atomic_path(target, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), size, size, 3))
        with Progress(len(files), desc, "img") as bar, ThreadPoolExecutor(max(1, workers)) as pool:
            for start in range(0, len(files), 256):
                chunk = files[start : start + 256]
                for i, img in enumerate(pool.map(lambda f: load_listed(*f, size, mode, max_pixels, hashes), chunk)):
                    out[start + i] = img
                bar.update(len(chunk))
        out.flush()
        del out
    return np.load(target, mmap_mode="r")


def prune(paths: ProjectPaths, keep: set[Path]) -> None:
    """Delete cached pixel files other than `keep` (old splits, other sizes)."""
    cache = paths.root / "data" / ".cache" / "pixels"
    for f in cache.glob("*.npy") if cache.exists() else []:
        if f not in keep:
            f.unlink(missing_ok=True)
