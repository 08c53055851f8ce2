"""A head change costs seconds: export composes the store's checked backbone graph with the head (onnx alone, no
torch), evaluate scores the shipped graph's own head on cached features when that is provably the same computation
(and checks it end to end from image files), and `finetune: none` does nothing, fast."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tasks.core.errors import UserError
from tests.conftest import project_params, venv_env


def _metrics(paths) -> dict:
    """What evaluate scored and how (models/metrics/evaluation.json)."""
    return json.loads((paths.metrics / "evaluation.json").read_text())


def test_a_head_change_runs_finetune_export_and_evaluate_without_torch_or_scikit_learn(built_copy):
    code = ("import sys\n"
            "from tasks.core.params import load_params\n"
            "from tasks.core.stages import stage_function\n"
            "params = load_params(overrides=['head.C=0.5'])\n"
            "for stage in ('head', 'finetune', 'export', 'evaluate'):\n"
            "    stage_function(stage)(params)\n"
            "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=built_copy.root, env=venv_env(), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # the head fit is scipy's L-BFGS on numpy, the metrics numpy: neither torch nor scikit-learn is imported
    assert out.stdout.strip().splitlines()[-1] == "[]"
    # the backbone ran once, in the candidate: the reference is the head on the rows that very graph computed
    assert "parity with the head in numpy on the rows the store's backbone graph computed" in out.stderr
    assert "its head sub-graph on cached features" in _metrics(built_copy)["artifact"]


def test_a_backbone_graph_that_disagrees_with_torch_is_never_kept(built_copy, monkeypatch):
    import onnx

    import tasks.extraction.backbone_graph as backbone_graph
    from tasks.extraction.feature_store import open_store
    from tasks.modality.image import ImageModality

    params = project_params(built_copy)
    store = open_store(params, built_copy)
    store.graph.unlink()
    store.graph_record_path.unlink()
    real_export = ImageModality.export_graph

    def scaled_export(self, model, dest, *args, **kwargs):
        """The real export, then the graph's output scaled by 1.01: close, but not the model."""
        real_export(self, model, dest, *args, **kwargs)
        proto = onnx.load(str(dest))
        out = proto.graph.output[0].name
        for node in proto.graph.node:
            node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
        proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1.01, np.float32), "scale_1_01"))
        proto.graph.node.append(onnx.helper.make_node("Mul", [f"{out}_raw", "scale_1_01"], [out]))
        onnx.save(proto, str(dest))

    monkeypatch.setattr(ImageModality, "export_graph", scaled_export)
    with pytest.raises(UserError, match=r"backbone.onnx: the backbone graph disagrees with torch on 40 held-out "
                                        r"samples \(max \|f_onnx - f_torch\| = .* > .*\)"):
        backbone_graph.ensure_backbone_graph(params, store, lambda: _parity(params, built_copy))
    assert not list(store.dir.glob("*backbone*"))  # neither the graph nor a record, nor a staging file

    monkeypatch.setattr(ImageModality, "export_graph", real_export)
    record = backbone_graph.ensure_backbone_graph(params, store, lambda: _parity(params, built_copy))
    assert record["max_abs_diff"] <= record["tolerance"] and record["images"] == 40
    assert store.graph_record() == record  # the record names the graph's bytes


def _parity(params, paths):
    from tasks.modality.samples import parity_samples

    return parity_samples(params, paths)


def test_export_runs_the_backbone_graph_again_when_the_cached_rows_are_not_provably_its_own(built_copy):
    from tasks.export import run_export
    from tasks.extraction.feature_store import open_store

    params = project_params(built_copy)
    store = open_store(params, built_copy)
    for f in store.dir.glob("shard-*.provenance.json"):
        f.write_text(json.dumps(json.loads(f.read_text()) | {"engine": "torch"}))
    summary = run_export(params, built_copy)
    assert summary.parity.passed and summary.parity.reference == "the store's backbone graph + the head in numpy"
