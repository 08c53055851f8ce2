"""Heads on cached features, fitted by streaming L-BFGS over the store's shards: the same head as scikit-learn's, C by
the regularisation path, class weights, Dask, bounded memory, and the feature store's failure modes named."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from tasks.core.errors import UserError
from tasks.extraction.feature_store import open_store, split_features
from tasks.head import run_head, split_feature_rows
from tasks.training.chunk_sums import LocalSums
from tasks.training.feature_rows import FeatureRows
from tasks.training.linear_head import fit_linear
from tests.conftest import project_params, venv_env


@pytest.fixture(scope="module")
def features(built_project):
    """The built project's train/val/test features (whole, for the scikit-learn reference) and its train rows as a
    FeatureRows of many small chunks and no cache: every solver pass streams them from the shard files."""
    paths, params, _ = built_project
    x, y, rows, fp = split_features(params, paths, "train")
    xe = np.vstack([split_features(params, paths, s)[0] for s in ("val", "test")])
    ye = np.concatenate([split_features(params, paths, s)[1] for s in ("val", "test")])
    streamed = FeatureRows.from_store(open_store(params, paths), rows["sha256"].tolist(), chunk_bytes=64 << 10)
    return paths, x, y, xe, ye, fp, streamed


def _predict(head, x):
    return np.array(head.classes)[head.logits(x).argmax(1)]


@pytest.mark.parametrize("c", [0.1, 1.0])
def test_streamed_logistic_regression_is_scikit_learns(features, c):
    paths, x, y, xe, ye, fp, streamed = features
    assert streamed.n_chunks() >= 4  # the fit really runs chunk by chunk
    head, fit = fit_linear(LocalSums(streamed), y, project_params(paths, [f"head.C={c}"]), fp)
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(x), y)
    ours, theirs = _predict(head, xe), reference.predict(scaler.transform(xe))
    assert fit.converged and (ours == theirs).mean() >= 0.99
    assert abs((ours == ye).mean() - (theirs == ye).mean()) <= 0.005
    assert np.abs(head.probs(xe) - reference.predict_proba(scaler.transform(xe))).max() < 0.02


def test_streamed_linear_svm_is_liblinears(features):
    paths, x, y, xe, ye, fp, streamed = features
    head, fit = fit_linear(LocalSums(streamed), y,
                           project_params(paths, ["head.type=linear_svm", "head.C=0.01", "head.standardize=false"]), fp)
    svm = LinearSVC(C=0.01, max_iter=20000, tol=1e-6).fit(x, y)
    assert len(head.layers) == 1 and fit.converged
    assert np.abs(head.logits(xe) - svm.decision_function(xe)).max() < 0.02
    assert (_predict(head, xe) == svm.predict(xe)).mean() >= 0.99


def test_explicit_class_weights_shift_the_decision_and_unknown_classes_are_named(features):
    paths, x, y, xe, ye, fp, streamed = features
    plain, _ = fit_linear(LocalSums(streamed), y, project_params(paths), fp)
    heavy, _ = fit_linear(LocalSums(streamed), y, project_params(paths, ["head.class_weight={tools: 20}"]), fp)
    tools = plain.classes.index("tools")
    share = [(h.logits(xe).argmax(1) == tools).mean() for h in (plain, heavy)]
    assert share[1] > share[0]  # weighting a class up makes the head predict it more often
    with pytest.raises(UserError, match="head.class_weight: 'dragons' is not a class"):
        fit_linear(LocalSums(streamed), y, project_params(paths, ["head.class_weight={dragons: 2}"]), fp)


def test_c_auto_walks_the_path_and_records_every_score_and_the_choice(built_copy, capfd):
    params = project_params(built_copy, ["head.C=auto", "head.C_grid=[0.01, 0.1, 1.0]", "head.cv_folds=3"])
    run_head(params, built_copy)
    fit = json.loads((built_copy.models / "head.json").read_text())["fit"]
    assert set(fit["C_scores"]) == {"0.01", "0.1", "1"} and fit["cv_folds"] == 3
    best = max(fit["C_scores"].items(), key=lambda kv: (round(kv[1], 6), -float(kv[0])))
    assert fit["C"] == float(best[0])
    assert f"-> C={fit['C']:g}" in capfd.readouterr().err
    from tasks.evaluate import run_evaluate
    from tasks.export import run_export

    run_export(params, built_copy)
    run_evaluate(params, built_copy)  # the card says which C the path chose, not "C=auto"
    card = (built_copy.models / "MODEL_CARD.md").read_text()
    assert f"C={fit['C']:g}, chosen by 3-fold CV (macro F1) over 0.01: " in card


def test_finetune_start_is_the_same_for_every_head_when_no_fine_tune_trains(built_copy):
    """What the fine-tune stage depends on instead of head.npz (DVC then skips it on a head change when it would
    train nothing): fixed with strategy none, the head's sha256 with a strategy that trains."""
    from tasks.model.finetune_record import head_sha256

    start = built_copy.finetune_start
    seen = {}
    for strategy in ("none", "last_n"):
        for c in (0.05, 0.5):
            run_head(project_params(built_copy, [f"head.C={c}", f"finetune.strategy={strategy}"]), built_copy)
            seen[strategy, c] = start.read_bytes()
            if strategy != "none":
                assert json.loads(seen[strategy, c])["head_sha256"] == head_sha256(built_copy)
    assert seen["none", 0.05] == seen["none", 0.5]
    assert len({seen["none", 0.5], seen["last_n", 0.05], seen["last_n", 0.5]}) == 3


def test_a_head_that_does_not_converge_says_so(built_copy, capfd):
    run_head(project_params(built_copy, ["head.C=100", "head.max_iter=10"]), built_copy)
    fit = json.loads((built_copy.models / "head.json").read_text())["fit"]
    assert fit["converged"] is False and fit["iterations"] == 10
    assert "WARNING: the solver stopped after 10 iterations with gradient norm" in capfd.readouterr().err


@pytest.mark.slow
def test_the_dask_path_fits_the_same_head_as_the_local_one(built_copy):
    params = project_params(built_copy, ["head.C=auto", "head.C_grid=[0.03, 0.3]", "head.cv_folds=2"])
    local = run_head(params, built_copy)
    local_npz = dict(np.load(built_copy.head))
    run_head(params, built_copy, dask="local")
    dask_npz = dict(np.load(built_copy.head))
    assert json.loads((built_copy.models / "head.json").read_text())["fit"]["dask"] == "local"
    for key in ("weight_0", "bias_0", "mean", "scale"):
        assert np.allclose(dask_npz[key], local_npz[key], rtol=1e-3, atol=1e-4), key
    assert local.classes == list(dask_npz["classes"])


def _store_files(paths, params):
    store = open_store(params, paths)
    return store, sorted(store.dir.glob("shard-*.npy"))


def test_a_missing_shard_is_named(built_copy):
    params = project_params(built_copy)
    store, shards = _store_files(built_copy, params)
    shards[0].unlink()
    with pytest.raises(UserError, match=rf"{shards[0].name} is missing .*run the features stage"):
        split_feature_rows(params, built_copy, "train")


def test_a_truncated_shard_is_named(built_copy):
    params = project_params(built_copy)
    store, shards = _store_files(built_copy, params)
    size = shards[0].stat().st_size
    with open(shards[0], "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(UserError, match=rf"{shards[0].name} is truncated \({size // 2} of {size} bytes\)"):
        split_feature_rows(params, built_copy, "train")


def test_features_of_another_backbone_are_named(built_copy):
    params = project_params(built_copy)
    store, shards = _store_files(built_copy, params)
    recipe = json.loads((store.dir / "recipe.json").read_text())
    (store.dir / "recipe.json").write_text(json.dumps(recipe | {"backbone": "resnet18"}))
    with pytest.raises(UserError, match=r"holds features of another recipe \(backbone: 'resnet18'"):
        split_feature_rows(params, built_copy, "train")
    (store.dir / "recipe.json").write_text(json.dumps(recipe))
    keys, rows = json.loads(shards[0].with_suffix(".keys.json").read_text()), np.load(shards[0])
    for f in store.dir.glob("shard-000000.*"):
        f.unlink()
    store = open_store(params, built_copy)  # the rows again, as two shards: the second one 7 features wide
    store.append(keys[:len(keys) // 2], rows[:len(keys) // 2])
    store.append(keys[len(keys) // 2:], np.zeros((len(keys) - len(keys) // 2, 7), np.float32))
    with pytest.raises(UserError, match="mixes feature widths"):
        split_feature_rows(params, built_copy, "train")


PEAK_RSS_OF_A_FIT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from tasks.core.params import Params
    from tasks.extraction.feature_store import FeatureStore
    from tasks.training.chunk_sums import LocalSums
    from tasks.training.feature_rows import FeatureRows
    from tasks.training.linear_head import fit_linear

    spec = json.load(open(sys.argv[1]))
    features = FeatureRows.from_store(FeatureStore(spec["root"], "synthetic"), spec["keys"], chunk_bytes=2 << 20)
    labels = np.array(spec["labels"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    head, fit = fit_linear(LocalSums(features), labels, Params(), "synthetic")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"grown_kb": grown, "bytes_read": features.bytes_read, "converged": fit.converged}))
""")


def test_peak_memory_of_a_fit_is_bounded_by_its_chunks_not_the_store(tmp_path):
    from tasks.extraction.feature_store import FeatureStore

    rng = np.random.default_rng(0)
    store, dim, labels, keys = FeatureStore(tmp_path, "synthetic"), 384, [], []
    centres = rng.normal(size=(4, dim)).astype(np.float32)
    for s in range(6):  # 6 shards of 8,000 rows: 73 MB of features
        y = rng.integers(0, 4, 8_000)
        k = [f"{s:02d}{i:08d}" for i in range(8_000)]
        store.append(k, centres[y] + rng.normal(scale=3.0, size=(8_000, dim)).astype(np.float32))
        labels += [f"c{v}" for v in y]
        keys += k
    matrix_bytes = len(keys) * dim * 4
    (tmp_path / "spec.json").write_text(json.dumps({"root": str(tmp_path), "keys": keys, "labels": labels}))
    out = subprocess.run([sys.executable, "-c", PEAK_RSS_OF_A_FIT, str(tmp_path / "spec.json")], env=venv_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["converged"] and got["bytes_read"] >= 3 * matrix_bytes  # it streamed the shards, pass after pass
    # 73 MB of features in 2 MB chunks: the fit grows the process by a few chunks, never by the matrix
    assert got["grown_kb"] * 1024 < matrix_bytes / 4, got


@pytest.mark.slow
def test_the_mlp_trains_in_mini_batches_streamed_from_the_shards(features, built_project):
    from tasks.training.mlp_fit import fit_mlp

    paths, x, y, xe, ye, fp, streamed = features
    params = project_params(paths, ["head.type=mlp", "head.mlp.max_epochs=30", "head.mlp.patience=5"])
    val, yv, _ = split_feature_rows(params, paths, "val")
    before = streamed.bytes_read
    head = fit_mlp(streamed, y, val, yv, params, fp)
    assert streamed.bytes_read - before >= 5 * streamed.n * streamed.dim * 4  # epochs re-read the shards, uncached
    assert head.kind == "mlp" and (_predict(head, xe) == ye).mean() > 0.6


def test_a_fit_gives_the_same_bits_every_time_though_two_threads_sum_each_chunk(features):
    paths, x, y, xe, ye, fp, streamed = features
    params = project_params(paths, ["head.C=0.3"])
    heads = [fit_linear(LocalSums(streamed), y, params, fp)[0] for _ in range(2)]
    assert all((a == b).all() for a, b in zip(heads[0].layers[0], heads[1].layers[0]))
