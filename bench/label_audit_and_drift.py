"""How well do the label audit and the drift check work on the demo, and what do they cost? (RESULTS.md §29)

On the clip-art demo at the shipped params (224 px, every image; `--project` reuses a built one, ingest + features
are all that is needed):

- cost: the audit stage (`tasks.audit.run_audit`: 5 fold fits + near-duplicates) and one drift check, against the
  head stage's own fit on the same cached features (`tasks.head.run_head`), timed in pairs (`bench._harness.paired`);
- label audit: a seeded 5 / 10 / 20 % of the train labels moved to another class (the manifest untouched: the audit
  runs on the moved labels in memory, the same `audit_labels` the stage calls), N = how many moved: precision at N
  (moved rows among the top N of the report) and recall (moved rows flagged at all / N), over `--seeds` draws;
- drift: seeded draws of a batch of `--batch` new samples against the train split's other samples: `--null-draws`
  held-back batches of the demo's own images (the false-alarm rate: how often p < alpha), and `--draws` batches in
  which 10, 25, 50 or 100 % are images of openclipart-png categories the demo does not use (power). The off-category
  images are extracted once into a copy of the project (data/features copied, the original untouched).

Run:  python -m bench.label_audit_and_drift [--project PATH] [--seeds 3] [--draws 20] [--null-draws 100]
      [--batch 100] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

import numpy as np

from bench._harness import OUT, built_project, emit, paired, stage_params

QUESTION_AUDIT = "Label audit: precision at N and recall when N train labels are moved to a wrong class"
QUESTION_DRIFT = "Drift check: false-alarm rate on held-back demo images, power on batches with off-category images"
QUESTION_COST = "What do the audit stage and a drift check cost, against the head stage on the same features?"
OTHER_CATEGORIES = ("shapes", "signs_and_symbols", "computer", "office", "electronics")


def audit_precision(params, paths, share: float, seeds: int) -> dict:
    from tasks.data_quality.embeddings import feature_rows
    from tasks.data_quality.label_audit import audit_labels
    from tasks.dataset.manifest import read_manifest

    m = read_manifest(paths)
    m = m[m["split"].isin(["train", "val"])].reset_index(drop=True)
    rows, fp = feature_rows(params, paths, m["sha256"].tolist())
    classes = sorted(m["label"].unique())
    precision, recall, flagged = [], [], []
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 29])
        labels = m["label"].to_numpy().copy()
        train = np.flatnonzero(m["split"] == "train")
        moved = rng.choice(train, int(round(share * len(train))), replace=False)
        for i in moved:
            others = [c for c in classes if c != labels[i]]
            labels[i] = others[rng.integers(len(others))]
        audit, _, _ = audit_labels(params, rows, labels, fp)
        ranked = audit.ranked_issues()
        is_moved = np.zeros(len(m), bool)
        is_moved[moved] = True
        precision.append(float(is_moved[ranked[:len(moved)]].sum() / len(moved)))
        recall.append(float(is_moved[ranked].sum() / len(moved)))
        flagged.append(len(ranked))
    return {"share": share, "moved": int(len(moved)), "audited": len(m), "seeds": seeds,
            "precision_at_n": precision, "precision_median": statistics.median(precision),
            "recall": recall, "recall_median": statistics.median(recall), "flagged": flagged}


def off_category_project(params, paths, work: Path, per_category: int):
    """A copy of the project (data/features and data/prepared copied, data/raw linked) with `per_category` images of
    each OTHER_CATEGORIES category added under data/raw/tools/, ingested and extracted; returns (paths, their
    manifest paths)."""
    from tasks.core.paths import ProjectPaths
    from tests.scratch_project import add_off_topic_images

    dest = ProjectPaths(work / "offcat")
    if dest.root.exists():
        shutil.rmtree(dest.root)
    shutil.copytree(paths.root, dest.root, symlinks=True, ignore=shutil.ignore_patterns("raw", "models", "bench"),
                    copy_function=shutil.copy2)
    shutil.copytree(paths.raw, dest.raw, copy_function=lambda s, d: Path(d).hardlink_to(s))
    added = add_off_topic_images(dest, work, OTHER_CATEGORIES, per_category, params)
    return dest, added


def drift_rates(params, paths, offcat, added: list[str], draws: int, batch: int, null_draws: int) -> list[dict]:
    from tasks.data_quality.drift import drift_report
    from tasks.data_quality.embeddings import read_embeddings
    from tasks.dataset.manifest import read_manifest

    m = read_manifest(offcat)
    is_off = m["path"].isin(set(added)).to_numpy()
    x = read_embeddings(params, offcat, m["sha256"].tolist())
    own = np.flatnonzero(~is_off)
    off = np.flatnonzero(is_off)
    d = params.drift
    out = []
    for share in (0.0, 0.1, 0.25, 0.5, 1.0):
        drifted, p_values = 0, []
        n_draws = null_draws if share == 0 else draws
        for draw in range(n_draws):
            rng = np.random.default_rng([draw, 2929])
            n_off = int(round(share * batch))
            held = rng.choice(own, batch - n_off, replace=False)  # held back from the demo's own images
            new = np.concatenate([held, rng.choice(off, n_off, replace=False)])
            reference = np.setdiff1d(own[m["split"].to_numpy()[own] == "train"], held)
            r = drift_report(x[reference], x[new], d.alpha, d.permutations, draw, d.max_samples)
            drifted += r["drifted"]
            p_values.append(r["p_value"])
        out.append({"off_category_share": share, "batch": batch, "draws": n_draws, "drifted": drifted,
                    "rate": drifted / n_draws, "median_p": statistics.median(p_values), "alpha": d.alpha,
                    "n_reference": int(r["n_reference"])})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=None, help="a built clip-art project (ingest + features ran)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--null-draws", type=int, default=100, help="draws of held-back batches (the false-alarm rate)")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="10 images per class at 64 px: checks the code path")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.draws, args.null_draws, args.batch, args.reps = 1, 2, 2, 20, 1
    work = OUT / "label_audit_and_drift"
    work.mkdir(parents=True, exist_ok=True)
    params, paths = built_project("label_audit_and_drift", args.project, args.quick)
    params = stage_params(paths)

    from tasks.audit import run_audit
    from tasks.data_quality.drift import drift_report
    from tasks.data_quality.embeddings import read_embeddings
    from tasks.dataset.manifest import read_manifest
    from tasks.head import run_head

    m = read_manifest(paths)
    test_keys = m.loc[m["split"] == "test", "sha256"].tolist()
    train_keys = m.loc[m["split"] == "train", "sha256"].tolist()

    def drift_once():
        drift_report(read_embeddings(params, paths, train_keys), read_embeddings(params, paths, test_keys),
                     params.drift.alpha, params.drift.permutations, 0, params.drift.max_samples)

    head_saved = paths.head.read_bytes() if paths.head.exists() else None
    audit_cost = paired(lambda: run_head(params, paths), lambda: run_audit(params, paths), reps=args.reps)
    drift_cost = paired(lambda: run_head(params, paths), drift_once, reps=args.reps)
    if head_saved is not None:
        paths.head.write_bytes(head_saved)
    emit(QUESTION_COST, images=len(m), audit_s=audit_cost.candidate_s, head_s=audit_cost.baseline_s,
         audit_over_head=audit_cost.ratio, drift_s=drift_cost.candidate_s, drift_over_head=drift_cost.ratio,
         drift_n=[len(train_keys), len(test_keys)], permutations=params.drift.permutations)
    for share in (0.05, 0.10, 0.20):
        emit(QUESTION_AUDIT, **audit_precision(params, paths, share, args.seeds))
    offcat, added = off_category_project(params, paths, work, 5 if args.quick else 40)
    for row in drift_rates(params, paths, offcat, added, args.draws, args.batch, args.null_draws):
        emit(QUESTION_DRIFT, **row)


if __name__ == "__main__":
    main()
