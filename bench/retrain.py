"""Benchmark: retrain wall time after +10 % new images vs a cold retrain, through the real Prefect retrain flow.

On the clip-art demo set at 224 px in a scratch DVC project: 90 % of the images -> cold `retrain_flow` (extract all,
train, export, evaluate, promote v1, dvc commit + push); then the held-out 10 % is added -> `retrain_flow` again
(extract only the new images, challenger vs champion, promote or reject, commit + push). Both runs share one Prefect
API (started before timing), so the ratio compares the pipeline, not server start-up.

Run:  .venv/bin/python bench/retrain.py [--size 224] [--workdir bench/out/retrain]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "retrain")
    args = ap.parse_args()
    raw = REPO / "data" / "raw"
    if not raw.is_dir():
        sys.exit("error: data/raw not found; run `python -m tasks.dataset.clipart_demo` first")
    shutil.rmtree(args.workdir, ignore_errors=True)
    root = args.workdir / "project"
    (root / "data").mkdir(parents=True)
    (root / "models").mkdir()
    for name in ("params.yaml", "dvc.yaml", ".gitignore", "models/.gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "tasks", root / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    files = sorted(p for p in raw.rglob("*") if p.is_file())
    held = set(np.random.default_rng(0).choice(len(files), size=len(files) // 10, replace=False).tolist())
    for i, f in enumerate(files):
        dest = root / "data" / ("held" if i in held else "raw") / f.relative_to(raw)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, dest)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True)
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")

    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain_flow
    from tasks.core.params import write_overrides

    write_overrides([f"backbone.input_size={args.size}"], root / "params.yaml")
    with prefect_test_harness(server_startup_timeout=120):
        flow(lambda: None, name="warm-up")()
        t0 = time.perf_counter()
        cold = retrain_flow(root=str(root))
        t_cold = time.perf_counter() - t0
        for f in sorted((root / "data" / "held").rglob("*")):
            if f.is_file():
                dest = root / "data" / "raw" / f.relative_to(root / "data" / "held")
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dest)
        t0 = time.perf_counter()
        inc = retrain_flow(root=str(root))
        t_inc = time.perf_counter() - t0
    print(f"\nretrain flow, clip-art at {args.size}px ({len(files)} files, {len(held)} added in the second run)")
    print(f"cold:      {t_cold:6.1f} s  extracted {cold['extracted']:>5}  -> {cold['action']} v{cold['champion_version']}")
    print(f"+10% data: {t_inc:6.1f} s  extracted {inc['extracted']:>5}  -> {inc['action']} v{inc['champion_version']}")
    print(f"+10% / cold wall time: {t_inc / t_cold:.2f}")


if __name__ == "__main__":
    main()
