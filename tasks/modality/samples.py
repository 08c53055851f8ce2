"""Samples of one manifest split as the model takes them (the modality's raw samples), for gates and calibration."""

from __future__ import annotations

import numpy as np

from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.dataset.manifest import read_manifest, split_rows
from tasks.modality.registry import modality_for


def split_samples(params: Params, paths: ProjectPaths, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` samples of one split (sorted by sha256, so the choice is stable) and their labels."""
    samples, rows = split_samples_and_rows(params, paths, split, limit)
    return samples, rows["label"].to_numpy() if len(rows) else np.array([], dtype=object)


def split_samples_and_rows(params: Params, paths: ProjectPaths, split: str, limit: int):
    """Up to `limit` samples of one split (sorted by sha256, so the choice is stable) and their manifest rows."""
    modality = modality_for(params.backbone)
    rows = split_rows(read_manifest(paths), split).sort_values("sha256").head(limit)
    if not len(rows):
        return modality.empty(params), rows
    b = params.backbone
    return modality.load_rows(rows, paths, b.input_size, b.resize, params.ingest.max_pixels), rows


def parity_samples(params: Params, paths: ProjectPaths) -> np.ndarray:
    """Up to `export.parity_images` real held-out samples (val, else test, else train): what every parity gate
    (backbone graph, exported model) and evaluate's end-to-end check run on."""
    return parity_samples_and_rows(params, paths)[0]


def parity_samples_and_rows(params: Params, paths: ProjectPaths):
    """`parity_samples` and their manifest rows."""
    for split in ("val", "test", "train"):
        samples, rows = split_samples_and_rows(params, paths, split, params.export.parity_images)
        if len(samples):
            return samples, rows
    return samples, rows
