"""Which nodes lose the accuracy in int8? ONNX Runtime's QDQ loss debugger on a recipe, then the worst nodes kept in
float. (RESULTS.md section 28b)

On the project `bench.int8_recipe_accuracy` builds (Fashion-MNIST, or --data demo), quantise with --recipe, run the
fp32 and int8 graphs with every quantised activation saved (`onnxruntime.quantization.qdq_loss_debug`) on --images
calibration images, and rank the quantised activations by their own quantisation noise (SQNR of the tensor before
vs after its QuantizeLinear/DequantizeLinear pair, dB: lower is worse). Then, for each k of --exclude, the nodes that
produce or consume the k worst tensors are kept in float on top of the recipe, and the result is scored as in
`bench.int8_recipe_accuracy` (accuracy, drop, paired speed at batch 32). One JSON row per tensor ranked (top
--show) and per k.

Run:  python -m bench.int8_loss_debug [--data fmnist|demo] [--project PATH] [--recipe NAME] [--images 64]
      [--exclude 2 4 8 16] [--threads 1 2] [--pairs 7]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx

from bench._harness import OUT, built_project, emit, stage_params
from bench.int8_recipe_accuracy import _calibration_cache, _cpu, _predict, _project, _recipes, _speedups

QUESTION = "Which nodes lose the accuracy in int8?"


def rank_tensors(pre: Path, qdq: Path, images: np.ndarray) -> list[tuple[str, float, float]]:
    """(tensor, local SQNR dB, fp32-vs-int8 SQNR dB) of every quantised activation of `qdq`, worst local first."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory() as tmp:
        fa, qa = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        modify_model_output_intermediate_tensors(str(pre), str(fa))
        modify_model_output_intermediate_tensors(str(qdq), str(qa))
        batches = [{"images": images[i : i + 16]} for i in range(0, len(images), 16)]  # the reader it iterates
        acts = create_activation_matching(collect_activations(str(qa), iter(batches)),
                                          collect_activations(str(fa), iter(batches)))
    errors = compute_activation_error(acts)
    rows = [(name, e["qdq_err"], e.get("xmodel_err", float("nan"))) for name, e in errors.items()]
    return sorted(rows, key=lambda r: r[1])


def nodes_of(model: onnx.ModelProto, tensors: list[str]) -> list[str]:
    """Names of the nodes that produce or consume any of `tensors` (in the pre-processed float graph)."""
    wanted = set(tensors)
    return [n.name for n in model.graph.node if wanted & (set(n.input) | set(n.output))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("fmnist", "demo"), default="fmnist")
    ap.add_argument("--project", type=Path)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--test", type=int, default=0)
    ap.add_argument("--calibration", type=int, default=256)
    ap.add_argument("--recipe", default="shipped")
    ap.add_argument("--images", type=int, default=64, help="images the debugger runs (a subset of calibration)")
    ap.add_argument("--exclude", type=int, nargs="*", default=[2, 4, 8, 16])
    ap.add_argument("--show", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=OUT / "int8_recipe_accuracy")
    args = ap.parse_args(argv)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    from tasks.modality.samples import split_samples
    from tasks.runtime.int8 import quantize_int8
    from tasks.runtime.int8_image import static_padding
    from tasks.runtime.onnx_classifier import OnnxClassifier

    if args.data == "demo":
        params, paths = built_project("int8_recipe_accuracy", args.project, False)
        split = "val"
    else:
        from tasks.core.paths import ProjectPaths

        paths = ProjectPaths(_project(args.workdir, args.size, args.train, args.test))
        params = stage_params(paths)
        split = "test"
    x, y = split_samples(params, paths, split, 10_000)
    calib, _ = split_samples(params, paths, "train", args.calibration)
    classes = np.array(OnnxClassifier(paths.onnx).classes)
    fp32_pred = _predict(paths.onnx, x)
    fp32_acc = float((classes[fp32_pred] == y).mean())
    kwargs = dict(_recipes()[args.recipe])
    cache = _calibration_cache(args.workdir, paths.root, len(calib), kwargs)
    cache.parent.mkdir(parents=True, exist_ok=True)
    common = {"data": args.data, "recipe": args.recipe, "split": split, "cpu": _cpu()}
    with tempfile.TemporaryDirectory() as tmp:
        pre, qdq = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src = Path(tmp) / "src.onnx"  # the float graph the recipe quantises, so tensor names match
        model = onnx.load(str(paths.onnx))
        onnx.save(static_padding(model) if kwargs.get("fold_padding", True) else model, str(src))
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        quantize_int8(paths.onnx, qdq, calib, calibration_cache=cache, **kwargs)
        ranked = rank_tensors(pre, qdq, calib[: args.images])
        for name, local, total in ranked[: args.show]:
            emit(QUESTION, tensor=name, local_sqnr_db=round(local, 1), fp32_vs_int8_sqnr_db=round(total, 1), **common)
        graph = onnx.load(str(pre))
        for k in args.exclude:
            extra = nodes_of(graph, [t for t, _, _ in ranked[:k]])
            out = Path(tmp) / f"int8-{k}.onnx"
            keep = tuple(kwargs.pop("keep", ())) + tuple(extra)
            quantize_int8(paths.onnx, out, calib, calibration_cache=cache, keep=keep, **kwargs)
            kwargs["keep"] = keep[: len(keep) - len(extra)]
            pred = _predict(out, x)
            acc = float((classes[pred] == y).mean())
            emit(QUESTION, excluded_worst=k, nodes_in_float=len(extra), fp32_accuracy=round(fp32_acc, 4),
                 accuracy=round(acc, 4), drop=round(fp32_acc - acc, 4),
                 **_speedups(paths.onnx, out, x[:32], args.threads, args.pairs),
                 mb=round(out.stat().st_size / 1e6, 1), uptime=Path("/proc/loadavg").read_text().split()[0],
                 **common)


if __name__ == "__main__":
    main()
