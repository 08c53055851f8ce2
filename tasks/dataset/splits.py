"""Split assignment: stratified per class, seeded, grouped (variants of one file share a split) and sticky (a file
or group that was already placed keeps its split when new files arrive).

Near-duplicates by embedding (tasks.data_quality.near_duplicates) are grouped too, with one difference: embeddings
exist only after the features stage, which runs after ingest, so ingest reads the pairs the previous audit stage
reported (data/reports/near_duplicates.csv, by sha256) and joins each pair, with every file of either one's group, into
one split. That is the one case where an already placed file moves: a near-duplicate of a training sample is a
training sample (the model has seen it), so the joined files go to the first of train, val, test that any of them is in,
unless one of them has an explicit split (a CSV's split column wins). A report is not a DVC dependency of ingest (it
is written downstream of it: a cycle), so the guard applies on the next ingest: the next `headstart retrain` or `dvc
repro` with new data, or `python -m tasks.ingest` (docs/data-quality.md).
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.errors import UserError
from tasks.core.params import IngestParams
from tasks.core.progress import log
from tasks.dataset.manifest import SPLITS


def group_key(rel: str, pattern: re.Pattern | None) -> str:
    """The split group of a file: the `group` match of `pattern` on its stem (the stem if it does not match; the path
    when there is no pattern)."""
    stem = Path(rel).stem
    if pattern is None:
        return rel
    m = pattern.match(stem)
    if not m:
        return stem
    return m.groupdict().get("group") or m.group(0)


NEAR_DUPLICATES_CSV = "near_duplicates.csv"  # under data/reports/ (ProjectPaths.reports)
MAX_JOINED_GROUP, MAX_JOINED_SHARE = 4, 0.1  # a joined group: at most 4 files, or 10 % of its class(es), if more
NEAR_DUPLICATE_COLUMNS = ["path_a", "path_b", "cosine", "split_a", "split_b", "label_a", "label_b", "sha256_a",
                          "sha256_b"]


def read_near_duplicate_pairs(report: Path) -> list[tuple[str, str]]:
    """(sha256, sha256) of each pair in a near-duplicates report; [] when there is none yet. A report without the
    sha256 columns is a one-line UserError naming it."""
    if not report.exists():
        return []
    table = pd.read_csv(report, usecols=lambda c: c in ("sha256_a", "sha256_b"), dtype=str)
    if list(table.columns) != ["sha256_a", "sha256_b"]:
        raise UserError(f"{report}: no sha256_a/sha256_b columns; delete it (the audit stage writes it anew)")
    return list(zip(table["sha256_a"], table["sha256_b"]))


def join_near_duplicates(df: pd.DataFrame, split: list[str], pairs: list[tuple[str, str]]) -> int:
    """Put each near-duplicate pair, with every file of either one's (label, group), into one split (module
    docstring: train first, an explicit split wins), in place; returns how many files moved."""
    if not pairs:
        return 0
    row = {sha: i for i, sha in enumerate(df["sha256"])}
    parent = list(range(len(df)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    touched = set()
    for a, b in pairs:
        if a in row and b in row:
            parent[root(row[a])] = root(row[b])
            touched.add(row[a])
    if not touched:
        return 0
    first_of_group: dict[tuple[str, str], int] = {}
    for i, key in enumerate(zip(df["label"], df["group"])):
        parent[root(i)] = root(first_of_group.setdefault(key, i))
    members: dict[int, list[int]] = {}
    for i in range(len(df)):
        members.setdefault(root(i), []).append(i)
    explicit = [s if isinstance(s, str) else None for s in df["explicit_split"]]
    moved = 0
    class_size = df["label"].value_counts()
    for r in {root(i) for i in touched}:
        rows = members[r]
        labels = sorted(set(df["label"].iloc[rows]))
        # near-duplicate pairs chain: a group holding a large share of its class is not duplication but a class of
        # look-alike samples (the threshold is too loose for this data); joining it would empty the class's val/test
        if len(rows) > max(MAX_JOINED_GROUP, MAX_JOINED_SHARE * class_size[labels].sum()):
            log(f"ingest: warning: {len(rows)} files of class(es) {', '.join(labels)} chain into one near-duplicate "
                f"group (e.g. {', '.join(df['path'].iloc[rows[:2]])}); left in their splits: raise "
                f"audit.near_duplicate_cosine for data this alike")
            continue
        fixed = {explicit[i] for i in rows if explicit[i]}
        if len(fixed) > 1:
            log(f"ingest: warning: near-duplicates {', '.join(df['path'].iloc[rows[:3]])} have explicit splits "
                f"{sorted(fixed)}; left as given")
            continue
        target = fixed.pop() if fixed else min((split[i] for i in rows), key=SPLITS.index)
        for i in rows:
            if split[i] != target:
                split[i] = target
                moved += 1
    return moved


def assign_splits(df: pd.DataFrame, p: IngestParams, seed: int, previous: pd.DataFrame | None,
                  near_duplicates: list[tuple[str, str]] = ()) -> pd.Series:
    """Split assignment: explicit > previous (by sha256, then by group) > new groups placed by largest deficit; then
    each near-duplicate pair (sha256s) joined into one split (`join_near_duplicates`)."""
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
    moved = join_near_duplicates(df, split, list(near_duplicates))
    if moved:
        log(f"ingest: {moved} file(s) moved to the split of a near-duplicate (data/reports/near_duplicates.csv)")
    return pd.Series(split, index=df.index, dtype=object)


def warn_collapsed_groups(df: pd.DataFrame, p: IngestParams) -> None:
    """Say so when grouping leaves a class unable to reach val/test (one group holds most of its files)."""
    for label, rows in df.groupby("label"):
        largest = rows["group"].value_counts().iloc[0]
        if len(rows) >= 10 and largest > 0.5 * len(rows):
            log(f"ingest: warning: {largest} of {len(rows)} '{label}' files share one group "
                f"('{rows['group'].value_counts().index[0]}') under ingest.group_pattern, so they share one split; "
                f"set ingest.group_pattern to match your file names, or null")


def warn_classes_missing_splits(df: pd.DataFrame, p: IngestParams) -> None:
    """Name each class that has too few images (or groups) to reach every split that is asked for, and say where its
    images went: such a class is trained on but cannot be scored (or tuned) on the splits it misses."""
    wanted = [s for s, share in (("val", p.val_fraction), ("test", p.test_fraction)) if share > 0]
    for label, rows in df.groupby("label"):
        missing = [s for s in wanted if not (rows["split"] == s).any()]
        if missing:
            where = ", ".join(f"{n} in {s}" for s, n in rows["split"].value_counts().sort_index().items())
            log(f"ingest: warning: class '{label}' has only {len(rows)} sample(s) ({rows['group'].nunique()} group(s)): "
                f"{where}, none in {' or '.join(missing)}; add samples of it, or its {'/'.join(missing)} metrics "
                f"will not cover it")
