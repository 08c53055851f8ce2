"""Evaluate: the shipped model scored as a server runs it, for every modality (metrics, the confusion matrix, the
model card from its Jinja2 template); scored on cached features only when that is provably the same computation."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from tests.conftest import project_params


def _metrics(paths) -> dict:
    """What evaluate scored and how (models/metrics/evaluation.json)."""
    return json.loads((paths.metrics / "evaluation.json").read_text())


def test_evaluate_scores_the_shipped_graph_and_the_card_says_what_it_takes(modality_project):
    """metrics.json, the confusion matrix and the card agree with each other, for images and texts alike; the card
    describes the modality's input and names only modules that exist."""
    import importlib.util

    import pandas as pd

    from tasks.modality.registry import modality_for

    paths, params, results = modality_project
    modality = modality_for(params.backbone)
    metrics = json.loads((paths.metrics / "metrics.json").read_text())
    confusion = pd.read_csv(paths.plots / "confusion_matrix.csv")
    assert metrics["n"] == len(confusion) == results["evaluate"].n
    assert metrics["accuracy"] == pytest.approx((confusion["actual"] == confusion["predicted"]).mean())
    assert _metrics(paths)["artifact"].startswith("models/model.onnx")
    card = (paths.models / "MODEL_CARD.md").read_text()
    assert f"({params.evaluate.split} split, {metrics['n']} {modality.noun};" in card
    assert f"accuracy {metrics['accuracy']:.3f}" in card and "## Intended use and limits" in card
    contract = modality.input_contract(params, paths.labels.read_text().split())
    assert f"takes `{contract.name}`" in card
    classes = paths.labels.read_text().split()
    assert sum(card.count(f"| {c} |") for c in classes) == len(classes)  # one table row per class
    for dotted in re.findall(r"`(tasks\.[\w.]+)`", card):  # e.g. the image decoder the client should copy
        module, _, attr = dotted.rpartition(".")
        assert importlib.util.find_spec(module) is not None and hasattr(importlib.import_module(module), attr), dotted


def test_cached_scoring_gives_the_same_predictions_as_scoring_every_file(built_copy):
    from tasks.evaluate import run_evaluate

    cached = run_evaluate(project_params(built_copy), built_copy)
    check = _metrics(built_copy)["end_to_end_check"]
    assert check["images"] == 40 and check["argmax_agree"] and check["max_abs_diff_probs"] <= 1e-4
    # the whole graph's side is export's own run of these bytes on its parity samples: the files are not run again
    assert check["whole_graph"] == "export's run of these model bytes on its parity samples"
    preds_cached = (built_copy.plots / "confusion_matrix.csv").read_text()
    (built_copy.metrics / "export_parity.json").unlink()  # without export's record, evaluate runs the whole graph
    again = run_evaluate(project_params(built_copy), built_copy)
    assert _metrics(built_copy)["end_to_end_check"]["whole_graph"] == "the whole graph run on a sample of the test split"
    assert (built_copy.plots / "confusion_matrix.csv").read_text() == preds_cached and again == cached
    files = run_evaluate(project_params(built_copy, ["evaluate.cached_features=false"]), built_copy)
    assert "from image files" in _metrics(built_copy)["artifact"] and "end_to_end_check" not in _metrics(built_copy)
    assert (built_copy.plots / "confusion_matrix.csv").read_text() == preds_cached  # every prediction the same
    assert (cached.accuracy, cached.f1_macro, cached.n) == (files.accuracy, files.f1_macro, files.n)


def test_rows_from_another_runtime_or_a_stale_cache_are_scored_from_files(built_copy, capfd):
    from tasks.evaluate import run_evaluate
    from tasks.extraction.feature_store import open_store

    params = project_params(built_copy)
    store = open_store(params, built_copy)
    provenance_files = sorted(store.dir.glob("shard-*.provenance.json"))
    original = provenance_files[0].read_text()
    provenance_files[0].write_text(json.dumps(json.loads(original) | {"engine_version": "0.0.1"}))
    run_evaluate(params, built_copy)
    assert "from image files" in _metrics(built_copy)["artifact"]
    assert "some cached rows were computed with another engine_version (0.0.1)" in capfd.readouterr().err
    provenance_files[0].write_text(original)

    # a stale cache the provenance cannot see (rows overwritten): the end-to-end check on image files catches it
    for npy in sorted(store.dir.glob("shard-*.npy")):
        rows = np.load(npy)
        np.save(npy, rows[::-1].copy())  # every row now belongs to another image
    run_evaluate(params, built_copy)
    assert "from image files" in _metrics(built_copy)["artifact"]
    assert "the whole graph from image files disagrees with its head on cached features" in capfd.readouterr().err


def test_macro_averages_cover_the_classes_present_in_the_split():
    from tasks.evaluation.scoring import compute_metrics

    y = np.array(["a", "a", "b", "b"])
    metrics, per_class = compute_metrics(y, np.array(["a", "a", "b", "a"]), ["a", "b", "c"])
    assert metrics["classes_absent"] == ["c"] and set(per_class) == {"a", "b"}
    assert metrics["f1_macro"] == pytest.approx((0.8 + 2 / 3) / 2)  # c, with no sample, is not an F1 of 0
    wrong_c = compute_metrics(y, np.array(["a", "c", "b", "b"]), ["a", "b", "c"])[0]
    assert wrong_c["recall_macro"] == pytest.approx(0.75)  # predicting an absent class is still an error


def test_the_metrics_are_scikit_learns_without_its_import():
    from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

    from tasks.evaluation import classification_metrics
    from tasks.evaluation.scoring import compute_metrics

    rng = np.random.default_rng(0)
    classes = ["ant", "bee", "cat", "dog"]  # 'dog' absent from the truth; 'eel' predicted but not a class
    y_true = rng.choice(classes[:3], 300).astype(object)
    y_pred = rng.choice([*classes, "eel"], 300, p=[0.4, 0.3, 0.2, 0.05, 0.05]).astype(object)
    headline, per_class = compute_metrics(y_true, y_pred, classes)
    present = classes[:3]
    for average in ("macro", "weighted"):
        expected = precision_recall_fscore_support(y_true, y_pred, labels=present, average=average, zero_division=0)
        got = [headline[f"{m}_{average}"] for m in ("precision", "recall", "f1")]
        assert np.allclose(got, expected[:3])
    report = classification_report(y_true, y_pred, labels=present, output_dict=True, zero_division=0)
    assert all(np.isclose(per_class[c][k], report[c][k]) for c in present for k in report[c])
    assert headline["classes_absent"] == ["dog"] and np.isclose(headline["accuracy"], (y_true == y_pred).mean())
    assert (classification_metrics.confusion_matrix(y_true, y_pred, classes)
            == confusion_matrix(y_true, y_pred, labels=classes)).all()


def test_the_pictures_their_tables_and_the_card_show_the_intervals(modality_project):
    """Evaluate's pictures (normalised confusion matrix, reliability diagram, per-class F1 with intervals, top losses)
    are PNGs beside the tables DVC plots; the tables agree with the metrics; the card shows intervals and pictures."""
    import pandas as pd

    paths, _, _ = modality_project
    metrics = json.loads((paths.metrics / "metrics.json").read_text())
    per_class = json.loads((paths.metrics / "per_class.json").read_text())
    for name in ("confusion_matrix", "reliability", "per_class_f1", "top_losses"):
        assert (paths.plots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    curve = pd.read_csv(paths.plots / "reliability.csv")
    assert curve["count"].sum() == metrics["n"]
    ece = (curve["count"] / metrics["n"] * (curve["accuracy"] - curve["confidence"]).abs()).sum()
    assert ece == pytest.approx(metrics["ece"])
    f1 = pd.read_csv(paths.plots / "per_class_f1.csv").set_index("class")
    for c, v in per_class.items():
        assert f1.loc[c, "f1"] == pytest.approx(v["f1-score"]) and f1.loc[c, "ci_low"] <= f1.loc[c, "f1"] <= \
            f1.loc[c, "ci_high"], c
    losses = pd.read_csv(paths.plots / "top_losses.csv")
    assert 0 < len(losses) <= 16 and losses["loss"].is_monotonic_decreasing
    assert np.allclose(losses["loss"], -np.log(losses["p_given"].clip(1e-12)), atol=1e-5)
    if "excerpt" in losses:  # texts: a table with each text's beginning
        assert losses["excerpt"].str.len().gt(0).all()
    else:  # images: the gallery's thumbnails come from the files
        assert all((paths.root / p).exists() for p in losses["path"])
    card = (paths.models / "MODEL_CARD.md").read_text()
    acc = f"accuracy {metrics['accuracy']:.3f} [{metrics['accuracy_ci_low']:.3f}, {metrics['accuracy_ci_high']:.3f}]"
    assert acc in card and "## Pictures" in card and "Highest losses" in card
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", card)
    for link in links:
        assert (paths.models / link).exists(), link
    # the promotion's copy (what lands in registry/vNNNN/) carries the pictures where the card's links find them
    from tasks.registry.staging import snapshot_candidate

    copy = snapshot_candidate(paths)
    try:
        assert links and all((copy.folder / link).exists() for link in links)
    finally:
        shutil.rmtree(copy.folder.parent)
