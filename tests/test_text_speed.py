"""The text model's fast path: the exported encoder is fused (ONNX Runtime's Attention / SkipLayerNormalization ops)
and still computes what torch computes on real texts; its int8 variant still takes UTF-8 strings and stays close to
the fp32 graph. Speed itself is a benchmark (bench/text_graph_vs_torch.py), never asserted here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

FEATURE_TOLERANCE = 1e-4  # max |f_graph - f_torch| relative to the largest |f| (export.parity_tolerance's default)
INT8_MAX_ABS_DP = 0.1  # int8 vs fp32 class probabilities on the same real texts
INT8_MIN_ARGMAX_AGREEMENT = 0.9


def _op_types(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


def _test_texts(paths, params):
    from tasks.modality.samples import split_samples

    texts, labels = split_samples(params, paths, "test", 16)
    assert len(texts) >= 8 and texts.dtype == object
    return texts, labels


def test_the_text_backbone_graph_is_fused_and_matches_torch_on_real_texts(text_project):
    from tasks.extraction.backbone_graph import backbone_model
    from tasks.extraction.engines import OrtEngine
    from tasks.extraction.feature_store import open_store
    from tasks.modality.registry import modality_for
    from tasks.modality.torch_runner import torch_runner

    paths, params, _ = text_project
    graph = open_store(params, paths).graph
    ops = _op_types(onnx.load(str(graph), load_external_data=False))
    assert {"Attention", "SkipLayerNormalization"} <= ops, ops  # fused, not the exporter's MatMul/Softmax chain
    texts, _ = _test_texts(paths, params)
    model = backbone_model(params).eval()
    expected = torch_runner(modality_for(params.backbone), params, model)(texts).numpy()
    got = OrtEngine(graph, 1).run(texts)
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(got - expected).max()) <= FEATURE_TOLERANCE * scale


@pytest.mark.slow  # quantising the 90 MB graph
def test_the_int8_text_model_takes_strings_and_stays_close_to_fp32(text_project, tmp_path):
    from tasks.runtime.int8 import quantize_dynamic_int8
    from tasks.runtime.onnx_classifier import OnnxClassifier

    paths, params, _ = text_project
    int8_path = tmp_path / "int8.onnx"
    quantize_dynamic_int8(paths.onnx, int8_path)
    model = onnx.load(str(int8_path))
    assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == [("texts", onnx.TensorProto.STRING)]
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & _op_types(model) or "QAttention" in _op_types(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert "headstart.classes" in meta and meta["headstart.precision"].startswith("int8 (dynamic")
    texts, _ = _test_texts(paths, params)
    fp32, int8 = OnnxClassifier(paths.onnx, 1).probs(texts), OnnxClassifier(int8_path, 1).probs(texts)
    assert float(np.abs(fp32 - int8).max()) <= INT8_MAX_ABS_DP
    assert float((fp32.argmax(1) == int8.argmax(1)).mean()) >= INT8_MIN_ARGMAX_AGREEMENT


@pytest.mark.parametrize("flags, expected", [("flags : fpu avx2 avx512f avx512_vnni amx_int8", "AMX, AVX-512 VNNI"),
                                             ("flags : fpu avx2 fma", "AVX2, no VNNI")])
def test_the_int8_report_names_the_cpus_int8_instructions(tmp_path, monkeypatch, flags, expected):
    import tasks.runtime.int8 as int8

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor : 0\n{flags}\n")
    real_path = int8.Path
    monkeypatch.setattr(int8, "Path", lambda p: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p))
    assert int8.int8_instructions() == expected
