"""Does the promotion gate tell more clean data from poisoned data, and not flip on noise? (RESULTS.md §29a)

The issue-29 scenario through the real gate (`tasks.registry.promotion.judge_and_publish`: both models through ONNX
Runtime, paired on the same samples), on the clip-art demo at the shipped params (`--project` reuses a built one: its
data/raw and data/features are copied, so nothing is extracted again and the original is untouched):

1. a seeded 15 % of the images is held back (`bench._harness.hold_out`); every stage runs; the candidate is promoted
   as v0001 (the champion, trained on 85 %);
2. the held-back images come back, either **clean** (to their own class folders) or **mislabelled** (each filed under
   the next class's folder: every returned label is wrong); every stage runs again; the gate judges the retrain.

Printed per scenario and seed: the verdict, and the paired difference with its 95 % interval and n on the current
test split and the trusted hold-out. The point rule that the gate replaced (promote unless the challenger's point
estimate is below the champion's, tolerance 0) is shown beside it.

Run:  python -m bench.gate_scenarios [--project PATH] [--seeds 0,1] [--scenarios clean,mislabelled]
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from bench._harness import OUT, add_back, built_project, emit, hold_out, stage_params

QUESTION = "Is a retrain on more clean data promoted, one on mislabelled data rejected, the same for every seed?"


def _copy(src, dest: Path):
    """A private project at `dest`: params, dvc.yaml, data/raw hard-linked, data/features copied (it is appended to)."""
    from tasks.core.paths import ProjectPaths

    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(src.root / name, dest / name)
    shutil.copytree(src.root / "data" / "raw", dest / "data" / "raw", copy_function=os.link)
    shutil.copytree(src.root / "data" / "features", dest / "data" / "features")
    return ProjectPaths(dest)


def _return_mislabelled(paths) -> int:
    """Move every held-back file back under the next class's folder (sorted class order); returns how many."""
    raw, held = paths.root / "data" / "raw", paths.root / "data" / "held"
    classes = sorted(p.name for p in raw.iterdir() if p.is_dir())
    files = sorted(p for p in held.rglob("*") if p.is_file())
    for f in files:
        rel = f.relative_to(held)
        wrong = classes[(classes.index(rel.parts[0]) + 1) % len(classes)]
        dest = raw / wrong / "returned" / Path(*rel.parts[1:])
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
    return len(files)


def run_scenario(src, scenario: str, seed: int) -> dict:
    from tasks.core.stages import STAGES, stage_function
    from tasks.registry.promotion import judge_and_publish

    paths = _copy(src, OUT / "gate_scenarios" / f"{scenario}-{seed}")
    held = hold_out(paths, 0.15, seed=seed)
    params = stage_params(paths)
    for name in STAGES:
        stage_function(name)(params, paths)
    judge_and_publish(params, paths)
    returned = add_back(paths) if scenario == "clean" else _return_mislabelled(paths)
    for name in STAGES:
        stage_function(name)(params, paths)
    record = judge_and_publish(params, paths)
    c = record["comparison"]
    point_rule = "promoted" if all(v["a"] >= v["b"] for v in c.values()) else "rejected"
    return emit(QUESTION, scenario=scenario, seed=seed, held_back=held, returned=returned,
                verdict=record["action"], rule=record["rule"], point_rule_tolerance_0=point_rule,
                **{f"{view}_{k}": round(v[k], 4) if isinstance(v[k], float) else v[k]
                   for view, v in c.items() for k in ("a", "b", "difference", "ci_low", "ci_high", "n")})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--project", default=None, help="a built demo project to reuse (ingest and features ran)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--scenarios", default="clean,mislabelled")
    ap.add_argument("--quick", action="store_true", help="10 images per class at 64 px")
    args = ap.parse_args(argv)
    _, src = built_project("gate_scenarios", Path(args.project) if args.project else None, args.quick)
    for scenario in args.scenarios.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            run_scenario(src, scenario, seed)


if __name__ == "__main__":
    main()
