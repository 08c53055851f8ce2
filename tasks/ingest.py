"""Stage `ingest`: a folder of labelled images (or a CSV of path,label) -> a validated, split manifest.

Outputs `data/prepared/manifest.parquet` (path, label, split, sha256, width, height, group) and
`data/prepared/rejected.csv` (path, label, reason). Bad files are rejected with a reason, never fatal; mistakes in the
data layout as a whole (an empty class, a val label unseen in train) are one-line errors.

Splits are stratified per class, seeded, and grouped: files whose stem matches the same `ingest.group_pattern` key
(e.g. `cat_01.png`, `cat_02.png`) always share a split, so near-duplicate variants cannot leak from train into test.
Splits are sticky: a file (by sha256) or group that was already assigned keeps its split when new files arrive; only
new groups are placed, each into the split furthest below its target share for that class.
"""

from __future__ import annotations

import hashlib
import io
import re
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.atomic import atomic_path
from tasks.errors import UserError
from tasks.images import check_image
from tasks.params import IngestParams, Params
from tasks.paths import ProjectPaths, default_paths
from tasks.stage_cli import run_stage_cli
from tasks.progress import Progress, log

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["path", "label", "split", "sha256", "width", "height", "group"]


@dataclass
class Candidate:
    path: Path  # absolute
    rel: str  # as stored in the manifest (relative to the project root when possible)
    label: str
    split: str | None = None  # explicit split from a CSV
    sha256: str = ""
    width: int = 0
    height: int = 0
    reason: str = ""


def read_manifest(paths: ProjectPaths) -> pd.DataFrame:
    """The manifest, or a one-line error saying to run ingest."""
    if not paths.manifest.exists():
        raise UserError(f"{paths.manifest} not found; run the ingest stage first (python -m tasks.ingest)")
    return pd.read_parquet(paths.manifest)


def read_rejected(paths: ProjectPaths) -> pd.DataFrame:
    """The rejection list of the last ingest (empty before the first one)."""
    if not paths.rejected.exists():
        return pd.DataFrame(columns=["path", "label", "reason"])
    return pd.read_csv(paths.rejected)


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


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _list_folder(source: Path, p: IngestParams, root: Path) -> tuple[list[Candidate], list[Candidate]]:
    exts = {e.lower() for e in p.extensions}
    candidates, rejected = [], []
    class_dirs = sorted(d for d in source.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise UserError(f"{source}: no class folders found; expected {source}/<class>/<image files>")
    for f in sorted(x for x in source.iterdir() if x.is_file() and not x.name.startswith(".")):
        rejected.append(Candidate(f, _rel(f, root), "", reason="not inside a class folder"))
    for d in class_dirs:
        files = sorted(f for f in d.rglob("*") if f.is_file() and not any(s.startswith(".") for s in f.relative_to(d).parts))
        for f in files:
            c = Candidate(f, _rel(f, root), d.name)
            if f.suffix.lower() not in exts:
                c.reason = f"unsupported extension '{f.suffix}' (ingest.extensions)"
                rejected.append(c)
            else:
                candidates.append(c)
    return candidates, rejected


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


def _resolve_source(p: IngestParams, root: Path) -> Path:
    source = Path(p.source)
    if not source.is_absolute():
        source = root / source
    if not source.exists():
        raise UserError(f"ingest.source: '{p.source}' does not exist (put images in <source>/<class>/ or give a CSV)")
    return source


def _list(source: Path, p: IngestParams, root: Path) -> tuple[list[Candidate], list[Candidate]]:
    if source.is_dir():
        return _list_folder(source, p, root)
    return _list_csv(source, root), []


def list_sources(p: IngestParams, root: Path) -> tuple[list[Candidate], list[Candidate]]:
    """(candidate image files, files rejected by name alone) under `ingest.source`, without reading them."""
    return _list(_resolve_source(p, root), p, root)


def _inspect(c: Candidate, max_pixels: int, known: dict[str, tuple[int, int]]) -> Candidate:
    """Hash the bytes and (unless this exact content was validated before) fully decode the image."""
    try:
        data = c.path.read_bytes()
    except FileNotFoundError:
        c.reason = "file not found"
        return c
    except OSError as exc:
        c.reason = f"unreadable ({exc.strerror})"
        return c
    c.sha256 = hashlib.sha256(data).hexdigest()
    if c.sha256 in known:
        c.width, c.height = known[c.sha256]
        return c
    check = check_image(io.BytesIO(data), max_pixels)
    c.width, c.height, c.reason = check.width, check.height, check.reason
    return c


def _group_key(rel: str, pattern: re.Pattern | None) -> str:
    stem = Path(rel).stem
    if pattern is None:
        return rel
    m = pattern.match(stem)
    if not m:
        return stem
    return m.groupdict().get("group") or m.group(0)


def assign_splits(df: pd.DataFrame, p: IngestParams, seed: int, previous: pd.DataFrame | None) -> pd.Series:
    """Split assignment: explicit > previous (by sha256, then by group) > new groups placed by largest deficit."""
    labels, groups = df["label"].tolist(), df["group"].tolist()
    split: list[str | None] = [s if isinstance(s, str) else None for s in df["explicit_split"]]
    by_sha: dict[str, str] = {}
    by_group: dict[tuple[str, str], str] = {}
    if previous is not None and len(previous):
        by_sha = dict(zip(previous["sha256"], previous["split"]))
        by_group = dict(zip(zip(previous["label"], previous["group"]), previous["split"]))
    for i, sha in enumerate(df["sha256"]):
        if split[i] is None:
            split[i] = by_sha.get(sha) or by_group.get((labels[i], groups[i]))
    # a group must not straddle splits: a new file joins its group's existing split
    group_split = {(labels[i], groups[i]): s for i, s in enumerate(split) if s is not None}
    members: dict[str, dict[str, list[int]]] = {}
    for i, s in enumerate(split):
        if s is None and (labels[i], groups[i]) in group_split:
            split[i] = group_split[(labels[i], groups[i])]
        elif s is None:
            members.setdefault(labels[i], {}).setdefault(groups[i], []).append(i)
    targets = {"train": 1.0 - p.val_fraction - p.test_fraction, "val": p.val_fraction, "test": p.test_fraction}
    totals = pd.Series(labels).value_counts().to_dict()
    for label in sorted(members):
        counts = {s: 0 for s in SPLITS}
        for i, s in enumerate(split):
            if s is not None and labels[i] == label:
                counts[s] += 1
        names = sorted(members[label])
        rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
        for g in (names[k] for k in rng.permutation(len(names))):
            deficit = {s: targets[s] * totals[label] - counts[s] for s in SPLITS}
            best = max(SPLITS, key=lambda s: (deficit[s], -SPLITS.index(s)))
            for i in members[label][g]:
                split[i] = best
            counts[best] += len(members[label][g])
    return pd.Series(split, index=df.index, dtype=object)


def _warn_collapsed_groups(df: pd.DataFrame, p: IngestParams) -> None:
    """Say so when grouping leaves a class unable to reach val/test (one group holds most of its files)."""
    for label, rows in df.groupby("label"):
        largest = rows["group"].value_counts().iloc[0]
        if len(rows) >= 10 and largest > 0.5 * len(rows):
            log(f"ingest: warning: {largest} of {len(rows)} '{label}' files share one group "
                f"('{rows['group'].value_counts().index[0]}') under ingest.group_pattern, so they share one split; "
                f"set ingest.group_pattern to match your file names, or null")


def run_ingest(params: Params, paths: ProjectPaths | None = None) -> IngestSummary:
    """Build the manifest and rejection list from `params.ingest.source`. Outputs are written atomically.

    Guarantees: every manifest row decodes, is within the pixel limit and has a unique sha256; duplicates never
    straddle splits; every class in val/test also has train rows; the result depends only on data and params.
    """
    paths = paths or default_paths()
    p = params.ingest
    t0 = time.perf_counter()
    source = _resolve_source(p, paths.root)
    candidates, rejected = _list(source, p, paths.root)
    n_listed_rejects = len(rejected)  # rejected from their name alone, before inspection

    previous = None
    known: dict[str, tuple[int, int]] = {}
    if paths.manifest.exists():
        try:
            previous = pd.read_parquet(paths.manifest)
            known = {r.sha256: (int(r.width), int(r.height)) for r in previous.itertuples()}
        except Exception:  # an unreadable old manifest only costs us the sticky splits
            log(f"ingest: warning: could not read previous {paths.manifest}; splits will be re-drawn")
            previous = None

    with Progress(len(candidates), "ingest: checking images") as bar, ThreadPoolExecutor(p.workers) as pool:
        inspected = []
        for c in pool.map(lambda c: _inspect(c, p.max_pixels, known), candidates):
            inspected.append(c)
            bar.update(1)

    good: list[Candidate] = []
    first_by_sha: dict[str, Candidate] = {}
    for c in sorted(inspected, key=lambda c: c.rel):
        if c.reason:
            rejected.append(c)
        elif c.sha256 in first_by_sha:
            orig = first_by_sha[c.sha256]
            extra = f", labelled '{orig.label}'" if orig.label != c.label else ""
            c.reason = f"duplicate of {orig.rel}{extra}"
            rejected.append(c)
        else:
            first_by_sha[c.sha256] = c
            good.append(c)

    labels_seen = sorted({c.label for c in inspected} | {c.label for c in rejected if c.label})
    usable_labels = {c.label for c in good}
    for label in labels_seen:
        if label not in usable_labels:
            where = f"{p.source}/{label}" if source.is_dir() else f"label '{label}' in {p.source}"
            raise UserError(f"class '{label}' ({where}) has no usable images; add images or remove the class")
    if not good:
        raise UserError(f"ingest.source: '{p.source}' contains no usable images")

    pattern = re.compile(p.group_pattern) if p.group_pattern else None
    df = pd.DataFrame(
        {
            "path": [c.rel for c in good],
            "label": [c.label for c in good],
            "explicit_split": pd.Series([c.split for c in good], dtype=object),
            "sha256": [c.sha256 for c in good],
            "width": np.array([c.width for c in good], dtype=np.int32),
            "height": np.array([c.height for c in good], dtype=np.int32),
            "group": [_group_key(c.rel, pattern) for c in good],
        }
    )
    _warn_collapsed_groups(df, p)
    df["split"] = assign_splits(df, p, params.seed, previous)
    train_labels = set(df.loc[df["split"] == "train", "label"])
    for s in ("val", "test"):
        unseen = sorted(set(df.loc[df["split"] == s, "label"]) - train_labels)
        if unseen:
            raise UserError(f"label '{unseen[0]}' appears in {s} but has no train images ({p.source}); "
                            f"add train images for it or drop it")
    df = df[MANIFEST_COLUMNS].sort_values("path", kind="stable").reset_index(drop=True)

    with atomic_path(paths.manifest) as tmp:
        df.to_parquet(tmp, index=False)
    rej = pd.DataFrame({"path": [c.rel for c in rejected], "label": [c.label for c in rejected],
                        "reason": [c.reason for c in rejected]}).sort_values("path", kind="stable")
    with atomic_path(paths.rejected) as tmp:
        rej.to_csv(tmp, index=False)

    reasons: dict[str, int] = {}
    for c in rejected:
        key = c.reason.split(" (")[0].split(" of ")[0].split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    summary = IngestSummary(
        n_files=len(candidates) + n_listed_rejects,
        n_usable=len(df),
        n_rejected=len(rejected),
        per_split={s: int((df["split"] == s).sum()) for s in SPLITS},
        per_class={k: int(v) for k, v in df["label"].value_counts().sort_index().items()},
        classes=sorted(usable_labels),
        seconds=time.perf_counter() - t0,
        manifest=str(paths.manifest),
        rejected=str(paths.rejected),
        reasons=reasons,
    )
    why = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
    log(f"ingest: {summary.n_usable} images in {len(summary.classes)} classes "
        f"(train {summary.per_split['train']}, val {summary.per_split['val']}, test {summary.per_split['test']}), "
        f"{summary.n_rejected} rejected{f' ({why})' if why else ''} -> {paths.rejected.relative_to(paths.root)}; "
        f"{summary.seconds:.1f}s")
    return summary


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_ingest, __name__, argv)


if __name__ == "__main__":
    main()
