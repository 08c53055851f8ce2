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

from tasks.runtime.int8_files import save_with_metadata

# Selectors of nodes kept in float (besides explicit node names):
#   "depthwise": every Conv with group > 1;  "head": the last Gemm/MatMul (the linear head);
#   "last_conv": the last Conv (the 1x1 320 -> 1280 expansion whose ReLU6 output is pooled into the features);
#   "first_conv": the stem Conv; "features_tail": every node after the last Conv up to the head (pooling, the
#   standardisation Sub/Mul), so the pooled features the head was trained on stay float.
IMAGE_RECIPE = ("static QDQ: run-time padding folded into the convolutions; per-channel int8 weights, uint8 "
                "activations, MinMax ranges; every convolution (depthwise too), ReLU6, residual Add, pooling and the "
                "head in int8; preprocessing, standardisation and softmax in float")

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


def static_padding(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` in which each zero `Pad` feeding only a `Conv` (the exported TensorFlow "same" padding of
    the stride-2 convolutions, whose pads a Shape -> Cast -> Div -> Ceil chain computes at run time) is folded into
    that Conv's `pads`, and the shape chains that fed them are dropped; the same arithmetic, since the pads depend
    only on the image side, which the graph's input fixes. Returned unchanged when the input's sides are not fixed.

    Why: in a quantised graph each such chain takes the shape of a float copy of an int8 activation, which forces a
    DequantizeLinear, a layout Transpose and a float Pad around every stride-2 convolution: on the 224 px demo they
    took more time than the int8 convolutions they serve."""
    import onnxruntime as ort

    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    pads = [n for n in model.graph.node if n.op_type == "Pad" and len(n.input) <= 3]
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pads = [n for n in pads if [c.op_type for c in consumers.get(n.output[0], [])] == ["Conv"]
            and next((a.s for a in n.attribute if a.name == "mode"), b"constant") == b"constant"]
    if not pads or len(dims) != 4 or not all(dims[1:]):
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    wanted = [n.input[i] for n in pads for i in range(1, len(n.input)) if n.input[i]]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in wanted)
    elem = onnx.helper.tensor_dtype_to_np_dtype(model.graph.input[0].type.tensor_type.elem_type)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    values = dict(zip(wanted, session.run(None, {model.graph.input[0].name: np.zeros([2, *dims[1:]], elem)})))
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    by_name = {n.name: n for n in folded.graph.node}
    for pad in pads:
        amounts = values[pad.input[1]].astype(int).tolist()
        fill = values[pad.input[2]] if len(pad.input) == 3 and pad.input[2] else np.zeros(1)
        if len(amounts) != 8 or any(amounts[k] for k in (0, 1, 4, 5)) or np.any(fill != 0):
            continue  # pads batch or channels, or fills with a non-zero: not a convolution's padding
        conv = by_name[consumers[pad.output[0]][0].name]
        old = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
        auto = next((a.s for a in conv.attribute if a.name == "auto_pad"), b"NOTSET")
        if auto not in (b"NOTSET", b""):
            continue
        new = [old[0] + amounts[2], old[1] + amounts[3], old[2] + amounts[6], old[3] + amounts[7]]
        for a in [a for a in conv.attribute if a.name == "pads"]:
            conv.attribute.remove(a)
        conv.attribute.append(onnx.helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        folded.graph.node.remove(by_name[pad.name])
    _drop_dead_nodes(folded)
    return folded


def _drop_dead_nodes(model: onnx.ModelProto) -> None:
    """Remove the nodes no graph output depends on."""
    needed = {o.name for o in model.graph.output}
    keep = []
    for n in reversed(model.graph.node):
        if needed & set(n.output):
            keep.append(n)
            needed |= set(n.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(keep))


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
                  keep_head_fp32: bool = False, keep_depthwise_fp32: bool = False, keep: tuple[str, ...] = (),
                  op_types: tuple[str, ...] | None = DATA_PATH_OPS, extra_options: dict | None = None,
                  calibration_cache: Path | None = None, recipe_name: str | None = None,
                  fold_padding: bool = True) -> None:
    """Write a statically quantised copy of `fp32_path` to `dest` (atomically), keeping its metadata_props.

    The defaults are the shipped recipe (IMAGE_RECIPE): the run-time padding folded into the convolutions, then the
    whole image path quantised, depthwise convolutions included, MinMax over the calibration images. On a CPU with
    AVX-512 VNNI it lost 0.5 points on Fashion-MNIST's 10k test and ran 2.3x fp32 at batch 32; on the 224 px demo
    it lost nothing on val and test and ran 1.9-2.4x (bench/RESULTS.md 28b).

    Weights int8 (per channel unless `per_channel=False`), activations uint8, ranges from `calibrate_method` (MinMax by
    default) over `calibration`, after ONNX Runtime's `quant_pre_process`. `op_types` are the op types quantised
    (None: every op ONNX Runtime can quantise; `DATA_PATH_OPS`: the image path kept int8); the nodes `keep` selects (see SELECTORS), plus the depthwise
    convolutions when `keep_depthwise_fp32` and the head when `keep_head_fp32`, stay in float. `fold_padding` first
    folds the run-time "same" padding into the convolutions (`static_padding`; same arithmetic).
    `calibration_cache` (a JSON file) reuses the tensor ranges of an earlier call with the same model, images,
    method and op types."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    keep = tuple(keep) + (("depthwise",) if keep_depthwise_fp32 else ()) + (("head",) if keep_head_fp32 else ())
    options = {"CalibStridedMinMax": 1, **(extra_options or {})}  # one batch at a time, merged (bounded memory)
    with tempfile.TemporaryDirectory() as tmp:
        pre, src = Path(tmp) / "pre.onnx", Path(tmp) / "src.onnx"
        model = onnx.load(str(fp32_path))
        onnx.save(static_padding(model) if fold_padding else model, str(src))
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
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
        name = recipe_name or (f"int8 ({IMAGE_RECIPE})" if not keep and op_types == DATA_PATH_OPS else
                               "int8 (QDQ, static" + (f"; in float: {', '.join(keep)})" if keep else ")"))
        save_with_metadata(onnx.load(str(out)), fp32_path, dest, name)
