"""The label audit (stage audit, tasks.data_quality.label_audit): out-of-fold confident learning on cached features
finds labels moved to a wrong class, on real images and real texts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.audit import run_audit
from tasks.data_quality.label_audit import confident_learning, stratified_folds
from tasks.dataset.manifest import read_manifest
from tests.conftest import private_copy


def move_labels(paths, share: float, seed: int = 0) -> set[str]:
    """Move a seeded `share` of the train samples' labels to another class (random, never the same) in the
    manifest; returns the moved paths."""
    m = read_manifest(paths)
    classes = sorted(m["label"].unique())
    train = np.flatnonzero(m["split"] == "train")
    rng = np.random.default_rng(seed)
    moved = rng.choice(train, int(round(share * len(train))), replace=False)
    for i in moved:
        others = [c for c in classes if c != m.at[i, "label"]]
        m.at[i, "label"] = others[rng.integers(len(others))]
    tmp = paths.manifest.with_name("manifest.moved.parquet")
    m.to_parquet(tmp, index=False)
    tmp.replace(paths.manifest)  # a rename: the hard link to the built project's manifest is left alone
    return set(m["path"].iloc[moved])


def test_the_audit_report_is_ranked_most_suspect_first(built_project):
    paths, params, results = built_project
    table = pd.read_csv(paths.reports / "label_issues.csv")
    assert list(table.columns[:5]) == ["path", "split", "given_label", "suggested_label", "score"]
    assert set(table["split"]) <= {"train", "val"}
    assert (table["suggested_label"] != table["given_label"]).all()
    assert (table["score"] < table["threshold"]).all()
    assert table["score"].is_monotonic_increasing
    assert results["audit"].label_issues == len(table) and results["audit"].folds == params.audit.folds


def test_labels_moved_to_a_wrong_class_are_found(modality_project, tmp_path):
    """10 % of the train labels moved to a wrong class, N = how many: at least half of the top-N rows are moved
    samples on the texts (head accuracy ~0.95). On the 96 px, 50-per-class images (head accuracy ~0.64: a third of
    the clean samples look as wrong as a moved one) the precision is bounded by the model; there it must be at least
    3x what ranking by chance gives, and the issue's >= 0.5 is measured on the demo itself (bench/RESULTS.md §29b)."""
    paths, params, _ = modality_project
    proj = private_copy(paths, tmp_path / "proj")
    moved = move_labels(proj, 0.1)
    summary = run_audit(params, proj)
    table = pd.read_csv(proj.reports / "label_issues.csv")
    top = table["path"].head(len(moved))
    precision = top.isin(moved).sum() / len(moved)  # fewer rows than N (fewer flagged) count as misses
    chance = len(moved) / summary.audited
    text = params.backbone.name == "minilm"
    assert precision >= (0.5 if text else 3 * chance), (precision, len(moved), summary)
    assert table["path"].isin(moved).sum() >= 0.75 * len(moved)  # recall: most moved samples are flagged at all


def test_confident_learning_on_known_probabilities():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.1, 0.9], [0.95, 0.05]])
    given = np.array([0, 0, 1, 1, 0, 1])  # rows 4 and 5 carry the other class's label
    audit = confident_learning(probs, given)
    assert list(audit.ranked_issues()) == [5, 4]
    assert list(audit.suggested[[4, 5]]) == [1, 0]
    folds = stratified_folds(np.array(["a"] * 10 + ["b"] * 5), 5, seed=3)
    assert sorted(np.bincount(folds)) == [3, 3, 3, 3, 3]  # every fold the same size, each class spread over all


def test_the_audit_stage_reads_no_head_param_and_no_model():
    """A head change (`dvc exp run -S head.C=...`) must not re-run the audit: DVC re-runs a stage only when one of
    its deps or params changed, and the audit's are the manifest, the features, its code and seed/backbone/audit."""
    from ruamel.yaml import YAML

    from tests.conftest import REPO

    stage = YAML(typ="safe").load((REPO / "dvc.yaml").read_text())["stages"]["audit"]
    assert stage["params"] == ["seed", "backbone", "audit"]
    data_deps = [d for d in stage["deps"] if not d.startswith("tasks/")]
    assert data_deps == ["data/prepared/manifest.parquet", "data/features"]
