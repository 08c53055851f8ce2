"""Stage `ingest`: a folder of labelled images or texts (or a CSV of them) -> a validated, split manifest.

Outputs `data/prepared/manifest.parquet` (schema in `tasks.dataset.manifest`) and `data/prepared/rejected.csv`
(path, label, reason). Bad files are rejected with a reason, never fatal; mistakes in the data layout as a whole (an
empty class, a val label unseen in train, text data under an image backbone) are one-line errors. What is read (images
or texts) follows the backbone's modality; texts are decoded and normalised by `tasks.dataset.texts`.

Splits are stratified per class, seeded, and grouped: files whose stem matches the same `ingest.group_pattern` key
(e.g. `cat_01.png`, `cat_02.png`) always share a split, so near-duplicate variants cannot leak from train into test.
Splits are sticky: a file (by sha256) or group that was already assigned keeps its split when new files arrive; only
new groups are placed, each into the split furthest below its target share for that class.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tasks.core.errors import UserError
from tasks.core.files import atomic_path, file_stat
from tasks.core.modality_api import Modality
from tasks.core.params import IngestParams, Params
from tasks.core.paths import ProjectPaths, default_paths
from tasks.core.progress import Progress, log
from tasks.core.stage_cli import run_stage_cli
from tasks.dataset.hash_cache import HashCache
from tasks.dataset.manifest import MANIFEST_COLUMNS, SPLITS, split_rows
from tasks.dataset.sources import Candidate, list_candidates, resolve_source
from tasks.dataset.splits import (
    NEAR_DUPLICATES_CSV,
    assign_splits,
    group_key,
    read_near_duplicate_pairs,
    warn_classes_missing_splits,
    warn_collapsed_groups,
)
from tasks.modality.registry import modality_for, others_than


@dataclass
class IngestSummary:
    """What ingest produced: counts per split and class, rejections, and output paths."""

    n_files: int
    n_usable: int
    n_rejected: int
    per_split: dict[str, int]
    per_class: dict[str, int]
    classes: list[str]
    seconds: float
    manifest: str
    rejected: str
    reasons: dict[str, int] = field(default_factory=dict)


def _previous(paths: ProjectPaths) -> tuple[pd.DataFrame | None, dict[str, tuple[int, int]]]:
    """The last manifest (for sticky splits) and the (width, height) of every content it validated."""
    if not paths.manifest.exists():
        return None, {}
    try:
        previous = pd.read_parquet(paths.manifest)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        # redrawing every split would move earlier test images into train: stop instead
        raise UserError(f"{paths.manifest} cannot be read ({str(exc).splitlines()[0][:80]}); it holds every file's "
                        f"split: restore it (`dvc checkout {paths.manifest.relative_to(paths.root)}`) or delete it "
                        f"to draw all splits anew") from None
    return previous, {r.sha256: (int(r.width), int(r.height)) for r in previous.itertuples()}


def _inspect_all(candidates: list[Candidate], p: IngestParams, known: dict[str, tuple[int, int]],
                 hashes: HashCache, modality: Modality) -> list[Candidate]:
    """Hash and check every candidate in `p.workers` threads, with a progress bar."""
    with Progress(len(candidates), f"ingest: checking {modality.noun}") as bar, \
            ThreadPoolExecutor(p.workers) as pool:
        inspected = []
        for c in pool.map(lambda c: modality.inspect(c, p, known, hashes), candidates):
            inspected.append(c)
            bar.update(1)
    hashes.save(keep={str(c.path) for c in candidates})
    return inspected


def _keep_unique(inspected: list[Candidate], rejected: list[Candidate]) -> list[Candidate]:
    """The usable candidates, one per content hash (the first by path); the rest are appended to `rejected`.

    The same bytes under two labels are a label conflict, not a duplicate: which label is right is the user's call,
    so every copy is rejected, each naming a copy with another label."""
    readable = sorted((c for c in inspected if not c.reason), key=lambda c: c.rel)
    rejected += [c for c in inspected if c.reason]
    copies: dict[str, list[Candidate]] = {}
    for c in readable:
        copies.setdefault(c.sha256, []).append(c)
    good: list[Candidate] = []
    for same in copies.values():
        if len({c.label for c in same}) > 1:
            for c in same:
                other = next(o for o in same if o.label != c.label)
                c.reason = f"label conflict: same content as {other.rel}, labelled '{other.label}'"
            rejected += same
            continue
        good.append(same[0])
        for c in same[1:]:
            c.reason = f"duplicate of {same[0].rel}"
            rejected.append(c)
    return sorted(good, key=lambda c: c.rel)


def _require_every_class(good: list[Candidate], seen: list[Candidate], p: IngestParams, source_is_dir: bool,
                         noun: str) -> UserError | None:
    """The one-line error for a class with no usable sample (with the commonest reason its samples were rejected),
    or for no usable sample at all; None when every class has some."""
    usable = {c.label for c in good}
    for label in sorted({c.label for c in seen if c.label}):
        if label not in usable:
            where = f"{p.source}/{label}" if source_is_dir else f"label '{label}' in {p.source}"
            why = pd.Series([c.reason.split(" (")[0].split(":")[0] for c in seen if c.label == label]).value_counts()
            return UserError(f"class '{label}' ({where}) has no usable {noun}: {why.iloc[0]} rejected as "
                             f"'{why.index[0]}' (data/prepared/rejected.csv lists each with its reason); add {noun} "
                             f"or remove the class")
    if not good:
        return UserError(f"ingest.source: '{p.source}' contains no usable {noun}")
    return None


def _manifest(good: list[Candidate], params: Params, previous: pd.DataFrame | None,
              near_duplicates: list[tuple[str, str]] = ()) -> pd.DataFrame:
    """The manifest rows of the usable files, grouped (near-duplicates the last audit reported too) and split; every
    val/test label must have train rows."""
    p = params.ingest
    pattern = re.compile(p.group_pattern) if p.group_pattern else None
    df = pd.DataFrame(
        {
            "path": [c.rel for c in good],
            "label": [c.label for c in good],
            "explicit_split": pd.Series([c.split for c in good], dtype=object),
            "sha256": [c.sha256 for c in good],
            "width": np.array([c.width for c in good], dtype=np.int32),
            "height": np.array([c.height for c in good], dtype=np.int32),
            "group": [c.group or (f"text:{c.sha256[:16]}" if "#L" in c.rel and c.text is not None
                                  else group_key(c.rel, pattern)) for c in good],
            "text": pd.Series([c.text for c in good], dtype=object),
        }
    )
    warn_collapsed_groups(df, p)
    df["split"] = assign_splits(df, p, params.seed, previous, near_duplicates)
    warn_classes_missing_splits(df, p)
    train_labels = set(split_rows(df, "train")["label"])
    for s in ("val", "test"):
        unseen = sorted(set(split_rows(df, s)["label"]) - train_labels)
        if unseen:
            raise UserError(f"label '{unseen[0]}' appears in {s} but has no train samples ({p.source}); "
                            f"add train samples for it or drop it")
    return df[MANIFEST_COLUMNS].sort_values("path", kind="stable").reset_index(drop=True)


def _write_rejected(rejected: list[Candidate], paths: ProjectPaths) -> None:
    """The rejection list (path, label, reason, size, mtime), written atomically."""
    stats = [file_stat(c.path) for c in rejected]  # so a rejected file fixed in place is noticed as changed
    rej = pd.DataFrame({"path": [c.rel for c in rejected], "label": [c.label for c in rejected],
                        "reason": [c.reason for c in rejected], "size": [s[0] for s in stats],
                        "mtime_ns": [s[1] for s in stats]}).sort_values("path", kind="stable")
    with atomic_path(paths.rejected) as tmp:
        rej.to_csv(tmp, index=False)


def _write(df: pd.DataFrame, rejected: list[Candidate], paths: ProjectPaths) -> None:
    """Manifest and rejection list, each written atomically."""
    with atomic_path(paths.manifest) as tmp:
        df.to_parquet(tmp, index=False)
    _write_rejected(rejected, paths)


def _summarise(df: pd.DataFrame, rejected: list[Candidate], n_files: int, seconds: float,
               paths: ProjectPaths, noun: str) -> IngestSummary:
    reasons: dict[str, int] = {}
    for c in rejected:
        key = c.reason.split(" (")[0].split(" of ")[0].split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    summary = IngestSummary(
        n_files=n_files,
        n_usable=len(df),
        n_rejected=len(rejected),
        per_split={s: int((df["split"] == s).sum()) for s in SPLITS},
        per_class={k: int(v) for k, v in df["label"].value_counts().sort_index().items()},
        classes=sorted(set(df["label"])),
        seconds=seconds,
        manifest=str(paths.manifest),
        rejected=str(paths.rejected),
        reasons=reasons,
    )
    why = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
    log(f"ingest: {summary.n_usable} {noun} in {len(summary.classes)} classes "
        f"(train {summary.per_split['train']}, val {summary.per_split['val']}, test {summary.per_split['test']}), "
        f"{summary.n_rejected} rejected{f' ({why})' if why else ''} -> {paths.rejected.relative_to(paths.root)}; "
        f"{summary.seconds:.1f}s")
    return summary


def run_ingest(params: Params, paths: ProjectPaths | None = None) -> IngestSummary:
    """Build the manifest and rejection list from `params.ingest.source`. Outputs are written atomically.

    Guarantees: every manifest row decodes, is within the pixel limit and has a unique sha256; duplicates never
    straddle splits; every class in val/test also has train rows; the result depends only on data and params.
    """
    paths = paths or default_paths()
    p = params.ingest
    t0 = time.perf_counter()
    source = resolve_source(p, paths.root)
    modality = modality_for(params.backbone)
    listing = list_candidates(source, p, paths.root, modality, params.backbone.name, others_than(modality))
    candidates, rejected = listing.candidates, listing.rejected  # `rejected`: by their name alone, so far
    n_files = len(candidates) + len(rejected)
    for name in listing.empty_classes:
        log(f"ingest: warning: class folder '{name}' in {p.source} is empty; it is not a class until it has "
            f"{modality.noun}")
    previous, known = _previous(paths)
    inspected = _inspect_all(candidates, p, known, HashCache(paths.hashes), modality)
    good = _keep_unique(inspected, rejected)
    missing_class = _require_every_class(good, inspected + rejected, p, source.is_dir(), modality.noun)
    if missing_class is not None:  # the run stops; rejected.csv says why (the previous manifest stays as it was)
        _write_rejected(rejected, paths)
        raise missing_class
    df = _manifest(good, params, previous, read_near_duplicate_pairs(paths.reports / NEAR_DUPLICATES_CSV))
    _write(df, rejected, paths)
    return _summarise(df, rejected, n_files, time.perf_counter() - t0, paths, modality.noun)


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_ingest, __name__, argv)


if __name__ == "__main__":
    main()
