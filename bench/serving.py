"""Benchmark: serving the exported model on CPU — ONNX Runtime fp32 vs int8 vs torch eager.

Latency at batch 1 (median of --reps runs) and throughput at batch 32, on real clip-art images at the model's input
size, plus model size on disk and top-1 agreement with fp32. The int8 model is built here (same recipe as
`export.int8`) even when the export gate rejected it, so the trade-off can always be seen.

Run:  .venv/bin/python bench/serving.py [--reps 50]   (needs models/model.onnx and models/head.npz: `headstart demo`)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tasks.core.params import load_params
from tasks.core.paths import default_paths
from tasks.modality.samples import split_samples
from tasks.model.head_format import Head
from tasks.modality.shipped_model import build_classifier
from tasks.runtime.int8 import quantize_int8
from tasks.runtime.onnx_classifier import OnnxClassifier


def measure(run, images: np.ndarray, reps: int) -> tuple[float, float, np.ndarray]:
    """(median batch-1 latency ms, batch-32 img/s, probabilities of all images)."""
    run(images[:1])
    lat = []
    for i in range(reps):
        x = images[i % len(images)][None]
        t0 = time.perf_counter()
        run(x)
        lat.append((time.perf_counter() - t0) * 1e3)
    run(images[:32])
    t0 = time.perf_counter()
    probs = np.concatenate([run(images[i : i + 32]) for i in range(0, len(images), 32)])
    return statistics.median(lat), len(images) / (time.perf_counter() - t0), probs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--images", type=int, default=128)
    args = ap.parse_args()
    params, paths = load_params(), default_paths()
    images, _ = split_samples(params, paths, "test", args.images)
    calib, _ = split_samples(params, paths, "train", params.export.int8_calibration_images)
    model = build_classifier(params, Head.load(paths.head))
    torch.set_num_threads(2)

    def torch_run(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x))[1].numpy()

    with tempfile.TemporaryDirectory() as tmp:
        int8_path = Path(tmp) / "int8.onnx"
        quantize_int8(paths.onnx, int8_path, calib)
        fp32, int8 = OnnxClassifier(paths.onnx), OnnxClassifier(int8_path)
        rows = {"torch eager (baseline)": measure(torch_run, images, args.reps),
                "ONNX Runtime fp32": measure(fp32.probs, images, args.reps),
                "ONNX Runtime int8": measure(int8.probs, images, args.reps)}
        sizes = {"ONNX Runtime fp32": paths.onnx.stat().st_size / 1e6, "ONNX Runtime int8": int8_path.stat().st_size / 1e6}
    base_lat, base_ips, base_probs = rows["torch eager (baseline)"]
    ref = rows["ONNX Runtime fp32"][2].argmax(1)
    print(f"\n{len(images)} test images at {params.backbone.input_size}px, 2 threads")
    print(f"{'engine':<24}{'b1 ms':>8}{'b1 speedup':>12}{'b32 img/s':>11}{'b32 speedup':>13}{'size MB':>9}"
          f"{'top-1 = fp32':>14}")
    for name, (lat, ips, probs) in rows.items():
        size = f"{sizes[name]:.1f}" if name in sizes else "-"
        print(f"{name:<24}{lat:>8.1f}{base_lat / lat:>12.2f}{ips:>11.1f}{ips / base_ips:>13.2f}{size:>9}"
              f"{(probs.argmax(1) == ref).mean():>14.1%}")
    print(f"int8 / fp32 size: {sizes['ONNX Runtime int8'] / sizes['ONNX Runtime fp32']:.2f}")


if __name__ == "__main__":
    main()
