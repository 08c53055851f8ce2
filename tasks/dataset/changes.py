"""What changed in the raw data since the last ingest: new, modified and removed files (by path and content hash)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from tasks.core.files import sha256_file
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.dataset.manifest import read_rejected
from tasks.dataset.sources import list_sources


@dataclass
class DataChanges:
    """Paths (relative to the project root) that are new, whose bytes changed, or that disappeared."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.new or self.changed or self.removed)

    def describe(self) -> str:
        return f"{len(self.new)} new, {len(self.changed)} changed, {len(self.removed)} removed"


def detect_changes(params: Params, paths: ProjectPaths) -> DataChanges:
    """Compare the files under `ingest.source` with the manifest and the rejection list of the last ingest."""
    candidates, named_rejects = list_sources(params.ingest, paths.root)
    known: dict[str, str] = {}
    if paths.manifest.exists():
        m = pd.read_parquet(paths.manifest)
        known = dict(zip(m["path"], m["sha256"]))
    rejected = set(read_rejected(paths)["path"])
    out = DataChanges()
    present = set()
    for c in candidates + named_rejects:
        present.add(c.rel)
        if c.rel in known:
            if c.path.exists() and sha256_file(c.path) != known[c.rel]:
                out.changed.append(c.rel)
        elif c.rel not in rejected:
            out.new.append(c.rel)
    out.removed = sorted(set(known) - present)
    return out
