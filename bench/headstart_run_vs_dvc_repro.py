"""What does `headstart run` add to `dvc repro` for the same head change (with the project's Prefect server, and
with Prefect's temporary per-run server), and what do the cheap commands cost to start? (RESULTS.md section 13b)

Uses the scratch project `python -m bench.head_change_cost` leaves (its demo data and caches), so run that first.
Each comparison is paired (`bench._harness.paired`: baseline and candidate in turn, a seeded order per pair), and
`head.C` changes to a new value before every run so that each one re-runs the head and what follows:
  dvc repro --no-run-cache  vs  `headstart run` (HEADSTART_PREFECT_SERVER=project; the server is started first);
  dvc repro --no-run-cache  vs  `headstart run` with HEADSTART_PREFECT_SERVER=temporary (an API server per run).
Then `headstart --help` against a bare interpreter start (`python -m bench._startup_baseline`) and
`headstart predict one.png` against a start that imports onnxruntime, PIL and numpy. One JSON row per comparison.

Run:  python -m bench.headstart_run_vs_dvc_repro [--rounds 3] [--workdir bench/out/head_change_cost] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench._harness import OUT, REPO, emit, paired, time_once, venv_env

QUESTION = "What does headstart run add to dvc repro for a head change, and what do cheap commands cost to start?"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="timed pairs per head-change comparison")
    ap.add_argument("--starts", type=int, default=5, help="timed pairs per start-up comparison")
    ap.add_argument("--workdir", type=Path, default=OUT / "head_change_cost")
    ap.add_argument("--quick", action="store_true", help="1 pair each, no warm-up, the project server only: checks the code path")
    args = ap.parse_args(argv)
    from tasks.core.params import write_overrides

    warmup = 1
    if args.quick:
        args.rounds, args.starts, warmup = 1, 1, 0
    root = args.workdir
    if not (root / "dvc.lock").exists():
        raise SystemExit(f"{root} has no built project: run `python -m bench.head_change_cost` first")
    py = sys.executable
    cli = [py, "-m", "flows.cli"]
    env = venv_env()
    env.pop("PREFECT_API_URL", None)
    c = iter(range(1, 10_000))

    def new_head_c(side: str) -> None:
        write_overrides([f"head.C={1 + next(c) / 10:.1f}"], root / "params.yaml")

    dvc = [py, "-m", "dvc", "repro", "--no-run-cache"]
    time_once([*cli, "prefect", "start"], cwd=root, env=env)
    try:
        for server in ("project",) if args.quick else ("project", "temporary"):
            r = paired(dvc, [*cli, "run"], reps=args.rounds, warmup=0, cwd=root,
                       env=env | {"HEADSTART_PREFECT_SERVER": server}, before=new_head_c)
            emit(QUESTION, comparison=f"head change: headstart run ({server} Prefect server) vs dvc repro",
                 difference_s=round(r.candidate_s - r.baseline_s, 2), **r.row(), quick=args.quick)
    finally:
        time_once([*cli, "prefect", "stop"], cwd=root, env=env)

    one_png = next((root / "data" / "raw").rglob("*.png"))
    baseline = [py, "-m", "bench._startup_baseline"]
    pairs = {"headstart --help": ([*cli, "--help"], baseline),
             "headstart predict one.png": ([*cli, "predict", str(one_png)],
                                           [*baseline, "onnxruntime", "PIL", "numpy"])}
    for name, (cmd, base) in pairs.items():
        # the baseline runs from the repository (bench is a package there); the command in the project
        r = paired(lambda base=base: time_once(base, cwd=REPO, env=env),
                   lambda cmd=cmd: time_once(cmd, cwd=root, env=env), reps=args.starts, warmup=warmup)
        emit(QUESTION, comparison=f"{name} vs python -m bench._startup_baseline {' '.join(base[3:])}".strip(),
             difference_s=round(r.candidate_s - r.baseline_s, 3), **r.row(), quick=args.quick)


if __name__ == "__main__":
    main()
