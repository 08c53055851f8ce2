"""What the fine-tune stage decided: which weights ship (the head on frozen features, or the fine-tuned model) and
which head the fine-tuning started from. Reading it needs no torch."""

from __future__ import annotations

import json

from tasks.core.files import sha256_file
from tasks.core.paths import ProjectPaths


def finetune_summary(paths: ProjectPaths) -> dict:
    """The fine-tune stage's summary.json ({} when the stage has not run: the head on frozen features ships)."""
    f = paths.finetune / "summary.json"
    return json.loads(f.read_text()) if f.exists() else {}


def head_sha256(paths: ProjectPaths) -> str:
    """sha256 of models/head.npz: which head a fine-tuned model started from."""
    return sha256_file(paths.head) if paths.head.exists() else ""
