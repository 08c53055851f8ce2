"""Scheduled retraining: no-op without new data, incremental with it, never promotes a worse model; DVC round trip."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import pandas as pd
import pytest

from tasks.core.params import write_overrides
from tests.conftest import dvc_status_clean, make_project, run

CLASSES = ("animals", "food", "transportation")


@pytest.fixture(scope="module")
def retrain_project(tmp_path_factory, clipart_raw):
    base = tmp_path_factory.mktemp("retrain")
    src, later = base / "src", base / "later"
    for c in CLASSES:
        files = sorted((clipart_raw / c).rglob("*.png"))
        for i, f in enumerate(files):
            dest = (src if i < 36 else later) / c / f.relative_to(clipart_raw / c)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest)
    paths = make_project(base / "proj", src, ["retrain.margin=0.05"], dvc=True)
    run(["git", "add", "-A"], paths.root)
    run(["git", "commit", "-qm", "project"], paths.root)
    return paths, later


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _deploy_tree(paths) -> dict[str, str]:
    """sha256 of every file of the deployable set: the champion registry and the deploy repository."""
    from tasks.registry.champions import deployable_dirs

    return {f.relative_to(paths.models).as_posix(): _sha(f) for d in deployable_dirs(paths)
            for f in sorted(d.rglob("*")) if f.is_file()}


def _poison(clipart_raw, dest_root) -> None:
    """A poisoned batch filed as 'food': every people and tools image (a look no class had, mislabelled the same way
    each time, so a model trained on it learns it and new test images of it reward it), and re-encoded copies of
    animals (new bytes, the wrong label: this is what costs a model on the untouched animals of the hold-out)."""
    from PIL import Image

    foreign = [f for c in ("people", "tools") for f in sorted((clipart_raw / c).rglob("*.png"))]
    for i, f in enumerate(foreign):
        shutil.copy(f, dest_root / "food" / f"poison_{i:03d}.png")
    for i, f in enumerate(sorted((clipart_raw / "animals").rglob("*.png"))[:40]):
        with Image.open(f) as img:
            img.convert("RGBA").save(dest_root / "food" / f"recoded_{i:03d}.png", compress_level=1)


def _artifacts(flow_run_id) -> dict:
    """The artifacts a flow run published, by key, read back through the Prefect client (as the UI shows them)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


@pytest.mark.slow
def test_retrain_lifecycle(retrain_project, prefect_harness, clipart_raw):
    from flows.retrain import retrain_flow
    from tasks.registry.champions import champion_model, holdout_keys, serving_dir

    paths, later = retrain_project
    root = str(paths.root)
    first = retrain_flow(root=root)
    assert first["action"] == "promoted" and first["champion_version"] == 1
    shown = _artifacts(first["flow_run_id"])  # what the Prefect UI shows for this run
    assert set(shown) == {"headstart-metrics", "headstart-per-class", "headstart-verdict"}
    metrics = json.loads((paths.metrics / "metrics.json").read_text())
    assert (f"| accuracy | {metrics['accuracy']:.3f} [{metrics['accuracy_ci_low']:.3f}, "
            f"{metrics['accuracy_ci_high']:.3f}] |") in shown["headstart-metrics"].data
    assert "reliability.png" in shown["headstart-metrics"].data
    for report in sorted((paths.root / "data" / "reports").glob("*.csv")):  # the data checks' counts, when they ran
        assert f"`data/reports/{report.name}`" in shown["headstart-metrics"].data
    assert "# Gate: promoted" in shown["headstart-verdict"].data and "no champion" in first["reason"]
    per_class = json.loads(shown["headstart-per-class"].data)
    assert {row["class"] for row in per_class} == set(CLASSES) and all("f1-score_ci_low" in r for r in per_class)
    assert json.loads((paths.models / "registry" / "champion.json").read_text()) == {"version": 1}
    assert champion_model(paths).read_bytes() == paths.onnx.read_bytes()
    assert (paths.models / "registry" / "v0001" / "MODEL_CARD.md").exists()
    assert (serving_dir(paths) / "headstart" / "1" / "model.onnx").exists()
    assert not (paths.models / "triton").exists() and not (paths.models / "champion").exists()
    assert dvc_status_clean(paths.root)
    assert any((paths.root / ".dvc-remote").rglob("*"))  # pushed to the project-local remote
    log = run(["git", "log", "--format=%s", "-1", "--", "models/registry.dvc"], paths.root).stdout
    assert log.strip() == "headstart: promote v0001"  # the pointer reached git: a clone + dvc pull finds it

    # nothing new: the flow says so and does nothing else
    nothing = retrain_flow(root=root)
    assert {k: nothing[k] for k in ("action", "champion_version")} == {"action": "nothing-new", "champion_version": 1}
    assert "nothing new" in _artifacts(nothing["flow_run_id"])["headstart-verdict"].data
    first_keys = set(pd.read_parquet(paths.manifest)["sha256"])
    holdout_v1 = holdout_keys(paths)

    # new labelled images: only they are extracted; the challenger is promoted as version 2
    n_new = 0
    for f in sorted(later.rglob("*.png")):
        dest = paths.raw / f.relative_to(later)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
        n_new += 1
    second = retrain_flow(root=root)
    manifest = pd.read_parquet(paths.manifest)
    usable_new = manifest["path"].str.contains("|".join(CLASSES)) & ~manifest["sha256"].isin(first_keys)
    assert second["changes"]["new"] == n_new
    assert second["extracted"] == int(usable_new.sum()) > 0  # only the new images (minus rejected ones) ran
    assert second["action"] == "promoted" and second["champion_version"] == 2, second["reason"]
    for view in ("test", "holdout"):  # paired on the same samples: difference, its interval and n in the verdict
        c = second["comparison"][view]
        assert c["ci_low"] <= c["difference"] <= c["ci_high"] and c["n"] > 0 and c["ci_high"] >= -0.05
    shown = _artifacts(second["flow_run_id"])
    assert "headstart-comparison" in shown and "trusted hold-out" in second["reason"]
    assert f"difference {second['comparison']['holdout']['difference']:+.4f}" in second["reason"]
    assert sorted(p.name for p in (serving_dir(paths) / "headstart").iterdir() if p.is_dir()) == ["1", "2"]
    assert holdout_keys(paths) >= holdout_v1  # the hold-out never shrinks: every promoted test split is in it

    # a poisoned batch (off-topic images and re-encoded animals filed as food): the poisoned current test split cannot
    # tell, the hold-out alone rejects it, and not one deployable file changes
    write_overrides(["retrain.margin=0.0"], paths.root / "params.yaml")
    before = _deploy_tree(paths)
    _poison(clipart_raw, paths.raw)
    third = retrain_flow(root=root)
    scores, metric = third["scores"], "f1_macro"
    assert third["action"] == "rejected", third["reason"]
    # the poisoned current split (its new test images carry the same wrong labels) would not reject it on its own...
    assert third["comparison"]["test"]["ci_high"] >= 0, third["reason"]
    # ...the clean hold-out does: worse beyond the noise there, and the rule says so
    assert scores["challenger_holdout"][metric] < scores["champion_holdout"][metric]
    assert third["comparison"]["holdout"]["ci_high"] < 0
    assert "trusted hold-out" in third["rule"] and "current test split" not in third["rule"]
    assert "# Gate: rejected" in _artifacts(third["flow_run_id"])["headstart-verdict"].data
    assert third["champion_version"] == 2 and _deploy_tree(paths) == before
    kept = sorted((paths.models / "rejected").iterdir())
    assert len(kept) == 1 and json.loads((kept[0] / "reason.json").read_text())["reason"] == third["reason"]
    assert (kept[0] / "model.onnx").exists()

    # predict defaults to the champion (not the rejected candidate in models/model.onnx) and says so
    image = next(iter(sorted((paths.raw / "food").glob("*.png"))))
    pred = run([sys.executable, "-m", "flows.cli", "predict", str(image)], paths.root)
    assert "predict: using the champion v0002: models/registry/v0002/model.onnx" in pred.stderr


def test_two_rejections_in_the_same_second_get_two_folders(tmp_path):
    from tasks.core.paths import ProjectPaths
    from tasks.registry.champions import keep_rejected

    paths = ProjectPaths(tmp_path)
    paths.models.mkdir()
    (paths.models / "model.onnx").write_bytes(b"candidate")
    a = keep_rejected(paths, {"n": 1}, {"reason": "a"})
    b = keep_rejected(paths, {"n": 2}, {"reason": "b"})
    assert a != b and json.loads((a / "reason.json").read_text())["reason"] == "a"
    assert json.loads((b / "reason.json").read_text())["reason"] == "b"


@pytest.mark.slow
def test_a_fresh_clone_and_dvc_pull_restore_the_champion_and_the_deploy_repository(retrain_project, tmp_path):
    from tasks.core.paths import ProjectPaths
    from tasks.registry.champions import champion_model, champion_version

    paths, _ = retrain_project
    if champion_version(paths) is None:  # stands alone: make a champion if the lifecycle test did not run first
        from flows.dvc_sync import record_promotion
        from tasks.core.stages import STAGES, stage_function
        from tasks.registry.promotion import judge_and_publish
        from tests.conftest import project_params

        params = project_params(paths)
        for name in STAGES:
            stage_function(name)(params, paths)
        record_promotion(paths.root, judge_and_publish(params, paths)["champion_version"])
    run([sys.executable, "-m", "dvc", "push", "-q"], paths.root)
    clone = ProjectPaths(tmp_path / "clone")
    run(["git", "clone", "-q", str(paths.root), str(clone.root)], tmp_path)
    shutil.copy(paths.root / ".dvc" / "config", clone.root / ".dvc" / "config")  # the remote is a sibling folder
    (clone.root / ".dvc-remote").symlink_to(paths.root / ".dvc-remote")
    run([sys.executable, "-m", "dvc", "pull", "models/registry.dvc", "models/serving.dvc"], clone.root)
    assert champion_version(clone) == champion_version(paths)
    assert _sha(champion_model(clone)) == _sha(champion_model(paths))
    assert _deploy_tree(clone) == _deploy_tree(paths)


@pytest.mark.slow
def test_a_training_run_shows_its_metrics_with_intervals_in_prefect(built_copy, prefect_harness):
    """The training flow publishes its metrics (with intervals and the plots' links) and the per-class table as
    artifacts of its run, read back through the Prefect client; no verdict: a training run promotes nothing."""
    from flows.train import train_flow

    state = train_flow(root=str(built_copy.root), commit=False, return_state=True)
    assert state.is_completed()
    shown = _artifacts(state.state_details.flow_run_id)
    assert set(shown) == {"headstart-metrics", "headstart-per-class"}
    metrics = json.loads((built_copy.metrics / "metrics.json").read_text())
    text = shown["headstart-metrics"].data
    assert f"n = {metrics['n']}" in text and f"[{metrics['f1_macro_ci_low']:.3f}, " in text
    assert all(f"{name}.png" in text for name in ("confusion_matrix", "reliability", "per_class_f1", "top_losses"))
    rows = json.loads(shown["headstart-per-class"].data)
    assert {r["class"] for r in rows} == set(json.loads((built_copy.metrics / "per_class.json").read_text()))
