"""Do several backbone layers concatenated (`backbone.layer: [...]`) beat pooled features on Fashion-MNIST, and at
what cost in time? A linear head on frozen features, against the pooled-at-64-px baseline in the same run.
(RESULTS.md section 13c)

Each configuration runs in a fresh scratch project (no cached features) in a fresh Python process
(`python -m bench.layer_list_vs_pooled_fmnist --child ...`): ingest (the CSV of all 70,000 images, official test set
as test), features, a logistic-regression head (head.C, default 0.1, all 54k training images) and evaluate on the
official 10k test set with the head on cached features, each stage as the pipeline runs it. One JSON row per
configuration: accuracy, seconds per stage, total seconds (process start included) and its multiple of the baseline's.

Run:  python -m bench.layer_list_vs_pooled_fmnist --config 'pooled@64' --config '[blocks.4, blocks.5, pooled]@96'
      (LAYER@SIZE[@C]; the first --config is the baseline; options: --fraction 1.0, --C 0.1,
      --workdir bench/out/layer_list_vs_pooled_fmnist, --quick: 0.5 % of the data at 64 px)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench._harness import OUT, emit, reply, run_child, run_stage, scratch_project, stage_params

QUESTION = "Do several backbone layers beat pooled features on Fashion-MNIST, and at what cost in time?"
DEFAULT_CONFIGS = ["pooled@64", "[blocks.4, blocks.5, pooled]@96"]


def child(root: Path) -> dict:
    """In this fresh process: ingest, features, head, evaluate on the project at `root`; seconds and accuracy."""
    from tasks.core.paths import ProjectPaths

    paths = ProjectPaths(root)
    params = stage_params(paths)
    runs = {name: run_stage(name, params, paths) for name in ("ingest", "features", "head", "evaluate")}
    return {"times": {k: round(r.seconds, 2) for k, r in runs.items()}, "accuracy": runs["evaluate"].result.accuracy,
            "n": runs["evaluate"].result.n}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append",
                    help="LAYER@SIZE[@C], e.g. 'pooled@64' or '[blocks.4, pooled]@96@0.3' (C defaults to --C); "
                         f"default: {' '.join(DEFAULT_CONFIGS)}")
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--C", type=float, default=0.1)
    ap.add_argument("--workdir", type=Path, default=OUT / "layer_list_vs_pooled_fmnist")
    ap.add_argument("--quick", action="store_true", help="0.5 %% of Fashion-MNIST at 64 px: checks the code path")
    ap.add_argument("--child", metavar="ROOT", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        reply(child(args.child))
        return
    if args.quick:
        args.fraction = 0.005
        args.config = args.config or ["pooled@64", "[blocks.5, pooled]@64"]
    base = None
    for i, config in enumerate(args.config or DEFAULT_CONFIGS):
        layer, size, *c = config.split("@")
        c = float(c[0]) if c else args.C
        paths = scratch_project(args.workdir / f"project-{i}", "fmnist", fraction=args.fraction,
                                overrides=[f"backbone.input_size={size}", f"backbone.layer={layer}", f"head.C={c}",
                                           "evaluate.artifact=head", "evaluate.split=test"])
        t0 = time.perf_counter()
        r = run_child(__spec__.name, paths.root)
        total = time.perf_counter() - t0
        base = base or total
        emit(QUESTION, layer=layer, size=int(size), C=c, fraction=args.fraction, test_accuracy=r["accuracy"],
             n_test=r["n"], seconds=r["times"], total_s=round(total, 1), x_baseline=round(total / base, 2),
             baseline=i == 0, quick=args.quick)


if __name__ == "__main__":
    main()
