"""What do the intervals and the pictures add to the evaluate stage? (RESULTS.md §29a)

On the clip-art demo at the shipped params (224 px, every image; `--project` reuses a built one), in one process with
the stage's inputs in memory (the test split's probabilities from the head on cached features), timed in pairs
(`bench._harness.paired`):

- baseline: what evaluate computed and drew before issue 29: the metrics from the confusion counts and the
  confusion-matrix PNG;
- candidate: the same, plus what issue 29 adds: the 95 % intervals (Wilson + 2,000-replicate stratified bootstrap),
  the reliability table and ECE, and the three pictures with their CSVs (reliability diagram, per-class F1 with
  intervals, top-loss gallery).

Also the CPU seconds of the added part alone (`time.process_time`, median of the candidate runs minus the baseline
runs), which a loaded shared machine inflates far less than wall time. Both sides run once untimed first, so the
first-use costs of matplotlib are out of both; the cold process's share of them is in the whole-stage figure of
RESULTS.md.

Run:  python -m bench.evaluate_intervals_cost [--project PATH] [--reps 7] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from bench._harness import built_project, emit, paired

QUESTION = "What do the 95 % intervals and the three new pictures add to the evaluate stage's wall on the demo?"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--project", default=None, help="a built project to reuse (ingest, features, head ran)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="50 images per class, 3 pairs")
    args = ap.parse_args(argv)
    params, paths = built_project("evaluate_intervals_cost", Path(args.project) if args.project else None, args.quick)

    from tasks.dataset.manifest import read_manifest, split_rows
    from tasks.evaluate import _write_pictures
    from tasks.evaluation.classification_metrics import confusion_matrix
    from tasks.evaluation.intervals import metric_intervals
    from tasks.evaluation.plots import plot_confusion, reliability
    from tasks.evaluation.scoring import compute_metrics
    from tasks.extraction.feature_store import open_store
    from tasks.model.head_format import Head

    head = Head.load(paths.head)
    rows = split_rows(read_manifest(paths), params.evaluate.split)
    probs = head.probs(open_store(params, paths).get(rows["sha256"].tolist()))
    y = rows["label"].to_numpy()
    pred = np.array(head.classes)[probs.argmax(1)]
    cpu: dict[str, list[float]] = {"baseline": [], "candidate": [], "inside": []}

    def before_29(side: str = "baseline") -> None:
        t0 = time.process_time()
        compute_metrics(y, pred, head.classes)
        plot_confusion(confusion_matrix(y, pred, head.classes), head.classes, "bench",
                       paths.plots / "confusion_matrix.png")
        cpu[side].append(time.process_time() - t0)

    def with_29() -> None:
        t0 = time.process_time()
        before_29("inside")
        _, per_class = compute_metrics(y, pred, head.classes)
        _, class_ci = metric_intervals(y, pred, head.classes, seed=params.seed)
        for c, ci in class_ci.items():
            per_class[c] |= ci
        curve, ece = reliability(probs, pred == y)
        _write_pictures(paths, params.evaluate.split, rows, probs, head.classes, per_class, curve, ece)
        cpu["candidate"].append(time.process_time() - t0)

    reps = 3 if args.quick else args.reps
    result = paired(before_29, with_29, reps=reps)
    added_cpu = statistics.median(cpu["candidate"][-reps:]) - statistics.median(cpu["baseline"][-reps:])
    emit(QUESTION, project=str(paths.root), n_test=int(len(y)), reps=reps,
         baseline_wall_s=round(result.baseline_s, 3), candidate_wall_s=round(result.candidate_s, 3),
         added_wall_s=round(result.candidate_s - result.baseline_s, 3), ratio=round(result.ratio, 3),
         added_cpu_s=round(added_cpu, 3))


if __name__ == "__main__":
    main()
