"""Split assignment: stratified per class, seeded, grouped (variants of one file share a split) and sticky (a file
or group that was already placed keeps its split when new files arrive)."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

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
