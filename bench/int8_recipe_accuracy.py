"""Which int8 recipe keeps fp32's accuracy, and pays? Quantisation recipes against fp32 on Fashion-MNIST's official
10k test, or on the clip-art demo's val and test splits (RESULTS.md sections 13d and 28b)

A fresh scratch project (frozen backbone at --size px, linear head on --train training images, the whole official
test set as test) is run through ingest, features, head, finetune and export in a fresh Python process
(`python -m bench.int8_recipe_accuracy --child ...`, each stage as the pipeline runs it); then each recipe quantises
the exported `models/model.onnx` with headstart's own `tasks.runtime.int8.quantize_int8` (calibrated on
--calibration training images, uint8 as a client sends them) and is scored on the test images against the fp32 graph
in the same process: accuracy, top-1 agreement with fp32, size, and speed against fp32 at batch 32 for each of
--threads: the median over --pairs of fp32 seconds / int8 seconds, the two run back to back in alternating order
(`tasks.runtime.int8.paired_speedup`, what export's gate measures). One point of accuracy is 100 images here, not 2.4
as on the demo's val split. One JSON row per recipe, fp32 first.

`--data demo` scores the same recipes on a clip-art demo project (--project, or one built here at 224 px): val
(the split export's gate uses) and test.

Run:  python -m bench.int8_recipe_accuracy [--data fmnist|demo] [--project PATH] [--size 64] [--train 6000]
      [--calibration 256] [--test 0 (all)] [--recipe NAME ...] [--threads 1 2] [--pairs 7]
      [--workdir bench/out/int8_recipe_accuracy] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._harness import (OUT, built_project, emit, fmnist_csv, reply, run_child, run_stages, scratch_project,
                            stage_params)

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
    """Name -> keyword arguments of `tasks.runtime.int8.quantize_int8` ({} is the shipped recipe: its defaults)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    from tasks.runtime.int8_image import DATA_PATH_OPS

    ent, pct = CalibrationMethod.Entropy, CalibrationMethod.Percentile
    # 13d's recipes: only Conv/Gemm/MatMul quantised, the run-time padding left as exported
    convs = {"op_types": ("Conv", "Gemm", "MatMul"), "fold_padding": False, "keep_depthwise_fp32": False}
    # the whole image path quantised (Clip, Add, Pad, pooling too): int8 from one convolution to the next
    every = {"op_types": DATA_PATH_OPS, "fold_padding": False, "keep_depthwise_fp32": False}
    tail = ("last_conv", "features_tail", "head")  # the features the head was trained on, kept float
    sym = {"ActivationSymmetric": True}
    return {
        "shipped": {},
        "all_convolutions": convs,
        "13d: convs, depthwise in float": {**convs, "keep_depthwise_fp32": True},
        "float_bias": {**convs, "extra_options": {"QuantizeBias": False}},
        "reduce_range": {**convs, "reduce_range": True},
        "u8u8": {**convs, "weight_type": QuantType.QUInt8},
        "qoperator": {**convs, "quant_format": QuantFormat.QOperator},
        "head_fp32": {**convs, "keep_head_fp32": True},
        "depthwise_fp32+reduce_range": {**convs, "reduce_range": True, "keep_depthwise_fp32": True},
        "percentile": {**convs, "calibrate_method": pct},
        "entropy": {**convs, "calibrate_method": ent},
        # issue 28: better calibration on top of 13d's recipe (depthwise in float), and its QOperator form
        "percentile (depthwise in float)": {**convs, "calibrate_method": pct, "keep_depthwise_fp32": True},
        "entropy (depthwise in float)": {**convs, "calibrate_method": ent, "keep_depthwise_fp32": True},
        "qoperator (depthwise in float)": {**convs, "quant_format": QuantFormat.QOperator, "keep_depthwise_fp32": True},
        "depthwise+tail in float": {**convs, "keep_depthwise_fp32": True, "keep": tail},
        "convs, tail in float": {**convs, "keep": tail},
        "every op": every,
        "every op, tail in float": {**every, "keep": tail},
        "every op, head in float": {**every, "keep": ("head",)},
        "every op, tail+stem in float": {**every, "keep": ("first_conv", *tail)},
        "every op, depthwise+tail in float": {**every, "keep": ("depthwise", *tail)},
        "every op, entropy, tail in float": {**every, "calibrate_method": ent, "keep": tail},
        "every op, percentile, tail in float": {**every, "calibrate_method": pct, "keep": tail},
        "every op, symmetric act, tail in float": {**every, "extra_options": sym, "keep": tail},
        "every op, per-tensor, tail in float": {**every, "per_channel": False, "keep": tail},
        # + the run-time "same" padding folded into the convolutions first (no float Shape/Pad round trips)
        "every op, static padding": {**every, "fold_padding": True},  # = shipped
        "every op, static padding, head in float": {**every, "fold_padding": True, "keep": ("head",)},
        "every op, static padding, tail in float": {**every, "fold_padding": True, "keep": tail},
        "every op, static padding, entropy": {**every, "fold_padding": True, "calibrate_method": ent},
        "every op, static padding, percentile": {**every, "fold_padding": True, "calibrate_method": pct},
        # not int8: the fp32 graph with the same padding fold, to say what the fold alone buys
        "fp32, static padding": {"fp32": True},
    }


def _calibration_cache(workdir: Path, root: Path, n: int, kwargs: dict) -> Path:
    """One JSON file of tensor ranges per (project, calibration images, method, op types): recipes that differ only
    in which nodes stay float share one calibration run."""
    method = str(kwargs.get("calibrate_method", "MinMax")).split(".")[-1]
    ops = {None: "all", ("Conv", "Gemm", "MatMul"): "convs"}.get(kwargs.get("op_types", "path"), "path")
    extra = "-".join(sorted(k for k in (kwargs.get("extra_options") or {}) if k.startswith("Calib")))
    fold = "-fold" if kwargs.get("fold_padding", True) else ""
    return workdir / "calibration" / f"{root.name}-{n}-{method}-{ops}{extra}{fold}.json"


def _speedups(fp32_path: Path, int8_path: Path, batch: np.ndarray, threads: list[int], pairs: int) -> dict:
    """{"x_fp32_<t>t": median paired fp32 s / int8 s at batch len(batch), t intra-op threads} for each t."""
    from tasks.runtime.int8 import paired_speedup
    from tasks.runtime.onnx_classifier import OnnxClassifier

    out = {}
    for t in threads:
        fp32, int8 = OnnxClassifier(fp32_path, t), OnnxClassifier(int8_path, t)
        fp32.probs(batch), int8.probs(batch)  # warm-up
        out[f"x_fp32_{t}t"] = round(paired_speedup(fp32, int8, batch, pairs), 3)
    return out


def _predict(path: Path, images: np.ndarray) -> np.ndarray:
    from tasks.runtime.onnx_classifier import OnnxClassifier

    return OnnxClassifier(path).probs_batched(images).argmax(1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("fmnist", "demo"), default="fmnist")
    ap.add_argument("--project", type=Path, help="--data demo: a built demo project (default: one built here)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--test", type=int, default=0, help="a stratified share of the official test set (0: all 10k)")
    ap.add_argument("--calibration", type=int, default=256)
    ap.add_argument("--recipe", action="append", help="recipes to try (default: all)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=OUT / "int8_recipe_accuracy")
    ap.add_argument("--quick", action="store_true", help="200 train / 100 test images, 32 calibration images, the "
                                                         "shipped recipe: checks the code path")
    ap.add_argument("--child", metavar="ROOT", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        reply(child(args.child))
        return
    if args.quick:
        args.train, args.test, args.calibration, args.pairs = 200, 100, 32, 3
        args.recipe = args.recipe or ["shipped"]

    from tasks.modality.samples import split_samples
    import onnx

    from tasks.runtime.int8 import quantize_int8
    from tasks.runtime.int8_image import static_padding
    from tasks.runtime.onnx_classifier import OnnxClassifier

    if args.data == "demo":
        params, paths = built_project("int8_recipe_accuracy", args.project, args.quick)
        splits = {s: split_samples(params, paths, s, 100_000) for s in ("val", "test")}
    else:
        from tasks.core.paths import ProjectPaths

        paths = ProjectPaths(_project(args.workdir, args.size, args.train, args.test, 0.02 if args.quick else 1.0))
        params = stage_params(paths)
        splits = {"test": split_samples(params, paths, "test", 10_000)}
    calib, _ = split_samples(params, paths, "train", args.calibration)
    classes = np.array(OnnxClassifier(paths.onnx).classes)
    batch = splits["test"][0][:32]
    fp32_pred = {s: _predict(paths.onnx, x) for s, (x, _) in splits.items()}
    fp32_acc = {s: float((classes[fp32_pred[s]] == y).mean()) for s, (_, y) in splits.items()}
    common = {"data": args.data, "size": params.backbone.input_size, "calibration": len(calib), "cpu": _cpu(),
              "quick": args.quick, **{f"{s}_images": len(x) for s, (x, _) in splits.items()}}
    emit(QUESTION, recipe="fp32", **{f"{s}_accuracy": round(a, 4) for s, a in fp32_acc.items()},
         mb=round(paths.onnx.stat().st_size / 1e6, 1), **common)
    recipes = _recipes()
    for name in args.recipe or recipes:
        kwargs = recipes[name]
        cache = _calibration_cache(args.workdir, paths.root, len(calib), kwargs)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "int8.onnx"
            t0 = time.perf_counter()
            if kwargs.get("fp32"):
                onnx.save(static_padding(onnx.load(str(paths.onnx))), str(out))
            else:
                quantize_int8(paths.onnx, out, calib, calibration_cache=cache, **kwargs)
            build = time.perf_counter() - t0
            row = {}
            for s, (x, y) in splits.items():
                pred = _predict(out, x)
                acc = float((classes[pred] == y).mean())
                row |= {f"{s}_accuracy": round(acc, 4), f"{s}_drop": round(fp32_acc[s] - acc, 4),
                        f"{s}_top1_equal_fp32": round(float((pred == fp32_pred[s]).mean()), 4)}
            row |= _speedups(paths.onnx, out, batch, args.threads, args.pairs)
            emit(QUESTION, recipe=name, **row, mb=round(out.stat().st_size / 1e6, 1), build_s=round(build, 1),
                 uptime=Path("/proc/loadavg").read_text().split()[0], **common)


def _cpu() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model} ({', '.join(isa) or 'no AVX2'})"


if __name__ == "__main__":
    main()
