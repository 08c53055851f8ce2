"""Benchmark data recipe: materialise Fashion-MNIST from the Debian package `dataset-fashion-mnist` as PNG files.

Writes `<dest>/<class>/<split>_<index:05d>.png` (28x28 grayscale) and `<dest>/labels.csv` (`path,label,split`, paths
relative to the CSV), which `ingest.source` can name directly. `index` is the image's position in its official IDX
file; `split` is `test` for the official 10k test set and, for the official 60k training set, `val` for a seeded
random 10 % (`numpy.random.default_rng(0)`, drawn over all 60k so it does not depend on `fraction`) and `train` for
the rest. File stems share prefixes (`train_00001`), so ingest must run with `ingest.group_pattern=null`.
The dataset is MIT-licensed (Zalando Research).
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.core.errors import UserError, exit_on_user_error
from tasks.core.files import atomic_write_text
from tasks.core.progress import log

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
OFFICIAL = {"train": "train", "test": "t10k"}  # official set -> IDX file prefix
VAL_SHARE = 0.1
_SUBSET_SEED = {"train": 1, "test": 2}  # independent of the val draw (seed 0)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (gzip) as a uint8 array: (n,) for labels (magic 2049), (n, rows, cols) for images (2051)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = magic & 0xFF
    header = np.frombuffer(data, dtype=">u4", count=1 + ndim)
    if int(header[0]) != magic:
        raise UserError(f"{path}: not an IDX file of the expected kind (magic {int(header[0])}, expected {magic})")
    shape = tuple(int(d) for d in header[1:])
    return np.frombuffer(data, dtype=np.uint8, offset=4 * (1 + ndim)).reshape(shape)


def _load(source: Path, official: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = OFFICIAL[official]
    images = _read_idx(source / f"{prefix}-images-idx3-ubyte.gz", 2051)
    labels = _read_idx(source / f"{prefix}-labels-idx1-ubyte.gz", 2049)
    if len(images) != len(labels):
        raise UserError(f"{source}: {prefix} has {len(images)} images but {len(labels)} labels")
    return images, labels


def _subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a class-stratified random subset (at least one per class). Each image gets one random
    rank, so a smaller fraction is always a subset of a larger one."""
    if fraction >= 1.0:
        return np.arange(len(labels))
    rank = np.random.default_rng(seed).permutation(len(labels))
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, round(fraction * len(idx)))
        keep.append(idx[np.argsort(rank[idx], kind="stable")[:k]])
    return np.sort(np.concatenate(keep))


def _write_png(target: Path, pixels: np.ndarray) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    Image.fromarray(pixels).save(tmp, format="PNG")  # 2-D uint8 -> mode L
    os.replace(tmp, target)


def materialise_fashion_mnist(dest: Path, fraction: float = 1.0, source: Path = FASHION_MNIST) -> dict:
    """Write Fashion-MNIST (or a `fraction` of it) as PNGs under `dest` plus `dest/labels.csv`; return counts.

    Guarantees: the same (`fraction`, package) always gives the same files, labels and splits; `fraction` keeps a
    seeded, class-stratified share of each official set (at least one image per class and set), nested across
    fractions; a PNG already present is not rewritten (idempotent); every PNG and the CSV are written to a temporary
    name and renamed, so an interrupted run leaves no partial file. The CSV lists exactly this fraction's images
    (PNGs left from a larger fraction stay on disk but are not listed).
    """
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"fraction must be in (0, 1], got {fraction}")
    if not source.is_dir():
        raise UserError(f"{source} not found: install Fashion-MNIST with `apt-get install -y dataset-fashion-mnist`")
    t0 = time.perf_counter()
    dest = Path(dest)
    for name in CLASSES:
        (dest / name).mkdir(parents=True, exist_ok=True)
    existing = {name: set(os.listdir(dest / name)) for name in CLASSES}

    rows: list[str] = []
    jobs: list[tuple[Path, np.ndarray]] = []
    per_split = {"train": 0, "val": 0, "test": 0}
    for official in ("train", "test"):
        images, labels = _load(source, official)
        if official == "train":
            split = np.full(len(labels), "train", dtype=object)
            split[np.random.default_rng(0).permutation(len(labels))[: round(VAL_SHARE * len(labels))]] = "val"
        else:
            split = np.full(len(labels), "test", dtype=object)
        for i in _subset(labels, fraction, _SUBSET_SEED[official]):
            cls, s = CLASSES[labels[i]], split[i]
            name = f"{s}_{i:05d}.png"
            rows.append(f"{cls}/{name},{cls},{s}")
            per_split[s] += 1
            if name not in existing[cls]:
                jobs.append((dest / cls / name, images[i]))

    # PNG encoding of 28x28 images is mostly Python overhead; two threads still overlap the file-system calls
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda job: _write_png(*job), jobs, chunksize=256))
    csv = dest / "labels.csv"
    atomic_write_text(csv, "path,label,split\n" + "\n".join(rows) + "\n")
    return {"dest": str(dest), "csv": str(csv), "images": len(rows), "written": len(jobs),
            "existing": len(rows) - len(jobs), "per_split": per_split, "seconds": time.perf_counter() - t0}


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    """`python -m tasks.dataset.fashion_mnist [--dest DIR] [--fraction F]`."""
    ap = argparse.ArgumentParser(prog="python -m tasks.dataset.fashion_mnist", description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=Path("data/raw-fashion-mnist"), help="default: data/raw-fashion-mnist")
    ap.add_argument("--fraction", type=float, default=1.0, help="class-stratified share of each official set (0, 1]")
    args = ap.parse_args(argv)
    r = materialise_fashion_mnist(args.dest, args.fraction)
    s = r["per_split"]
    log(f"fashion-mnist: {r['images']} images (train {s['train']}, val {s['val']}, test {s['test']}), "
        f"{r['written']} written, {r['existing']} already present -> {r['csv']}; {r['seconds']:.1f}s")


if __name__ == "__main__":
    main()
