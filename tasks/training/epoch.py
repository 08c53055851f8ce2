"""The pieces of a fine-tuning epoch: device and AMP choice, augmentation, one training pass, scoring a split.

All of them take uint8 NHWC images (what the exported graph takes) and run them through the same ImageModel, so the
model trained here is the model exported, normalisation included.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from tasks.core.errors import UserError
from tasks.core.hardware import cuda_available
from tasks.core.params import FinetuneParams
from tasks.core.progress import Progress
from tasks.training.cpu_bf16 import cpu_has_bf16, require_cpu_bf16
from tasks.training.distributed_settings import threads_per_process


def resolve_device_and_amp(p: FinetuneParams, local_rank: int = 0, world_size: int = 1) -> tuple[torch.device, str]:
    """(device, amp mode): CUDA when asked or present (auto; `cuda:<local_rank>` under torchrun), bf16/fp16 autocast
    there. On CPU: bf16 only where the CPU has AMX or AVX512-BF16 (else a one-line error), `auto` resolves to
    "auto-cpu" on such a CPU (the run measures whether bf16 pays: `tasks.training.cpu_bf16`) and to off elsewhere;
    torch threads are `p.threads` (0: one per core, or OMP_NUM_THREADS when the user set it to share the machine)
    divided among the `world_size` processes, at least one each, so N processes do not oversubscribe the cores."""
    cuda = p.device == "cuda" or (p.device == "auto" and cuda_available())
    if p.device == "cuda" and not torch.cuda.is_available():
        raise UserError("finetune.device=cuda but no CUDA device is available; use finetune.device=auto")
    amp = p.amp
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else (
            "auto-cpu" if cpu_has_bf16() else "off")
    if amp == "fp16" and not cuda:
        raise UserError("finetune.amp=fp16 needs CUDA; on CPU use off (or bf16 on a CPU with AMX or AVX512-BF16)")
    if amp == "bf16" and not cuda:
        require_cpu_bf16()
    if not cuda:
        torch.set_num_threads(threads_per_process(p.threads, world_size))
    return torch.device(f"cuda:{local_rank}" if cuda and world_size > 1 else "cuda" if cuda else "cpu"), amp


def autocast_for(device: torch.device, amp: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for the AMP mode (a no-op context when amp is off). bf16 on CPU autocasts
    matrix products and convolutions to bf16 (oneDNN's AMX / AVX512-BF16 kernels)."""
    if amp == "off":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def score(model, images: np.ndarray, labels: torch.Tensor, device: torch.device, autocast,
          batch_size: int = 128) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` in eval mode on `images` (uint8 NHWC, or token ids)."""
    loss_sum, correct, n = score_sums(model, images, labels, device, autocast, batch_size)
    return loss_sum / n, correct / n


def score_sums(model, images: np.ndarray, labels: torch.Tensor, device: torch.device, autocast,
               batch_size: int = 128) -> tuple[float, int, int]:
    """(summed cross-entropy, correct count, count) of `model` in eval mode: sums, so that shards scored by several
    processes add up to the whole split's figures."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode(), autocast():
        for s in range(0, len(labels), batch_size):
            xb = torch.from_numpy(np.array(images[s : s + batch_size])).to(device)  # a copy: the cache is read-only
            logits = model(xb)[0].float()
            yb = labels[s : s + batch_size].to(device)
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    return loss_sum, correct, len(labels)


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps per pass over n images (a last batch of one image joins the batch before it)."""
    full, rest = divmod(n, batch_size)
    return max(1, full + (1 if rest > 1 or (rest == 1 and full == 0) else 0))


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """`order` in batches; a last batch of one image joins the one before (BatchNorm in train mode cannot normalise
    a single sample)."""
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def train_pass(forward, opt, sched, scaler, images: np.ndarray, labels: torch.Tensor, order: torch.Tensor,
               p: FinetuneParams, make_batch, device: torch.device, autocast, desc: str,
               batch_size: int | None = None) -> tuple[float, float]:
    """One pass over `images` (pixels or token ids) in `order` (batches of `batch_size`, default p.batch_size; under
    DDP this process's batch_size / N; each made by `make_batch`:
    `tasks.model.batches`), stepping optimizer and scheduler per batch; returns the running (loss,
    accuracy) over the pass. The caller sets train/eval modes beforehand."""
    loss_sum, correct, seen = 0.0, 0, 0
    with Progress(len(order), desc) as bar:
        for batch in _batches(order, batch_size or p.batch_size):
            idx = np.sort(batch.numpy())  # sorted: sequential reads from the memory-mapped pixel cache
            xb = make_batch(images[idx]).to(device)
            yb = labels[idx].to(device)
            with autocast():
                logits = forward(xb)[0].float()
                loss = F.cross_entropy(logits, yb, label_smoothing=p.label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            bar.update(len(idx))
    return loss_sum / seen, correct / seen
