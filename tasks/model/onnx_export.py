"""torch -> ONNX: an image model (uint8 NHWC `images`) or a text model's token part (`input_ids`, `attention_mask`),
exported with dynamic batch (and token) axes.

A text encoder's graph is then fused by ONNX Runtime's transformer optimizer (`fuse_encoder`): each layer's attention
becomes one `Attention` op, residual + layer norm one `SkipLayerNormalization`, bias + GELU one `BiasGelu`, the
embeddings one `EmbedLayerNormalization` (com.microsoft ops). The patterns it matches are those of the "eager"
attention export (`tasks.model.text_backbones` builds the encoder with it). Fused and unfused graphs agree to float
rounding (a test holds it); bench/RESULTS.md 28a has what fusion buys on this CPU."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.files import atomic_path
from tasks.core.progress import log

if TYPE_CHECKING:
    from torch import nn


def export_onnx(model: nn.Module, dest: Path, size: int, output_names: list[str], opset: int) -> Path:
    """Export `model` (uint8 NHWC input named `images`) to ONNX with a dynamic batch axis, atomically.

    Uses torch's TorchScript-based exporter when available (an order of magnitude faster than the dynamo exporter for
    these convolutional backbones) and falls back to the dynamo exporter, the future default, where it is not. The
    trace uses batch 2: with batch 1 the exporter may specialise the batch axis to a constant.
    """
    import torch

    model = model.eval()
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    dynamic = {"images": {0: "batch"}, **{n: {0: "batch"} for n in output_names}}
    with atomic_path(dest, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), str(tmp), input_names=["images"], output_names=output_names,
                              dynamic_axes=dynamic, opset_version=opset, dynamo=False, do_constant_folding=True)
        except (TypeError, RuntimeError, NotImplementedError) as exc:
            log(f"onnx export: the TorchScript exporter failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else 'no message'}); trying the dynamo exporter")
            torch.onnx.export(model, (example,), str(tmp), input_names=["images"], output_names=output_names,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),  # positional: any arg name
                              opset_version=opset, dynamo=True, verbose=False)
    return dest


def export_token_model(model: nn.Module, output_names: list[str], opset: int):
    """Export a text model taking (input_ids, attention_mask) int64 (batch, tokens) to an in-memory ONNX model with
    dynamic batch and token axes (traced at batch 2, 16 tokens, one row padded, so neither axis is specialised)."""
    import tempfile

    import onnx
    import torch

    model = model.eval()
    ids = torch.tensor([[101] + [2000 + i for i in range(14)] + [102], [101, 2001, 2002, 102] + [0] * 12])
    mask = (ids != 0).long()
    dynamic = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
               **{n: {0: "batch"} for n in output_names}}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "encoder.onnx"
        torch.onnx.export(model, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=output_names, dynamic_axes=dynamic, opset_version=opset, dynamo=False,
                          do_constant_folding=True)
        shape = _attention_shape(model)
        return fuse_encoder(path, *shape) if shape else onnx.load(str(path))


def _attention_shape(model: nn.Module) -> tuple[int, int] | None:
    """(heads, hidden size) of the first Hugging Face BERT-family config inside `model`; None when there is none."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(config, "model_type", None) in FUSABLE and hasattr(config, "num_attention_heads"):
            return int(config.num_attention_heads), int(config.hidden_size)
    return None


FUSABLE = ("bert",)  # model types whose eager-attention export the optimizer's "bert" patterns are known to match


def fuse_encoder(path: Path, heads: int, hidden: int):
    """The BERT-family encoder graph at `path` with attention, layer norms, GELU and embeddings fused into ONNX
    Runtime's contrib ops (`onnxruntime.transformers.optimizer`, graph-level: no provider-specific rewrites, so the
    file still loads on any provider). Returns the graph unchanged when the optimizer fuses no attention (a
    layout it does not recognise), so an unfamiliar encoder still exports."""
    import onnx
    from onnxruntime.transformers import optimizer

    fused = optimizer.optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden,
                                     opt_level=0, use_gpu=False)
    if not fused.get_fused_operator_statistics().get("Attention"):
        log("onnx export: the transformer optimizer fused no attention in this encoder; exported unfused")
        return onnx.load(str(path))
    model = fused.model
    if not any(o.domain == "com.microsoft" for o in model.opset_import):  # the optimizer leaves it out; onnx's
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))  # checker and compose need it
    return model
