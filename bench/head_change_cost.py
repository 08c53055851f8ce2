"""Does a head change through `dvc repro` cost only the head? Against a cold `dvc repro` and a no-op one, same run.
(RESULTS.md section 13a)

In a scratch DVC project (`bench._harness.scratch_project(dvc=True)`) on the clip-art demo (every demo image, the
shipped params: 224 px), each round runs
  cold:    `dvc repro` from nothing (no prepared data, no features, no models), every stage;
  head:    `dvc repro` after `head.C` changed (head, export and evaluate re-run; features all cached; finetune,
           strategy none, depends on models/finetune_start.json, which a new head leaves unchanged);
  no-op:   `dvc repro` with nothing changed (DVC's own cost of checking the pipeline).
Every repro passes `--no-run-cache`, so DVC computes instead of restoring an earlier run's outputs. One JSON row per
round, one with the medians and cold / head (target >= 10x), and one with where the head change's time goes: each
re-run stage's command timed alone (`python -m tasks.<stage>`, as dvc runs it: imports included) and DVC's share
(head - sum of the stage commands).

Run:  python -m bench.head_change_cost [--rounds 3] [--workdir bench/out/head_change_cost] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from bench._harness import OUT, emit, run_stage, scratch_project, time_once

QUESTION = "Does a head change through dvc repro cost only the head?"
STAGES_AFTER_HEAD = ("head", "export", "evaluate")  # finetune (strategy none) reads no head: DVC skips it


def reset(root: Path) -> None:
    """Remove every stage output and dvc.lock: the next repro is cold."""
    for sub in ("data/prepared", "data/features", "data/.locks", "data/reports", "models/metrics", "models/plots",
                "models/finetune", "models/int8", "models/checkpoints"):
        shutil.rmtree(root / sub, ignore_errors=True)
    for f in ("dvc.lock", "models/head.npz", "models/head.json", "models/finetune_start.json", "models/model.onnx",
              "models/labels.txt", "models/MODEL_CARD.md"):
        (root / f).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=OUT / "head_change_cost")
    ap.add_argument("--quick", action="store_true", help="10 images per class at 64 px, 1 round: checks the code path")
    args = ap.parse_args(argv)
    from tasks.core.params import write_overrides

    per_class, overrides, alone_reps = None, [], 3
    if args.quick:
        per_class, overrides, args.rounds, alone_reps = 10, ["backbone.input_size=64"], 1, 1
    paths = scratch_project(args.workdir, "clipart", per_class=per_class, overrides=overrides, dvc=True)
    root = paths.root
    repro = [sys.executable, "-m", "dvc", "repro", "--no-run-cache"]
    rows = []
    for i in range(args.rounds):
        reset(root)
        write_overrides(["head.C=0.1"], root / "params.yaml")
        cold = time_once(repro, cwd=root)
        write_overrides([f"head.C={0.2 + 0.1 * i:.1f}"], root / "params.yaml")
        head = time_once(repro, cwd=root)
        noop = time_once(repro, cwd=root)
        rows.append((cold, head, noop))
        emit(QUESTION, round=i + 1, cold_s=round(cold, 2), head_change_s=round(head, 2), noop_s=round(noop, 2),
             cold_over_head=round(cold / head, 2), quick=args.quick)
    cold, head, noop = (statistics.median(r[k] for r in rows) for k in range(3))
    ratios = [r[0] / r[1] for r in rows]
    emit(QUESTION, round="median", rounds=args.rounds, cold_s=round(cold, 2), head_change_s=round(head, 2),
         noop_s=round(noop, 2), cold_over_head=round(statistics.median(ratios), 2), quick=args.quick)

    alone = {}
    for stage in STAGES_AFTER_HEAD:  # each re-run stage's command alone, as dvc runs it (imports included)
        alone[stage] = statistics.median(run_stage(stage, paths=paths, fresh_process=True).seconds
                                         for _ in range(alone_reps))
    stages = sum(alone.values())
    emit(QUESTION, round="where the head change's time goes", stage_commands_s={k: round(v, 2) for k, v in alone.items()},
         stages_s=round(stages, 2), dvc_s=round(head - stages, 2), noop_s=round(noop, 2), reps=alone_reps,
         quick=args.quick)


if __name__ == "__main__":
    main()
