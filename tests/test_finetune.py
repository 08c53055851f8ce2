"""Fine-tuning: BN statistics of frozen blocks stay put, resume after a kill reproduces the run, the stage never
ships a model worse than the frozen head on val, LP-FT on a Fashion-MNIST subset, and the MLP head exports as itself."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.core.errors import UserError
from tasks.dataset.manifest import read_manifest
from tasks.dataset.manifest_samples import load_images
from tasks.model.backbones import build_backbone
from tasks.model.head_format import Head
from tasks.model.image_model import ImageModel
from tasks.model.torch_head import HeadModule
from tasks.model.units import backbone_units
from tasks.runtime.onnx_classifier import OnnxClassifier
from tasks.training.checkpoints import state_sha256
from tasks.training.freezing import apply_depth, param_groups, set_train_modes
from tests.conftest import make_project, project_params, venv_env


def _build(paths, overrides=()):
    from tasks.features import run_features
    from tasks.head import run_head
    from tasks.ingest import run_ingest

    params = project_params(paths, list(overrides))
    for stage in (run_ingest, run_features, run_head):
        stage(params, paths)
    return params


@pytest.fixture(scope="module")
def ft_project(tmp_path_factory, clipart_raw):
    """Clip-art at 96 px with features and a logistic-regression head; each test copies it before changing it."""
    paths = make_project(tmp_path_factory.mktemp("ft") / "base", clipart_raw)
    _build(paths)
    return paths


def _copy(paths, dest):
    shutil.copytree(paths.root, dest, symlinks=True)
    return type(paths)(dest)


def _bn_buffers(unit) -> list[torch.Tensor]:
    return [b.detach().clone() for m in unit for sub in m.modules()
            if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm) for b in (sub.running_mean, sub.running_var)]


@pytest.mark.parametrize("bn", ["train", "eval"])
def test_frozen_blocks_keep_bn_statistics_and_weights(ft_project, bn):
    params = project_params(ft_project, ["finetune.strategy=last_n", "finetune.last_n=2", f"finetune.bn={bn}"])
    loaded = build_backbone(params.backbone, params.seed)
    units = backbone_units(loaded.model, loaded.blocks)
    probe = Head.load(ft_project.head)
    model = ImageModel(loaded.model, loaded.spec.mean, loaded.spec.std, head=HeadModule(probe))
    rows = read_manifest(ft_project).query("split == 'train'").head(64)
    x = torch.from_numpy(load_images(rows, ft_project, 96, "pad", 40_000_000))
    y = torch.as_tensor([probe.classes.index(c) for c in rows["label"]])
    before = [_bn_buffers(u) for u in units.modules]
    weights = [[q.detach().clone() for q in units.parameters(i)] for i in range(len(units))]
    apply_depth(units, 2)
    set_train_modes(model, units, 2, bn)
    assert not any(m.training for u in units.modules[2:] for top in u for m in top.modules())  # no dropout either
    opt = torch.optim.AdamW(param_groups(model.head, units, params.finetune), lr=1e-3)
    for batch in torch.arange(64).split(16):
        loss = torch.nn.functional.cross_entropy(model(x[batch])[0], y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = [_bn_buffers(u) for u in units.modules]
    for i in range(2, len(units)):  # frozen units: statistics and weights bitwise unchanged
        assert all(torch.equal(a, b) for a, b in zip(before[i], after[i])), units.names[i]
        assert all(torch.equal(a, b) for a, b in zip(weights[i], units.parameters(i))), units.names[i]
    trained = [not all(torch.equal(a, b) for a, b in zip(weights[i], units.parameters(i))) for i in range(2)]
    assert all(trained)  # the two top units did train
    moved = [not all(torch.equal(a, b) for a, b in zip(before[i], after[i])) for i in range(2)]
    assert all(moved) if bn == "train" else not any(moved)


def _finetune_cmd(overrides):
    cmd = [sys.executable, "-m", "tasks.finetune"]
    for o in overrides:
        cmd += ["-S", o]
    return cmd


@pytest.mark.slow
def test_resume_after_kill_reproduces_the_uninterrupted_run(ft_project, tmp_path):
    overrides = ["finetune.strategy=gradual", "finetune.epochs=3", "finetune.patience=5", "finetune.batch_size=16"]
    straight = _copy(ft_project, tmp_path / "straight")
    subprocess.run(_finetune_cmd(overrides), cwd=straight.root, env=venv_env(), check=True, capture_output=True)

    killed = _copy(ft_project, tmp_path / "killed")
    last = killed.checkpoints / "finetune" / "last.pt"
    proc = subprocess.Popen(_finetune_cmd(overrides), cwd=killed.root, env=venv_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # during epoch 2, right after the epoch-1 checkpoint landed
    assert proc.wait() == -signal.SIGKILL
    after_epoch_1 = torch.load(last, weights_only=True)
    assert after_epoch_1["epoch"] == 1
    assert not (killed.finetune / "history.csv").exists()

    resumed = subprocess.run(_finetune_cmd(overrides), cwd=killed.root, env=venv_env(), check=True,
                             capture_output=True, text=True)
    assert "resuming after epoch 1" in resumed.stderr
    a = pd.read_csv(straight.finetune / "history.csv").drop(columns="seconds")
    b = pd.read_csv(killed.finetune / "history.csv").drop(columns="seconds")
    assert list(a["epoch"]) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(a, b, check_exact=True)  # every epoch's losses bitwise equal
    sa, sb = (json.loads((p.finetune / "summary.json").read_text()) for p in (straight, killed))
    assert (sa["kept"], sa["best_epoch"]) == (sb["kept"], sb["best_epoch"])
    # the weights both runs ended on (kept or not: on this data the frozen head may win), bitwise
    assert sa["final_state_sha256"] == sb["final_state_sha256"]
    assert state_sha256(after_epoch_1["model"]) != sa["final_state_sha256"]  # epochs 2 and 3 moved the weights
    if sa["kept"] == "finetuned":
        ma, mb = (torch.load(p.finetune / "model.pt", weights_only=True) for p in (straight, killed))
        assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert not last.exists()  # a finished run leaves nothing to resume


@pytest.mark.slow  # a fine-tuning run
def test_a_finetune_that_hurts_ships_the_frozen_head(ft_project, tmp_path):
    from tasks.export import run_export
    from tasks.extraction.feature_store import split_features
    from tasks.finetune import run_finetune

    paths = _copy(ft_project, tmp_path / "p")
    # a fresh random head trained for one epoch at a tiny learning rate is far worse than the probe
    params = project_params(paths, ["finetune.strategy=freeze", "finetune.init=random", "finetune.epochs=1",
                                    "finetune.lr=1e-7"])
    summary = run_finetune(params, paths)
    assert summary["kept"] == "head" and summary["best_epoch"] == 0
    assert "no fine-tuned epoch beat the frozen head" in summary["reason"]
    assert not (paths.finetune / "model.pt").exists()
    history = pd.read_csv(paths.finetune / "history.csv")
    assert history.loc[1, "val_accuracy"] < history.loc[0, "val_accuracy"]
    run_export(params, paths)
    xv, _, rows, _ = split_features(params, paths, "val")
    onnx_probs = OnnxClassifier(paths.onnx).probs_batched(
        load_images(rows, paths, 96, "pad", 40_000_000))
    assert np.abs(onnx_probs - Head.load(paths.head).probs(xv)).max() < 1e-3  # the shipped model is the probe


def test_finetune_user_mistakes_are_one_line_errors(ft_project):
    from tasks.finetune import run_finetune

    params = project_params(ft_project, ["finetune.strategy=last_n", "backbone.layer=blocks.4"])
    with pytest.raises(UserError, match="needs backbone.layer=pooled"):
        run_finetune(params, ft_project)
    params = project_params(ft_project, ["finetune.strategy=full", "backbone.input_size=64"])
    with pytest.raises(UserError, match="re-run the head stage first"):  # the head was fitted on 96 px features
        run_finetune(params, ft_project)


def test_mlp_head_is_exported_as_itself(ft_project, tmp_path):
    from tasks.evaluate import run_evaluate
    from tasks.export import run_export
    from tasks.extraction.feature_store import split_features
    from tasks.finetune import run_finetune
    from tasks.head import run_head

    paths = _copy(ft_project, tmp_path / "mlp")
    params = project_params(paths, ["head.type=mlp"])
    summary = run_head(params, paths)
    head = Head.load(paths.head)
    assert head.kind == "mlp" and len(head.layers) == 2 and head.layers[0][0].shape[0] == params.head.mlp.hidden
    assert summary.val_accuracy > 0.5
    xv, _, _, _ = split_features(params, paths, "val")
    with torch.no_grad():
        torch_logits = HeadModule(head).eval()(torch.from_numpy(xv)).numpy()
    assert np.abs(torch_logits - head.logits(xv)).max() < 1e-3
    run_finetune(params, paths)
    run_export(params, paths)  # parity-gated: raises if the ONNX graph does not match torch
    export = json.loads((paths.metrics / "export.json").read_text())
    assert export["parity"]["argmax_agree"] and export["parity"]["max_abs_diff_probs"] <= 1e-4
    result = run_evaluate(params, paths)
    assert result.accuracy > 0.5


@pytest.mark.slow
def test_lpft_on_fashion_mnist_subset_lowers_loss_and_ships_the_kept_model(tmp_path):
    from tasks.dataset.fashion_mnist import materialise_fashion_mnist
    from tasks.evaluate import run_evaluate
    from tasks.export import run_export
    from tasks.finetune import run_finetune

    prep = materialise_fashion_mnist(tmp_path / "fmnist", 0.02)
    paths = make_project(tmp_path / "project", None, [f"ingest.source={prep['csv']}", "ingest.group_pattern=null",
                                                      "backbone.input_size=48"])
    _build(paths)
    params = project_params(paths, ["finetune.strategy=full", "finetune.epochs=3", "finetune.body_lr=1e-3",
                                    "finetune.layer_decay=0.8", "finetune.patience=3", "evaluate.split=val"])
    summary = run_finetune(params, paths)
    history = pd.read_csv(paths.finetune / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert history["train_loss"].iloc[3] < history["train_loss"].iloc[1]  # training lowers the training loss
    assert history["fit_loss"].iloc[3] < history["fit_loss"].iloc[1]
    # keep-the-best: what ships is at least as good as the frozen head on val, and is the epoch it says it is
    assert summary["best"]["val_accuracy"] >= summary["frozen_head_val_accuracy"]
    assert summary["best"]["val_accuracy"] == history["val_accuracy"].max()
    run_export(params, paths)
    shipped = run_evaluate(params, paths)  # the exported ONNX on the val split
    assert abs(shipped.accuracy - summary["best"]["val_accuracy"]) <= 1 / shipped.n + 1e-9


def test_a_tampered_checkpoint_runs_no_code_and_is_reported(tmp_path, capfd):
    import random

    from tasks.training.checkpoints import load_checkpoint, restore_rng, rng_states, save_checkpoint

    marker = tmp_path / "pwned"

    class Payload:  # what a tampered last.pt could carry: code that runs when the file is unpickled
        def __reduce__(self):
            return (marker.write_text, ("code ran",))

    torch.save({"key": "k", "model": {}, "extra": Payload()}, tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt", "k") is None
    assert not marker.exists()
    err = capfd.readouterr().err
    assert f"cannot resume from {tmp_path / 'last.pt'}: not a safe-loadable checkpoint" in err

    random.seed(1), np.random.seed(2), torch.manual_seed(3)  # RNG states survive the safe format exactly
    save_checkpoint(tmp_path / "ok.pt", {"key": "k", "rng": rng_states()})
    before = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    restore_rng(load_checkpoint(tmp_path / "ok.pt", "k")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == before
