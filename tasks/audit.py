"""Stage `audit`: look at the data through its cached features — label issues and near-duplicates.

Reads the manifest and the feature store only (not the head: a head change does not re-run it) and writes

- `data/reports/label_issues.csv`: samples of train+val whose given label looks wrong, most suspect first (path,
  split, given_label, suggested_label, score = the out-of-fold probability of the given label, threshold), by
  confident learning on out-of-fold probabilities (tasks.data_quality.label_audit);
- `data/reports/near_duplicates.csv`: pairs of samples of any split whose embeddings' cosine similarity is at least
  `audit.near_duplicate_cosine`, most similar first (tasks.data_quality.near_duplicates); the next ingest keeps each
  pair in one split (tasks.dataset.splits);
- `data/reports/audit.json`: the counts (issues, pairs, pairs across splits) and what ran.

Seconds on the demo: five logistic fits on cached features and one Gram matrix (docs/data-quality.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from tasks.core.errors import UserError
from tasks.core.files import atomic_path, atomic_write_text
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths, default_paths
from tasks.core.progress import log
from tasks.core.stage_cli import run_stage_cli
from tasks.data_quality.embeddings import feature_rows, read_embeddings
from tasks.data_quality.label_audit import LABEL_ISSUE_COLUMNS, LABEL_ISSUES_CSV, audit_labels
from tasks.data_quality.near_duplicates import cosine_pairs
from tasks.dataset.manifest import read_manifest
from tasks.dataset.splits import NEAR_DUPLICATE_COLUMNS, NEAR_DUPLICATES_CSV


@dataclass
class AuditSummary:
    """What the audit stage found."""

    audited: int
    label_issues: int
    folds: int | None
    near_duplicate_pairs: int
    cross_split_pairs: int
    seconds: float
    label_issues_csv: str
    near_duplicates_csv: str
    skipped: str | None = None


def label_issues(params: Params, paths: ProjectPaths,
                 manifest: pd.DataFrame) -> tuple[pd.DataFrame, int | None, str | None]:
    """(the label-issue rows, most suspect first; folds used; why the audit was skipped, or None)."""
    rows = manifest[manifest["split"].isin(["train", "val"])].reset_index(drop=True)
    try:
        # the fold fits pass over their rows ~15 times each: keep them in memory as the head stage does (its budget)
        features, fingerprint = feature_rows(params, paths, rows["sha256"].tolist(), params.head.memory_mb << 20)
        audit, classes, folds = audit_labels(params, features, rows["label"].to_numpy(), fingerprint)
    except UserError as exc:
        if "label audit" not in str(exc):
            raise
        log(f"audit: warning: {exc}; label audit skipped")
        return pd.DataFrame(columns=LABEL_ISSUE_COLUMNS), None, str(exc)
    order = audit.ranked_issues()
    names = np.array(classes, dtype=object)
    table = pd.DataFrame({"path": rows["path"].to_numpy()[order], "split": rows["split"].to_numpy()[order],
                          "given_label": names[audit.given[order]], "suggested_label": names[audit.suggested[order]],
                          "score": np.round(audit.score[order], 6), "threshold": np.round(audit.threshold[order], 6),
                          "sha256": rows["sha256"].to_numpy()[order]})
    return table, folds, None


def near_duplicates(params: Params, paths: ProjectPaths, manifest: pd.DataFrame) -> pd.DataFrame:
    """The near-duplicate pairs of every manifest row (NEAR_DUPLICATE_COLUMNS), most similar first."""
    x = read_embeddings(params, paths, manifest["sha256"].tolist())
    i, j, cos = cosine_pairs(x, params.audit.near_duplicate_cosine)
    m = manifest.reset_index(drop=True)
    table = pd.DataFrame({"path_a": m["path"].to_numpy()[i], "path_b": m["path"].to_numpy()[j],
                          "cosine": np.round(cos, 6), "split_a": m["split"].to_numpy()[i],
                          "split_b": m["split"].to_numpy()[j], "label_a": m["label"].to_numpy()[i],
                          "label_b": m["label"].to_numpy()[j], "sha256_a": m["sha256"].to_numpy()[i],
                          "sha256_b": m["sha256"].to_numpy()[j]})
    return table[NEAR_DUPLICATE_COLUMNS]


def _write_csv(table: pd.DataFrame, dest) -> None:
    with atomic_path(dest, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)


def run_audit(params: Params, paths: ProjectPaths | None = None) -> AuditSummary:
    """Write the label-issue and near-duplicate reports and their summary (module docstring). Deterministic for
    given data and params."""
    paths = paths or default_paths()
    t0 = time.perf_counter()
    manifest = read_manifest(paths)
    issues, folds, skipped = label_issues(params, paths, manifest)
    pairs = near_duplicates(params, paths, manifest)
    paths.reports.mkdir(parents=True, exist_ok=True)
    issues_csv, pairs_csv = paths.reports / LABEL_ISSUES_CSV, paths.reports / NEAR_DUPLICATES_CSV
    _write_csv(issues, issues_csv)
    _write_csv(pairs, pairs_csv)
    cross = int((pairs["split_a"] != pairs["split_b"]).sum())
    summary = AuditSummary(int(manifest["split"].isin(["train", "val"]).sum()), len(issues), folds, len(pairs), cross,
                           round(time.perf_counter() - t0, 3), str(issues_csv), str(pairs_csv), skipped)
    atomic_write_text(paths.reports / "audit.json", json.dumps(asdict(summary) | {
        "audit_params": params.audit.model_dump()}, indent=2))
    log(f"audit: {summary.label_issues} possible label issues among {summary.audited} train+val samples"
        f"{f' ({folds}-fold)' if folds else ''}; {summary.near_duplicate_pairs} near-duplicate pairs (cosine >= "
        f"{params.audit.near_duplicate_cosine:g}), {cross} across splits"
        f"{' (the next ingest joins them)' if cross else ''}; {summary.seconds:.1f}s -> "
        f"{paths.reports.relative_to(paths.root)}/")
    return summary


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_audit, __name__, argv)


if __name__ == "__main__":
    main()
