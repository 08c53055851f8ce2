"""One fine-tuning run, in named steps: prepare (data, model, optimizer), resume or start (epoch 0 = the frozen head),
one epoch at a time (train, score, checkpoint), then write what is kept.

The frozen head is scored on val as epoch 0. After each epoch the model is scored on val; the best epoch (val accuracy,
ties: val loss) is kept. If no epoch beats epoch 0 the head on frozen features ships. Training stops after
`finetune.patience` epochs without a better fine-tuned epoch.

Every epoch ends with an atomic checkpoint in `models/checkpoints/finetune/`. A run that finds a checkpoint with the
same checkpoint key (settings, head and data) continues after its epoch and, on CPU, reaches bitwise the same weights
as an uninterrupted run: each epoch's shuffling and augmentation are seeded from (seed, epoch).

Under torchrun (`finetune.nproc` > 1: `tasks.training.distributed_launch`) every rank runs these same steps on its
share of each global batch, with the model wrapped in DistributedDataParallel (gloo on CPU, NCCL on CUDA); val and
the train sample are scored in shards and their sums reduced, so every rank holds the same history; only rank 0
writes checkpoints, curves and the summary. Why the answer does not depend on N: `tasks.training.distributed_world`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from filelock import FileLock

from tasks.core.errors import UserError
from tasks.core.files import atomic_path
from tasks.core.modality_api import Modality
from tasks.core.params import Params
from tasks.core.paths import ProjectPaths
from tasks.core.progress import log
from tasks.dataset.manifest import read_manifest, split_rows
from tasks.extraction.fingerprint import feature_fingerprint
from tasks.modality.registry import modality_for
from tasks.model.finetune_record import clear_finetune_outputs, head_sha256, write_finetune_summary
from tasks.model.head_format import Head
from tasks.model.torch_head import HeadModule, random_like
from tasks.model.units import Units
from tasks.training.checkpoints import load_checkpoint, restore_rng, rng_states, save_checkpoint, state_sha256
from tasks.training.cpu_bf16 import bf16_pays
from tasks.training.curves import plot_curves
from tasks.training.distributed_settings import collective_timeout_s
from tasks.training.distributed_world import World, join_world, leave_world, world_from_env
from tasks.training.epoch import (
    autocast_for,
    batches_per_epoch,
    resolve_device_and_amp,
    score_sums,
    train_pass,
)
from tasks.training.freezing import (
    apply_depth,
    check_strategy,
    depth_at,
    param_groups,
    set_train_modes,
    warmup_cosine,
)

FIT_SAMPLE = 256  # train images scored without augmentation after every epoch (the "train sample" loss)


@dataclass
class Run:
    """Everything one fine-tuning run works with, built once by `prepare`."""

    params: Params
    paths: ProjectPaths
    device: torch.device
    amp: str
    autocast: Callable
    probe: Head
    modality: Modality
    units: Units
    model: torch.nn.Module  # ImageModel or TextModel
    forward: Callable  # the model, or its torch.compile'd twin
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    make_batch: Callable  # array rows -> the train step's batch tensor (augmented pixels, or token ids)
    x_train: np.ndarray
    y_train: torch.Tensor
    x_val: np.ndarray
    y_val: torch.Tensor
    fit_idx: np.ndarray
    checkpoint_key: str
    steps_per_epoch: int
    world: World
    batch: int  # this process's batch: finetune.batch_size / N

    @property
    def ckpt_dir(self) -> Path:
        return self.paths.checkpoints / "finetune"

    @property
    def last_ckpt(self) -> Path:
        return self.ckpt_dir / "last.pt"

    def best_ckpt(self, epoch: int) -> Path:
        """One file per best epoch: a kill between two writes never mislabels one."""
        return self.ckpt_dir / f"best-{epoch:04d}.pt"

    def score(self, images: np.ndarray, labels: torch.Tensor) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) of the model in eval mode on the whole split: each rank scores its shard
        and the sums are added over the ranks."""
        part = self.world.shard(len(labels))
        loss_sum, correct, n = self.world.sum(*score_sums(self.model, images[part], labels[part], self.device,
                                                          self.autocast))
        return loss_sum / n, correct / n

    def score_val_and_fit(self) -> tuple[float, float, float]:
        """(val loss, val accuracy, loss on the un-augmented train sample)."""
        vloss, vacc = self.score(self.x_val, self.y_val)
        floss, _ = self.score(self.x_train[self.fit_idx], self.y_train[self.fit_idx])
        return vloss, vacc, floss

    def wrapped(self) -> Callable:
        """The forward pass a train step calls: the model (or its compiled twin) in one process; under DDP a
        DistributedDataParallel wrapper, rebuilt whenever called because which parameters train changes with the
        epoch (gradual) and DDP fixes its gradient buckets when it is built."""
        if not self.world.distributed:
            return self.forward
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else
                                      None)
        return torch.compile(ddp) if self.params.finetune.compile else ddp


def checkpoint_key(params: Params, paths: ProjectPaths, rows: pd.DataFrame) -> str:
    """Hash of everything a checkpoint depends on: the params that shape training, the head and the data."""
    h = hashlib.sha256(json.dumps({k: params.model_dump(mode="json")[k] for k in ("seed", "backbone", "finetune")},
                                  sort_keys=True).encode())
    h.update(paths.head.read_bytes())
    h.update("".join(rows["sha256"] + rows["split"] + rows["label"]).encode())
    return h.hexdigest()


def best_epoch(rows: list[dict]) -> dict:
    """{epoch, val_accuracy, val_loss} of the best history row: highest val accuracy, ties to the lower val loss,
    then to the earlier epoch."""
    top = max(rows, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    return {k: top[k] for k in ("epoch", "val_accuracy", "val_loss")}


def epochs_since_best_tuned(history: list[dict]) -> int:
    """Epochs run since the best fine-tuned epoch. Early stopping counts from there, not from epoch 0: LP-FT often
    dips below the frozen head for an epoch or two and then passes it, and stopping in the dip would waste the run.
    (Which model ships still compares against epoch 0.)"""
    tuned = history[1:]
    return tuned[-1]["epoch"] - best_epoch(tuned)["epoch"] if tuned else 0


def _split_data(params: Params, paths: ProjectPaths, probe: Head):
    """(train rows, val rows, all rows, class index) of the manifest, checked against the probe's classes."""
    manifest = read_manifest(paths)
    train_rows, val_rows = split_rows(manifest, "train"), split_rows(manifest, "val")
    rows = manifest[manifest["split"].isin(["train", "val"])].reset_index(drop=True)
    if not len(val_rows):
        raise UserError("finetune needs a val split to choose the epoch to keep; set ingest.val_fraction > 0")
    unknown = sorted(set(rows["label"]) - set(probe.classes))
    if unknown:
        raise UserError(f"label '{unknown[0]}' is not a class of {paths.head}; re-run the head stage")
    return train_rows, val_rows, rows, {c: i for i, c in enumerate(probe.classes)}


def _choose_cpu_amp(model: torch.nn.Module, x_train: np.ndarray, batch: int, world: World) -> str:
    """amp=auto on a CPU with AMX / AVX512-BF16: bf16 when a few timed steps show it clearly faster for this model
    (rank 0 measures, every rank follows), else off."""
    pays, ratio = False, 0.0
    if world.is_main:
        pays, ratio = bf16_pays(model, torch.from_numpy(np.array(x_train[: min(batch, 16)])))
    pays, ratio = world.broadcast((pays, ratio))
    log(f"finetune: amp auto: bf16 autocast ran {ratio:.2f}x fp32 speed on this CPU and model at start-up: "
        f"{'bf16' if pays else 'fp32 (amp off)'}")
    return "bf16" if pays else "off"


def prepare(params: Params, paths: ProjectPaths, world: World | None = None) -> Run:
    """Device, the probe head, the backbone cut into units, the decoded splits, the model and its optimizer; under
    torchrun, joins the process group first (`world`: from torchrun's environment when not given)."""
    p = params.finetune
    world = world or world_from_env()
    batch = world.per_rank_batch(p.batch_size)
    device, amp = resolve_device_and_amp(p, world.local_rank, world.size)
    join_world(world, device.type == "cuda", collective_timeout_s())
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    probe = Head.load(paths.head)
    probe.require_features(feature_fingerprint(params.backbone, params.seed), paths.head)
    modality = modality_for(params.backbone)
    model, loaded = modality.build_model(params, HeadModule(probe))
    units = modality.units(loaded)
    check_strategy(p, units, params.backbone.name)
    train_rows, val_rows, rows, index = _split_data(params, paths, probe)
    # one rank at a time: the first decodes and caches the pixels, the others read that cache (a rank pruning the
    # cache folder must not delete another's file in flight); a lock, not a barrier: decoding may outlast the
    # collectives' timeout
    with FileLock(str(paths.root / "data" / ".cache" / "pixels.lock")) if world.distributed else nullcontext():
        x_train, x_val, make_batch = modality.finetune_inputs(params, paths, train_rows, val_rows)
    fit_idx = np.random.default_rng(params.seed).permutation(len(train_rows))[:FIT_SAMPLE]
    fit_idx.sort()

    model = model.to(device)
    if device.type == "cpu" and modality.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if amp == "auto-cpu":
        amp = _choose_cpu_amp(model, x_train, batch, world)
    opt = torch.optim.AdamW(param_groups(model.head, units, p), betas=(0.9, 0.999))
    # every rank's share of an epoch has ceil(n / N) samples: the same step count at any N (distributed_world)
    steps_per_epoch = batches_per_epoch(-(-len(train_rows) // world.size), batch)
    total, warmup = p.epochs * steps_per_epoch, int(round(p.warmup_epochs * steps_per_epoch))
    return Run(
        params, paths, device, amp, autocast_for(device, amp), probe, modality, units, model,
        torch.compile(model) if p.compile else model, opt,
        torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup)),
        torch.amp.GradScaler("cuda", enabled=amp == "fp16"), make_batch,
        x_train, torch.as_tensor(train_rows["label"].map(index).to_numpy(dtype=np.int64, copy=True)),
        x_val, torch.as_tensor(val_rows["label"].map(index).to_numpy(dtype=np.int64, copy=True)),
        fit_idx, checkpoint_key(params, paths, rows), steps_per_epoch, world, batch,
    )


def resume_or_start(run: Run) -> tuple[list[dict], int]:
    """(history, first epoch to run): from the last checkpoint of the same key, else a fresh start whose epoch 0 is
    the frozen head, scored exactly as every later epoch."""
    resumed = load_checkpoint(run.last_ckpt, run.checkpoint_key)
    run.world.barrier()  # every rank has read last.pt before rank 0 may clear the folder
    if resumed is not None:
        if resumed.get("amp", run.amp) != run.amp and run.params.finetune.amp == "auto":
            run.amp, run.autocast = resumed["amp"], autocast_for(run.device, resumed["amp"])  # auto chose it then
        run.model.load_state_dict(resumed["model"])
        run.opt.load_state_dict(resumed["optimizer"])
        run.sched.load_state_dict(resumed["scheduler"])
        run.scaler.load_state_dict(resumed["scaler"])
        restore_rng(resumed["rng"])
        best = best_epoch(resumed["history"])
        log(f"finetune: resuming after epoch {resumed['epoch']} from {run.last_ckpt.relative_to(run.paths.root)} "
            f"(best so far: epoch {best['epoch']}, val acc {best['val_accuracy']:.4f})")
        return resumed["history"], resumed["epoch"] + 1
    if run.world.is_main:
        shutil.rmtree(run.ckpt_dir, ignore_errors=True)
        run.ckpt_dir.mkdir(parents=True, exist_ok=True)
    vloss, vacc, floss = run.score_val_and_fit()
    if run.params.finetune.init == "random":  # LP-FT off: fine-tune from a fresh head (epoch 0 still scores the probe)
        fresh = HeadModule(random_like(run.probe, run.params.seed)).to(run.device)
        run.model.head.load_state_dict(fresh.state_dict())
    log(f"finetune: epoch 0 (frozen head): val acc {vacc:.4f}, val loss {vloss:.4f}")
    return [{"epoch": 0, "depth": 0, "lr_head": 0.0, "train_loss": None, "train_accuracy": None,
             "fit_loss": floss, "val_loss": vloss, "val_accuracy": vacc, "seconds": 0.0}], 1


def run_epoch(run: Run, epoch: int, history: list[dict]) -> None:
    """Train one epoch at the strategy's depth, score it, append it to `history` and checkpoint (last + best)."""
    p = run.params.finetune
    t0 = time.perf_counter()
    depth = depth_at(p, epoch, len(run.units))
    apply_depth(run.units, depth)
    set_train_modes(run.model, run.units, depth, p.bn)
    # shuffling, augmentation, dropout: a function of (seed, epoch, rank), never of what ran before
    torch.manual_seed(run.params.seed * 100_003 + epoch + 1_000_003 * run.world.rank)
    order = run.world.train_order(len(run.y_train), run.params.seed * 100_003, epoch)
    train_loss, train_acc = train_pass(run.wrapped(), run.opt, run.sched, run.scaler, run.x_train, run.y_train, order,
                                       p, run.make_batch, run.device, run.autocast,
                                       f"finetune: epoch {epoch}/{p.epochs}", run.batch)
    # every rank saw as many samples: the mean over ranks of each rank's mean is the epoch's mean
    train_loss, train_acc = (v / run.world.size for v in run.world.sum(train_loss, train_acc))
    vloss, vacc, floss = run.score_val_and_fit()
    row = {"epoch": epoch, "depth": depth, "lr_head": run.sched.get_last_lr()[0],
           "train_loss": train_loss, "train_accuracy": train_acc, "fit_loss": floss,
           "val_loss": vloss, "val_accuracy": vacc, "seconds": time.perf_counter() - t0}
    history.append(row)
    improved = best_epoch(history)["epoch"] == epoch
    if not run.world.is_main:
        return
    if improved:
        save_checkpoint(run.best_ckpt(epoch), {"model": run.model.state_dict(), "epoch": epoch})
    save_checkpoint(run.last_ckpt, {"key": run.checkpoint_key, "epoch": epoch, "model": run.model.state_dict(),
                                    "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
                                    "scaler": run.scaler.state_dict(), "rng": rng_states(), "history": history,
                                    "amp": run.amp})
    for old in run.ckpt_dir.glob("best-*.pt"):  # only now that last.pt (its history) names the best epoch
        if old != run.best_ckpt(best_epoch(history)["epoch"]):
            old.unlink(missing_ok=True)
    log(f"finetune: epoch {epoch}/{p.epochs} ({depth}/{len(run.units)} units training): train loss "
        f"{train_loss:.4f} acc {train_acc:.4f}, val loss {vloss:.4f} acc {vacc:.4f}"
        f"{' (best)' if improved else ''} in {row['seconds']:.0f}s")


def _kept_and_why(history: list[dict]) -> tuple[str, str]:
    best, epoch0 = best_epoch(history), history[0]
    if best["epoch"] == 0:
        if len(history) == 1:
            return "head", "no epoch ran"
        return "head", (f"no fine-tuned epoch beat the frozen head on val (best fine-tuned val acc "
                        f"{max(h['val_accuracy'] for h in history[1:]):.4f} vs {epoch0['val_accuracy']:.4f}); "
                        f"the head on frozen features ships")
    return "finetuned", (f"epoch {best['epoch']} has the best val accuracy ({best['val_accuracy']:.4f} vs the frozen "
                         f"head's {epoch0['val_accuracy']:.4f})")


def write_outputs(run: Run, history: list[dict], stopped: str, seconds: float) -> dict:
    """history.csv, curves.png, model.pt (when the fine-tuned model is kept) and summary.json; returns the summary."""
    p, out = run.params.finetune, run.paths.finetune
    best = best_epoch(history)
    out.mkdir(parents=True, exist_ok=True)
    clear_finetune_outputs(run.paths)
    frame = pd.DataFrame(history)
    with atomic_path(out / "history.csv") as tmp:
        frame.to_csv(tmp, index=False)
    kept, reason = _kept_and_why(history)
    if kept == "finetuned":
        state = torch.load(run.best_ckpt(best["epoch"]), map_location="cpu", weights_only=True)["model"]
        with atomic_path(out / "model.pt", suffix=".pt") as tmp:
            torch.save(state, tmp)
    plot_curves(frame, best["epoch"], f"{p.strategy} ({p.init} init): kept epoch {best['epoch']}, val acc "
                                      f"{best['val_accuracy']:.3f}", out / "curves.png")
    summary = {"strategy": p.strategy, "init": p.init, "kept": kept, "head_sha256": head_sha256(run.paths),
               "best_epoch": best["epoch"], "best": best,
               # the weights training ended on (kept or not): a resumed run must reach the same bits
               "final_state_sha256": state_sha256(run.model.state_dict()),
               "frozen_head_val_accuracy": history[0]["val_accuracy"], "reason": reason, "stopped": stopped,
               "epochs_run": len(history) - 1, "n_train": int(len(run.y_train)), "n_val": int(len(run.y_val)),
               "device": run.device.type, "amp": run.amp, "threads": torch.get_num_threads(),
               "world_size": run.world.size, "global_batch": run.batch * run.world.size,
               "per_process_batch": run.batch, "seconds": seconds}
    write_finetune_summary(run.paths, summary)
    return summary


def train(params: Params, paths: ProjectPaths) -> dict:
    """Fine-tune per `params.finetune`, keep the best of {frozen head, each epoch} on val, write the stage's outputs
    and return its summary (rank 0; {} on the other ranks of a multi-process run, which write nothing). Finished runs
    leave no checkpoint behind."""
    t_start = time.perf_counter()
    run = prepare(params, paths)
    try:
        return _train(run, t_start)
    finally:
        leave_world(run.world)


def _train(run: Run, t_start: float) -> dict:
    params, paths, p = run.params, run.paths, run.params.finetune
    history, start_epoch = resume_or_start(run)
    at = run.modality.input_extent(params.backbone)
    log(f"finetune: {p.strategy} on {len(run.y_train)} train / {len(run.y_val)} val samples at "
        f"{at}, {p.epochs} epochs x {run.steps_per_epoch} steps, device {run.device.type}"
        f"{f' x {run.world.size} processes (batch {run.batch} each)' if run.world.distributed else ''}"
        f"{'' if run.device.type == 'cuda' else f' ({torch.get_num_threads()} threads)'}, amp {run.amp}, "
        f"init {p.init}; units top-down: {', '.join(run.units.names)}")
    stopped = "all epochs ran"
    for epoch in range(start_epoch, p.epochs + 1):
        if epochs_since_best_tuned(history) >= p.patience:
            stopped = f"early stop after epoch {epoch - 1}: no better val accuracy for {p.patience} epochs"
            break
        run_epoch(run, epoch, history)
    if not run.world.is_main:
        return {}
    summary = write_outputs(run, history, stopped, time.perf_counter() - t_start)
    shutil.rmtree(run.ckpt_dir, ignore_errors=True)  # finished: nothing to resume
    out = paths.finetune.relative_to(paths.root)
    log(f"finetune: kept {'the fine-tuned model' if summary['kept'] == 'finetuned' else 'the frozen head'}: "
        f"{summary['reason']}; {stopped}; {summary['seconds']:.0f}s -> {out / 'summary.json'}, {out / 'curves.png'}")
    return summary
