"""Is the exported model faster to serve on CPU than torch, and does int8 pay? ONNX Runtime fp32 vs int8 vs torch
eager. (RESULTS.md section 5)

Latency at batch 1 (median of --reps runs) and throughput at batch 32, on real test images at the model's input
size, plus model size on disk and top-1 agreement with fp32. The models are headstart's own: the exported
`models/model.onnx`, its int8 variant built here with `tasks.runtime.int8.quantize_int8` (the `export.int8` recipe,
even when the export gate would reject it, so the trade-off can always be seen) and the torch model that ships
(`tasks.modality.shipped_model.shipped_classifier`). One JSON row per engine.

The project: --project (one whose stages ran, e.g. after `headstart demo`), or by default a scratch project of the
clip-art demo data on which every stage runs first (`bench._harness.scratch_project`, `run_stages`).

Run:  python -m bench.onnx_int8_vs_torch_serving [--project PATH] [--reps 50] [--images 128] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._harness import built_project, emit

QUESTION = "Is the exported model faster to serve on CPU than torch, and does int8 pay?"


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, help="default: a scratch project of the clip-art demo, built here")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="10 images per class at 64 px, 5 reps: checks the code path")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps = 5
    import torch

    from tasks.modality.samples import split_samples
    from tasks.modality.shipped_model import shipped_classifier
    from tasks.runtime.int8 import quantize_int8
    from tasks.runtime.onnx_classifier import OnnxClassifier

    params, paths = built_project("onnx_int8_vs_torch_serving", args.project, args.quick)
    images, _ = split_samples(params, paths, "test", args.images)
    calib, _ = split_samples(params, paths, "train", params.export.int8_calibration_images)
    model = shipped_classifier(params, paths).eval()
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
        sizes = {"ONNX Runtime fp32": paths.onnx.stat().st_size / 1e6,
                 "ONNX Runtime int8": int8_path.stat().st_size / 1e6}
    base_lat, base_ips, _ = rows["torch eager (baseline)"]
    ref = rows["ONNX Runtime fp32"][2].argmax(1)
    for name, (lat, ips, probs) in rows.items():
        emit(QUESTION, engine=name, batch1_ms=round(lat, 2), batch1_speedup=round(base_lat / lat, 2),
             batch32_img_s=round(ips, 1), batch32_speedup=round(ips / base_ips, 2),
             mb=round(sizes[name], 1) if name in sizes else None,
             top1_equal_fp32=round(float((probs.argmax(1) == ref).mean()), 4), images=len(images),
             size=params.backbone.input_size, threads=2, quick=args.quick)


if __name__ == "__main__":
    main()
