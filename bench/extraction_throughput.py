"""Benchmark 1: feature-extraction throughput, Lite0 at 224 px, batch 32, on the clip-art demo images.

Measured side by side in one run (ratios are what count; this machine is noisy):
  - model-only: pre-decoded uint8 batches -> features, for torch eager NCHW (baseline), torch channels_last, ONNX
    Runtime;
  - decode-only: file -> uint8 (decode, flatten alpha, resize), single thread;
  - end-to-end: files -> features through the features stage's own pipeline (decode pool one batch ahead).

Run:  .venv/bin/python bench/extraction_throughput.py [--images 256] [--size 224] [--batch 32]
(needs data/prepared/manifest.parquet: run `headstart demo` or `python -m tasks.dataset.clipart_demo && python -m tasks.ingest`)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tasks.core.hardware import resolve_threads
from tasks.core.params import load_params
from tasks.core.paths import default_paths
from tasks.dataset.hash_cache import HashCache
from tasks.dataset.images import load_uint8
from tasks.extraction.engines import OrtEngine, TorchEngine
from tasks.extraction.extract import extract_to_store
from tasks.extraction.feature_store import FeatureStore
from tasks.model.backbones import build_backbone
from tasks.model.image_model import ImageModel
from tasks.model.onnx_export import export_onnx


class TorchNCHW:
    """The naive baseline: float NCHW contiguous input, default memory format."""

    name = "torch-nchw"

    def __init__(self, model, threads):
        torch.set_num_threads(threads)
        self.model = model.eval()

    def run(self, batch):
        with torch.inference_mode():
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
            return self.model(x).numpy()


def time_model(engine, batches, warmup=1) -> float:
    for b in batches[:warmup]:
        engine.run(b)
    t0 = time.perf_counter()
    n = 0
    for b in batches:
        engine.run(b)
        n += len(b)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--decode-workers", type=int, default=None, help="default: params.yaml features.decode_workers")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    threads = resolve_threads(args.threads)
    overrides = [f"backbone.input_size={args.size}", f"features.batch_size={args.batch}"]
    if args.decode_workers is not None:
        overrides.append(f"features.decode_workers={args.decode_workers}")
    params = load_params("params.yaml", overrides)
    manifest = pd.read_parquet("data/prepared/manifest.parquet").head(args.images)
    paths, keys = manifest["path"].tolist(), manifest["sha256"].tolist()

    t0 = time.perf_counter()
    images = np.stack([load_uint8(p, args.size, params.backbone.resize) for p in paths])
    decode_ips = len(paths) / (time.perf_counter() - t0)
    batches = [images[i : i + args.batch] for i in range(0, len(images), args.batch)]

    loaded = build_backbone(params.backbone)
    model = ImageModel(loaded.model, loaded.spec.mean, loaded.spec.std)
    results = {"images": len(paths), "size": args.size, "batch": args.batch, "threads": threads,
               "decode_workers": params.features.decode_workers, "decode_only_img_s": decode_ips}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "backbone.onnx", args.size, ["features"], 18)
        engines = {"torch-nchw": TorchNCHW(model, threads), "torch-channels_last": TorchEngine(model, threads),
                   "onnxruntime": OrtEngine(onnx_path, threads)}
        for name, engine in engines.items():
            results[f"{name}_model_img_s"] = time_model(engine, batches)
        for name, engine in engines.items():
            store = FeatureStore(Path(tmp) / "store", f"e2e-{name}")
            todo = list(zip(keys, paths))  # each engine writes its own store, so the keys may repeat across them
            t0 = time.perf_counter()
            extract_to_store(params, store, todo, engine, HashCache(default_paths().hashes))
            results[f"{name}_e2e_img_s"] = len(todo) / (time.perf_counter() - t0)

    base = results["torch-nchw_model_img_s"]
    print(f"\nLite0 @ {args.size}px, batch {args.batch}, {threads} threads, {len(paths)} clip-art images, "
          f"decode workers {results['decode_workers']}")
    print(f"{'engine':<22}{'model img/s':>12}{'e2e img/s':>11}{'model x base':>14}{'e2e x base':>12}{'e2e/model':>11}")
    for name in engines:
        m, e = results[f"{name}_model_img_s"], results[f"{name}_e2e_img_s"]
        print(f"{name:<22}{m:>12.1f}{e:>11.1f}{m / base:>14.2f}{e / results['torch-nchw_e2e_img_s']:>12.2f}"
              f"{e / m:>11.2f}")
    print(f"decode+resize only (1 thread): {decode_ips:.1f} img/s")
    ort_e2e_vs_base = results["onnxruntime_e2e_img_s"] / results["torch-nchw_e2e_img_s"]
    print(f"target: ONNX Runtime e2e >= 4x torch eager e2e: {ort_e2e_vs_base:.2f}x; "
          f"e2e >= 70% of model-only: {results['onnxruntime_e2e_img_s'] / results['onnxruntime_model_img_s']:.0%}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
