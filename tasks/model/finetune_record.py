"""What the fine-tune stage records in `models/finetune/`: which weights ship (the head on frozen features, or the
fine-tuned model), why, and which head the fine-tuning started from. Reading and writing it needs no torch."""

from __future__ import annotations

import json

from tasks.core.files import atomic_write_text, sha256_file
from tasks.core.paths import ProjectPaths


def finetune_summary(paths: ProjectPaths) -> dict:
    """The fine-tune stage's summary.json ({} when the stage has not run: the head on frozen features ships)."""
    f = paths.finetune / "summary.json"
    return json.loads(f.read_text()) if f.exists() else {}


def head_sha256(paths: ProjectPaths) -> str:
    """sha256 of models/head.npz: which head a fine-tuned model started from."""
    return sha256_file(paths.head) if paths.head.exists() else ""


def clear_finetune_outputs(paths: ProjectPaths) -> None:
    """Remove the outputs of an earlier fine-tuning run (model.pt, history.csv, curves.png)."""
    for name in ("model.pt", "history.csv", "curves.png"):
        (paths.finetune / name).unlink(missing_ok=True)


def write_finetune_summary(paths: ProjectPaths, summary: dict) -> None:
    """Write models/finetune/summary.json atomically."""
    paths.finetune.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths.finetune / "summary.json", json.dumps(summary, indent=2))
