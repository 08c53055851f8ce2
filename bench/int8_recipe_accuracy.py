"""Which int8 recipe keeps fp32's accuracy? Quantisation recipes against fp32 on Fashion-MNIST's official 10k test.
(RESULTS.md section 13d)

A fresh scratch project (frozen backbone at --size px, linear head on --train training images, the whole official
test set as test) is run through ingest, features, head, finetune and export in a fresh Python process
(`python -m bench.int8_recipe_accuracy --child ...`, each stage as the pipeline runs it); then each recipe quantises
the exported `models/model.onnx` with headstart's own `tasks.runtime.int8.quantize_int8` (calibrated on
--calibration training images, uint8 as a client sends them) and is scored on the test images against the fp32 graph
in the same process: accuracy, top-1 agreement with fp32, batch-1 latency (median) and batch-32 throughput, size.
One point of accuracy is 100 images here, not 2.4 as on the demo's val split. One JSON row per recipe.

Run:  python -m bench.int8_recipe_accuracy [--size 64] [--train 6000] [--calibration 256] [--test 0 (all)]
      [--recipe NAME ...] [--workdir bench/out/int8_recipe_accuracy] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._harness import OUT, emit, fmnist_csv, reply, run_child, run_stages, scratch_project, stage_params

QUESTION = "Which int8 recipe keeps fp32's accuracy?"


def child(root: Path) -> dict:
    """In this fresh process: ingest, features, head, finetune and export on the project at `root`."""
    from tasks.core.paths import ProjectPaths

    paths = ProjectPaths(root)
    runs = run_stages(("ingest", "features", "head", "finetune", "export"), stage_params(paths), paths)
    return {name: round(r.seconds, 2) for name, r in runs.items()}


def _project(workdir: Path, size: int, n_train: int, n_test: int, fraction: float = 1.0) -> Path:
    """A project whose export is done: FMNIST with `n_train` training images (stratified) and the official 10k test
    (or a stratified `n_test` of it), drawn from a materialised `fraction` of the data set. Reused when built."""
    import pandas as pd

    root = workdir / f"project-{size}px-{n_train}-{n_test or 'all'}-{fraction:g}"
    if (root / "models" / "model.onnx").is_file():
        return root
    csv = fmnist_csv(workdir / f"data-{fraction:g}", fraction)
    rows = pd.read_csv(csv)
    train = rows[rows.split == "train"].groupby("label").sample(n=n_train // 10, random_state=0)
    test = rows[rows.split != "train"]
    if n_test:
        test = test.groupby("label").sample(n=n_test // 10, random_state=0)
    subset = pd.concat([train, test])
    subset["path"] = [str((csv.parent / p).resolve()) for p in subset["path"]]
    paths = scratch_project(root, None, overrides=[f"ingest.source={root / 'labels.csv'}", "ingest.group_pattern=null",
                                                   f"backbone.input_size={size}", "finetune.strategy=none",
                                                   "export.int8=false"])
    subset.to_csv(paths.root / "labels.csv", index=False)
    run_child(__spec__.name, paths.root)
    return paths.root


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
        # issue 28: better calibration on top of the shipped recipe (depthwise in float), and its QOperator form
        "percentile (depthwise in float)": {"calibrate_method": CalibrationMethod.Percentile},
        "entropy (depthwise in float)": {"calibrate_method": CalibrationMethod.Entropy},
        "qoperator (depthwise in float)": {"quant_format": QuantFormat.QOperator},
    }


def _score(path: Path, images: np.ndarray, reps: int = 50) -> tuple[np.ndarray, float, float]:
    """(predicted class indices, batch-1 median ms, batch-32 img/s) on `images`."""
    from tasks.runtime.onnx_classifier import OnnxClassifier

    clf = OnnxClassifier(path)
    clf.probs(images[:32])
    lat = []
    for i in range(reps):
        t0 = time.perf_counter()
        clf.probs(images[i % len(images)][None])
        lat.append((time.perf_counter() - t0) * 1e3)
    t0 = time.perf_counter()
    pred = np.concatenate([clf.probs(images[i : i + 32]).argmax(1) for i in range(0, len(images), 32)])
    return pred, statistics.median(lat), len(images) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--test", type=int, default=0, help="a stratified share of the official test set (0: all 10k)")
    ap.add_argument("--calibration", type=int, default=256)
    ap.add_argument("--recipe", action="append", help="recipes to try (default: all)")
    ap.add_argument("--workdir", type=Path, default=OUT / "int8_recipe_accuracy")
    ap.add_argument("--quick", action="store_true", help="200 train / 100 test images, 32 calibration images, the "
                                                         "shipped recipe: checks the code path")
    ap.add_argument("--child", metavar="ROOT", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        reply(child(args.child))
        return
    if args.quick:
        args.train, args.test, args.calibration = 200, 100, 32
        args.recipe = args.recipe or ["shipped (depthwise in float)"]

    from tasks.core.paths import ProjectPaths
    from tasks.modality.samples import split_samples
    from tasks.runtime.int8 import quantize_int8
    from tasks.runtime.onnx_classifier import OnnxClassifier

    root = _project(args.workdir, args.size, args.train, args.test, 0.02 if args.quick else 1.0)
    paths = ProjectPaths(root)
    params = stage_params(paths)
    test, labels = split_samples(params, paths, "test", 10_000)
    calib, _ = split_samples(params, paths, "train", args.calibration)
    fp32_pred, fp32_ms, fp32_ips = _score(paths.onnx, test)
    classes = np.array(OnnxClassifier(paths.onnx).classes)
    fp32_acc = float((classes[fp32_pred] == labels).mean())
    fp32_mb = paths.onnx.stat().st_size / 1e6
    common = {"test_images": len(test), "size": args.size, "train": args.train, "calibration": args.calibration,
              "cpu": _cpu(), "quick": args.quick}
    emit(QUESTION, recipe="fp32", accuracy=round(fp32_acc, 4), drop=0.0, top1_equal_fp32=1.0,
         batch1_ms=round(fp32_ms, 2), batch32_img_s=round(fp32_ips), x_fp32=1.0, mb=round(fp32_mb, 1), **common)
    recipes = _recipes()
    for name in args.recipe or recipes:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "int8.onnx"
            t0 = time.perf_counter()
            quantize_int8(paths.onnx, out, calib, **recipes[name])
            build = time.perf_counter() - t0
            pred, ms, ips = _score(out, test)
            acc = float((classes[pred] == labels).mean())
            emit(QUESTION, recipe=name, accuracy=round(acc, 4), drop=round(fp32_acc - acc, 4),
                 top1_equal_fp32=round(float((pred == fp32_pred).mean()), 4), batch1_ms=round(ms, 2),
                 batch32_img_s=round(ips), x_fp32=round(ips / fp32_ips, 2), mb=round(out.stat().st_size / 1e6, 1),
                 build_s=round(build, 1), **common)


def _cpu() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model} ({', '.join(isa) or 'no AVX2'})"


if __name__ == "__main__":
    main()
