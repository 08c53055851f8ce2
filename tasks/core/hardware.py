"""What this machine offers: CUDA or not, how many cores, which ONNX Runtime providers. Answers without importing
torch where the answer is known without it."""

from __future__ import annotations

import glob
import os
import sys


def cuda_available() -> bool:
    """True when a CUDA device is usable by torch. On Linux without NVIDIA device nodes, answers without importing
    torch."""
    if sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*"):
        return False
    import torch

    return torch.cuda.is_available()


def resolve_threads(threads: int) -> int:
    """0 means all cores; never more than the cores we have."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(threads or cores, cores))


def ort_providers() -> list[str]:
    """CUDA provider only when torch sees a GPU (requesting it otherwise logs errors); CPU always last."""
    import onnxruntime as ort

    avail = ort.get_available_providers()
    out = ["CUDAExecutionProvider"] if cuda_available() and "CUDAExecutionProvider" in avail else []
    return out + ["CPUExecutionProvider"]
