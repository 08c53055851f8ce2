"""The pipeline under DVC and under Prefect: reproducible, incremental, and leaving the same repository state."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import dvc_status_clean, make_project, run

pytestmark = pytest.mark.slow  # every test here runs the whole pipeline through DVC or a Prefect flow


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory, clipart_raw):
    paths = make_project(tmp_path_factory.mktemp("dvc") / "proj", clipart_raw, dvc=True)
    run(["git", "add", "-A"], paths.root)
    run(["git", "commit", "-qm", "test project"], paths.root)
    return paths


def test_dvc_repro_twice_second_run_executes_nothing(dvc_project):
    root = dvc_project.root
    first = run([sys.executable, "-m", "dvc", "repro"], root)
    for stage in ("ingest", "features", "head", "finetune", "evaluate", "export"):
        assert f"Running stage '{stage}'" in first.stdout
    assert dvc_project.onnx.exists()
    second = run([sys.executable, "-m", "dvc", "repro"], root)
    assert "Running stage" not in second.stdout
    assert "Data and pipelines are up to date." in second.stdout
    assert dvc_status_clean(root)


def test_dvc_exp_run_with_a_head_param_reuses_features(dvc_project):
    root = dvc_project.root
    run([sys.executable, "-m", "dvc", "repro"], root)  # built (a no-op when an earlier test built it)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "lock", "--allow-empty"], root)
    proc = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "head.C=0.02"], root)
    for stage in ("head", "export", "evaluate"):  # the head and what follows it re-run ...
        assert f"Running stage '{stage}'" in proc.stdout
    assert "Running stage 'features'" not in proc.stdout
    # ... except a fine-tune stage that trains nothing (strategy none): it depends on finetune_start.json, not the head
    assert "Stage 'finetune' didn't change, skipping" in proc.stdout, proc.stdout[-2000:]
    show = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], root).stdout)
    assert "0.02" in json.dumps(show)


def test_dvc_exp_run_selects_a_finetune_strategy(dvc_project):
    root = dvc_project.root
    proc = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "finetune.strategy=freeze", "-S",
                "finetune.epochs=1"], root)
    assert "Running stage 'finetune'" in proc.stdout and "Running stage 'export'" in proc.stdout
    assert "Running stage 'head'" not in proc.stdout and "Running stage 'features'" not in proc.stdout
    summary = json.loads((dvc_project.finetune / "summary.json").read_text())
    assert summary["strategy"] == "freeze" and summary["epochs_run"] == 1
    assert (dvc_project.finetune / "curves.png").stat().st_size > 0
    plots = run([sys.executable, "-m", "dvc", "plots", "show", "--json", "models/finetune/history.csv"], root)
    assert "val_accuracy" in plots.stdout


def test_prefect_flow_matches_direct_stage_calls_and_leaves_dvc_clean(tmp_path, clipart_raw, built_project,
                                                                      prefect_harness):
    from flows.train import train_flow

    direct_paths, _, direct = built_project
    paths = make_project(tmp_path / "flow", clipart_raw, dvc=True)
    results = train_flow(root=str(paths.root))
    flow_metrics = json.loads((paths.metrics / "metrics.json").read_text())
    direct_metrics = json.loads((direct_paths.metrics / "metrics.json").read_text())
    for key in ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "n"):
        assert flow_metrics[key] == pytest.approx(direct_metrics[key], abs=1e-12), key
    assert results["evaluate"]["accuracy"] == pytest.approx(direct["evaluate"].accuracy, abs=1e-12)
    assert dvc_status_clean(paths.root)  # dvc.lock records what the flow built: `dvc repro` has nothing to do
    again = run([sys.executable, "-m", "dvc", "repro"], paths.root)
    assert "Running stage" not in again.stdout


def test_switching_backbone_settings_and_back_reuses_the_cached_features(dvc_project):
    """Features are cached per fingerprint: going back to a setting extracts nothing."""
    root = dvc_project.root
    other = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "backbone.input_size=64"], root)
    assert "Running stage 'features'" in other.stdout
    back = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "backbone.input_size=96"], root)
    out = back.stdout + back.stderr
    assert "Running stage 'features'" not in out or ", 0 extracted" in out, out[-2000:]
    fingerprints = {p.name.split("-")[-2] for p in dvc_project.features.iterdir() if p.is_dir()}
    assert {"64", "96"} <= fingerprints
