"""Drift of incoming data (tasks.data_quality.drift): MMD with a permutation test on cached features, real images."""

from __future__ import annotations

import json

import pytest

from tasks.data_quality.drift import mmd_test
from tasks.data_quality.embeddings import read_embeddings
from tasks.data_quality.incoming import drift_of_new_samples
from tasks.dataset.manifest import read_manifest
from tests import scratch_project
from tests.conftest import private_copy

OTHER_CATEGORIES = ("shapes", "signs_and_symbols", "computer")  # openclipart-png categories the demo does not use


def test_held_back_samples_of_the_same_data_have_not_drifted(built_project, tmp_path):
    paths, params, _ = built_project
    proj = private_copy(paths, tmp_path / "proj")
    manifest = read_manifest(proj)
    held_back = manifest.loc[manifest["split"] == "test", "path"].tolist()  # a seeded, stratified part of the data
    report = drift_of_new_samples(params, proj, held_back)
    assert report["drifted"] is False and report["holds"] is None
    assert report["p_value"] >= params.drift.alpha
    assert report["method"] == "mmd-permutation"
    assert report["n_new"] == len(held_back) and report["n_reference"] == int((manifest["split"] == "train").sum())
    assert json.loads((proj.metrics / "drift.json").read_text()) == report


def test_the_permutation_p_value_is_seeded_and_sees_a_shift(built_project):
    paths, params, _ = built_project
    manifest = read_manifest(paths)
    x = read_embeddings(params, paths, manifest["sha256"].tolist())
    labels = manifest["label"].to_numpy()
    one_class = x[labels == labels[0]]
    a = mmd_test(x[manifest["split"] == "train"], one_class, 200, seed=1)
    assert a == mmd_test(x[manifest["split"] == "train"], one_class, 200, seed=1)  # deterministic for a seed
    assert a["p_value"] < 0.01  # a batch of one class is not the balanced training set (label shift is drift)
    assert 1 / 201 <= a["p_value"] <= 1


def add_off_topic_images(proj, tmp_path, per_category: int = 10) -> list[str]:
    """Images of OTHER_CATEGORIES added to the demo class 'tools', ingested and extracted; their paths."""
    return scratch_project.add_off_topic_images(proj, tmp_path, OTHER_CATEGORIES, per_category)


def test_images_of_other_categories_have_drifted(built_project, built_copy, tmp_path):
    """Off-topic images (openclipart categories outside the demo's 7) arrive as new files of a demo class."""
    _, params, _ = built_project
    proj = built_copy  # ingest and features write into data/: a full copy
    new = add_off_topic_images(proj, tmp_path)
    usable = set(read_manifest(proj)["path"]) & set(new)
    assert len(usable) >= 20
    report = drift_of_new_samples(params, proj, new)
    assert report["drifted"] is True and "drifted" in report["holds"]
    assert report["p_value"] < params.drift.alpha and report["n_new"] == len(usable)
    override = params.model_copy(update={"drift": params.drift.model_copy(update={"holds_promotion": False})})
    assert drift_of_new_samples(override, proj, new)["holds"] is None  # the explicit override


@pytest.mark.slow
def test_drifted_new_data_holds_the_promotion_and_the_verdict_says_so(built_project, built_copy, tmp_path):
    """The retrain flow's path without Prefect: champion v1, then off-topic new images -> audit, head, export -> the
    data checks -> the gate: held, with the drift and the audit's count of flagged new samples in the verdict."""
    from tasks.audit import run_audit
    from tasks.data_quality.incoming import check_new_samples
    from tasks.export import run_export
    from tasks.head import run_head
    from tasks.registry.promotion import judge_and_publish

    _, params, _ = built_project
    proj = built_copy
    assert judge_and_publish(params, proj)["action"] == "promoted"
    new = add_off_topic_images(proj, tmp_path)
    for stage in (run_audit, run_head, run_export):
        stage(params, proj)
    checks = check_new_samples(params, proj, new)
    # a margin wide enough that the comparison alone promotes (with the default one, this poisoned challenger is
    # rejected on the trusted hold-out, and a hold never rescues a rejection): what is left to stop it is the drift
    lenient = params.model_copy(update={"retrain": params.retrain.model_copy(update={"margin": 0.3})})
    record = judge_and_publish(lenient, proj, {"changes": {"new": len(new)}}, checks=checks)
    assert record["action"] == "held", record["reason"]
    assert "drifted" in record["reason"] and record["drift"]["drifted"] is True
    assert 0 <= record["audit"]["flagged_new"] <= record["audit"]["new"] == len(new)
    saved = json.loads((proj.metrics / "promotion.json").read_text())
    assert saved["action"] == "held" and saved["drift"]["p_value"] == record["drift"]["p_value"]


def test_too_few_new_samples_are_not_tested(built_project, tmp_path):
    paths, params, _ = built_project
    proj = private_copy(paths, tmp_path / "proj")
    one = read_manifest(proj)["path"].iloc[:1].tolist()
    report = drift_of_new_samples(params, proj, one)
    assert report["drifted"] is False and "skipped" in report and report["n_new"] == 1
