"""Where every stage reads and writes, relative to the project root (the working directory)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.core.env import project_root


@dataclass(frozen=True)
class ProjectPaths:
    """All pipeline paths under one root; the defaults match dvc.yaml."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def manifest(self) -> Path:
        return self.prepared / "manifest.parquet"

    @property
    def rejected(self) -> Path:
        return self.prepared / "rejected.csv"

    @property
    def hashes(self) -> Path:
        """Remembered content hashes of source files, by size and mtime (tasks.dataset.hash_cache)."""
        return self.prepared / "hashes.parquet"

    @property
    def features(self) -> Path:
        return self.root / "data" / "features"

    @property
    def reports(self) -> Path:
        """The audit stage's reports on the data: label issues, near-duplicates (tasks.audit)."""
        return self.root / "data" / "reports"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def head(self) -> Path:
        return self.models / "head.npz"

    @property
    def finetune_start(self) -> Path:
        """What the fine-tune stage starts from, its DVC dependency (tasks.model.finetune_record.write_finetune_start)."""
        return self.models / "finetune_start.json"

    @property
    def finetune(self) -> Path:
        """Fine-tune stage output: summary.json, history.csv, curves.png and, when kept, model.pt."""
        return self.models / "finetune"

    @property
    def checkpoints(self) -> Path:
        """Per-epoch training checkpoints for resume (outside DVC outputs, which DVC clears before a run)."""
        return self.models / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.models / "metrics"

    @property
    def plots(self) -> Path:
        return self.models / "plots"

    @property
    def onnx(self) -> Path:
        return self.models / "model.onnx"

    @property
    def labels(self) -> Path:
        return self.models / "labels.txt"


def default_paths() -> ProjectPaths:
    """Paths under $HEADSTART_ROOT or the current directory."""
    return ProjectPaths(project_root())
