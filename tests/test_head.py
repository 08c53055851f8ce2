"""Heads on cached features: C by cross-validation, linear SVM, class weights — all exact as one linear layer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import LinearSVC

from tasks.core.errors import UserError
from tasks.extraction.feature_store import split_features
from tasks.model.linear_fit import choose_c, fit_linear
from tests.conftest import project_params


@pytest.fixture(scope="module")
def train_features(built_project):
    paths, params, _ = built_project
    x, y, _, fp = split_features(params, paths, "train")
    xv, yv, _, _ = split_features(params, paths, "val")
    return paths, x, y, xv, yv, fp


def test_c_auto_is_chosen_from_the_grid_by_cross_validation(train_features):
    paths, x, y, xv, yv, fp = train_features
    params = project_params(paths, ["head.C=auto", "head.C_grid=[0.01, 0.1, 1.0]", "head.cv_folds=3"])
    best, scores = choose_c((x - x.mean(0)) / (x.std(0) + 1e-12), y, params)
    assert set(scores) == {0.01, 0.1, 1.0} and best in scores
    assert scores[best] == max(scores.values())
    head = fit_linear(x, y, params, fp)
    assert (np.array(head.classes)[head.logits(xv).argmax(1)] == yv).mean() > 0.5


def test_linear_svm_head_is_exactly_a_linear_layer(train_features):
    paths, x, y, xv, yv, fp = train_features
    params = project_params(paths, ["head.type=linear_svm", "head.C=0.01", "head.standardize=false"])
    head = fit_linear(x, y, params, fp)
    svm = LinearSVC(C=0.01, max_iter=params.head.max_iter * 5, random_state=params.seed).fit(x, y)
    assert len(head.layers) == 1
    assert np.allclose(head.logits(xv), svm.decision_function(xv), atol=1e-6)
    assert (np.array(head.classes)[head.logits(xv).argmax(1)] == svm.predict(xv)).all()


def test_explicit_class_weights_shift_the_decision_and_unknown_classes_are_named(train_features):
    paths, x, y, xv, yv, fp = train_features
    plain = fit_linear(x, y, project_params(paths))
    heavy = fit_linear(x, y, project_params(paths, ["head.class_weight={tools: 20}"]))
    tools = plain.classes.index("tools")
    share = [(h.logits(xv).argmax(1) == tools).mean() for h in (plain, heavy)]
    assert share[1] > share[0]  # weighting a class up makes the head predict it more often
    with pytest.raises(UserError, match="head.class_weight: 'dragons' is not a class"):
        fit_linear(x, y, project_params(paths, ["head.class_weight={dragons: 2}"]))
