"""int8 variant of the exported model: ONNX Runtime static quantisation (QDQ), calibrated on training images.

Only the full convolutions and the final linear layer are quantised (per-channel int8 weights, uint8 activations);
the in-graph preprocessing, the depthwise convolutions and the softmax stay in float. The variant is kept only if its accuracy on the validation
split drops by no more than `export.int8_max_accuracy_drop` from the fp32 model's.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from tasks.core.files import atomic_path


@dataclass
class Int8Report:
    """fp32 vs int8 on the same images and machine."""

    accepted: bool
    reason: str
    calibration_images: int
    eval_images: int
    fp32_accuracy: float
    int8_accuracy: float
    accuracy_drop: float
    max_allowed_drop: float
    fp32_mb: float
    int8_mb: float
    fp32_img_s: float
    int8_img_s: float
    seconds: float


class _Calibration:
    """CalibrationDataReader over uint8 NHWC images, in batches."""

    def __init__(self, images: np.ndarray, batch: int = 16):
        self._batches = iter([{"images": images[i : i + batch]} for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self):  # part of the reader protocol in recent onnxruntime
        pass


def _float_nodes(model: onnx.ModelProto, keep_head_fp32: bool, keep_depthwise_fp32: bool) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes a recipe keeps in float: the head (the last Gemm/MatMul) and/or the
    depthwise convolutions (group == input channels)."""
    keep = []
    mats = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    if keep_head_fp32 and mats:
        keep.append(mats[-1].name)
    if keep_depthwise_fp32:
        for node in model.graph.node:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if node.op_type == "Conv" and group > 1:
                keep.append(node.name)
    return keep


def quantize_int8(fp32_path: Path, dest: Path, calibration: np.ndarray, *, quant_format=None, weight_type=None,
                  reduce_range: bool = False, calibrate_method=None, per_channel: bool = True,
                  keep_head_fp32: bool = False, keep_depthwise_fp32: bool = True,
                  extra_options: dict | None = None) -> None:
    """Write a statically quantised copy of `fp32_path` to `dest` (atomically), keeping its metadata_props.

    The defaults are the shipped recipe (QDQ, per-channel int8 weights, uint8 activations, MinMax, depthwise
    convolutions kept in float: on Fashion-MNIST's 10k test they cost 3.9 of the 7.2 points int8 lost, for 0.3 MB;
    bench/RESULTS.md 13d); the keywords exist so `python -m bench.int8_recipe_accuracy` compares recipes on the same code path."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        excluded = _float_nodes(onnx.load(str(pre)), keep_head_fp32, keep_depthwise_fp32)
        out = Path(tmp) / "int8.onnx"
        quantize_static(str(pre), str(out), _Calibration(calibration),
                        quant_format=quant_format or QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=weight_type or QuantType.QInt8,
                        reduce_range=reduce_range, nodes_to_exclude=excluded, extra_options=extra_options or {},
                        op_types_to_quantize=["Conv", "Gemm", "MatMul"],
                        calibrate_method=calibrate_method or CalibrationMethod.MinMax)
        model = onnx.load(str(out))
        src = onnx.load(str(fp32_path), load_external_data=False)
        del model.metadata_props[:]
        for p in src.metadata_props:
            model.metadata_props.add(key=p.key, value=p.value)
        recipe = "int8 (QDQ, static, per-channel" + ("; depthwise convolutions in float)" if keep_depthwise_fp32 else ")")
        model.metadata_props.add(key="headstart.precision", value=recipe)
        with atomic_path(dest, suffix=".onnx") as t:
            onnx.save(model, str(t))


def _accuracy_and_speed(path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> tuple[float, float]:
    from tasks.runtime.onnx_classifier import OnnxClassifier

    clf = OnnxClassifier(path)
    clf.probs(images[:8])
    t0 = time.perf_counter()
    probs = clf.probs_batched(images)
    speed = len(images) / (time.perf_counter() - t0)
    return float((np.array(classes)[probs.argmax(1)] == labels).mean()), speed


def build_int8(fp32_path: Path, dest: Path, calibration: np.ndarray, eval_images: np.ndarray,
               eval_labels: np.ndarray, classes: list[str], max_drop: float) -> Int8Report:
    """Quantise, then compare with fp32 on `eval_images`; `dest` exists afterwards only if the variant is accepted."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / "model.onnx"
        quantize_int8(fp32_path, candidate, calibration)
        acc32, ips32 = _accuracy_and_speed(fp32_path, eval_images, eval_labels, classes)
        acc8, ips8 = _accuracy_and_speed(candidate, eval_images, eval_labels, classes)
        drop = acc32 - acc8
        accepted = drop <= max_drop
        reason = (f"accuracy drop {drop:+.3f} <= {max_drop}" if accepted
                  else f"accuracy drop {drop:+.3f} > export.int8_max_accuracy_drop {max_drop}; int8 model not written")
        if accepted:
            with atomic_path(dest, suffix=".onnx") as t:
                t.write_bytes(candidate.read_bytes())
        else:
            dest.unlink(missing_ok=True)
        return Int8Report(accepted, reason, len(calibration), len(eval_images), acc32, acc8, drop, max_drop,
                          fp32_path.stat().st_size / 1e6, candidate.stat().st_size / 1e6, ips32, ips8,
                          time.perf_counter() - t0)
