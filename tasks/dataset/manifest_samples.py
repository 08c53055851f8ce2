"""Listed images as a model takes them: decoded from the bytes ingest validated (within the pixel limit). Texts need
no loading: the manifest's `text` column holds them as ingest normalised them (`tasks.modality.text`).

Every stage after ingest reads image files by path. Before decoding one, its sha256 is checked against the manifest's,
cheaply: a file whose size and mtime are those ingest recorded (`tasks.dataset.hash_cache`) is not read twice; any
other is hashed. A file edited since ingest is a one-line error naming it, never features or metrics stored under
the old content's key.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from tasks.core.errors import UserError
from tasks.core.paths import ProjectPaths
from tasks.dataset.hash_cache import HashCache
from tasks.dataset.images import load_uint8

if TYPE_CHECKING:
    import pandas as pd


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


def load_images(rows: pd.DataFrame, paths: ProjectPaths, size: int, mode: str, max_pixels: int,
                hashes: HashCache | None = None) -> np.ndarray:
    """The images of manifest `rows` (`path`, `sha256`), in row order, as one uint8 NHWC array, each checked against
    its sha256 (a one-line UserError names a file that is gone, changed or unreadable)."""
    hashes = hashes or HashCache(paths.hashes)
    out = np.empty((len(rows), size, size, 3), dtype=np.uint8)
    for i, (rel, sha) in enumerate(zip(rows["path"], rows["sha256"])):
        out[i] = load_listed(paths.root / rel, sha, size, mode, max_pixels, hashes)
    return out


def parity_chunks(samples: np.ndarray):
    """`samples` in consecutive chunks of 1, 7, 32 and the rest: how every parity gate runs them, so a graph whose
    batch axis was specialised to one size fails at another."""
    i = 0
    for size in (1, 7, 32, len(samples)):
        chunk = samples[i : i + size]
        if not len(chunk):
            return
        i += len(chunk)
        yield chunk
