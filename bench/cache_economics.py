"""Benchmark 3: what the feature cache saves.

On the clip-art demo set (data/raw, from `headstart demo` or `python -m tasks.dataset.clipart_demo`), in a scratch project:
  1. cold:        90 % of the images, empty caches, every stage (ingest -> export);
  2. head change: the same, with head.C changed (features all cache hits);
  3. +10 % data:  the held-out 10 % added (features extracted for the new images only).
Each scenario runs in a fresh Python process calling the stage functions in order (no Prefect, no DVC), so process
start-up and imports count in every scenario alike. Prints per-stage seconds and the ratios the issue asks for:
cold / head-change (target >= 20x) and incremental extraction / cold extraction (target <= 20 %).

Run:  .venv/bin/python bench/cache_economics.py [--size 224] [--workdir bench/out/cache]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t_start = time.perf_counter()
from tasks.core.params import load_params
from tasks.core.paths import ProjectPaths
from tasks.core.stages import STAGES, stage_function
root = sys.argv[1]
params = load_params(root + "/params.yaml", sys.argv[2:])
paths = ProjectPaths(__import__("pathlib").Path(root))
times = {"imports": time.perf_counter() - t_start}
out = {}
for name in STAGES:
    t0 = time.perf_counter()
    out[name] = stage_function(name)(params, paths)
    times[name] = time.perf_counter() - t0
times["total"] = time.perf_counter() - t_start
print(json.dumps({"times": times, "extracted": out["features"].extracted, "hits": out["features"].cache_hits,
                  "accuracy": out["evaluate"].accuracy}))
"""


def scenario(root: Path, overrides: list[str]) -> dict:
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), *overrides], cwd=root, env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "cache")
    ap.add_argument("--raw", type=Path, default=REPO / "data" / "raw")
    args = ap.parse_args()
    if not args.raw.is_dir():
        sys.exit(f"error: {args.raw} not found; run `python -m tasks.dataset.clipart_demo` first")
    root = args.workdir / "project"
    shutil.rmtree(args.workdir, ignore_errors=True)
    (root / "data").mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    files = sorted(p for p in args.raw.rglob("*") if p.is_file())
    rng = np.random.default_rng(0)
    held = set(rng.choice(len(files), size=len(files) // 10, replace=False).tolist())
    for i, f in enumerate(files):
        base = root / "data" / ("raw" if i not in held else "held") / f.relative_to(args.raw)
        base.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, base)

    size = [f"backbone.input_size={args.size}"]
    runs = {"cold": scenario(root, size)}
    runs["head change"] = scenario(root, size + ["head.C=0.3"])
    for f in sorted((root / "data" / "held").rglob("*")):
        if f.is_file():
            dest = root / "data" / "raw" / f.relative_to(root / "data" / "held")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dest)
    runs["+10% data"] = scenario(root, size + ["head.C=0.3"])

    stages = ["imports", "ingest", "features", "head", "evaluate", "export", "total"]
    print(f"\nclip-art demo at {args.size}px ({len(files)} files, {len(held)} held out for the +10% run), seconds:")
    print(f"{'scenario':<14}" + "".join(f"{s:>10}" for s in stages) + f"{'extracted':>11}{'hits':>7}")
    for name, r in runs.items():
        print(f"{name:<14}" + "".join(f"{r['times'][s]:>10.2f}" for s in stages) + f"{r['extracted']:>11}{r['hits']:>7}")
    cold, warm, inc = runs["cold"]["times"], runs["head change"]["times"], runs["+10% data"]["times"]
    print(f"cold / head change, whole pipeline incl. process start: {cold['total'] / warm['total']:.1f}x")
    print(f"cold / head change, stages after start-up: "
          f"{(cold['total'] - cold['imports']) / (warm['total'] - warm['imports']):.1f}x")
    print(f"cold / head change, features stage: {cold['features'] / warm['features']:.0f}x")
    print(f"+10% data extraction / cold extraction: {inc['features'] / cold['features']:.0%} (target <= 20%)")
    (args.workdir / "results.json").write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
