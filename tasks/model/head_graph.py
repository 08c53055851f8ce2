"""The classifier graph for a frozen backbone, built with `onnx` alone: the feature store's checked backbone graph
(uint8 NHWC -> `features`) with the head's layers appended (`features` -> `logits`, `probs`).

The appended nodes compute what `HeadModule` computes in float32: (features - mean) * (1 / scale), then each layer
as a Gemm with ReLU between, and a softmax. No torch is imported and the backbone is not re-exported: a head change
costs the time to copy the backbone's initializers, not a trace.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tasks.model.head_format import Head

FEATURES = "features"  # the backbone graph's output, kept as the name of the tensor between backbone and head
_PREFIX = "headstart_head/"


def _head_nodes(head: Head) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    inits = [numpy_helper.from_array(head.mean.astype(np.float32), f"{_PREFIX}mean"),
             numpy_helper.from_array((1.0 / head.scale).astype(np.float32), f"{_PREFIX}inv_scale")]
    nodes = [helper.make_node("Sub", [FEATURES, f"{_PREFIX}mean"], [f"{_PREFIX}centred"], name=f"{_PREFIX}sub"),
             helper.make_node("Mul", [f"{_PREFIX}centred", f"{_PREFIX}inv_scale"], [f"{_PREFIX}z0"],
                              name=f"{_PREFIX}standardise")]
    z = f"{_PREFIX}z0"
    for i, (w, b) in enumerate(head.layers):
        inits += [numpy_helper.from_array(np.asarray(w, np.float32), f"{_PREFIX}weight_{i}"),
                  numpy_helper.from_array(np.asarray(b, np.float32), f"{_PREFIX}bias_{i}")]
        last = i == len(head.layers) - 1
        out = "logits" if last else f"{_PREFIX}hidden_{i}"
        nodes.append(helper.make_node("Gemm", [z, f"{_PREFIX}weight_{i}", f"{_PREFIX}bias_{i}"], [out], transB=1,
                                      name=f"{_PREFIX}layer_{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"{_PREFIX}relu_{i}"], name=f"{_PREFIX}relu_{i}"))
            z = f"{_PREFIX}relu_{i}"
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name=f"{_PREFIX}softmax"))
    return nodes, inits


def compose_classifier(backbone: onnx.ModelProto, head: Head) -> onnx.ModelProto:
    """A new model: `backbone` (one output, `features`) followed by `head`; outputs `logits` and `probs` of shape
    (batch, classes). `backbone` is not modified."""
    outputs = [o.name for o in backbone.graph.output]
    if outputs != [FEATURES]:
        raise ValueError(f"a backbone graph has one output named {FEATURES!r}, not {outputs}")
    model = onnx.ModelProto()
    model.CopyFrom(backbone)
    nodes, inits = _head_nodes(head)
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    model.graph.value_info.append(backbone.graph.output[0])  # `features` stays a typed, named tensor inside
    del model.graph.output[:]
    for name in ("logits", "probs"):
        out = helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, len(head.classes)])
        out.type.tensor_type.shape.dim[0].CopyFrom(batch)
        model.graph.output.append(out)
    del model.metadata_props[:]
    return model


def head_subgraph(classifier: onnx.ModelProto) -> onnx.ModelProto:
    """The part of a composed classifier from `features` to `logits` and `probs`: the shipped head's own nodes and
    weights, to run on cached features."""
    from onnx.utils import Extractor

    return Extractor(classifier).extract_model([FEATURES], ["logits", "probs"])
