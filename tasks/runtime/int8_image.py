"""The image int8 recipe: ONNX Runtime static quantisation (QDQ) of an exported image classifier, calibrated on uint8
training images as a client sends them.

`quantize_int8` writes the shipped recipe by default; its keywords name the alternatives `bench.int8_recipe_accuracy`
compares on the same code path (calibration method, which ops are quantised, which nodes stay in float).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

# Selectors of nodes kept in float (besides explicit node names):
#   "depthwise": every Conv with group > 1;  "head": the last Gemm/MatMul (the linear head);
#   "last_conv": the last Conv (the 1x1 320 -> 1280 expansion whose ReLU6 output is pooled into the features);
#   "first_conv": the stem Conv; "features_tail": every node after the last Conv up to the head (pooling, the
#   standardisation Sub/Mul), so the pooled features the head was trained on stay float.
SELECTORS = ("depthwise", "head", "last_conv", "first_conv", "features_tail")

# The ops on the image path that ONNX Runtime quantises and runs in int8 on CPU: with the activations (Clip = ReLU6)
# and residual Adds quantised too, a tensor stays int8 from one convolution to the next, and each convolution's output
# range is its ReLU6's [0, 6] rather than the raw pre-activation range.
DATA_PATH_OPS = ("Conv", "Clip", "Relu", "Add", "Pad", "GlobalAveragePool", "Gemm", "MatMul")


class _Calibration:
    """CalibrationDataReader over uint8 NHWC images, in batches; supports ONNX Runtime's strided calibration
    (`len` + `set_range`), which collects and merges one batch at a time instead of holding every batch's
    intermediate tensors in memory."""

    def __init__(self, images: np.ndarray, batch: int = 16):
        self._batches = [{"images": images[i : i + batch]} for i in range(0, len(images), batch)]
        self.set_range(0, len(self._batches))

    def __len__(self):
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int):
        self._iter = iter(self._batches[start_index:end_index])

    def get_next(self):
        return next(self._iter, None)

    def rewind(self):  # part of the reader protocol in recent onnxruntime
        self.set_range(0, len(self._batches))


def shape_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that compute shapes rather than image data (the exported "same" padding of the stride-2
    convolutions: Shape -> Cast -> Div -> Ceil -> ... -> Pad's pads): quantising their float arithmetic breaks the
    padding, so they always stay as they are."""
    data = {i.name for i in model.graph.input}
    on_path = set()
    for n in model.graph.node:
        if n.op_type != "Shape" and data & set(n.input):
            on_path.add(n.name)
            data |= set(n.output)
    return [n.name for n in model.graph.node if n.name not in on_path and n.op_type != "Constant"]


def float_nodes(model: onnx.ModelProto, keep: tuple[str, ...] | list[str]) -> list[str]:
    """Names of the nodes of `model` that the selectors in `keep` (see SELECTORS; anything else is a node name)
    keep in float, in graph order."""
    nodes = list(model.graph.node)
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    mats = [i for i, n in enumerate(nodes) if n.op_type in ("Gemm", "MatMul")]
    chosen: set[int] = set()
    for sel in keep:
        if sel == "depthwise":
            chosen |= {i for i in convs if next((a.i for a in nodes[i].attribute if a.name == "group"), 1) > 1}
        elif sel == "head" and mats:
            chosen.add(mats[-1])
        elif sel == "last_conv" and convs:
            chosen.add(convs[-1])
        elif sel == "first_conv" and convs:
            chosen.add(convs[0])
        elif sel == "features_tail" and convs:
            end = mats[-1] if mats else len(nodes)
            chosen |= set(range(convs[-1] + 1, end))
        elif sel not in SELECTORS:
            chosen |= {i for i, n in enumerate(nodes) if n.name == sel}
    return [nodes[i].name for i in sorted(chosen)]


def quantize_int8(fp32_path: Path, dest: Path, calibration: np.ndarray, *, quant_format=None, weight_type=None,
                  reduce_range: bool = False, calibrate_method=None, per_channel: bool = True,
                  keep_head_fp32: bool = False, keep_depthwise_fp32: bool = True, keep: tuple[str, ...] = (),
                  op_types: tuple[str, ...] | None = ("Conv", "Gemm", "MatMul"), extra_options: dict | None = None,
                  calibration_cache: Path | None = None, recipe_name: str | None = None) -> None:
    """Write a statically quantised copy of `fp32_path` to `dest` (atomically), keeping its metadata_props.

    Weights int8 (per channel unless `per_channel=False`), activations uint8, ranges from `calibrate_method` (MinMax by
    default) over `calibration`, after ONNX Runtime's `quant_pre_process`. `op_types` are the op types quantised
    (None: every op ONNX Runtime can quantise; `DATA_PATH_OPS`: the image path kept int8); the nodes `keep` selects (see SELECTORS), plus the depthwise
    convolutions when `keep_depthwise_fp32` and the head when `keep_head_fp32`, stay in float.
    `calibration_cache` (a JSON file) reuses the tensor ranges of an earlier call with the same model, images,
    method and op types."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from tasks.runtime.int8 import _save_with_metadata

    keep = tuple(keep) + (("depthwise",) if keep_depthwise_fp32 else ()) + (("head",) if keep_head_fp32 else ())
    options = {"CalibStridedMinMax": 1, **(extra_options or {})}  # one batch at a time, merged (bounded memory)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        graph = onnx.load(str(pre))
        excluded = float_nodes(graph, keep) + shape_nodes(graph)
        out = Path(tmp) / "int8.onnx"
        quantize_static(str(pre), str(out), _Calibration(calibration),
                        quant_format=quant_format or QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=weight_type or QuantType.QInt8,
                        reduce_range=reduce_range, nodes_to_exclude=excluded, extra_options=options,
                        op_types_to_quantize=list(op_types) if op_types else None,
                        calibrate_method=calibrate_method or CalibrationMethod.MinMax,
                        calibration_cache_path=calibration_cache)
        name = recipe_name or ("int8 (QDQ, static, per-channel" + (f"; in float: {', '.join(keep)})" if keep else ")"))
        _save_with_metadata(onnx.load(str(out)), fp32_path, dest, name)
