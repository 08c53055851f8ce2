"""What differs between image and text models, behind one interface chosen by the backbone (DESIGN.md §2
"Modalities"): the torch model, how raw samples enter it, and how it is exported to a graph that takes raw samples.

Raw samples are what the shipped graph takes and what every parity gate feeds it: uint8 NHWC pixels for images, a
numpy array of Python strings (object dtype) for text. Gates and stages call these functions; what still branches
outside (what ingest reads, the export contract, fine-tuning's inputs and units) is small and names the modality.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tasks.core.params import Params
from tasks.model.backbone_catalog import hf_folder, modality_of, resolve_spec

if TYPE_CHECKING:
    from torch import nn

def build_model(params: Params, head: nn.Module | None = None):
    """The params' backbone (with `head`, when given) as the torch model that trains and ships, in eval mode, plus
    its LoadedBackbone: ImageModel (uint8 NHWC in) or TextModel (token ids in)."""
    if modality_of(params.backbone) == "text":
        from tasks.model.text_backbones import TextModel, build_text_backbone

        loaded = build_text_backbone(params.backbone, params.seed)
        return TextModel(loaded.model, head).eval(), loaded
    from tasks.model.backbones import build_backbone
    from tasks.model.image_model import ImageModel

    loaded = build_backbone(params.backbone, params.seed)
    return ImageModel(loaded.model, loaded.spec.mean, loaded.spec.std, head=head).eval(), loaded


def tokenizer_for(params: Params):
    """The Hugging Face tokenizer of a text backbone (from its local folder)."""
    from tasks.model.tokenizer_graph import hf_tokenizer

    return hf_tokenizer(hf_folder(resolve_spec(params.backbone.name)))


def token_ids(params: Params) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """texts -> (input_ids, attention_mask) int64 by the Hugging Face tokenizer at `backbone.max_length`: the
    reference the in-graph tokenizer must match, and what torch extraction and fine-tuning feed the model."""
    from tasks.model.tokenizer_graph import hf_token_ids

    tokenizer, max_length = tokenizer_for(params), params.backbone.max_length
    return lambda texts: hf_token_ids(tokenizer, texts, max_length)


def torch_runner(params: Params, model) -> Callable[[np.ndarray], object]:
    """raw samples -> the torch model's output (inference mode): pixels as they are, texts through the Hugging Face
    tokenizer at `backbone.max_length`, the reference the in-graph tokenizer must match."""
    import torch

    if modality_of(params.backbone) == "text":
        tokenize = token_ids(params)

        def run_text(texts: np.ndarray):
            ids, mask = tokenize(texts)
            with torch.inference_mode():
                return model(torch.from_numpy(ids), torch.from_numpy(mask))
        return run_text

    def run_images(images: np.ndarray):
        with torch.inference_mode():
            return model(torch.from_numpy(images))
    return run_images


def export_graph(model, dest: Path, params: Params, output_names: list[str]) -> Path:
    """Export the torch model to an ONNX graph that takes raw samples (`images` uint8 NHWC, or `texts` strings with
    the tokenizer inside), dynamic batch axis, written atomically."""
    from tasks.model.onnx_export import export_onnx, export_token_model

    if modality_of(params.backbone) == "text":
        import onnx

        from tasks.core.files import atomic_path
        from tasks.model.tokenizer_graph import prepend_tokenizer

        encoder = export_token_model(model, output_names, params.export.opset)
        merged = prepend_tokenizer(encoder, tokenizer_for(params), params.backbone.max_length, params.export.opset)
        with atomic_path(dest, suffix=".onnx") as tmp:
            onnx.save(merged, str(tmp))
        return dest
    return export_onnx(model, dest, params.backbone.input_size, output_names, params.export.opset)
