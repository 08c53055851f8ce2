"""The promotion gate knows the noise (issue 29): on the clip-art project's cached features, heads stand in for
retrains (a champion on 85 % of train; challengers on clean or poisoned data), compared paired on the same test
samples with `tasks.evaluation.intervals.paired_difference` and judged by `tasks.registry.champions.decide`:
(a) more clean data from the same distribution is promoted, (b) a batch filed under the wrong class is rejected,
(c) two seeds of the same retrain reach the same verdict."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.core.params import Params

HOLD_BACK = 0.15


def _split(paths, params, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(cached feature rows, labels) of one split of the built project."""
    from tasks.dataset.manifest import read_manifest, split_rows
    from tasks.extraction.feature_store import open_store

    rows = split_rows(read_manifest(paths), split)
    return np.asarray(open_store(params, paths).get(rows["sha256"].tolist())), rows["label"].to_numpy()


def _fit(x: np.ndarray, y: np.ndarray):
    """A logistic-regression head on standardised features (the project's default head type and C), BLAS on one
    thread (on 2 shared cores a threaded BLAS makes this fit 10x slower)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(x, y)


def _held_back(y: np.ndarray, seed: int) -> np.ndarray:
    """A stratified HOLD_BACK share of the train rows (boolean mask), seeded."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        mask[rng.choice(idx, int(round(HOLD_BACK * len(idx))), replace=False)] = True
    return mask


def _verdict(champion, challenger, views: dict, seed: int, margin: float = 0.0) -> dict:
    from tasks.evaluation.intervals import paired_difference
    from tasks.registry.champions import decide

    params = Params.model_validate({"seed": seed, "retrain": {"margin": margin}})
    comparisons = {name: paired_difference(y, challenger.predict(x), champion.predict(x), "f1_macro",
                                           sorted(set(y)), seed=seed) for name, (x, y) in views.items()}
    return decide(params, comparisons) | {"comparison": comparisons}


def _scenarios(built_project, seed: int) -> dict[str, dict]:
    """Verdicts of the three retrains of one seed: clean, mislabelled batch, off-topic batch."""
    paths, params, _ = built_project
    x, y = _split(paths, params, "train")
    xt, yt = _split(paths, params, "test")
    back = _held_back(y, seed)
    champion = _fit(x[~back], y[~back])
    classes = sorted(set(y))
    moved = {c: classes[(i + 1) % len(classes)] for i, c in enumerate(classes)}
    out = {}

    # (a) the held-back 15 %, clean, comes back: the champion's test split is the current one and the hold-out
    out["clean"] = _verdict(champion, _fit(x, y), {"test": (xt, yt), "holdout": (xt, yt)}, seed)

    # (b) the held-back 15 % comes back filed under the wrong class, with a batch of one class's images
    # (re-encoded copies: their features move a hair) filed under its neighbour: what a wrong folder does
    rng = np.random.default_rng(seed)
    victim = classes[seed % len(classes)]
    copies = x[y == victim] + rng.normal(0, 1e-3, size=(int((y == victim).sum()), x.shape[1]))
    bad_x = np.vstack([x, copies])
    bad_y = np.concatenate([np.where(back, [moved[c] for c in y], y), np.full(len(copies), moved[victim])])
    poisoned = _fit(bad_x, bad_y)
    # new test rows arrive with the same wrong labels: the current split is poisoned for both models, not the hold-out
    current = (np.vstack([xt, xt[yt == victim][:5]]), np.concatenate([yt, np.full(min(5, (yt == victim).sum()),
                                                                                    moved[victim])]))
    out["mislabelled"] = _verdict(champion, poisoned, {"test": current, "holdout": (xt, yt)}, seed)
    return out


@pytest.fixture(scope="module")
def verdicts(built_project) -> dict[int, dict[str, dict]]:
    return {seed: _scenarios(built_project, seed) for seed in (0, 1)}


def test_more_clean_data_is_promoted_for_every_seed(verdicts):
    for seed, got in verdicts.items():
        clean = got["clean"]
        assert clean["action"] == "promoted", (seed, clean["reason"])
        view = clean["comparison"]["holdout"]
        assert view["ci_low"] <= view["difference"] <= view["ci_high"] and view["n"] > 0
        assert "difference" in clean["reason"] and "[95%" in clean["reason"] and "n=" in clean["reason"]


def test_a_batch_filed_under_the_wrong_class_is_rejected_for_every_seed(verdicts):
    for seed, got in verdicts.items():
        bad = got["mislabelled"]
        assert bad["action"] == "rejected", (seed, bad["reason"])
        assert bad["comparison"]["holdout"]["ci_high"] < 0  # worse beyond the noise on the clean hold-out
        assert "hold-out" in bad["rule"]


def test_two_seeds_of_the_same_retrain_reach_the_same_verdict_and_the_margin_is_the_users(verdicts, built_project):
    assert {s: {k: v["action"] for k, v in got.items()} for s, got in verdicts.items()} == {
        0: {"clean": "promoted", "mislabelled": "rejected"}, 1: {"clean": "promoted", "mislabelled": "rejected"}}
    # the margin moves the line: a margin above the whole harm lets the poisoned retrain through
    from tasks.registry.champions import decide

    bad = verdicts[0]["mislabelled"]["comparison"]
    lenient = decide(Params.model_validate({"retrain": {"margin": 1.0}}), bad)
    assert lenient["action"] == "promoted" and "-1" in lenient["rule"]


def test_a_data_check_holds_a_promotion_but_never_rescues_a_rejection(verdicts):
    from tasks.registry.champions import decide

    holds = {"drift": "incoming data drifted"}
    clean, bad = verdicts[0]["clean"]["comparison"], verdicts[0]["mislabelled"]["comparison"]
    held = decide(Params(), clean, holds)
    assert held["action"] == "held" and "drift" in held["rule"] and "incoming data drifted" in held["reason"]
    assert decide(Params(), bad, holds)["action"] == "rejected"
    assert decide(Params(), {})["action"] == "promoted"  # no champion: nothing to compare with
