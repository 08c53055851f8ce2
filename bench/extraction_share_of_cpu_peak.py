"""What share of this CPU's fp32 peak does feature extraction reach? (Lite0 at 224 px; RESULTS.md section 2)

Peak: the best of several large fp32 matrix products (torch, all cores): a yardstick of the machine, not headstart.
Work: the backbone's FLOPs per image, counted with torch.utils.flop_counter (2 FLOPs per multiply-add) on the model
the image modality builds for the features stage. Achieved: FLOPs/image x images/s of headstart's ONNX Runtime
engine over the modality's exported backbone graph, on pre-decoded batches (model-only).

Run:  python -m bench.extraction_share_of_cpu_peak [--size 224] [--batch 32] [--batches 6] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._harness import OUT, emit, scratch_project, stage_params, time_once

QUESTION = "What share of this CPU's fp32 peak does feature extraction reach?"


def peak_gflops(threads: int, n: int = 2048, reps: int = 8) -> float:
    """Best observed fp32 GFLOP/s of an n x n matrix product."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--workdir", type=Path, default=OUT / "extraction_share_of_cpu_peak")
    ap.add_argument("--quick", action="store_true", help="96 px, 2 batches, a smaller matrix: checks the code path")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.batches = 96, 2
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tasks.core.hardware import resolve_threads
    from tasks.extraction.engines import OrtEngine
    from tasks.modality.registry import modality_for

    paths = scratch_project(args.workdir / "project", None, overrides=[f"backbone.input_size={args.size}"])
    params = stage_params(paths)
    threads = resolve_threads(0)
    modality = modality_for(params.backbone)
    model = modality.build_model(params)[0]
    x = torch.zeros(1, args.size, args.size, 3, dtype=torch.uint8)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    flops_per_image = counter.get_total_flops()

    peak = peak_gflops(threads, n=1024 if args.quick else 2048, reps=3 if args.quick else 8)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8) for _ in range(args.batches)]
    with tempfile.TemporaryDirectory() as tmp:
        engine = OrtEngine(modality.export_graph(model, Path(tmp) / "m.onnx", params, ["features"]), threads)
        engine.run(batches[0])
        ips = args.batch * len(batches) / time_once(lambda: [engine.run(b) for b in batches])
    achieved = flops_per_image * ips / 1e9
    emit(QUESTION, backbone=params.backbone.name, size=args.size, batch=args.batch, threads=threads,
         gflop_per_image=round(flops_per_image / 1e9, 3), peak_gflop_s=round(peak, 1),
         ceiling_img_s=round(peak * 1e9 / flops_per_image), ort_model_img_s=round(ips, 1),
         achieved_gflop_s=round(achieved, 1), share_of_peak=round(achieved / peak, 3), quick=args.quick)


if __name__ == "__main__":
    main()
