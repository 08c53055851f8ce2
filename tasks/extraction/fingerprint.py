"""The feature fingerprint: everything that changes a feature vector, hashed into the feature store's folder name."""

from __future__ import annotations

import hashlib
import json

from tasks.core.params import BackboneParams
from tasks.dataset.manifest_samples import sample_decoder
from tasks.model.backbone_catalog import hf_folder, resolve_spec, tokenizer_key, weights_key

FEATURE_VERSION = 1  # bump when anything about how features are computed changes


def feature_recipe(p: BackboneParams, seed: int = 0) -> dict:
    """Everything that changes a feature vector: backbone, weights, the decoder and its Pillow release, resize,
    normalisation, layer, input size. Not the engine (torch and ONNX Runtime agree within 1e-4, tested) nor its
    version: those are recorded per shard (`FeatureStore.append`), and shards from either share the cache."""
    spec = resolve_spec(p.name)
    if spec.modality == "text":  # the tokenizer's files, max_length and pooling change a text's vector
        return {"v": FEATURE_VERSION, "backbone": spec.name, "arch": f"{spec.library}:{spec.arch}",
                "weights": weights_key(p, seed), "tokenizer": tokenizer_key(hf_folder(spec)),
                "max_length": p.max_length, "pooling": p.pooling, "decoder": sample_decoder("text")}
    return {
        "v": FEATURE_VERSION,
        "backbone": spec.name,
        "arch": f"{spec.library}:{spec.arch}",
        "weights": weights_key(p, seed),
        "size": p.input_size,
        "resize": p.resize,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "layer": p.layer,
        "decoder": sample_decoder("image"),
    }


def feature_fingerprint(p: BackboneParams, seed: int = 0) -> str:
    """Directory name for this backbone's features: readable prefix + hash of `feature_recipe`."""
    recipe = feature_recipe(p, seed)
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    safe = recipe["backbone"].replace(":", "-").replace("/", "-")[-40:]
    return f"{safe}-{recipe.get('size', recipe.get('max_length'))}-{digest}"
