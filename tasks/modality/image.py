"""Images: files decoded by Pillow into uint8 RGB, resized on the client; the graph takes uint8 NHWC pixels and holds
the scaling and normalisation, so no client can get them wrong. NHWC uint8 is what image decoders produce and a
quarter of float32's bytes on the wire.

Importing this module imports neither torch nor onnx: `headstart predict` reads images through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tasks.core.modality_api import Modality
from tasks.core.params import IMAGE_EXTENSIONS, BackboneParams, IngestParams, Params
from tasks.dataset.images import decoder_identity, load_checked
from tasks.dataset.inspection import inspect_image
from tasks.dataset.manifest_samples import load_images, load_listed
from tasks.modality.input_contract import InputContract

if TYPE_CHECKING:  # annotations only: naming a modality imports no pandas
    import pandas as pd

IMAGE_NOTE = "resize on the client; scaling and normalisation are in the graph"


class ImageModality(Modality):
    name = "image"
    noun = "images"
    unit = "img"
    stored_as = "image files"
    default_extensions = frozenset(IMAGE_EXTENSIONS)
    reads_inline_text = False
    channels_last = True
    card_template = "cards/image_card.md.j2"

    def csv_encoding(self, p: IngestParams) -> str:
        return "utf-8"

    def backbone_hint(self, backbone: str) -> str:
        return f"backbone.name '{backbone}' is an image backbone: for text set backbone.name: minilm (or hf:<folder>)"

    def inspect(self, candidate, p: IngestParams, known, hashes):
        return inspect_image(candidate, p, known, hashes)

    def content_sha256(self, candidate, p: IngestParams, hashes) -> str:
        return hashes.sha256(candidate.path)

    def read_input(self, path: Path, input_size: int, resize: str, max_pixels: int):
        return load_checked(path, input_size, resize, max_pixels)

    def holds(self, rows: pd.DataFrame) -> bool:
        return len(rows) > 0 and ("text" not in rows or bool(rows["text"].isna().all()))

    def decoder(self) -> str:
        return decoder_identity()

    def load_rows(self, rows, paths, input_size: int, resize: str, max_pixels: int, hashes=None) -> np.ndarray:
        return load_images(rows, paths, input_size, resize, max_pixels, hashes)

    def empty(self, params: Params) -> np.ndarray:
        size = params.backbone.input_size
        return np.zeros((0, size, size, 3), np.uint8)

    def sources(self, manifest, keys, root: Path):
        first_path = dict(zip(manifest["sha256"], manifest["path"]))
        return [(k, str(root / first_path[k])) for k in keys]

    def decode_batch(self, batch, params: Params, hashes) -> np.ndarray:
        b = params.backbone
        return np.stack([load_listed(Path(path), sha, b.input_size, b.resize, params.ingest.max_pixels, hashes)
                         for sha, path in batch])

    def feature_recipe(self, p: BackboneParams, spec, seed: int) -> dict:
        from tasks.model.backbone_catalog import weights_key

        return {"backbone": spec.name, "arch": f"{spec.library}:{spec.arch}", "weights": weights_key(p, seed),
                "size": p.input_size, "resize": p.resize, "mean": list(spec.mean), "std": list(spec.std),
                "layer": p.layer, "decoder": self.decoder()}

    def input_extent(self, p: BackboneParams) -> str:
        return f"{p.input_size}px"

    def build_model(self, params: Params, head=None):
        from tasks.model.backbones import build_backbone
        from tasks.model.image_model import ImageModel

        loaded = build_backbone(params.backbone, params.seed)
        return ImageModel(loaded.model, loaded.spec.mean, loaded.spec.std, head=head).eval(), loaded

    def torch_input(self, params: Params):
        return None

    def export_graph(self, model, dest: Path, params: Params, output_names: list[str]) -> Path:
        from tasks.model.onnx_export import export_onnx

        return export_onnx(model, dest, params.backbone.input_size, output_names, params.export.opset)

    def check_graph(self, params: Params, graph: Path, samples: np.ndarray) -> None:
        return None  # pixels need no check beyond feature parity

    def _contract(self, classes, size: int, metadata: tuple, name: str = "images") -> InputContract:
        """The contract of an image model at `size` px: uint8 NHWC (S, S, 3), identified by its size."""
        return InputContract(self.name, tuple(classes), name, "UINT8", (size, size, 3), metadata=metadata,
                             identity=(("input_size", size),), triton_format="FORMAT_NHWC")

    def input_contract(self, params: Params, classes: list[str]) -> InputContract:
        size = int(params.backbone.input_size)
        return self._contract(classes, size, (
            ("name", "images"), ("dtype", "uint8"), ("layout", "NHWC"), ("color", "RGB"), ("modality", self.name),
            ("size", [size, size]), ("resize", params.backbone.resize), ("note", IMAGE_NOTE)))

    def contract_from_metadata(self, entry: dict, classes: list[str]) -> InputContract:
        return self._contract(classes, int(entry["size"][0]), tuple(entry.items()), entry.get("name", "images"))

    def contract_from_registry(self, entry: dict) -> InputContract:
        size = int(entry["input_size"])
        return self._contract(entry["classes"], size, (("name", "images"), ("modality", self.name),
                                                       ("size", [size, size])))

    def int8_blocker(self) -> str:
        return ""

    def units(self, loaded):
        from tasks.model.units import backbone_units

        return backbone_units(loaded.model, loaded.blocks)

    def finetune_inputs(self, params: Params, paths, train_rows, val_rows):
        from tasks.dataset.pixel_cache import prune, split_pixels
        from tasks.model.batches import augmented_batches, make_augment

        size, mode, limit = params.backbone.input_size, params.backbone.resize, params.ingest.max_pixels
        x_train = split_pixels(train_rows, paths, size, mode, limit, "finetune: decoding train")
        x_val = split_pixels(val_rows, paths, size, mode, limit, "finetune: decoding val")
        prune(paths, {Path(x_train.filename), Path(x_val.filename)})
        return x_train, x_val, augmented_batches(make_augment(params.finetune.augment, size))
