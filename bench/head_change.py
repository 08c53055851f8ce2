"""Benchmark 13a: a head change through `dvc repro`, against a cold `dvc repro` and a no-op one, in the same run.

In a scratch DVC project on the clip-art demo (every demo image, the shipped params: 224 px), each round runs
  cold:    `dvc repro` from nothing (no prepared data, no features, no models), every stage;
  head:    `dvc repro` after `head.C` changed (head, finetune, export and evaluate re-run; features all cached);
  no-op:   `dvc repro` with nothing changed (DVC's own cost of checking the pipeline).
Every repro passes `--no-run-cache`, so DVC computes instead of restoring an earlier run's outputs. Prints each
round, the medians, cold / head (target >= 10x) and where the head change's time goes: each re-run stage's command
timed alone (`python -m tasks.<stage>`: imports included), and DVC's share (head - sum of the stage commands).

Run:  .venv/bin/python bench/head_change.py [--rounds 3] [--workdir bench/out/head_change]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.core.params import write_overrides  # noqa: E402
from tasks.dataset.clipart_demo import materialise  # noqa: E402

STAGES_AFTER_HEAD = ("head", "finetune", "export", "evaluate")


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def _run(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds


def _project(root: Path) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for f in ("params.yaml", "dvc.yaml", ".gitignore"):
        shutil.copy(REPO / f, root / f)
    shutil.copytree(REPO / "tasks", root / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "models").mkdir()
    shutil.copy(REPO / "models" / ".gitignore", root / "models" / ".gitignore")
    materialise(root / "data" / "raw")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "bench@example.invalid"],
                ["git", "config", "user.name", "bench"], [sys.executable, "-m", "dvc", "init", "-q"]):
        _run(cmd, root)
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    _run(["git", "add", "-A"], root)
    _run(["git", "commit", "-qm", "bench project"], root)
    return root


def _reset(root: Path) -> None:
    for sub in ("data/prepared", "data/features", "data/.locks", "models/metrics", "models/plots", "models/finetune",
                "models/int8", "models/checkpoints"):
        shutil.rmtree(root / sub, ignore_errors=True)
    for f in ("dvc.lock", "models/head.npz", "models/head.json", "models/model.onnx", "models/labels.txt",
              "models/MODEL_CARD.md"):
        (root / f).unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "head_change")
    args = ap.parse_args()
    root = _project(args.workdir)
    repro = [sys.executable, "-m", "dvc", "repro", "--no-run-cache"]
    rows = []
    for i in range(args.rounds):
        _reset(root)
        write_overrides(["head.C=0.1"], root / "params.yaml")
        cold = _run(repro, root)
        write_overrides([f"head.C={0.2 + 0.1 * i:.1f}"], root / "params.yaml")
        head = _run(repro, root)
        noop = _run(repro, root)
        rows.append((cold, head, noop))
        print(f"round {i + 1}: cold {cold:.1f}s, head change {head:.1f}s, no-op {noop:.1f}s, cold/head "
              f"{cold / head:.1f}x", flush=True)
    cold, head, noop = (statistics.median(r[k] for r in rows) for k in range(3))
    ratios = [r[0] / r[1] for r in rows]
    print(f"\nmedian: cold {cold:.1f}s, head change {head:.1f}s, no-op {noop:.1f}s")
    print(f"cold / head change: {statistics.median(ratios):.1f}x (per round: {', '.join(f'{x:.1f}' for x in ratios)})")

    alone = {}
    for stage in STAGES_AFTER_HEAD:  # each re-run stage's command alone, as dvc runs it (imports included)
        alone[stage] = statistics.median(_run([sys.executable, "-m", f"tasks.{stage}"], root) for _ in range(3))
    stages = sum(alone.values())
    print("head change, where the time goes (each command alone, median of 3): "
          + ", ".join(f"{k} {v:.2f}s" for k, v in alone.items())
          + f"; stages {stages:.1f}s, DVC {head - stages:.1f}s (a no-op repro: {noop:.1f}s)")


if __name__ == "__main__":
    main()
