"""bf16 autocast vs fp32 for fine-tuning on a CPU with AMX or AVX512-BF16: speed and accuracy in one run, and what
`finetune.amp=auto`'s start-up measurement picks. (RESULTS.md, the section on issue 28's bf16 item)

Run from the repository root:

    python -m bench.finetune_bf16_cpu            # the demo's clip-art, all images, at 128 px, last_n=3, 2 epochs
    python -m bench.finetune_bf16_cpu --quick    # 10 images per class at 64 px, 1 epoch
    (options: --size PX, --epochs N, --reps N, --set KEY=VALUE [...])

On a CPU without AMX and AVX512-BF16 (no `amx_bf16` / `avx512_bf16` in /proc/cpuinfo) it prints one row saying so and
what `finetune.amp=bf16` answers there (the stage's one-line refusal), plus one probe: a Lite0 training step (64 px,
batch 8) timed in fp32 and in bf16 autocast without hardware bf16, as `amp=auto`'s start-up measurement times it. Elsewhere both sides run the fine-tune stage as `dvc repro` does (`python -m tasks.finetune`),
then export and evaluate the shipped model on the test split (`bench.finetune_nproc_cpu.finetune_side`), in
alternating order over `--reps` rounds, then one `amp=auto` stage run (1 epoch) whose start-up ratio and choice are
printed; the ratio printed is bf16/fp32 images/s (> 1: bf16 is faster). Benchmarks
report, they do not gate.
"""

from __future__ import annotations

import os
import statistics

from bench._harness import OUT, emit, venv_env
from bench.finetune_nproc_cpu import _cpu, arguments, built_demo, finetune_side

QUESTION = "bf16 autocast vs fp32 fine-tuning on a CPU with AMX / AVX512-BF16: speed and accuracy"


def main() -> None:
    from tasks.core.errors import UserError
    from tasks.training.cpu_bf16 import CPU_BF16_FLAGS, MIN_SPEEDUP, cpu_flags, cpu_has_bf16, require_cpu_bf16

    args = arguments(__doc__)
    flags = sorted(f for f in cpu_flags() if "avx512" in f or "amx" in f or "bf16" in f)
    if not cpu_has_bf16():
        try:
            require_cpu_bf16()
            refusal = ""
        except UserError as exc:
            refusal = str(exc)
        emit(QUESTION, cpu=_cpu(), cpu_flags=flags or "none of avx512*/amx*/bf16", needs=list(CPU_BF16_FLAGS),
             skipped="this CPU has neither AMX nor AVX512-BF16: the fine-tune comparison did not run",
             amp_bf16_answer=refusal, emulated_bf16_speed_vs_fp32_at_64px=_emulated_ratio(64), load_avg=os.getloadavg())
        return
    size, epochs = (64, 1) if args.quick else (args.size, args.epochs)
    paths = built_demo(OUT / "finetune_bf16_cpu" / f"project-{size}{'-quick' if args.quick else ''}", size, args.quick)
    base = ["finetune.strategy=last_n", "finetune.last_n=3", f"finetune.epochs={epochs}",
            f"finetune.patience={epochs + 1}", "finetune.device=cpu", *args.set]
    sides = {"fp32": ["finetune.amp=off"], "bf16": ["finetune.amp=bf16"]}
    results: dict[str, list[dict]] = {k: [] for k in sides}
    for rep in range(args.reps):
        for name in (list(sides) if rep % 2 == 0 else list(reversed(sides))):
            results[name].append(finetune_side(paths, base + sides[name]))
    auto = auto_choice(paths, base + ["finetune.amp=auto", "finetune.epochs=1", "finetune.patience=2"])
    fp32, bf16 = (results[k][-1] for k in sides)
    rate = statistics.median(c["images_per_s"] / b["images_per_s"] for b, c in zip(results["fp32"], results["bf16"]))
    emit(QUESTION, cpu=_cpu(), cpu_flags=flags, load_avg=os.getloadavg(), size=size, epochs=epochs, reps=args.reps,
         fp32=fp32, bf16=bf16, fp32_runs=results["fp32"], bf16_runs=results["bf16"],
         images_per_s_ratio=round(rate, 3),
         test_accuracy_diff=round(bf16["test_accuracy_shipped"] - fp32["test_accuracy_shipped"], 4),
         val_accuracy_diff=round(bf16["last_epoch_val_accuracy"] - fp32["last_epoch_val_accuracy"], 4),
         auto_picked=auto["amp"], auto_startup_bf16_speed_vs_fp32=auto["ratio"], auto_min_speedup=MIN_SPEEDUP)


def auto_choice(paths, overrides: list[str]) -> dict:
    """What `finetune.amp=auto` chose in a real stage run (fresh process) and the start-up ratio it chose by (the
    stage's log line "amp auto: bf16 autocast ran R x fp32 speed ..."); amp from its summary.json."""
    import json
    import re
    import shutil
    import subprocess

    shutil.rmtree(paths.finetune, ignore_errors=True)
    shutil.rmtree(paths.checkpoints, ignore_errors=True)
    cmd = ["python", "-m", "tasks.finetune"] + [a for o in overrides for a in ("-S", o)]
    proc = subprocess.run(cmd, cwd=paths.root, env=venv_env(), capture_output=True, text=True, check=True)
    found = re.search(r"amp auto: bf16 autocast ran ([0-9.]+)x", proc.stdout + proc.stderr)
    amp = json.loads((paths.finetune / "summary.json").read_text())["amp"]
    return {"amp": amp, "ratio": float(found.group(1)) if found else None}


def _emulated_ratio(size: int) -> float:
    """fp32 seconds / bf16 seconds of a Lite0 training step (batch 8, `size` px, random weights: timing only) as
    `finetune.amp=auto`'s start-up measurement takes it (`tasks.training.cpu_bf16.bf16_pays`): what bf16 would cost
    here, emulated."""
    import timm
    import torch

    from tasks.training.cpu_bf16 import bf16_pays

    class Logits(torch.nn.Module):  # the stage's models return (logits, ...)
        def __init__(self):
            super().__init__()
            self.net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=7)

        def forward(self, x):
            return (self.net(x),)

    torch.manual_seed(0)
    return round(bf16_pays(Logits(), torch.randn(8, 3, size, size))[1], 3)


if __name__ == "__main__":
    main()
