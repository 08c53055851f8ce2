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


def extension_ops_library() -> str | None:
    """The path of onnxruntime-extensions' custom-op library (what its `get_library_path()` returns), found without
    importing the package: its `__init__` imports torch and transformers (~7 s), which predict and serve must not pay.
    None where the package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime_extensions")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "_extensions_pydll*.so"))
                   + glob.glob(os.path.join(spec.submodule_search_locations[0], "_extensions_pydll*.pyd")))
    return found[0] if found else None


def add_extension_ops(opts) -> None:
    """Register onnxruntime-extensions' custom ops (a text model's in-graph tokenizer, domain ai.onnx.contrib) with
    ONNX Runtime session options; a no-op where the package is absent (then only image graphs load)."""
    library = extension_ops_library()
    if library is not None:
        opts.register_custom_ops_library(library)
