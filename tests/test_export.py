"""Export: one ONNX graph (raw samples in, probabilities out) that matches torch on real held-out samples, for every
modality; the image graph's contract, metadata, Triton folder, parity gate and int8 variant."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from tasks.dataset.images import load_uint8
from tasks.modality.shipped_model import build_classifier
from tasks.model.head_format import Head


@pytest.fixture(scope="module")
def exported(built_project):
    paths, params, results = built_project
    session = ort.InferenceSession(str(paths.onnx), providers=["CPUExecutionProvider"])
    model = build_classifier(params, Head.load(paths.head))
    m = pd.read_parquet(paths.manifest)
    test = m[m["split"] == "test"].head(32)
    size, mode = params.backbone.input_size, params.backbone.resize
    images = np.stack([load_uint8(paths.root / p, size, mode) for p in test["path"]])
    return paths, params, session, model, images


def _held_out(params, paths, n: int) -> np.ndarray:
    """Up to `n` raw held-out samples of the project's modality: the test split, then val."""
    from tasks.modality.samples import split_samples

    test, _ = split_samples(params, paths, "test", n)
    val, _ = split_samples(params, paths, "val", n - len(test))
    return np.concatenate([test, val])[:n]


# what every modality's small test project must reach on its test split (7 clip-art classes at 96 px; 5 BBC topics
# with 14 articles each to learn from, at 64 tokens)
ACCURACY_FLOOR = {"image": 0.6, "text": 0.8}


@pytest.mark.parametrize("batch", [1, 7, 32])
def test_the_exported_model_takes_raw_samples_and_matches_torch(modality_project, batch):
    """The shipped graph, fed raw samples as a client sends them (its InputContract), equals the torch model it was
    exported from (texts through the Hugging Face tokenizer) at any batch size; the stages ran end to end."""
    from tasks.evaluation.parity import torch_probs
    from tasks.modality.registry import modality_for
    from tasks.modality.shipped_model import shipped_classifier
    from tasks.runtime.onnx_classifier import OnnxClassifier

    paths, params, results = modality_project
    modality = modality_for(params.backbone)
    clf = OnnxClassifier(paths.onnx)
    assert clf.modality is modality and clf.contract == modality.input_contract(params, clf.classes)
    samples = _held_out(params, paths, batch)
    assert len(samples) == batch
    logits, probs = clf.session.run(["logits", "probs"], {clf.input_name: samples})
    torch.set_num_threads(1)
    expected = torch_probs(params, shipped_classifier(params, paths))(samples)
    assert probs.shape == logits.shape == (batch, len(clf.classes))
    assert np.abs(probs - expected).max() <= 1e-4
    assert (probs.argmax(1) == expected.argmax(1)).all()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert results["evaluate"].accuracy >= ACCURACY_FLOOR[modality.name]
    assert results["features"].extracted == pd.read_parquet(paths.manifest)["sha256"].nunique()


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
    assert report["argmax_agree"] and report["max_abs_diff_probs"] <= 1e-4 and report["images"] == 40


def test_onnx_model_reproduces_the_head_on_cached_features(built_project, exported):
    """No train/serve skew: the served graph gives the same predictions as the head scored in evaluate."""
    paths, params, session, _, images = exported
    from tasks.extraction.feature_store import open_store

    m = pd.read_parquet(paths.manifest)
    test = m[m["split"] == "test"].head(32)
    head = Head.load(paths.head)
    expected = head.probs(open_store(params, paths).get(test["sha256"].tolist()))
    probs = session.run(["probs"], {"images": images})[0]
    assert np.abs(probs - expected).max() <= 1e-4


def test_metadata_round_trip(exported):
    import datetime as dt
    import hashlib

    paths, params, session, _, _ = exported
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["headstart.opset"] == str(params.export.opset)
    expected_hash = hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    assert meta["headstart.params_sha256"] == expected_hash
    assert json.loads(meta["headstart.backbone"])["backbone"] == params.backbone.name
    assert meta["headstart.fingerprint"] == Head.load(paths.head).fingerprint
    assert dt.datetime.fromisoformat(meta["headstart.created_at"]).tzinfo is not None
    head_info = json.loads((paths.models / "head.json").read_text())
    assert json.loads(meta["headstart.metrics"])["val_accuracy"] == pytest.approx(head_info["val_accuracy"])
    card = (paths.models / "MODEL_CARD.md").read_text()
    metrics = json.loads((paths.metrics / "metrics.json").read_text())
    assert f"accuracy {metrics['accuracy']:.3f}" in card and "## Intended use and limits" in card
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # numbers only: what dvc exp show compares
    headline = [k for k in metrics if not k.endswith(("_ci_low", "_ci_high"))]  # each metric is followed by its interval
    assert headline[:3] == ["accuracy", "f1_macro", "f1_weighted"]
    assert list(metrics)[1:3] == ["accuracy_ci_low", "accuracy_ci_high"]
    how = json.loads((paths.metrics / "evaluation.json").read_text())
    assert how["artifact"].startswith("models/model.onnx") and how["split"] == "test"


def _triton_schema():
    """Triton's ModelConfig protobuf, as generated in the tritonclient package (loaded without its gRPC deps)."""
    import importlib.util
    import os

    tritonclient = pytest.importorskip("tritonclient")
    path = os.path.join(os.path.dirname(tritonclient.__file__), "grpc", "model_config_pb2.py")
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_triton_repository_parses_against_tritons_schema_and_matches_the_graph(exported, tmp_path):
    from google.protobuf import text_format

    from tasks.modality.registry import contract_from_metadata
    from tasks.registry.triton_repo import write_triton_repo

    paths, params, session, _, _ = exported
    schema = _triton_schema()
    classes = [c for c in paths.labels.read_text().split("\n") if c]
    contract = contract_from_metadata(session.get_modelmeta().custom_metadata_map, classes)  # the graph's own
    folder = write_triton_repo(tmp_path, params.export.triton_name, contract,
                               params.export.triton_max_batch_size, {1: paths.onnx})
    assert not (paths.models / "triton").exists()  # export builds a candidate only; promotion publishes
    config = text_format.Parse((folder / "config.pbtxt").read_text(), schema.ModelConfig())
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == params.export.triton_max_batch_size
    assert config.HasField("dynamic_batching")
    onnx_types = {"tensor(uint8)": "TYPE_UINT8", "tensor(float)": "TYPE_FP32"}
    graph_inputs = {i.name: i for i in session.get_inputs()}
    for spec in config.input:
        node = graph_inputs[spec.name]
        assert list(spec.dims) == node.shape[1:]  # Triton dims exclude the batch axis
        assert schema.DataType.Name(spec.data_type) == onnx_types[node.type]
    graph_outputs = {o.name: o for o in session.get_outputs()}
    assert {o.name for o in config.output} == set(graph_outputs)
    for spec in config.output:
        assert list(spec.dims) == [len(json.loads(session.get_modelmeta().custom_metadata_map["headstart.classes"]))]
        assert schema.DataType.Name(spec.data_type) == onnx_types[graph_outputs[spec.name].type]
    probs = next(o for o in config.output if o.name == "probs")
    assert (folder / probs.label_filename).read_text() == paths.labels.read_text()
    assert (folder / "1" / "model.onnx").read_bytes() == paths.onnx.read_bytes()


def test_predict_on_a_folder_reports_a_corrupt_file_on_its_row(exported, tmp_path):
    from tasks.runtime.predict import predict

    paths, params, session, _, images = exported
    m = pd.read_parquet(paths.manifest)
    test = m[m["split"] == "test"].head(5)
    folder = tmp_path / "incoming"
    (folder / "sub").mkdir(parents=True)
    for p in test["path"]:
        (folder / "sub" / Path(p).name).write_bytes((paths.root / p).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "preds.csv"
    summary = predict([str(folder)], model=paths.onnx, top_k=2, out=str(out))
    rows = pd.read_csv(out, keep_default_na=False)
    assert summary.inputs == 6 and summary.errors == 1 and len(rows) == 6
    bad = rows[rows["path"].str.endswith("broken.png")].iloc[0]
    assert bad["error"] and bad["label_1"] == ""
    good = rows[rows["error"] == ""]
    classes = paths.labels.read_text().split()
    assert set(good["label_1"]) <= set(classes)
    assert (good["prob_1"].astype(float) >= good["prob_2"].astype(float)).all()
    # the same answer the server-side graph gives on the same files
    for _, r in good.iterrows():
        x = load_uint8(r["path"], params.backbone.input_size, params.backbone.resize)[None]
        probs = session.run(["probs"], {"images": x})[0][0]
        assert classes[int(probs.argmax())] == r["label_1"]
        assert abs(float(probs.max()) - float(r["prob_1"])) < 1e-5
    as_json = tmp_path / "preds.json"
    predict([str(folder)], model=paths.onnx, top_k=1, out=str(as_json))
    assert len(json.loads(as_json.read_text())) == 6


def _export_project(built_project, dest, overrides=()):
    """A copy of the built project up to the head (manifest, features, head), ready for `run_export`."""
    import shutil

    from tests.conftest import make_project

    paths, _, _ = built_project
    proj = make_project(dest, None, list(overrides))
    for sub in ("data/prepared", "data/features"):
        shutil.copytree(paths.root / sub, proj.root / sub)
    shutil.copytree(paths.raw, proj.raw, copy_function=os.link)
    proj.models.mkdir(parents=True, exist_ok=True)
    for f in ("head.npz", "head.json"):
        shutil.copy(paths.models / f, proj.models / f)
    return proj


def _tree(root: Path) -> dict[str, bytes]:
    return {f.relative_to(root).as_posix(): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("route", ["composed", "torch"])
def test_a_graph_that_disagrees_with_its_reference_fails_the_parity_gate_and_changes_nothing(built_project, tmp_path,
                                                                                             monkeypatch, route):
    """Both routes: the composed graph (frozen backbone, no torch) and the torch export (a fine-tuned backbone,
    forced here by shipping the frozen model's own state as if fine-tuned)."""
    import tasks.export as export_stage
    from tasks.export import ExportParityError, run_export
    from tests.conftest import project_params

    proj = _export_project(built_project, tmp_path / "parity", ["export.int8=true", "export.int8_max_accuracy_drop=1.0",
                                                                "export.int8_calibration_images=16",
                                                                "export.int8_min_speedup=0"])
    head = Head.load(proj.head)
    if route == "torch":
        state = build_classifier(project_params(proj), head).state_dict()
        monkeypatch.setattr(export_stage, "shipped_state", lambda paths: state)
    first = run_export(project_params(proj), proj)  # a previous model set: model.onnx, labels, int8, export.json
    assert first.parity.reference == {"composed": "the head in numpy on the rows the store's backbone graph computed "
                                                  "from these samples",
                                      "torch": "torch eager"}[route]
    before = _tree(proj.models)
    assert {"model.onnx", "labels.txt", "int8/model.onnx", "metrics/export.json"} <= set(before)
    real_compare = export_stage.compare_with_outputs

    def compare_a_disagreeing_graph(candidate, *args, **kwargs):
        """The head's class rows reversed in the built graph, just before its gate: a bug the builder cannot see."""
        proto = onnx.load(str(candidate))
        layer = [t for t in proto.graph.initializer if len(t.dims) == 2 and len(head.classes) in t.dims][-1]
        weights = onnx.numpy_helper.to_array(layer)
        flipped = np.flip(weights, list(layer.dims).index(len(head.classes))).copy()
        layer.CopyFrom(onnx.numpy_helper.from_array(flipped, layer.name))
        onnx.save(proto, str(candidate))
        return real_compare(candidate, *args, **kwargs)

    monkeypatch.setattr(export_stage, "compare_with_outputs", compare_a_disagreeing_graph)
    with pytest.raises(ExportParityError, match=r"export parity gate failed on 40 samples: .*argmax agree: False; .*"
                                                r"model.onnx was not replaced"):
        run_export(project_params(proj), proj)
    assert _tree(proj.models) == before  # the previous model set, bitwise; no staging file left behind


def test_int8_variant_is_written_only_within_the_accuracy_tolerance(built_project, tmp_path):
    from tasks.evaluate import run_evaluate
    from tasks.export import run_export
    from tests.conftest import project_params

    proj = _export_project(built_project, tmp_path / "int8", ["export.int8=true", "export.int8_calibration_images=32"])
    run_export(project_params(proj, ["export.int8_max_accuracy_drop=1.0", "export.int8_min_speedup=0"]), proj)
    report = json.loads((proj.models / "int8" / "report.json").read_text())
    int8_model = proj.models / "int8" / "model.onnx"
    assert report["accepted"] and int8_model.exists()
    assert report["int8_mb"] < 0.4 * report["fp32_mb"]  # int8 weights: about a quarter of the bytes
    assert abs(report["accuracy_drop"] - (report["fp32_accuracy"] - report["int8_accuracy"])) < 1e-12
    assert report["speedup"] > 0 and report["cpu_int8"]  # measured, and the CPU's int8 instructions named
    metrics = run_evaluate(project_params(proj), proj)
    written = json.loads((proj.metrics / "metrics.json").read_text())
    for m in ("int8_accuracy", "int8_f1_macro", "int8_minus_fp32_accuracy"):  # each with its 95 % interval
        assert written[f"{m}_ci_low"] <= written[m] <= written[f"{m}_ci_high"]
    # the paired difference is of the two models on the same samples
    assert abs(written["int8_minus_fp32_accuracy"] - (written["int8_accuracy"] - written["accuracy"])) < 1e-12
    assert 0 <= written["int8_predictions_differ"] <= metrics.n
    card = (proj.models / "MODEL_CARD.md").read_text()
    assert "int8 minus fp32 accuracy on the same samples" in card
    assert metrics.n > 0


def test_an_int8_model_that_does_not_pay_on_this_cpu_is_not_written_and_says_so(built_project, tmp_path):
    """Accurate enough, but not the asked-for speed-up (no int8 runs 1000x fp32): not written, and one line why that
    names the CPU's int8 instructions (the same recipe with no speed demand is written: the test above)."""
    from tasks.modality.samples import split_samples
    from tasks.runtime.int8 import build_int8, quantize_int8

    paths, params, _ = built_project
    calib, _ = split_samples(params, paths, "train", 16)
    val_x, val_y = split_samples(params, paths, "val", 32)
    classes = Head.load(paths.head).classes
    dest = tmp_path / "int8" / "model.onnx"
    dest.parent.mkdir()
    dest.write_bytes(b"an int8 model from an earlier export")  # must not outlive a refusal

    def quantize(src, dst):
        quantize_int8(src, dst, calib)

    slow = build_int8(paths.onnx, dest, quantize, val_x, val_y, classes, max_drop=1.0, min_speedup=1000)
    assert not slow.accepted and not dest.exists() and slow.speedup < 1000
    assert slow.reason.startswith(f"int8 does not pay on this CPU ({slow.cpu_int8}): {slow.speedup:.2f}x fp32")
    assert slow.reason.endswith("int8 model not written, fp32 only") and "\n" not in slow.reason


def test_folding_the_run_time_padding_into_the_convolutions_changes_no_probability(built_project):
    """The int8 recipe's first step: the exported "same" padding (Shape -> ... -> Pad before each stride-2
    convolution) becomes the convolutions' own pads; on real images the graph computes the same probabilities."""
    from tasks.runtime.int8_image import static_padding

    paths, params, _ = built_project
    model = onnx.load(str(paths.onnx))
    folded = static_padding(model)
    onnx.checker.check_model(folded)
    assert [n for n in model.graph.node if n.op_type == "Pad"]  # the exported graph pads at run time
    assert not [n for n in folded.graph.node if n.op_type in ("Pad", "Shape")]
    images = _held_out(params, paths, 16)
    before = ort.InferenceSession(str(paths.onnx)).run(["probs"], {"images": images})[0]
    after = ort.InferenceSession(folded.SerializeToString()).run(["probs"], {"images": images})[0]
    assert np.abs(before - after).max() < 1e-6


def test_the_image_int8_recipe_quantises_every_convolution_and_keeps_the_answers(built_project, tmp_path):
    """The shipped image recipe: every convolution, depthwise too, reads an int8 tensor (no float round trip around
    the depthwise ones or the padding), and the int8 model gives fp32's top-1 answer on most real held-out images
    (on Fashion-MNIST's 10k test 94.5 %, bench/RESULTS.md 28b)."""
    from tasks.modality.samples import split_samples
    from tasks.runtime.int8 import quantize_int8

    paths, params, _ = built_project
    calib, _ = split_samples(params, paths, "train", 32)
    dest = tmp_path / "int8.onnx"
    quantize_int8(paths.onnx, dest, calib)
    graph = onnx.load(str(dest)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) > 40 and all(producer.get(n.input[0]) == "DequantizeLinear" for n in convs)
    assert any(next((a.i for a in n.attribute if a.name == "group"), 1) > 1 for n in convs)  # depthwise among them
    assert not [n for n in graph.node if n.op_type in ("Pad", "Shape")]
    assert "padding folded" in {p.key: p.value for p in onnx.load(str(dest)).metadata_props}["headstart.precision"]
    images = _held_out(params, paths, 64)
    fp32 = ort.InferenceSession(str(paths.onnx)).run(["probs"], {"images": images})[0].argmax(1)
    int8 = ort.InferenceSession(str(dest)).run(["probs"], {"images": images})[0].argmax(1)
    print(f"int8 top-1 = fp32 on {(fp32 == int8).mean():.3f} of {len(images)} held-out images")
    assert (fp32 == int8).mean() >= 0.85


def test_an_int8_model_that_loses_accuracy_is_rejected_and_not_written(built_project, tmp_path, monkeypatch):
    """A real drop: calibrated on black images, the int8 activation ranges clip every real image."""
    import tasks.export as export_stage
    from tasks.export import run_export
    from tests.conftest import project_params

    proj = _export_project(built_project, tmp_path / "int8-drop", ["export.int8=true",
                                                                   "export.int8_calibration_images=16"])
    real_split_samples = export_stage.split_samples

    def black_calibration(params, paths, split, limit):
        images, labels = real_split_samples(params, paths, split, limit)
        return (np.zeros_like(images), labels) if split == "train" else (images, labels)

    monkeypatch.setattr(export_stage, "split_samples", black_calibration)
    run_export(project_params(proj, ["export.int8_max_accuracy_drop=0.0"]), proj)
    report = json.loads((proj.models / "int8" / "report.json").read_text())
    print(f"int8 calibrated on black images: accuracy {report['fp32_accuracy']:.3f} -> {report['int8_accuracy']:.3f}")
    assert report["accuracy_drop"] > 0.05, report  # a real loss, not rounding
    assert not report["accepted"] and "int8 model not written" in report["reason"]
    assert sorted(f.name for f in (proj.models / "int8").iterdir()) == ["report.json"]
    assert json.loads((proj.metrics / "export.json").read_text())["int8_accepted"] is False
    assert (proj.models / "model.onnx").exists()  # the fp32 candidate still ships


def test_when_the_torchscript_exporter_fails_the_fallback_says_why_and_still_exports(tmp_path, capfd):
    from tasks.model.onnx_export import export_onnx

    class TracingRefused(torch.nn.Module):
        """Refuses the TorchScript tracer only, as a model with an op it cannot take would; its argument is not
        named `images` (the dynamo exporter must not depend on the name)."""

        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 4)

        def forward(self, x):
            if torch.jit.is_tracing():
                raise RuntimeError("an op the TorchScript exporter cannot take")
            logits = self.fc(x.float().mean(dim=(1, 2)))
            return logits, logits.softmax(1)

    model = TracingRefused().eval()
    export_onnx(model, tmp_path / "m.onnx", 8, ["logits", "probs"], 17)
    assert ("onnx export: the TorchScript exporter failed (RuntimeError: an op the TorchScript exporter cannot take); "
            "trying the dynamo exporter") in capfd.readouterr().err
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    probs = ort.InferenceSession(str(tmp_path / "m.onnx")).run(["probs"], {"images": x})[0]
    with torch.inference_mode():
        assert np.abs(probs - model(torch.from_numpy(x))[1].numpy()).max() < 1e-5  # dynamic batch: 3, traced at 2
