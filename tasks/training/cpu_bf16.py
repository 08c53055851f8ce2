"""bf16 autocast on a CPU: whether the CPU computes bf16 in hardware, and whether it pays for this model.

A CPU with AMX (`amx_bf16`) or AVX512-BF16 (`avx512_bf16`) runs bf16 matrix products natively (oneDNN picks those
kernels); without either, bf16 has no hardware support and its speed and accuracy are untested (once measured here on
an AVX2-only CPU under load, a training step was even faster in bf16: bench/RESULTS.md §27b). So `finetune.amp=bf16`
on CPU is accepted only where /proc/cpuinfo lists one of the two flags (what the issue asked), and `amp=auto` on such a CPU times a few real training
steps both ways at start-up (`bf16_pays`) and keeps bf16 only when it is clearly faster: depthwise convolutions and
element-wise layers gain little from bf16, so on some networks it does not pay even with AMX. Measured on an AMD EPYC
with AVX512-BF16 and no AMX (bench/RESULTS.md §27b): Lite0's training step ran at 0.87x fp32 in bf16 (its eval
forward at 1.89x); `bf16_pays` measured 0.90x and kept fp32.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from tasks.core.errors import UserError

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
MIN_SPEEDUP = 1.15  # auto keeps bf16 only above this: a smaller gain is within timing noise on a shared machine


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where the file is absent: not Linux)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, for messages ('this CPU' where unknown)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "this CPU"


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU computes bf16 in hardware (AMX or AVX512-BF16)."""
    return bool(set(CPU_BF16_FLAGS) & (cpu_flags() if flags is None else flags))


def require_cpu_bf16(flags: set[str] | None = None) -> None:
    """One-line UserError where `finetune.amp=bf16` is asked for on a CPU that lacks AMX and AVX512-BF16."""
    if not cpu_has_bf16(flags):
        raise UserError(f"finetune.amp=bf16 on CPU needs AMX or AVX512-BF16 (/proc/cpuinfo flags amx_bf16 or "
                        f"avx512_bf16); {cpu_model_name()} has neither: use finetune.amp=off (or auto)")


def bf16_pays(model, batch, steps: int = 3) -> tuple[bool, float]:
    """(keep bf16?, fp32 seconds / bf16 seconds) from timing `steps` forward+backward passes of a copy of `model`
    on `batch` each way, after one warm-up pass each (the copy: the run's own weights, BatchNorm statistics and
    gradients stay untouched). bf16 is kept only when at least MIN_SPEEDUP faster."""
    import torch

    probe = copy.deepcopy(model)
    probe.train()

    def seconds(amp: bool) -> float:
        best = float("inf")
        for i in range(steps + 1):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = probe(batch)[0].float().logsumexp(1).mean()
            loss.backward()
            probe.zero_grad(set_to_none=True)
            if i:  # the first pass of each mode is a warm-up (oneDNN picks and caches its kernels)
                best = min(best, time.perf_counter() - t0)
        return best

    fp32, bf16 = seconds(False), seconds(True)
    ratio = fp32 / bf16
    return ratio >= MIN_SPEEDUP, ratio
