"""Feature store and engines: content-addressed and incremental (for every modality), torch == ONNX Runtime, clear
weight errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.core.errors import UserError
from tasks.core.params import BackboneParams
from tasks.extraction.feature_store import open_store
from tasks.features import run_features
from tasks.ingest import run_ingest
from tasks.model.backbones import build_backbone, load_weights_into
from tests.conftest import bbc_subset, make_project, project_params


def test_incremental_extraction_only_runs_new_images_and_renames_cost_nothing(tmp_path, clipart_raw):
    src = tmp_path / "src"
    for c in ("plants", "buildings"):
        shutil.copytree(clipart_raw / c, src / c)
    holdout = sorted((src / "plants").rglob("*.png"))[-5:]
    parked = tmp_path / "parked"
    parked.mkdir()
    for f in holdout:
        shutil.move(f, parked / f.name)
    paths = make_project(tmp_path / "proj", src)
    params = project_params(paths)

    run_ingest(params, paths)
    first = run_features(params, paths)
    assert first.extracted == first.samples > 0 and first.cache_hits == 0

    again = run_features(params, paths)
    assert again.extracted == 0 and again.cache_hits == first.samples

    for f in sorted((paths.raw / "buildings").rglob("*.png"))[:3]:  # rename/move: same bytes, same key
        f.rename(f.with_name("moved_" + f.name))
    for f in parked.iterdir():
        shutil.copy(f, paths.raw / "plants" / f.name)
    run_ingest(params, paths)
    third = run_features(params, paths)
    assert third.extracted == 5
    assert third.cache_hits == first.samples

    store = open_store(params, paths)
    manifest = pd.read_parquet(paths.manifest)
    feats = store.get(manifest["sha256"].tolist())
    assert feats.shape == (len(manifest), 1280) and np.isfinite(feats).all()
    assert len(list(store.dir.glob("shard-*.npy"))) == 2  # one shard per run that extracted something


def _new_images(paths, tmp_path) -> list:
    """Three images no project has seen: mirrored copies of three of its own (new bytes, so new keys)."""
    from PIL import Image

    added = []
    for d in sorted(x for x in paths.raw.iterdir() if x.is_dir())[:3]:
        src = sorted(d.rglob("*.png"))[0]
        dest = d / f"new_{src.name}"
        Image.open(src).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(dest)
        added.append(dest)
    return added


def _new_texts(paths, tmp_path) -> list:
    """One article per topic that the text project's 20 per topic do not hold."""
    added = []
    for d in bbc_subset(tmp_path / "more", 1, skip=40).iterdir():
        for f in d.iterdir():
            added.append(paths.raw / d.name / f"new_{f.name}")
            shutil.copy(f, added[-1])
    return added


NEW_SAMPLES = {"image": _new_images, "text": _new_texts}


def test_only_new_samples_are_extracted_and_the_rest_come_from_the_cache(modality_project, tmp_path):
    from tasks.modality.registry import modality_for

    paths, params, _ = modality_project
    assert run_features(params, paths).extracted == 0
    added = NEW_SAMPLES[modality_for(params.backbone).name](paths, tmp_path)
    try:
        run_ingest(params, paths)
        again = run_features(params, paths)
        assert again.extracted == len(added) > 0 and again.cache_hits == again.samples - len(added)
    finally:
        for f in added:
            f.unlink()
        run_ingest(params, paths)


def test_torch_and_onnxruntime_engines_agree(tmp_path, clipart_raw):
    src = tmp_path / "src"
    shutil.copytree(clipart_raw / "tools", src / "tools")
    shutil.copytree(clipart_raw / "plants", src / "plants")
    out = {}
    for engine in ("torch", "onnxruntime"):
        paths = make_project(tmp_path / engine, src, [f"features.engine={engine}"])
        params = project_params(paths)
        run_ingest(params, paths)
        assert run_features(params, paths).engine == engine
        keys = pd.read_parquet(paths.manifest)["sha256"].tolist()
        out[engine] = open_store(params, paths).get(keys)
    assert out["torch"].shape == out["onnxruntime"].shape
    assert np.abs(out["torch"] - out["onnxruntime"]).max() <= 1e-4


def test_weights_that_do_not_fit_name_the_first_mismatched_tensor(tmp_path):
    lite = build_backbone(BackboneParams(name="tf_efficientnet_lite0", weights="random")).model
    sd = lite.state_dict()
    first = next(iter(sd))
    sd[first] = torch.zeros(7, 3, 3, 3)  # wrong shape for conv_stem.weight
    bad = tmp_path / "bad.pt"
    torch.save(sd, bad)
    with pytest.raises(UserError, match=r"first mismatched tensor conv_stem.weight has shape \(7, 3, 3, 3\), "
                                        r"expected \(32, 3, 3, 3\)"):
        load_weights_into(build_backbone(BackboneParams(name="tf_efficientnet_lite0", weights="random")).model,
                          bad, "backbone.weights")
    resnet = tmp_path / "resnet18.pt"
    torch.save(build_backbone(BackboneParams(name="resnet18", weights="random")).model.state_dict(), resnet)
    with pytest.raises(UserError, match="wrong weights file for this backbone"):
        build_backbone(BackboneParams(name="tf_efficientnet_lite0", weights=f"file:{resnet}"))
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="is not a readable PyTorch state dict"):
        build_backbone(BackboneParams(name="resnet18", weights=f"file:{tmp_path / 'garbage.pt'}"))


def test_file_weights_load_a_torchvision_backbone(tmp_path):
    """The offline path for users behind firewalls: a local state dict named for the architecture."""
    torch.manual_seed(1)
    ref = build_backbone(BackboneParams(name="resnet18", weights="random"), seed=1).model
    f = tmp_path / "r18.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, f)
    loaded = build_backbone(BackboneParams(name="resnet18", weights=f"file:{f}"))
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), ref(x))
    assert loaded.feature_dim == 512 and len(loaded.blocks) == 4


def test_a_backbone_without_packaged_weights_never_downloads_by_default():
    from tasks.model.backbone_catalog import weights_key

    with pytest.raises(UserError, match=r"backbone.weights: 'resnet18' has no weights shipped in a package; set "
                                        r"backbone.weights to file:<path> .* or hub"):
        weights_key(BackboneParams(name="resnet18"))
    assert weights_key(BackboneParams(name="resnet18", weights="hub")) == "hub:DEFAULT"  # asked for: allowed


def test_packaged_lite2_weights_load_offline():
    """The second packaged backbone: names differ from timm's, tensors map 1:1 in order."""
    loaded = build_backbone(BackboneParams(name="tf_efficientnet_lite2"))
    assert loaded.feature_dim == 1280 and len(loaded.blocks) == 7
    assert len(loaded.weights_id) == 64  # sha256 of the packaged file, part of the feature fingerprint


def _features_project(tmp_path, clipart_raw, overrides=()):
    src = tmp_path / "src"
    for c in ("animals", "food", "tools"):
        shutil.copytree(clipart_raw / c, src / c)
    paths = make_project(tmp_path / "proj", src, list(overrides))
    params = project_params(paths)
    run_ingest(params, paths)
    return paths, params


@pytest.mark.slow
def test_kill_9_mid_extraction_loses_at_most_one_shard_and_the_next_run_resumes(tmp_path, clipart_raw):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import venv_env

    paths, params = _features_project(tmp_path, clipart_raw, ["features.shard_size=16", "features.batch_size=8",
                                                              "features.engine=torch"])
    store_dir = open_store(params, paths).dir
    proc = subprocess.Popen([sys.executable, "-m", "tasks.features"], cwd=paths.root, env=venv_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list(store_dir.glob("shard-*.keys.json"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = len(open_store(params, paths))
    total = pd.read_parquet(paths.manifest)["sha256"].nunique()
    assert 32 <= committed < total, (committed, total)  # it really died mid-way, after whole shards

    resumed = run_features(params, paths)
    assert resumed.cache_hits == committed and resumed.extracted == total - committed
    assert not list(store_dir.glob(".shard-*"))  # no temp files left behind
    keys = pd.read_parquet(paths.manifest)["sha256"].tolist()
    after_crash = open_store(params, paths).get(keys)
    clean_paths = make_project(tmp_path / "clean", paths.raw, ["features.engine=torch"])
    run_ingest(project_params(clean_paths), clean_paths)
    run_features(project_params(clean_paths), clean_paths)
    assert np.abs(open_store(project_params(clean_paths), clean_paths).get(keys) - after_crash).max() <= 1e-5


def test_a_second_writer_gets_a_clear_error_not_a_corrupt_store(tmp_path, clipart_raw):
    paths, params = _features_project(tmp_path, clipart_raw)
    lock = open_store(params, paths).lock()
    lock.acquire()
    try:
        with pytest.raises(UserError, match="is being written by another run"):
            run_features(params, paths)
    finally:
        lock.release()
    assert run_features(params, paths).extracted > 0


@pytest.mark.slow
def test_a_second_process_on_the_same_store_is_refused_and_the_store_stays_intact(tmp_path, clipart_raw):
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import venv_env

    paths, params = _features_project(tmp_path, clipart_raw, ["features.shard_size=8", "features.batch_size=8",
                                                              "features.engine=torch"])
    store_dir = open_store(params, paths).dir
    first = subprocess.Popen([sys.executable, "-m", "tasks.features"], cwd=paths.root, env=venv_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(store_dir.glob("shard-*.keys.json")) and time.time() < deadline and first.poll() is None:
        time.sleep(0.02)
    first.send_signal(signal.SIGSTOP)  # paused mid-write, holding the lock: the overlap does not depend on timing
    try:
        assert first.poll() is None and len(list(store_dir.glob("shard-*.keys.json"))) < 20  # really mid-way
        second = subprocess.run([sys.executable, "-m", "tasks.features"], cwd=paths.root, env=venv_env(),
                                capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert second.stderr.strip().splitlines()[-1].startswith(f"error: feature store {store_dir} is being written by "
                                                             f"another run")
    keys = pd.read_parquet(paths.manifest)["sha256"].unique().tolist()
    shard_keys = [k for f in sorted(store_dir.glob("shard-*.keys.json")) for k in json.loads(f.read_text())]
    assert sorted(shard_keys) == sorted(keys)  # every image once: nothing interleaved, nothing lost
    assert not list(store_dir.glob(".shard-*"))
    assert np.isfinite(open_store(params, paths).get(keys)).all()
    again = run_features(params, paths)
    assert again.extracted == 0 and again.cache_hits == len(keys)


def test_a_named_intermediate_layer_gives_pooled_features_and_its_own_fingerprint():
    from tasks.extraction.fingerprint import feature_fingerprint

    p = BackboneParams(name="tf_efficientnet_lite0", weights="random", layer="blocks.4")
    loaded = build_backbone(p)
    assert loaded.feature_dim == 112
    with torch.inference_mode():
        assert loaded.model(torch.rand(2, 3, 64, 64)).shape == (2, 112)
    assert feature_fingerprint(p) != feature_fingerprint(BackboneParams(name="tf_efficientnet_lite0", weights="random"))
    with pytest.raises(UserError, match=r"backbone.layer: 'blocks.44' is not a module.*did you mean"):
        build_backbone(BackboneParams(name="tf_efficientnet_lite0", weights="random", layer="blocks.44"))


def test_an_image_deleted_after_ingest_is_a_one_line_error_naming_it(tmp_path, clipart_raw):
    paths, params = _features_project(tmp_path, clipart_raw)
    victim = paths.root / pd.read_parquet(paths.manifest)["path"].iloc[3]
    victim.unlink()
    with pytest.raises(UserError, match=rf"{victim.name}: listed in the manifest but cannot be read now.*re-run ingest"):
        run_features(params, paths)
    run_ingest(params, paths)  # as the message says: ingest forgets the file, extraction goes through
    assert run_features(params, paths).extracted > 0


def test_a_file_edited_after_ingest_stops_extraction_with_its_name(tmp_path, clipart_raw):
    raw = tmp_path / "src"
    for c in ("animals", "food"):
        for f in sorted((clipart_raw / c).rglob("*.png"))[:8]:
            (raw / c).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, raw / c / f.name)
    paths = make_project(tmp_path / "proj", raw)
    params = project_params(paths)
    run_ingest(params, paths)
    edited = sorted((paths.raw / "food").glob("*.png"))[0]
    edited.write_bytes(edited.read_bytes() + b"\0")  # still decodes; no longer the bytes ingest validated
    with pytest.raises(UserError, match=rf"{edited.name}: changed since ingest .*re-run ingest") as exc:
        run_features(params, paths)
    assert "\n" not in str(exc.value)
    assert len(open_store(params, paths)) == 0  # nothing stored under the old content's key


@pytest.mark.slow
def test_a_layer_list_is_each_layer_pooled_and_concatenated_through_features_head_onnx_and_evaluate(tmp_path,
                                                                                                   clipart_raw):
    from tasks.core.stages import stage_function
    from tasks.extraction.fingerprint import feature_fingerprint
    from tasks.modality.shipped_model import build_classifier
    from tasks.model.head_format import Head
    from tasks.runtime.onnx_classifier import OnnxClassifier

    paths, _ = _features_project(tmp_path, clipart_raw)
    keys = pd.read_parquet(paths.manifest)["sha256"].tolist()
    single = {}
    for layer in ("blocks.4", "pooled"):
        params = project_params(paths, [f"backbone.layer={layer}"])
        run_features(params, paths)
        single[layer] = open_store(params, paths).get(keys)
    params = project_params(paths, ["backbone.layer=[blocks.4, pooled]"])
    assert params.backbone.layer == ["blocks.4", "pooled"]
    assert len({feature_fingerprint(project_params(paths, [f"backbone.layer={v}"]).backbone)
                for v in ("blocks.4", "pooled", "[blocks.4, pooled]", "[pooled, blocks.4]")}) == 4
    for stage in ("features", "head", "finetune", "export", "evaluate"):
        stage_function(stage)(params, paths)
    both = open_store(params, paths).get(keys)
    assert both.shape == (len(keys), 112 + 1280)
    # the concatenation is exactly the two layers' own features, in the order named
    assert np.abs(both[:, :112] - single["blocks.4"]).max() <= 1e-4
    assert np.abs(both[:, 112:] - single["pooled"]).max() <= 1e-4

    clf = OnnxClassifier(paths.onnx)  # one graph with the same concatenation inside, composed without torch
    images = np.stack([np.asarray(x) for x in _parity_sample(params, paths)])
    with torch.inference_mode():
        expected = build_classifier(params, Head.load(paths.head))(torch.from_numpy(images))[1].numpy()
    assert np.abs(clf.probs(images) - expected).max() <= 1e-4
    how = json.loads((paths.metrics / "evaluation.json").read_text())
    assert "head sub-graph on cached features" in how["artifact"]
    with pytest.raises(UserError, match=r"backbone.layer: 'blocks.44' is not a module.*did you mean"):
        build_backbone(project_params(paths, ["backbone.layer=[blocks.44, pooled]"]).backbone)


def _parity_sample(params, paths):
    from tasks.modality.samples import parity_samples

    return parity_samples(params, paths)
