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


def write_finetune_start(paths: ProjectPaths, strategy: str) -> None:
    """Write models/finetune_start.json for `finetune.strategy`: the sha256 of models/head.npz when the strategy
    trains, and the same fixed text for every head when it is `none`.

    Why a file of its own: DVC re-runs a stage when a dependency's bytes change. The fine-tune stage depends on this
    file rather than on head.npz, so with `finetune.strategy: none` (a stage that reads no head) a head change leaves
    it alone, and with a strategy that trains, every new head re-runs it. The head stage reads `finetune.strategy`
    without listing it among its DVC params, on purpose: choosing a strategy must not refit the head. A strategy
    change re-runs the fine-tune stage through its own params; the file catches up at the next head fit, and the
    most a stale file costs is one extra run of a fine-tune stage that trains nothing."""
    start = ({"strategy": "none", "head_sha256": None,
              "why": "finetune.strategy is none: the fine-tune stage trains nothing and reads no head"}
             if strategy == "none" else {"strategy": "trains", "head_sha256": head_sha256(paths)})
    atomic_write_text(paths.finetune_start, json.dumps(start, indent=2))


def clear_finetune_outputs(paths: ProjectPaths) -> None:
    """Remove the outputs of an earlier fine-tuning run (model.pt, history.csv, curves.png)."""
    for name in ("model.pt", "history.csv", "curves.png"):
        (paths.finetune / name).unlink(missing_ok=True)


def write_finetune_summary(paths: ProjectPaths, summary: dict) -> None:
    """Write models/finetune/summary.json atomically."""
    paths.finetune.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths.finetune / "summary.json", json.dumps(summary, indent=2))
