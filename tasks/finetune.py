"""Stage `finetune`: train the backbone and head end to end on pixels, starting from the trained head (LP-FT).

`finetune.strategy` picks what trains (tasks.training.freezing): `none` ships the head on frozen features and returns at once;
`freeze` trains only the head, on augmented pixels; `last_n`, `full` and `gradual` unfreeze blocks from the top, with
layer-wise learning-rate decay. AdamW, linear warm-up then cosine decay per step, label smoothing, random resized
crop / flip / colour jitter on uint8 images through the same ImageModel (normalisation in the graph) that is exported.

The frozen head is scored on val as epoch 0. After each epoch the model is scored on val; the best epoch (val accuracy,
ties: val loss) is kept, and the stage says which one and why. If no epoch beats epoch 0 the head on frozen features
ships: fine-tuning never delivers a model worse than the head on validation. Training stops after `finetune.patience`
epochs without a better fine-tuned epoch.

Every epoch ends with an atomic checkpoint in `models/checkpoints/finetune/` (model, optimizer, scheduler, scaler,
RNG states, history, identity of settings and data). A run that finds a checkpoint of the same identity continues
after its epoch and, on CPU, reaches bitwise the same weights as an uninterrupted run: each epoch's shuffling and
augmentation are seeded from (seed, epoch), not from whatever ran before.

Outputs in `models/finetune/`: summary.json, history.csv (DVC plots), curves.png, and model.pt (the kept ImageModel
state dict) when the fine-tuned model was kept. Export and evaluate pick it up from there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.errors import UserError
from tasks.core.files import atomic_path, atomic_write_text
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths, default_paths
from tasks.core.progress import log
from tasks.core.stage_cli import run_stage_cli
from tasks.dataset.manifest import read_manifest
from tasks.model.finetune_record import head_sha256

FIT_SAMPLE = 256  # train images scored without augmentation after every epoch (the "train sample" loss)


def _identity(params: Params, paths: ProjectPaths, rows: pd.DataFrame) -> str:
    """Hash of everything a checkpoint depends on: the params that shape training, the head and the data."""
    h = hashlib.sha256(json.dumps({k: params.model_dump(mode="json")[k] for k in ("seed", "backbone", "finetune")},
                                  sort_keys=True).encode())
    h.update(paths.head.read_bytes())
    h.update("".join(rows["sha256"] + rows["split"] + rows["label"]).encode())
    return h.hexdigest()


def _best(rows: list[dict]) -> dict:
    """{epoch, val_accuracy, val_loss} of the best history row: highest val accuracy, ties to the lower val loss,
    then to the earlier epoch."""
    top = max(rows, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    return {k: top[k] for k in ("epoch", "val_accuracy", "val_loss")}


def _epochs_since_best_tuned(history: list[dict]) -> int:
    """Epochs run since the best fine-tuned epoch. Early stopping counts from there, not from epoch 0: LP-FT often
    dips below the frozen head for an epoch or two and then passes it, and stopping in the dip would waste the run.
    (Which model ships still compares against epoch 0.)"""
    tuned = history[1:]
    return tuned[-1]["epoch"] - _best(tuned)["epoch"] if tuned else 0


def _clear_outputs(out: Path) -> None:
    for name in ("model.pt", "history.csv", "curves.png"):
        (out / name).unlink(missing_ok=True)


def _write_summary(out: Path, summary: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))


def run_finetune(params: Params, paths: ProjectPaths | None = None) -> dict:
    """Fine-tune per `params.finetune` and keep the best of {frozen head, each epoch} on val; returns the summary
    (also written to models/finetune/summary.json). With strategy none, records that the head ships and returns."""
    paths = paths or default_paths()
    p = params.finetune
    out = paths.finetune
    if p.strategy == "none":
        _clear_outputs(out)
        summary = {"strategy": "none", "kept": "head", "reason": "finetune.strategy is none: the head on frozen "
                                                                  "features ships"}
        _write_summary(out, summary)
        log("finetune: strategy none; the head on frozen features ships")
        return summary
    if params.backbone.layer != "pooled":
        raise UserError(f"finetune.strategy={p.strategy} needs backbone.layer=pooled (got '{params.backbone.layer}'): "
                        f"an intermediate-layer cut cannot be trained end to end")
    return _train(params, paths)


def _train(params: Params, paths: ProjectPaths) -> dict:
    import torch

    from tasks.dataset.pixel_cache import prune, split_pixels
    from tasks.extraction.fingerprint import feature_fingerprint
    from tasks.model.backbones import build_backbone
    from tasks.model.head_format import Head
    from tasks.model.image_model import ImageModel
    from tasks.model.torch_head import HeadModule, random_like
    from tasks.training.checkpoints import load_checkpoint, restore_rng, rng_states, save_checkpoint
    from tasks.training.curves import plot_curves
    from tasks.training.epoch import (
        autocast_for,
        batches_per_epoch,
        make_augment,
        resolve_device_and_amp,
        score,
        train_pass,
    )
    from tasks.training.freezing import (
        apply_depth,
        backbone_units,
        check_strategy,
        depth_at,
        param_groups,
        set_train_modes,
        warmup_cosine,
    )

    t_start = time.perf_counter()
    p = params.finetune
    out, ckpt_dir = paths.finetune, paths.checkpoints / "finetune"
    device, amp = resolve_device_and_amp(p)
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)

    probe = Head.load(paths.head)
    probe.require_features(feature_fingerprint(params.backbone, params.seed), paths.head)
    augment = make_augment(p.augment, params.backbone.input_size)
    loaded = build_backbone(params.backbone, params.seed)
    units = backbone_units(loaded.model, loaded.blocks)
    check_strategy(p, units, params.backbone.name)
    manifest = read_manifest(paths)
    rows = manifest[manifest["split"].isin(["train", "val"])].reset_index(drop=True)
    train_rows, val_rows = rows[rows["split"] == "train"], rows[rows["split"] == "val"]
    if not len(val_rows):
        raise UserError("finetune needs a val split to choose the epoch to keep; set ingest.val_fraction > 0")
    unknown = sorted(set(rows["label"]) - set(probe.classes))
    if unknown:
        raise UserError(f"label '{unknown[0]}' is not a class of {paths.head}; re-run the head stage")
    index = {c: i for i, c in enumerate(probe.classes)}
    size, mode = params.backbone.input_size, params.backbone.resize
    x_train = split_pixels(train_rows, paths, size, mode, "finetune: decoding train")
    x_val = split_pixels(val_rows, paths, size, mode, "finetune: decoding val")
    prune(paths, {Path(x_train.filename), Path(x_val.filename)})
    y_train = torch.as_tensor(train_rows["label"].map(index).to_numpy(dtype=np.int64, copy=True))
    y_val = torch.as_tensor(val_rows["label"].map(index).to_numpy(dtype=np.int64, copy=True))
    fit_idx = np.random.default_rng(params.seed).permutation(len(train_rows))[:FIT_SAMPLE]
    fit_idx.sort()

    model = ImageModel(loaded.model, loaded.spec.mean, loaded.spec.std, head=HeadModule(probe)).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if p.compile else model

    opt = torch.optim.AdamW(param_groups(model.head, units, p), betas=(0.9, 0.999))
    steps_per_epoch = batches_per_epoch(len(train_rows), p.batch_size)
    total, warmup = p.epochs * steps_per_epoch, int(round(p.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup))
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    autocast = autocast_for(device, amp)

    def evaluate(images, labels, mdl) -> tuple[float, float]:
        return score(mdl, images, labels, device, autocast)

    identity = _identity(params, paths, rows)
    last_ckpt = ckpt_dir / "last.pt"

    def best_ckpt(epoch: int) -> Path:  # one file per best epoch: a kill between two writes never mislabels one
        return ckpt_dir / f"best-{epoch:04d}.pt"

    resumed = load_checkpoint(last_ckpt, identity)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["optimizer"])
        sched.load_state_dict(resumed["scheduler"])
        scaler.load_state_dict(resumed["scaler"])
        restore_rng(resumed["rng"])
        history, start_epoch = resumed["history"], resumed["epoch"] + 1
        best = _best(history)
        log(f"finetune: resuming after epoch {resumed['epoch']} from {last_ckpt.relative_to(paths.root)} "
            f"(best so far: epoch {best['epoch']}, val acc {best['val_accuracy']:.4f})")
    else:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        # epoch 0: the frozen head, scored exactly as every later epoch
        vloss, vacc = evaluate(x_val, y_val, model)
        floss, _ = evaluate(x_train[fit_idx], y_train[fit_idx], model)
        if p.init == "random":  # LP-FT off: fine-tune from a fresh head (epoch 0 still scores the probe)
            model.head.load_state_dict(HeadModule(random_like(probe, params.seed)).to(device).state_dict())
        history = [{"epoch": 0, "depth": 0, "lr_head": 0.0, "train_loss": None, "train_accuracy": None,
                    "fit_loss": floss, "val_loss": vloss, "val_accuracy": vacc, "seconds": 0.0}]
        start_epoch = 1
        log(f"finetune: epoch 0 (frozen head): val acc {vacc:.4f}, val loss {vloss:.4f}")

    log(f"finetune: {p.strategy} on {len(train_rows)} train / {len(val_rows)} val images at {size}px, "
        f"{p.epochs} epochs x {steps_per_epoch} steps, device {device.type}"
        f"{'' if device.type == 'cuda' else f' ({torch.get_num_threads()} threads)'}, amp {amp}, init {p.init}; "
        f"units top-down: {', '.join(units.names)}")
    stopped = "all epochs ran"
    for epoch in range(start_epoch, p.epochs + 1):
        if _epochs_since_best_tuned(history) >= p.patience:
            stopped = f"early stop after epoch {epoch - 1}: no better val accuracy for {p.patience} epochs"
            break
        t0 = time.perf_counter()
        depth = depth_at(p, epoch, len(units))
        apply_depth(units, depth)
        set_train_modes(model, units, depth, p.bn)
        torch.manual_seed(params.seed * 100_003 + epoch)  # shuffling, augmentation, dropout: a function of the epoch
        order = torch.randperm(len(train_rows))
        train_loss, train_acc = train_pass(forward, opt, sched, scaler, x_train, y_train, order, p, augment, device,
                                           autocast, f"finetune: epoch {epoch}/{p.epochs}")
        vloss, vacc = evaluate(x_val, y_val, model)
        floss, _ = evaluate(x_train[fit_idx], y_train[fit_idx], model)
        row = {"epoch": epoch, "depth": depth, "lr_head": sched.get_last_lr()[0],
               "train_loss": train_loss, "train_accuracy": train_acc, "fit_loss": floss,
               "val_loss": vloss, "val_accuracy": vacc, "seconds": time.perf_counter() - t0}
        history.append(row)
        improved = _best(history)["epoch"] == epoch
        if improved:
            save_checkpoint(best_ckpt(epoch), {"model": model.state_dict(), "epoch": epoch})
        save_checkpoint(last_ckpt, {"identity": identity, "epoch": epoch, "model": model.state_dict(),
                                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                    "scaler": scaler.state_dict(), "rng": rng_states(), "history": history})
        for old in ckpt_dir.glob("best-*.pt"):  # only now that last.pt (its history) names the best epoch
            if old != best_ckpt(_best(history)["epoch"]):
                old.unlink(missing_ok=True)
        log(f"finetune: epoch {epoch}/{p.epochs} ({depth}/{len(units)} units training): train loss "
            f"{row['train_loss']:.4f} acc {row['train_accuracy']:.4f}, val loss {vloss:.4f} acc {vacc:.4f}"
            f"{' (best)' if improved else ''} in {row['seconds']:.0f}s")

    best = _best(history)
    out.mkdir(parents=True, exist_ok=True)
    _clear_outputs(out)
    frame = pd.DataFrame(history)
    with atomic_path(out / "history.csv") as tmp:
        frame.to_csv(tmp, index=False)
    epoch0 = history[0]
    if best["epoch"] == 0:
        kept = "head"
        reason = (f"no fine-tuned epoch beat the frozen head on val (best fine-tuned val acc "
                  f"{max(h['val_accuracy'] for h in history[1:]):.4f} vs {epoch0['val_accuracy']:.4f}); "
                  f"the head on frozen features ships") if len(history) > 1 else "no epoch ran"
    else:
        kept = "finetuned"
        reason = (f"epoch {best['epoch']} has the best val accuracy ({best['val_accuracy']:.4f} vs the frozen head's "
                  f"{epoch0['val_accuracy']:.4f})")
        state = torch.load(best_ckpt(best["epoch"]), map_location="cpu", weights_only=True)["model"]
        with atomic_path(out / "model.pt", suffix=".pt") as tmp:
            torch.save(state, tmp)
    plot_curves(frame, best["epoch"], f"{p.strategy} ({p.init} init): kept epoch {best['epoch']}, val acc "
                                      f"{best['val_accuracy']:.3f}", out / "curves.png")
    summary = {"strategy": p.strategy, "init": p.init, "kept": kept, "head_sha256": head_sha256(paths),
               "best_epoch": best["epoch"], "best": best,
               "frozen_head_val_accuracy": epoch0["val_accuracy"], "reason": reason, "stopped": stopped,
               "epochs_run": len(history) - 1, "n_train": int(len(train_rows)), "n_val": int(len(val_rows)),
               "device": device.type, "amp": amp, "threads": torch.get_num_threads(),
               "seconds": time.perf_counter() - t_start}
    _write_summary(out, summary)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: nothing to resume
    log(f"finetune: kept {'the fine-tuned model' if kept == 'finetuned' else 'the frozen head'}: {reason}; "
        f"{stopped}; {summary['seconds']:.0f}s -> {(out / 'summary.json').relative_to(paths.root)}, "
        f"{(out / 'curves.png').relative_to(paths.root)}")
    return summary


def main(argv: list[str] | None = None) -> None:
    run_stage_cli(run_finetune, __name__, argv)


if __name__ == "__main__":
    main()
