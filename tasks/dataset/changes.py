"""What changed in the raw data since the last ingest: new, modified and removed files (by path and content hash)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from tasks.core.files import file_stat
from tasks.core.modality_api import Modality
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.dataset.hash_cache import HashCache
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


def detect_changes(params: Params, paths: ProjectPaths, modality: Modality,
                   others: Sequence[Modality] = ()) -> DataChanges:
    """Compare the files under `ingest.source` with the manifest and the rejection list of the last ingest.

    Changed: a used file whose bytes differ, a rejected file whose size or mtime moved (fixed in place, say), or a
    file whose label is not the one it had (a CSV row relabelled, a file moved between class folders). `modality`
    is the backbone's (`tasks.modality.registry.modality_for`): it says what the source is read for."""
    listing = list_sources(params.ingest, paths.root, modality, params.backbone.name, others)
    known: dict[str, tuple[str, str]] = {}
    if paths.manifest.exists():
        m = pd.read_parquet(paths.manifest)
        known = {p: (sha, label) for p, sha, label in zip(m["path"], m["sha256"], m["label"])}
    rej = read_rejected(paths)
    rejected = {r.path: (r.label if isinstance(r.label, str) else "", getattr(r, "size", None),
                         getattr(r, "mtime_ns", None)) for r in rej.itertuples()}
    hashes = HashCache(paths.hashes)  # read only: a file unchanged since ingest hashed it is not read again
    out = DataChanges()
    present = set()
    for c in listing.candidates + listing.rejected:
        present.add(c.rel)
        if c.rel in known:
            sha, label = known[c.rel]
            if c.label != label or (c.path.exists() and modality.content_sha256(c, params.ingest, hashes) != sha):
                out.changed.append(c.rel)
        elif c.rel in rejected:
            label, size, mtime = rejected[c.rel]
            if (c.label or "") != label or file_stat(c.path) != (size, mtime):
                out.changed.append(c.rel)
        else:
            out.new.append(c.rel)
    out.removed = sorted(set(known) - present)
    return out
