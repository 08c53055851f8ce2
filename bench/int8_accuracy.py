"""Benchmark 13d: int8 that keeps its accuracy: quantisation recipes against fp32 on Fashion-MNIST's official 10k test.

A fresh project (frozen backbone at --size px, linear head on --train training images, the whole official test set
as test) is run through ingest, features, head, finetune and export; then each recipe quantises the exported
`models/model.onnx` (calibrated on --calibration training images, uint8 as a client sends them) and is scored on the
10k test images against the fp32 graph in the same process: accuracy, top-1 agreement with fp32, batch-1 latency
(median) and batch-32 throughput, size. One point of accuracy is 100 images here, not 2.4 as on the demo's val split.

Run:  .venv/bin/python bench/int8_accuracy.py [--size 64] [--train 6000] [--calibration 256]
      [--recipe NAME ...] [--workdir bench/out/int8_accuracy]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHILD = r"""
import sys
from pathlib import Path
from tasks.core.params import write_overrides
from tasks.core.paths import ProjectPaths
from tasks.core.stages import stage_function
root = Path(sys.argv[1])
params = write_overrides(sys.argv[2:], root / "params.yaml")
for name in ("ingest", "features", "head", "finetune", "export"):
    stage_function(name)(params, ProjectPaths(root))
"""


def _project(workdir: Path, size: int, n_train: int) -> Path:
    """A project whose export is done: FMNIST with `n_train` training images (stratified) and the official 10k test."""
    import pandas as pd

    from tasks.dataset.fashion_mnist import materialise_fashion_mnist

    root = workdir / f"project-{size}px-{n_train}"
    if (root / "models" / "model.onnx").is_file():
        return root
    csv = Path(materialise_fashion_mnist(workdir / "data")["csv"])
    rows = pd.read_csv(csv)
    train = rows[rows.split == "train"].groupby("label").sample(n=n_train // 10, random_state=0)
    subset = pd.concat([train, rows[rows.split != "train"]])
    subset["path"] = [str((csv.parent / p).resolve()) for p in subset["path"]]
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    subset.to_csv(root / "labels.csv", index=False)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    overrides = [f"ingest.source={root / 'labels.csv'}", "ingest.group_pattern=null", f"backbone.input_size={size}",
                 "finetune.strategy=none", "export.int8=false"]
    subprocess.run([sys.executable, "-c", CHILD, str(root), *overrides], cwd=REPO, check=True)
    return root


def _recipes() -> dict[str, dict]:
    """Name -> keyword arguments of `tasks.runtime.int8.quantize_int8` (its defaults are the shipped recipe)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    return {
        "all_convolutions": {"keep_depthwise_fp32": False},
        "shipped (depthwise in float)": {},
        "float_bias": {"keep_depthwise_fp32": False, "extra_options": {"QuantizeBias": False}},
        "reduce_range": {"reduce_range": True, "keep_depthwise_fp32": False},
        "u8u8": {"weight_type": QuantType.QUInt8, "keep_depthwise_fp32": False},
        "qoperator": {"quant_format": QuantFormat.QOperator, "keep_depthwise_fp32": False},
        "head_fp32": {"keep_head_fp32": True, "keep_depthwise_fp32": False},
        "depthwise_fp32+reduce_range": {"reduce_range": True},
        "percentile": {"calibrate_method": CalibrationMethod.Percentile, "keep_depthwise_fp32": False},
        "entropy": {"calibrate_method": CalibrationMethod.Entropy, "keep_depthwise_fp32": False},
    }


def _score(path: Path, images: np.ndarray, reps: int = 50) -> tuple[np.ndarray, float, float]:
    """(predicted class indices, batch-1 median ms, batch-32 img/s) on `images`."""
    from tasks.runtime.onnx_classifier import OnnxClassifier

    clf = OnnxClassifier(path)
    clf.probs(images[:32])
    lat = []
    for i in range(reps):
        t0 = time.perf_counter()
        clf.probs(images[i][None])
        lat.append((time.perf_counter() - t0) * 1e3)
    t0 = time.perf_counter()
    pred = np.concatenate([clf.probs(images[i : i + 32]).argmax(1) for i in range(0, len(images), 32)])
    return pred, statistics.median(lat), len(images) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--calibration", type=int, default=256)
    ap.add_argument("--recipe", action="append", help="recipes to try (default: all)")
    ap.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "int8_accuracy")
    args = ap.parse_args()

    from tasks.core.params import load_params
    from tasks.core.paths import ProjectPaths
    from tasks.modality.samples import split_samples
    from tasks.runtime.int8 import quantize_int8
    from tasks.runtime.onnx_classifier import OnnxClassifier

    root = _project(args.workdir, args.size, args.train)
    paths = ProjectPaths(root)
    params = load_params(root / "params.yaml")
    test, labels = split_samples(params, paths, "test", 10_000)
    calib, _ = split_samples(params, paths, "train", args.calibration)
    fp32_pred, fp32_ms, fp32_ips = _score(paths.onnx, test)
    classes = np.array(OnnxClassifier(paths.onnx).classes)
    fp32_acc = float((classes[fp32_pred] == labels).mean())
    fp32_mb = paths.onnx.stat().st_size / 1e6
    print(f"Fashion-MNIST official test: {len(test)} images at {args.size}px; {args.calibration} calibration images; "
          f"CPU: {_cpu()}")
    print(f"{'recipe':<30}{'accuracy':>9}{'drop':>8}{'top-1 = fp32':>14}{'b1 ms':>8}{'b32 img/s':>11}{'× fp32':>8}"
          f"{'MB':>7}{'build s':>9}")
    print(f"{'fp32':<30}{fp32_acc:>9.4f}{0:>8.4f}{1:>14.2%}{fp32_ms:>8.2f}{fp32_ips:>11.0f}{1:>8.2f}{fp32_mb:>7.1f}"
          f"{'-':>9}")
    recipes = _recipes()
    for name in args.recipe or recipes:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "int8.onnx"
            t0 = time.perf_counter()
            quantize_int8(paths.onnx, out, calib, **recipes[name])
            build = time.perf_counter() - t0
            pred, ms, ips = _score(out, test)
            acc = float((classes[pred] == labels).mean())
            print(f"{name:<30}{acc:>9.4f}{fp32_acc - acc:>8.4f}{(pred == fp32_pred).mean():>14.2%}{ms:>8.2f}"
                  f"{ips:>11.0f}{ips / fp32_ips:>8.2f}{out.stat().st_size / 1e6:>7.1f}{build:>9.1f}", flush=True)


def _cpu() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model} ({', '.join(isa) or 'no AVX2'})"


if __name__ == "__main__":
    main()
