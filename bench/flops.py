"""Benchmark 2: what fraction of this CPU's fp32 limit feature extraction reaches.

Peak: the best of several large fp32 matrix products (torch, all cores). Work: the backbone's FLOPs per image, counted
with torch.utils.flop_counter (2 FLOPs per multiply-add). Achieved: FLOPs/image x images/s of ONNX Runtime on
pre-decoded batches (model-only) and through the features stage's pipeline (end-to-end), measured in the same run.

Run:  .venv/bin/python bench/flops.py [--size 224] [--batch 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from tasks.core.hardware import resolve_threads
from tasks.core.params import BackboneParams
from tasks.extraction.engines import OrtEngine
from tasks.model.backbones import build_backbone
from tasks.model.image_model import ImageModel
from tasks.model.onnx_export import export_onnx


def peak_gflops(threads: int, n: int = 2048, reps: int = 8) -> float:
    """Best observed fp32 GFLOP/s of an n x n matrix product."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=6)
    args = ap.parse_args()
    threads = resolve_threads(0)
    loaded = build_backbone(BackboneParams(input_size=args.size))
    model = ImageModel(loaded.model, loaded.spec.mean, loaded.spec.std).eval()
    x = torch.zeros(1, args.size, args.size, 3, dtype=torch.uint8)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    flops_per_image = counter.get_total_flops()

    peak = peak_gflops(threads)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8) for _ in range(args.batches)]
    with tempfile.TemporaryDirectory() as tmp:
        engine = OrtEngine(export_onnx(model, Path(tmp) / "m.onnx", args.size, ["features"], 18), threads)
        engine.run(batches[0])
        t0 = time.perf_counter()
        for b in batches:
            engine.run(b)
        ips = args.batch * len(batches) / (time.perf_counter() - t0)
    achieved = flops_per_image * ips / 1e9
    print(f"\nLite0 @ {args.size}px: {flops_per_image / 1e9:.3f} GFLOP/image (torch flop counter)")
    print(f"peak fp32 matmul, {threads} threads: {peak:.1f} GFLOP/s -> ceiling {peak * 1e9 / flops_per_image:.0f} img/s")
    print(f"ONNX Runtime model-only: {ips:.1f} img/s = {achieved:.1f} GFLOP/s = {achieved / peak:.0%} of peak")


if __name__ == "__main__":
    main()
