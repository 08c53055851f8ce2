"""What does the feature cache save when the head changes or 10 % new data arrives? (RESULTS.md section 3)

In a scratch project with the clip-art demo data (all of it; --quick: 10 per class), 10 % of the files held out:
  1. cold:        90 % of the images, empty caches, every stage (ingest -> evaluate);
  2. head change: the same, with head.C changed (features all cache hits);
  3. +10 % data:  the held-out 10 % added back (features extracted for the new images only).
Each scenario runs in a fresh Python process (`python -m bench.feature_cache_savings --child ...`) calling the stage
functions in the pipeline's order (no Prefect, no DVC), so imports count in every scenario alike. One JSON row per
scenario (seconds per stage), then one with the ratios: cold / head change (target >= 20x) and incremental extraction
/ cold extraction (target <= 20 %).

Run:  python -m bench.feature_cache_savings [--size 224] [--workdir bench/out/feature_cache_savings] [--quick]
"""

from __future__ import annotations

import time

T_START = time.perf_counter()  # the child's imports are timed from here

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

from bench._harness import (  # noqa: E402
    OUT,
    add_back,
    emit,
    hold_out,
    reply,
    run_child,
    run_stage,
    scratch_project,
    stage_params,
)

QUESTION = "What does the feature cache save when the head changes or 10 % new data arrives?"


def child(root: Path, overrides: list[str]) -> dict:
    """One scenario in this fresh process: every stage in order; seconds per stage, imports included."""
    from tasks.core.paths import ProjectPaths
    from tasks.core.stages import STAGES

    paths = ProjectPaths(root)
    params = stage_params(paths, overrides)
    times = {"imports": time.perf_counter() - T_START}
    out = {}
    for name in STAGES:
        r = run_stage(name, params, paths)
        out[name], times[name] = r.result, r.seconds
    times["total"] = time.perf_counter() - T_START
    return {"times": times, "extracted": out["features"].extracted, "hits": out["features"].cache_hits,
            "accuracy": out["evaluate"].accuracy}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workdir", type=Path, default=OUT / "feature_cache_savings")
    ap.add_argument("--quick", action="store_true", help="10 images per class at 96 px: checks the code path")
    ap.add_argument("--child", nargs="+", metavar=("ROOT", "OVERRIDE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        reply(child(Path(args.child[0]), args.child[1:]))
        return
    if args.quick:
        args.size = 96
    paths = scratch_project(args.workdir / "project", "clipart", per_class=10 if args.quick else None,
                            overrides=[f"backbone.input_size={args.size}"])
    held = hold_out(paths, 0.1)
    n_files = sum(1 for p in (paths.root / "data").rglob("*") if p.is_file())
    runs = {"cold": run_child(__spec__.name, paths.root)}
    runs["head change"] = run_child(__spec__.name, paths.root, "head.C=0.3")
    add_back(paths)
    runs["+10% data"] = run_child(__spec__.name, paths.root, "head.C=0.3")
    common = {"size": args.size, "files": n_files, "held_out": held, "quick": args.quick}
    for name, r in runs.items():
        emit(QUESTION, scenario=name, seconds={k: round(v, 2) for k, v in r["times"].items()},
             extracted=r["extracted"], cache_hits=r["hits"], accuracy=r["accuracy"], **common)
    cold, warm, inc = runs["cold"]["times"], runs["head change"]["times"], runs["+10% data"]["times"]
    emit(QUESTION, scenario="ratios",
         cold_over_head_change=round(cold["total"] / warm["total"], 2),
         cold_over_head_change_after_imports=round((cold["total"] - cold["imports"])
                                                   / (warm["total"] - warm["imports"]), 2),
         cold_over_head_change_features=round(cold["features"] / warm["features"], 1),
         incremental_over_cold_extraction=round(inc["features"] / cold["features"], 3), **common)


if __name__ == "__main__":
    main()
