"""Fine-tuning on 2 processes (torchrun, DDP over gloo, 1 thread each) against 1 process with 2 threads on a 2-core
CPU: throughput, wall, and whether the answer is the same. (RESULTS.md, the section on issue 27)

Run from the repository root:

    python -m bench.finetune_nproc_cpu           # the demo's clip-art, all images, at 128 px, last_n=3, 2 epochs
    python -m bench.finetune_nproc_cpu --quick   # 10 images per class at 64 px, 1 epoch
    (options: --size PX, --epochs N, --reps N (rounds of the two sides, order alternating), --set KEY=VALUE [...])

The project is a scratch project of the demo data built once (ingest, features, head). Each side then runs the
fine-tune stage as `dvc repro` does (`python -m tasks.finetune` in the project folder, interpreter start-up included),
then export and evaluate (the exported ONNX on the test split through ONNX Runtime), so the accuracy figures are those
of the model that would ship. Sides: `1 process, 2 threads` (finetune.nproc=1, threads=0: the honest baseline on this
machine) and `2 processes, 1 thread each` (finetune.nproc=2). Images/s counts train images over the epochs' own
seconds (history.csv, scoring included as the stage does it); wall is the whole stage process. The ratio printed is
candidate/baseline of images/s (> 1: two processes are faster). Benchmarks report, they do not gate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import pandas as pd

from bench._harness import OUT, emit, run_stage, scratch_project, stage_params, time_once

QUESTION = "Fine-tuning on 2 processes vs 1 process with 2 threads on a 2-core CPU: speed and answer"


def finetune_side(paths, overrides: list[str]) -> dict:
    """One fine-tune stage run (fresh process) + export + evaluate on a copy's models/ state; its figures."""
    shutil.rmtree(paths.finetune, ignore_errors=True)
    shutil.rmtree(paths.checkpoints, ignore_errors=True)
    cmd = ["python", "-m", "tasks.finetune"] + [a for o in overrides for a in ("-S", o)]
    wall = time_once(cmd, cwd=paths.root)
    summary = json.loads((paths.finetune / "summary.json").read_text())
    history = pd.read_csv(paths.finetune / "history.csv")
    epochs = history[history["epoch"] > 0]
    params = stage_params(paths, overrides)
    run_stage("export", params, paths)
    test = run_stage("evaluate", params, paths).result
    last = epochs.iloc[-1]
    return {"wall_s": round(wall, 1), "epoch_s": round(float(epochs["seconds"].sum()), 1),
            "images_per_s": round(summary["n_train"] * len(epochs) / float(epochs["seconds"].sum()), 2),
            "world_size": summary["world_size"], "threads_per_process": summary["threads"],
            "global_batch": summary["global_batch"], "amp": summary["amp"], "kept": summary["kept"],
            "last_epoch_val_accuracy": round(float(last["val_accuracy"]), 4),
            "last_epoch_train_loss": round(float(last["train_loss"]), 4),
            "best_val_accuracy": round(summary["best"]["val_accuracy"], 4),
            "frozen_head_val_accuracy": round(summary["frozen_head_val_accuracy"], 4),
            "test_accuracy_shipped": round(test.accuracy, 4), "final_state_sha256": summary["final_state_sha256"][:12]}


def built_demo(dest, size: int, quick: bool):
    """The demo's clip-art (10 per class when `quick`) at `size` px with ingest, features and head run: built once
    under `dest` and reused by later runs (a project whose head exists is taken as it is)."""
    from tasks.core.paths import ProjectPaths

    if (dest / "models" / "head.npz").exists():
        return ProjectPaths(dest)
    paths = scratch_project(dest, "clipart", per_class=10 if quick else None,
                            overrides=[f"backbone.input_size={size}"])
    params = stage_params(paths)
    for name in ("ingest", "features", "head"):
        run_stage(name, params, paths)
    return paths


def arguments(doc: str) -> argparse.Namespace:
    """The options both fine-tuning benches take: --quick, --size, --epochs, --reps, --set."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--set", action="append", default=[])
    return ap.parse_args()


def main() -> None:
    args = arguments(__doc__)
    size, epochs = (64, 1) if args.quick else (args.size, args.epochs)
    paths = built_demo(OUT / "finetune_nproc_cpu" / f"project-{size}{'-quick' if args.quick else ''}", size, args.quick)
    # patience above epochs: both sides train every epoch; the kept model is still the best on val (epoch 0 included)
    base = ["finetune.strategy=last_n", "finetune.last_n=3", f"finetune.epochs={epochs}",
            f"finetune.patience={epochs + 1}", "finetune.amp=off", *args.set]
    sides = {"1 process, 2 threads": ["finetune.nproc=1", "finetune.threads=0"],
             "2 processes, 1 thread each": ["finetune.nproc=2"]}
    results: dict[str, list[dict]] = {k: [] for k in sides}
    for rep in range(args.reps):
        for name in (list(sides) if rep % 2 == 0 else list(reversed(sides))):
            results[name].append(finetune_side(paths, base + sides[name]))
    base_row, cand_row = (results[k][-1] for k in sides)
    rate = [c["images_per_s"] / b["images_per_s"] for b, c in zip(*results.values())]
    emit(QUESTION, cpu=_cpu(), load_avg=os.getloadavg(), size=size, epochs=epochs, reps=args.reps,
         baseline=base_row, candidate=cand_row, baseline_runs=results["1 process, 2 threads"],
         candidate_runs=results["2 processes, 1 thread each"],
         images_per_s_ratio=round(sorted(rate)[len(rate) // 2], 3),
         wall_ratio=round(cand_row["wall_s"] / base_row["wall_s"], 3),
         test_accuracy_diff=round(cand_row["test_accuracy_shipped"] - base_row["test_accuracy_shipped"], 4),
         val_accuracy_diff=round(cand_row["last_epoch_val_accuracy"] - base_row["last_epoch_val_accuracy"], 4))


def _cpu() -> str:
    import platform

    for line in open("/proc/cpuinfo") if os.path.exists("/proc/cpuinfo") else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return platform.processor()


if __name__ == "__main__":
    main()
