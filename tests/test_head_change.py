"""A head change costs seconds: export composes the store's checked backbone graph with the head (onnx alone, no
torch), evaluate scores the shipped graph's own head on cached features when that is provably the same computation
(and checks it end to end from image files), and `finetune: none` does nothing, fast."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tasks.core.errors import UserError
from tests.conftest import project_params, venv_env


@pytest.fixture
def project(built_project, tmp_path):
    """A private copy of the built project (every stage ran once)."""
    paths, _, _ = built_project
    shutil.copytree(paths.root, tmp_path / "proj", symlinks=True)
    return type(paths)(tmp_path / "proj")


def _metrics(paths) -> dict:
    """What evaluate scored and how (models/metrics/evaluation.json)."""
    return json.loads((paths.metrics / "evaluation.json").read_text())


def test_a_head_change_runs_finetune_export_and_evaluate_without_torch(project):
    code = ("import sys\n"
            "from tasks.core.params import load_params\n"
            "from tasks.core.stages import stage_function\n"
            "params = load_params(overrides=['head.C=0.5'])\n"
            "for stage in ('head', 'finetune', 'export', 'evaluate'):\n"
            "    stage_function(stage)(params)\n"
            "print(sorted(m for m in ('torch', 'sklearn.linear_model') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=project.root, env=venv_env(), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['sklearn.linear_model']"  # the head fit needs sklearn, not torch
    assert "parity with the store's backbone graph + the head in numpy" in out.stderr
    assert "its head sub-graph on cached features" in _metrics(project)["artifact"]


def test_cached_scoring_gives_the_same_predictions_as_scoring_every_file(project):
    from tasks.evaluate import run_evaluate

    cached = run_evaluate(project_params(project), project)
    check = _metrics(project)["end_to_end_check"]
    assert check["images"] == 40 and check["argmax_agree"] and check["max_abs_diff_probs"] <= 1e-4
    preds_cached = (project.plots / "confusion_matrix.csv").read_text()
    files = run_evaluate(project_params(project, ["evaluate.cached_features=false"]), project)
    assert "from image files" in _metrics(project)["artifact"] and "end_to_end_check" not in _metrics(project)
    assert (project.plots / "confusion_matrix.csv").read_text() == preds_cached  # every prediction the same
    assert (cached.accuracy, cached.f1_macro, cached.n) == (files.accuracy, files.f1_macro, files.n)


def test_rows_from_another_runtime_or_a_stale_cache_are_scored_from_files(project, capfd):
    from tasks.evaluate import run_evaluate
    from tasks.extraction.feature_store import open_store

    params = project_params(project)
    store = open_store(params, project)
    provenance_files = sorted(store.dir.glob("shard-*.provenance.json"))
    original = provenance_files[0].read_text()
    provenance_files[0].write_text(json.dumps(json.loads(original) | {"engine_version": "0.0.1"}))
    run_evaluate(params, project)
    assert "from image files" in _metrics(project)["artifact"]
    assert "some cached rows were computed with another engine_version (0.0.1)" in capfd.readouterr().err
    provenance_files[0].write_text(original)

    # a stale cache the provenance cannot see (rows overwritten): the end-to-end check on image files catches it
    for npy in sorted(store.dir.glob("shard-*.npy")):
        rows = np.load(npy)
        np.save(npy, rows[::-1].copy())  # every row now belongs to another image
    run_evaluate(params, project)
    assert "from image files" in _metrics(project)["artifact"]
    assert "the whole graph from image files disagrees with its head on cached features" in capfd.readouterr().err


def test_a_backbone_graph_that_disagrees_with_torch_is_never_kept(project, monkeypatch):
    import onnx

    import tasks.extraction.backbone_graph as backbone_graph
    from tasks.extraction.feature_store import open_store

    params = project_params(project)
    store = open_store(params, project)
    store.graph.unlink()
    store.graph_record_path.unlink()
    real_export = backbone_graph.export_graph

    def scaled_export(model, dest, *args, **kwargs):
        """The real export, then the graph's output scaled by 1.01: close, but not the model."""
        real_export(model, dest, *args, **kwargs)
        proto = onnx.load(str(dest))
        out = proto.graph.output[0].name
        for node in proto.graph.node:
            node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
        proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1.01, np.float32), "scale_1_01"))
        proto.graph.node.append(onnx.helper.make_node("Mul", [f"{out}_raw", "scale_1_01"], [out]))
        onnx.save(proto, str(dest))

    monkeypatch.setattr(backbone_graph, "export_graph", scaled_export)
    with pytest.raises(UserError, match=r"backbone.onnx: the backbone graph disagrees with torch on 40 held-out "
                                        r"samples \(max \|f_onnx - f_torch\| = .* > .*\)"):
        backbone_graph.ensure_backbone_graph(params, store, lambda: _parity(params, project))
    assert not list(store.dir.glob("*backbone*"))  # neither the graph nor a record, nor a staging file

    monkeypatch.setattr(backbone_graph, "export_graph", real_export)
    record = backbone_graph.ensure_backbone_graph(params, store, lambda: _parity(params, project))
    assert record["max_abs_diff"] <= record["tolerance"] and record["images"] == 40
    assert store.graph_record() == record  # the record names the graph's bytes


def _parity(params, paths):
    from tasks.modality.samples import parity_samples

    return parity_samples(params, paths)
