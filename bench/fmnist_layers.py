"""Benchmark 13c: frozen features vs pixels on Fashion-MNIST: a linear head on one layer or on several layers
concatenated (`backbone.layer: [...]`), at an input size, against the pooled-at-64-px baseline in the same run.

Each configuration runs in a fresh project (no cached features) in a fresh Python process: ingest (the CSV of all
70,000 images, official test set as test), features, a logistic-regression head (head.C, default 0.1, all 54k
training images) and evaluate on the official 10k test set with the head on cached features. Prints accuracy and
seconds per stage, and each configuration's total time as a multiple of the baseline's.

Run:  .venv/bin/python bench/fmnist_layers.py --config 'pooled@64' --config '[blocks.4, blocks.5, pooled]@96'
      (LAYER@SIZE[@C]; the first --config is the baseline; options: --fraction 1.0, --C 0.1,
      --workdir bench/out/fmnist_layers)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, sys, time
from pathlib import Path
from tasks.core.params import write_overrides
from tasks.core.paths import ProjectPaths
from tasks.core.stages import stage_function
root = Path(sys.argv[1])
params = write_overrides(sys.argv[2:], root / "params.yaml")
paths = ProjectPaths(root)
times, out = {}, {}
for name in ("ingest", "features", "head", "evaluate"):
    t0 = time.perf_counter()
    out[name] = stage_function(name)(params, paths)
    times[name] = time.perf_counter() - t0
print(json.dumps({"times": times, "accuracy": out["evaluate"].accuracy, "n": out["evaluate"].n}))
"""


def _run_config(workdir: Path, csv: Path, layer: str, size: int, c: float, i: int) -> dict:
    root = workdir / f"project-{i}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    overrides = [f"ingest.source={csv}", "ingest.group_pattern=null", f"backbone.input_size={size}",
                 f"backbone.layer={layer}", f"head.C={c}", "evaluate.artifact=head", "evaluate.split=test"]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), *overrides], cwd=REPO, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{layer}@{size} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["total"] = time.perf_counter() - t0
    return result


def main() -> None:
    from tasks.dataset.fashion_mnist import materialise_fashion_mnist

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", required=True,
                    help="LAYER@SIZE[@C], e.g. 'pooled@64' or '[blocks.4, pooled]@96@0.3' (C defaults to --C)")
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--C", type=float, default=0.1)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "fmnist_layers")
    args = ap.parse_args()
    csv = Path(materialise_fashion_mnist(args.workdir / f"data-{args.fraction}", args.fraction)["csv"])
    base = None
    for i, config in enumerate(args.config):
        layer, size, *c = config.split("@")
        c = float(c[0]) if c else args.C
        r = _run_config(args.workdir, csv, layer, int(size), c, i)
        base = base or r["total"]
        stages = ", ".join(f"{k} {v:.0f}s" for k, v in r["times"].items())
        print(f"{layer} @ {size}px, C={c}: test accuracy {r['accuracy']:.4f} on {r['n']} images; {stages}; "
              f"total {r['total']:.0f}s = {r['total'] / base:.2f}x the baseline", flush=True)


if __name__ == "__main__":
    main()
