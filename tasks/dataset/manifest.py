"""The manifest and the rejection list that ingest writes, and how every other stage reads them.

`data/prepared/manifest.parquet`: one row per usable sample, one schema for both modalities:
- `path`: where the sample came from, relative to the project root when inside it: the file; for a text given
  inline in a CSV, `<csv>#L<line>` (the CSV line; there is no file);
- `label`, `split` (train/val/test);
- `sha256`: the key of the sample's content everywhere after ingest (feature store, splits, promotion): of the
  file's bytes for an image, of the normalised text's UTF-8 bytes for a text (`tasks.dataset.texts`);
- `width`, `height`: pixels for an image; characters and lines for a text;
- `group`: the split group (samples of one group share a split): from `ingest.group_pattern` on the file stem, a CSV's
  `group` column, or, for inline texts without one, the text itself (`text:<sha256 prefix>`);
- `text`: the normalised text (null for images): where a text lives after ingest; later stages never re-read or
  re-decode text files, so a text's features, parity checks and scores all see the exact string that was hashed.
`data/prepared/rejected.csv`: every file not used, with its reason (path, label, reason).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tasks.core.errors import UserError
from tasks.core.paths import ProjectPaths

if TYPE_CHECKING:  # pandas is imported where a DataFrame is made: the head stage reads keys with pyarrow and would
    import pandas as pd  # pay ~0.4 s of import for nothing (bench/RESULTS.md §13a)

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["path", "label", "split", "sha256", "width", "height", "group", "text"]
REJECTED_COLUMNS = ["path", "label", "reason", "size", "mtime_ns"]  # size/mtime: to notice a file fixed in place


def read_manifest(paths: ProjectPaths) -> pd.DataFrame:
    """The manifest, or a one-line error saying to run ingest."""
    if not paths.manifest.exists():
        raise UserError(f"{paths.manifest} not found; run the ingest stage first (python -m tasks.ingest)")
    import pandas as pd

    return pd.read_parquet(paths.manifest)


def read_rejected(paths: ProjectPaths) -> pd.DataFrame:
    """The rejection list of the last ingest (empty before the first one)."""
    import pandas as pd

    if not paths.rejected.exists():
        return pd.DataFrame(columns=REJECTED_COLUMNS)
    return pd.read_csv(paths.rejected)


def split_rows(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split, in manifest order, re-indexed from 0."""
    return manifest[manifest["split"] == split].reset_index(drop=True)


def split_keys_and_labels(paths: ProjectPaths, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(sha256 keys as 64-byte strings, labels) of one split in manifest order, read column by column with pyarrow:
    about 72 bytes a row, where the whole manifest as a DataFrame of Python strings costs several hundred (at a
    million rows, what a head's memory would grow by)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not paths.manifest.exists():
        raise UserError(f"{paths.manifest} not found; run the ingest stage first (python -m tasks.ingest)")
    table = pq.read_table(paths.manifest, columns=["split", "sha256", "label"])
    table = table.filter(pc.equal(table.column("split"), split))
    keys = _as_fixed_bytes(table.column("sha256").combine_chunks(), 64)
    labels = table.column("label").combine_chunks().dictionary_encode()
    names = np.array(labels.dictionary.to_pylist(), dtype=object)
    labels = names[labels.indices.to_numpy(zero_copy_only=False)] if len(table) else np.array([], object)
    del table
    # pyarrow's allocator keeps what the read freed (at 1M rows, ~300 MB held with 0 bytes in use): give it back,
    # so the head's peak memory is the same at 1M rows as at 70k (bench/RESULTS.md §24)
    pa.default_memory_pool().release_unused()
    return keys, labels


def _as_fixed_bytes(strings, width: int) -> np.ndarray:
    """An arrow string array as numpy `S{width}` straight from its buffers when every value is `width` bytes long
    (no Python string per value), else through Python strings."""
    import pyarrow as pa

    if len(strings) and strings.null_count == 0 and strings.type in (pa.string(), pa.large_string()):
        kind = np.int64 if strings.type == pa.large_string() else np.int32
        offsets = np.frombuffer(strings.buffers()[1], kind)[strings.offset:strings.offset + len(strings) + 1]
        if (np.diff(offsets) == width).all():
            data = np.frombuffer(strings.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
            return data.view(f"S{width}").copy()
    return np.array(strings.to_pylist(), dtype=f"S{width}")
