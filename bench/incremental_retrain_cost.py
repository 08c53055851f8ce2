"""What does a retrain cost after +10 % new images, against a cold retrain, through the real Prefect retrain flow?
(RESULTS.md section 6)

In a scratch DVC project (`bench._harness.scratch_project(dvc=True)`) on the clip-art demo at 224 px: 90 % of the
images -> cold `retrain_flow` (extract all, train, export, evaluate, promote v1, dvc commit + push); then the
held-out 10 % is added -> `retrain_flow` again (extract only the new images, challenger vs champion, promote or
reject, commit + push). Both runs share one Prefect API (started before timing), so the ratio compares the
pipeline, not server start-up. One JSON row per run and one with the ratio.

Run:  python -m bench.incremental_retrain_cost [--size 224] [--workdir bench/out/incremental_retrain_cost] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench._harness import OUT, add_back, emit, hold_out, scratch_project, time_once

QUESTION = "What does a retrain cost after +10 % new images, against a cold retrain?"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workdir", type=Path, default=OUT / "incremental_retrain_cost")
    ap.add_argument("--quick", action="store_true", help="10 images per class at 64 px: checks the code path")
    args = ap.parse_args(argv)
    if args.quick:
        args.size = 64
    paths = scratch_project(args.workdir / "project", "clipart", per_class=10 if args.quick else None,
                            overrides=[f"backbone.input_size={args.size}"], dvc=True)
    held = hold_out(paths, 0.1)
    n_files = sum(1 for p in (paths.root / "data").rglob("*") if p.is_file())

    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain_flow

    runs = {}
    with prefect_test_harness(server_startup_timeout=120):
        flow(lambda: None, name="warm-up")()
        t_cold = time_once(lambda: runs.setdefault("cold", retrain_flow(root=str(paths.root))))
        add_back(paths)
        t_inc = time_once(lambda: runs.setdefault("+10% data", retrain_flow(root=str(paths.root))))
    common = {"size": args.size, "files": n_files, "added": held, "quick": args.quick}
    for name, seconds in (("cold", t_cold), ("+10% data", t_inc)):
        r = runs[name]
        emit(QUESTION, run=name, seconds=round(seconds, 1), extracted=r["extracted"], action=r["action"],
             champion_version=r["champion_version"], **common)
    emit(QUESTION, run="ratio", incremental_over_cold=round(t_inc / t_cold, 3), **common)


if __name__ == "__main__":
    main()
