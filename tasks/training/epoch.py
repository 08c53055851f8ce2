"""The pieces of a fine-tuning epoch: device and AMP choice, augmentation, one training pass, scoring a split.

All of them take uint8 NHWC images (what the exported graph takes) and run them through the same ImageModel, so the
model trained here is the model exported, normalisation included.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from tasks.core.errors import UserError
from tasks.core.hardware import cuda_available, resolve_threads
from tasks.core.params import FinetuneParams
from tasks.core.progress import Progress


def resolve_device_and_amp(p: FinetuneParams) -> tuple[torch.device, str]:
    """(device, amp mode): CUDA when asked or present (auto), bf16/fp16 autocast there; on CPU, amp off and
    `p.threads` torch threads (0: one per core, or OMP_NUM_THREADS when the user set it to share the machine)."""
    cuda = p.device == "cuda" or (p.device == "auto" and cuda_available())
    if p.device == "cuda" and not torch.cuda.is_available():
        raise UserError("finetune.device=cuda but no CUDA device is available; use finetune.device=auto")
    amp = p.amp
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
    if amp == "fp16" and not cuda:
        raise UserError("finetune.amp=fp16 needs CUDA; on CPU use off (or bf16)")
    if not cuda:
        torch.set_num_threads(resolve_threads(p.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)))
    return torch.device("cuda" if cuda else "cpu"), amp


def autocast_for(device: torch.device, amp: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for the AMP mode (a no-op context when amp is off)."""
    if amp == "off":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def score(model, images: np.ndarray, labels: torch.Tensor, device: torch.device, autocast,
          batch_size: int = 128) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` in eval mode on `images` (uint8 NHWC, or token ids)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode(), autocast():
        for s in range(0, len(labels), batch_size):
            xb = torch.from_numpy(np.array(images[s : s + batch_size])).to(device)  # a copy: the cache is read-only
            logits = model(xb)[0].float()
            yb = labels[s : s + batch_size].to(device)
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    return loss_sum / len(labels), correct / len(labels)


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
               p: FinetuneParams, make_batch, device: torch.device, autocast, desc: str) -> tuple[float, float]:
    """One pass over `images` (pixels or token ids) in `order` (batches of p.batch_size, each made by `make_batch`:
    `tasks.model.batches`), stepping optimizer and scheduler per batch; returns the running (loss,
    accuracy) over the pass. The caller sets train/eval modes beforehand."""
    loss_sum, correct, seen = 0.0, 0, 0
    with Progress(len(order), desc) as bar:
        for batch in _batches(order, p.batch_size):
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
