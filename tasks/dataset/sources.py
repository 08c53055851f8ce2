"""Where ingest finds its samples: a folder of `<class>/<files>` or a CSV of `path,label[,split]`, listed without
reading any file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tasks.core.errors import UserError
from tasks.core.params import IngestParams
from tasks.dataset.manifest import SPLITS


@dataclass
class Candidate:
    """One file ingest may use: where it is, its label, and what inspecting it found."""

    path: Path  # absolute
    rel: str  # as stored in the manifest (relative to the project root when possible)
    label: str
    split: str | None = None  # explicit split from a CSV
    sha256: str = ""
    width: int = 0
    height: int = 0
    reason: str = ""


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.resolve().as_posix()


@dataclass
class Listing:
    """What a source holds, before any file is read."""

    candidates: list[Candidate]  # files ingest will inspect
    rejected: list[Candidate]  # files rejected by their name alone
    empty_classes: list[str] = field(default_factory=list)  # class folders with no file at all


def _list_folder(source: Path, p: IngestParams, root: Path) -> Listing:
    exts = {e.lower() for e in p.extensions}
    candidates, rejected, empty = [], [], []
    class_dirs = sorted(d for d in source.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise UserError(f"{source}: no class folders found; expected {source}/<class>/<image files>")
    for f in sorted(x for x in source.iterdir() if x.is_file() and not x.name.startswith(".")):
        rejected.append(Candidate(f, _rel(f, root), "", reason="not inside a class folder"))
    inside = source.resolve()
    for d in class_dirs:
        files = sorted(f for f in d.rglob("*")
                       if not f.is_dir() and not any(s.startswith(".") for s in f.relative_to(d).parts))
        if not files:
            empty.append(d.name)
        for f in files:
            c = Candidate(f, _rel(f, root), d.name)
            if not f.resolve().is_relative_to(inside):
                c.rel = _rel(f.parent, root) + "/" + f.name  # the link itself, not where it points
                c.reason = f"a link out of the source folder (to {f.resolve()}): not followed"
                rejected.append(c)
            elif f.suffix.lower() not in exts:
                c.reason = f"unsupported extension '{f.suffix}' (ingest.extensions)"
                rejected.append(c)
            else:
                candidates.append(c)
    return Listing(candidates, rejected, empty)


def _list_csv(source: Path, root: Path) -> list[Candidate]:
    try:
        df = pd.read_csv(source, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types for malformed CSVs
        raise UserError(f"{source}: cannot read as CSV ({str(exc).splitlines()[0]})") from None
    missing = {"path", "label"} - set(df.columns)
    if missing:
        raise UserError(f"{source}: missing column(s) {sorted(missing)}; expected path,label[,split]")
    out = []
    for i, row in enumerate(df.itertuples(index=False), start=2):
        if not row.label:
            raise UserError(f"{source}:{i}: empty label for path '{row.path}'")
        split = getattr(row, "split", "") or None
        if split is not None and split not in SPLITS:
            raise UserError(f"{source}:{i}: split '{split}' is not one of {', '.join(SPLITS)}")
        path = Path(row.path)
        if not path.is_absolute():
            path = source.parent / path
        out.append(Candidate(path, _rel(path, root), row.label, split=split))
    return out


def resolve_source(p: IngestParams, root: Path) -> Path:
    """`ingest.source` as an absolute path (relative ones are under `root`); a one-line error if it is missing."""
    source = Path(p.source)
    if not source.is_absolute():
        source = root / source
    if not source.exists():
        raise UserError(f"ingest.source: '{p.source}' does not exist (put images in <source>/<class>/ or give a CSV)")
    return source


def list_candidates(source: Path, p: IngestParams, root: Path) -> Listing:
    """The files of a folder or CSV source, listed without reading them."""
    if source.is_dir():
        return _list_folder(source, p, root)
    return Listing(_list_csv(source, root), [])


def list_sources(p: IngestParams, root: Path) -> Listing:
    """The files under `ingest.source`, listed without reading them."""
    return list_candidates(resolve_source(p, root), p, root)
