"""The samples a manifest lists, as a model takes them: images decoded from the bytes ingest validated (within the
pixel limit), texts as ingest normalised them (the manifest's `text` column; text files are never read again).

The modality follows from the rows: rows that carry a text are texts.

Every stage after ingest reads image files by path. Before decoding one, its sha256 is checked against the manifest's,
cheaply: a file whose size and mtime are those ingest recorded (`tasks.dataset.hash_cache`) is not read twice; any
other is hashed. A file edited since ingest is a one-line error naming it, never features or metrics stored under
the old content's key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tasks.core.errors import UserError
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.dataset.hash_cache import HashCache
from tasks.dataset.images import decoder_identity, load_uint8
from tasks.dataset.manifest import read_manifest, split_rows
from tasks.dataset.texts import TEXT_NORMALISATION


def holds_texts(rows: pd.DataFrame) -> bool:
    """True when manifest `rows` are texts (each carries its text)."""
    return "text" in rows and len(rows) > 0 and bool(rows["text"].notna().all())


def sample_decoder(modality: str) -> str:
    """What turns a listed sample into the model's input, with its version: recorded with every feature shard and
    part of the feature fingerprint (the image decoder and its Pillow; for text, the normalisation)."""
    return decoder_identity() if modality == "image" else f"text/{TEXT_NORMALISATION}"


def load_listed(file: Path, sha256: str, size: int, mode: str, max_pixels: int, hashes: HashCache) -> np.ndarray:
    """One listed image as uint8 HWC, or a one-line UserError if it is gone, changed or unreadable."""
    try:
        if hashes.sha256(file) != sha256:
            raise UserError(f"{file}: changed since ingest (its bytes are not the ones the manifest lists); re-run "
                            f"ingest")
        return load_uint8(file, size, mode, max_pixels)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"{file}: listed in the manifest but cannot be read now ({str(exc).splitlines()[0][:80]}); "
                        f"re-run ingest") from None


def load_rows(rows: pd.DataFrame, paths: ProjectPaths, size: int, mode: str, max_pixels: int,
              hashes: HashCache | None = None) -> np.ndarray:
    """The samples of manifest `rows`, in row order: images (`path`, `sha256`) as one uint8 NHWC array, texts as
    an object array of strings (`size`, `mode` and `max_pixels` apply to images only)."""
    if holds_texts(rows):
        return np.array(rows["text"].tolist(), dtype=object)
    hashes = hashes or HashCache(paths.hashes)
    out = np.empty((len(rows), size, size, 3), dtype=np.uint8)
    for i, (rel, sha) in enumerate(zip(rows["path"], rows["sha256"])):
        out[i] = load_listed(paths.root / rel, sha, size, mode, max_pixels, hashes)
    return out


def split_images(params: Params, paths: ProjectPaths, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` samples of one split (sorted by sha256, so the choice is stable) and their labels."""
    manifest = read_manifest(paths)
    rows = split_rows(manifest, split).sort_values("sha256").head(limit)
    size, mode = params.backbone.input_size, params.backbone.resize
    if not len(rows):
        empty = np.array([], dtype=object) if holds_texts(manifest) else np.zeros((0, size, size, 3), np.uint8)
        return empty, np.array([], dtype=object)
    return load_rows(rows, paths, size, mode, params.ingest.max_pixels), rows["label"].to_numpy()


def parity_chunks(images: np.ndarray):
    """`images` (any samples) in consecutive chunks of 1, 7, 32 and the rest: how every parity gate runs them, so a graph whose
    batch axis was specialised to one size fails at another."""
    i = 0
    for size in (1, 7, 32, len(images)):
        chunk = images[i : i + size]
        if not len(chunk):
            return
        i += len(chunk)
        yield chunk


def parity_images(params: Params, paths: ProjectPaths) -> np.ndarray:
    """Up to `export.parity_images` real held-out samples (val, else test, else train), as `load_rows` gives them:
    what every parity gate (backbone graph, exported model) and evaluate's end-to-end check run on."""
    for split in ("val", "test", "train"):
        images, _ = split_images(params, paths, split, params.export.parity_images)
        if len(images):
            return images
    return images
