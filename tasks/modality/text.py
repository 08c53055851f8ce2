"""Texts: decoded and normalised once at ingest (NFC, LF line ends, stripped; `tasks.dataset.texts`), stored in the
manifest's `text` column and never read from disk again; the graph takes UTF-8 strings and holds the tokenizer
(truncation to `backbone.max_length`, padding) as onnxruntime-extensions ops (`tasks.model.tokenizer_graph`).

The Hugging Face tokenizer at `backbone.max_length` is the reference: torch extraction, fine-tuning and every parity
gate feed the model its ids, and the in-graph tokenizer must give the same ids.

Importing this module imports neither torch, transformers nor onnx: `headstart predict` reads texts through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tasks.core.modality_api import Modality
from tasks.core.params import TEXT_EXTENSIONS, BackboneParams, IngestParams, Params
from tasks.dataset.inspection import inspect_text
from tasks.dataset.texts import TEXT_NORMALISATION, check_decoded, read_text_file, text_sha256
from tasks.modality.input_contract import InputContract

if TYPE_CHECKING:  # annotations only: naming a modality imports no pandas
    import pandas as pd

TEXT_NOTE = ("UTF-8 strings, one text per item; normalise as ingest does (NFC, LF, stripped); tokenizing, truncation "
             "and padding are in the graph")
# one string per batch item: the request's [batch, 1] is the graph's [batch] (Triton needs dims of at least one)
TRITON_NOTE = ("# a text model: the tokenizer runs inside the graph as onnxruntime-extensions ops; Triton's\n"
               "# onnxruntime backend must load that library (onnxruntime_extensions.get_library_path()), e.g.\n"
               "# through LD_PRELOAD or a custom-op build of the backend; `headstart serve` registers it itself.\n")


def hf_tokenizer_of(params: Params):
    """The Hugging Face tokenizer of the params' text backbone (from its local folder)."""
    from tasks.model.backbone_catalog import hf_folder, resolve_spec
    from tasks.model.tokenizer_graph import hf_tokenizer

    return hf_tokenizer(hf_folder(resolve_spec(params.backbone.name)))


def token_ids(params: Params):
    """texts -> (input_ids, attention_mask) int64 by the Hugging Face tokenizer at `backbone.max_length`: the
    reference the in-graph tokenizer must match, and what torch extraction and fine-tuning feed the model."""
    from tasks.model.tokenizer_graph import hf_token_ids

    tokenizer, max_length = hf_tokenizer_of(params), params.backbone.max_length
    return lambda texts: hf_token_ids(tokenizer, texts, max_length)


class TextModality(Modality):
    name = "text"
    noun = "texts"
    unit = "text"
    stored_as = "the manifest's texts"
    default_extensions = frozenset(TEXT_EXTENSIONS)
    reads_inline_text = True
    channels_last = False
    int8_calibrated = False  # dynamic int8 of the encoder's matrix multiplications: no calibration set
    card_template = "cards/text_card.md.j2"

    def csv_encoding(self, p: IngestParams) -> str:
        return p.text_encoding

    def backbone_hint(self, backbone: str) -> str:
        return (f"backbone.name '{backbone}' is a text backbone: for images set backbone.name to an image backbone "
                f"(e.g. tf_efficientnet_lite0)")

    def inspect(self, candidate, p: IngestParams, known, hashes):
        return inspect_text(candidate, p)

    def content_sha256(self, candidate, p: IngestParams, hashes) -> str:
        if candidate.text is not None:  # inline in a CSV
            check = check_decoded(candidate.text, p.max_text_bytes)
            return check.sha256 if not check.reason else ""
        text, _ = read_text_file(candidate.path, p.text_encoding, p.max_text_bytes)
        return text_sha256(text) if text is not None else ""

    def read_input(self, path: Path, input_size: int, resize: str, max_pixels: int):
        return read_text_file(path)

    def holds(self, rows: pd.DataFrame) -> bool:
        return "text" in rows and len(rows) > 0 and bool(rows["text"].notna().all())

    def decoder(self) -> str:
        return f"text/{TEXT_NORMALISATION}"

    def load_rows(self, rows, paths, input_size: int, resize: str, max_pixels: int, hashes=None) -> np.ndarray:
        return np.array(rows["text"].tolist(), dtype=object)

    def empty(self, params: Params) -> np.ndarray:
        return np.array([], dtype=object)

    def sources(self, manifest, keys, root: Path):
        # shortest first: batches of similar length pad least
        text = dict(zip(manifest["sha256"], manifest["text"]))
        return sorted(((k, text[k]) for k in keys), key=lambda kt: (len(kt[1]), kt[0]))

    def decode_batch(self, batch, params: Params, hashes) -> np.ndarray:
        return np.array([text for _, text in batch], dtype=object)

    def feature_recipe(self, p: BackboneParams, spec, seed: int) -> dict:
        from tasks.model.backbone_catalog import hf_folder, tokenizer_key, weights_key

        # the tokenizer's files, max_length and pooling change a text's vector
        return {"backbone": spec.name, "arch": f"{spec.library}:{spec.arch}", "weights": weights_key(p, seed),
                "tokenizer": tokenizer_key(hf_folder(spec)), "max_length": p.max_length, "pooling": p.pooling,
                "decoder": self.decoder()}

    def input_extent(self, p: BackboneParams) -> str:
        return f"{p.max_length} tokens"

    def build_model(self, params: Params, head=None):
        from tasks.model.text_backbones import TextModel, build_text_backbone

        loaded = build_text_backbone(params.backbone, params.seed)
        return TextModel(loaded.model, head).eval(), loaded

    def torch_input(self, params: Params):
        return token_ids(params)

    def export_graph(self, model, dest: Path, params: Params, output_names: list[str]) -> Path:
        import onnx

        from tasks.core.files import atomic_path
        from tasks.model.onnx_export import export_token_model
        from tasks.model.tokenizer_graph import prepend_tokenizer

        encoder = export_token_model(model, output_names, params.export.opset)
        merged = prepend_tokenizer(encoder, hf_tokenizer_of(params), params.backbone.max_length, params.export.opset)
        with atomic_path(dest, suffix=".onnx") as tmp:
            onnx.save(merged, str(tmp))
        return dest

    def check_graph(self, params: Params, graph: Path, samples: np.ndarray) -> None:
        """A one-line UserError when the in-graph tokenizer gives other ids than Hugging Face on any sample."""
        from tasks.core.errors import UserError
        from tasks.model.tokenizer_graph import token_mismatches

        bad = token_mismatches(hf_tokenizer_of(params), params.backbone.max_length, params.export.opset, samples)
        if bad:
            raise UserError(f"{graph}: the in-graph tokenizer disagrees with the Hugging Face tokenizer on {len(bad)} "
                            f"of {len(samples)} held-out texts (first: {str(samples[bad[0]])[:60]!r}); this tokenizer "
                            f"is not supported in-graph")

    def input_contract(self, params: Params, classes: list[str]) -> InputContract:
        return self.contract_from_metadata(
            {"name": "texts", "dtype": "string", "modality": self.name, "max_length": params.backbone.max_length,
             "note": TEXT_NOTE}, classes)

    def contract_from_metadata(self, entry: dict, classes: list[str]) -> InputContract:
        return InputContract(self.name, tuple(classes), entry.get("name", "texts"), "BYTES", (),
                             metadata=tuple(entry.items()), identity=(("input", "texts"),), config_note=TRITON_NOTE)

    def contract_from_registry(self, entry: dict) -> InputContract:
        return self.contract_from_metadata({"name": "texts", "modality": self.name}, list(entry["classes"]))

    def int8_blocker(self) -> str:
        return ""  # dynamic quantisation of the encoder's matrix multiplications (tasks.runtime.int8)

    def units(self, loaded):
        from tasks.model.units import encoder_units

        return encoder_units(loaded.model, loaded.blocks)

    def finetune_inputs(self, params: Params, paths, train_rows, val_rows):
        from tasks.model.batches import token_batches

        tokenize = token_ids(params)
        x_train, _ = tokenize(train_rows["text"].tolist())
        x_val, _ = tokenize(val_rows["text"].tolist())
        return x_train, x_val, token_batches
