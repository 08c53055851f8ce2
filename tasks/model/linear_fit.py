"""Linear heads on cached features: logistic regression or a linear SVM (scikit-learn), C fixed or chosen by CV."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from tasks.core.errors import UserError
from tasks.core.params import Params
from tasks.core.progress import log
from tasks.model.head_format import Head


def class_weights(h, classes: set[str]):
    """None, 'balanced' or {class: weight} from head.class_weight; unknown classes are a one-line error."""
    if h.class_weight == "none":
        return None
    if h.class_weight == "balanced":
        return "balanced"
    unknown = sorted(set(h.class_weight) - classes)
    if unknown:
        raise UserError(f"head.class_weight: '{unknown[0]}' is not a class of the train split ({', '.join(sorted(classes))})")
    return {c: float(h.class_weight.get(c, 1.0)) for c in classes}


def _estimator(params: Params, c: float, y: np.ndarray):
    h = params.head
    weight = class_weights(h, set(y))
    if h.type == "linear_svm":
        return LinearSVC(C=c, max_iter=h.max_iter * 5, class_weight=weight, random_state=params.seed)
    return LogisticRegression(C=c, max_iter=h.max_iter, class_weight=weight, random_state=params.seed)


def choose_c(x: np.ndarray, y: np.ndarray, params: Params) -> tuple[float, dict[str, float]]:
    """C with the best mean macro F1 over stratified folds of the train split (ties: the smaller C)."""
    h = params.head
    folds = min(h.cv_folds, int(pd.Series(y).value_counts().min()))
    if folds < 2:
        raise UserError("head.C=auto needs at least 2 train images per class; set head.C to a number")
    cv = StratifiedKFold(folds, shuffle=True, random_state=params.seed)
    scores = {c: float(cross_val_score(_estimator(params, c, y), x, y, cv=cv, scoring="f1_macro").mean())
              for c in sorted(h.C_grid)}
    best = max(scores.items(), key=lambda kv: (round(kv[1], 6), -kv[0]))[0]
    return best, scores


def standardisation(x: np.ndarray, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the train features, or (0, 1) when head.standardize is off. A feature that is constant up to
    float noise (std below 1e-6 of the median feature's) keeps scale 1: dividing by its noise (MiniLM has a dimension
    at ~1e-33) would multiply any later change of it, a fine-tuning step or a new text, by ~1e30."""
    if params.head.standardize:
        scaler = StandardScaler().fit(x)
        scale = scaler.scale_.copy()
        scale[scale < 1e-6 * np.median(scale)] = 1.0
        return scaler.mean_, scale
    return np.zeros(x.shape[1]), np.ones(x.shape[1])


def fit_linear(x: np.ndarray, y: np.ndarray, params: Params, fingerprint: str = "") -> Head:
    """Fit the configured linear head (logistic regression or linear SVM, C fixed or by CV) as a one-layer Head."""
    h = params.head
    mu, sigma = standardisation(x, params)
    z = (x - mu) / sigma
    c = h.C
    if c == "auto":
        c, scores = choose_c(z, y, params)
        log(f"head: C by {min(h.cv_folds, int(pd.Series(y).value_counts().min()))}-fold CV (macro F1): "
            + ", ".join(f"{k:g}: {v:.3f}" for k, v in scores.items()) + f" -> C={c:g}")
    clf = _estimator(params, c, y)
    clf.fit(z, y)
    coef, intercept = clf.coef_, clf.intercept_
    if coef.shape[0] == 1:  # binary: sklearn keeps one row; make it a 2-logit layer with the same softmax
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    return Head([(coef, intercept)], [str(c) for c in clf.classes_], fingerprint, mu, sigma, h.type)
