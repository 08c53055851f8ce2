"""Export: one ONNX graph (raw uint8 pixels in, probabilities out) that matches torch on real images."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from tasks.export import build_classifier
from tasks.head import LinearHead
from tasks.images import load_uint8


@pytest.fixture(scope="module")
def exported(built_project):
    paths, params, results = built_project
    session = ort.InferenceSession(str(paths.onnx), providers=["CPUExecutionProvider"])
    model = build_classifier(params, LinearHead.load(paths.head))
    m = pd.read_parquet(paths.manifest)
    test = m[m["split"] == "test"].head(8)
    size, mode = params.backbone.input_size, params.backbone.resize
    images = np.stack([load_uint8(paths.root / p, size, mode) for p in test["path"]])
    return paths, params, session, model, images


@pytest.mark.parametrize("batch", [1, 7])
def test_onnx_matches_torch_on_real_images(exported, batch):
    _, _, session, model, images = exported
    x = images[:batch]
    logits, probs = session.run(["logits", "probs"], {"images": x})
    with torch.inference_mode():
        t_logits, t_probs = (t.numpy() for t in model(torch.from_numpy(x)))
    assert probs.shape == (batch, 7)
    assert np.abs(probs - t_probs).max() <= 1e-4
    assert (probs.argmax(1) == t_probs.argmax(1)).all()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_onnx_graph_contract_and_metadata(exported):
    paths, params, session, _, _ = exported
    inp = session.get_inputs()[0]
    assert inp.name == "images" and inp.type == "tensor(uint8)"
    assert inp.shape[1:] == [params.backbone.input_size, params.backbone.input_size, 3]
    assert isinstance(inp.shape[0], str)  # dynamic batch axis
    assert [o.name for o in session.get_outputs()] == ["logits", "probs"]
    meta = session.get_modelmeta().custom_metadata_map
    classes = json.loads(meta["headstart.classes"])
    assert classes == paths.labels.read_text().split()
    assert classes == sorted(["animals", "food", "people", "transportation", "plants", "buildings", "tools"])
    assert json.loads(meta["headstart.input"])["layout"] == "NHWC"
    onnx.checker.check_model(onnx.load(str(paths.onnx)))
    report = json.loads((paths.metrics / "export.json").read_text())["parity"]
    assert report["argmax_agree"] and report["max_abs_diff_probs"] <= 1e-4 and report["images"] == 16


def test_onnx_model_reproduces_the_head_on_cached_features(built_project, exported):
    """No train/serve skew: the served graph gives the same predictions as the head scored in evaluate."""
    paths, params, session, _, images = exported
    from tasks.feature_store import open_store

    m = pd.read_parquet(paths.manifest)
    test = m[m["split"] == "test"].head(8)
    head = LinearHead.load(paths.head)
    expected = head.probs(open_store(params, paths).get(test["sha256"].tolist()))
    probs = session.run(["probs"], {"images": images})[0]
    assert np.abs(probs - expected).max() <= 1e-4
