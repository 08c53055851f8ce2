"""The feature fingerprint: everything that changes a feature vector, hashed into the feature store's folder name."""

from __future__ import annotations

import hashlib
import json

from tasks.core.params import BackboneParams
from tasks.modality.registry import modality_named
from tasks.model.backbone_catalog import resolve_spec

FEATURE_VERSION = 1  # bump when anything about how features are computed changes


def feature_recipe(p: BackboneParams, seed: int = 0) -> dict:
    """Everything that changes a feature vector: backbone, weights, and what the modality adds (for images the decoder
    and its Pillow release, resize, normalisation, layer, input size; for text the tokenizer, max_length, pooling and
    the normalisation). Not the engine (torch and ONNX Runtime agree within 1e-4, tested) nor its version: those are
    recorded per shard (`FeatureStore.append`), and shards from either share the cache."""
    spec = resolve_spec(p.name)
    return {"v": FEATURE_VERSION, **modality_named(spec.modality).feature_recipe(p, spec, seed)}


def feature_fingerprint(p: BackboneParams, seed: int = 0) -> str:
    """Directory name for this backbone's features: readable prefix + hash of `feature_recipe`."""
    recipe = feature_recipe(p, seed)
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    safe = recipe["backbone"].replace(":", "-").replace("/", "-")[-40:]
    return f"{safe}-{recipe.get('size', recipe.get('max_length'))}-{digest}"
