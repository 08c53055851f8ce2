"""Text backbones: a BERT-family encoder from a local Hugging Face folder, pooled to one vector per text, and the
text model as it trains and ships (token ids in; features, or logits and probabilities with a head, out).

Loading never touches the hub (`local_files_only`; the CLI and tests also set HF_HUB_OFFLINE=1). Attention runs in
the "eager" implementation so torch, the exported graph and fine-tuning compute the same thing.
"""

from __future__ import annotations

import torch
from torch import nn

from tasks.core.errors import UserError
from tasks.core.params import BackboneParams
from tasks.model.backbone_catalog import hf_folder, hf_weights_file, resolve_spec
from tasks.model.backbones import LoadedBackbone

PAD_ID = 0  # BERT's [PAD]; fine-tuning batches are padded with it and the mask rebuilt from it


class TextEncoder(nn.Module):
    """(input_ids, attention_mask) int64 (N, L) -> (N, hidden): the encoder's last hidden states, mean-pooled over
    the attended tokens (sentence-transformers' pooling) or the [CLS] vector."""

    def __init__(self, hf_model: nn.Module, pooling: str):
        super().__init__()
        self.hf = hf_model
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.hf(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class TextModel(nn.Module):
    """Token ids -> features (and, with a head, logits and probabilities). `attention_mask` defaults to the ids that
    are not [PAD], with the batch cut to its longest row: how fine-tuning calls it on padded id arrays."""

    def __init__(self, backbone: TextEncoder, head: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        if attention_mask is None:
            attention_mask = (input_ids != PAD_ID).long()
            longest = int(attention_mask.sum(1).max())
            input_ids, attention_mask = input_ids[:, :longest], attention_mask[:, :longest]
        feats = self.backbone(input_ids, attention_mask)
        if self.head is None:
            return feats
        logits = self.head(feats)
        return logits, torch.softmax(logits, dim=1)


def build_text_backbone(p: BackboneParams, seed: int = 0) -> LoadedBackbone:
    """The params' text backbone with its weights (the folder's, or seeded random), in eval mode; `blocks` are the
    encoder layers, bottom first (what fine-tuning unfreezes from the top)."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    from tasks.core.files import sha256_file

    hf_logging.set_verbosity_error()  # "some weights were not used" (the pooler of a sentence encoder) is expected
    hf_logging.disable_progress_bar()  # a bar for loading 90 MB from local disk is noise in a stage's log
    spec = resolve_spec(p.name)
    folder = hf_folder(spec)
    if p.layer != "pooled":
        raise UserError(f"backbone.layer: a text backbone's features are its pooled last layer (backbone.pooling); "
                        f"layer '{p.layer}' applies to image backbones")
    torch.manual_seed(seed)
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        config._attn_implementation = "eager"
        if p.weights == "random":
            model, weights_id = AutoModel.from_config(config), f"random:{seed}"
        else:
            model = AutoModel.from_pretrained(str(folder), config=config, local_files_only=True)
            weights_id = sha256_file(hf_weights_file(folder))
    except (OSError, ValueError) as exc:
        raise UserError(f"backbone.name: '{folder}' does not load as a Hugging Face model "
                        f"({str(exc).splitlines()[0][:120]})") from None
    limit = int(getattr(config, "max_position_embeddings", p.max_length))
    if p.max_length > limit:
        raise UserError(f"backbone.max_length: {p.max_length} tokens is more than '{spec.name}' has positions for "
                        f"({limit}); use at most {limit}")
    if not hasattr(model, "encoder") or not hasattr(model.encoder, "layer"):
        raise UserError(f"backbone.name: '{folder}' is a {type(model).__name__}, not a BERT-family encoder")
    encoder = TextEncoder(model, p.pooling).eval()
    return LoadedBackbone(encoder, spec, int(config.hidden_size), weights_id, list(model.encoder.layer))
