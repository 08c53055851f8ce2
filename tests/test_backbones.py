"""Every backbone in the catalog builds, can be unfrozen block by block, exports to ONNX and matches torch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tasks.core.params import BackboneParams, Params
from tasks.modality.image import ImageModality
from tasks.modality.registry import modality_for, modality_named
from tasks.model.backbone_catalog import CATALOG
from tasks.model.image_model import ImageModel
from tasks.model.onnx_export import export_onnx

SIZE = 64  # tiny input: every catalog architecture still downsamples to at least 1x1 here
# vgg16's fully connected layers make a 0.5 GB graph; it is built and cut into units here, but its export runs only
# with --run-slow-exports (the exporter is the same code path every other backbone exercises).
HEAVY_EXPORTS = {"vgg16"}


# text backbones export with their tokenizer: tests/test_text.py
IMAGE_BACKBONES = sorted(n for n, s in CATALOG.items() if isinstance(modality_named(s.modality), ImageModality))


def _build(name: str):
    """The backbone as its modality builds it, random weights: the LoadedBackbone."""
    torch.manual_seed(0)
    p = BackboneParams(name=name, weights="random", input_size=SIZE)
    return modality_for(p).build_model(Params(backbone=p, seed=0))[1]


@pytest.fixture(params=IMAGE_BACKBONES)
def built(request):
    return request.param, _build(request.param)


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_catalog_backbone_unfreezes_block_by_block(name):
    loaded = _build(name)
    units = modality_for(BackboneParams(name=name)).units(loaded)
    assert len(units) >= 3, f"{name}: last_n/gradual need a block list, got units {units.names}"
    everything = {id(p) for p in loaded.model.parameters()}
    covered = set()
    for i, unit_name in enumerate(units.names):
        params = units.parameters(i)
        assert params and any(p.requires_grad for p in params), f"{name}: unit '{unit_name}' has nothing to train"
        covered |= {id(p) for p in params}
    assert covered == everything, f"{name}: {len(everything - covered)} parameter tensors belong to no unit"


def test_catalog_backbone_exports_and_matches_torch(built, tmp_path, request):
    name, loaded = built
    if name in HEAVY_EXPORTS and not request.config.getoption("--run-slow-exports"):
        pytest.skip(f"{name}: 0.5 GB export; run with --run-slow-exports")
    model = ImageModel(loaded.model, loaded.spec.mean, loaded.spec.std).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", SIZE, ["features"], opset=18)
    images = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": images})[0]
    with torch.inference_mode():
        want = model(torch.from_numpy(images)).numpy()
    assert got.shape == want.shape == (3, loaded.feature_dim)
    scale = max(1.0, float(np.abs(want).max()))  # random-init features can be large: compare relative to them
    assert float(np.abs(got - want).max()) <= 1e-4 * scale, name
