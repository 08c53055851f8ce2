"""Inference engines for uint8 NHWC batches: torch (eager, channels_last) and ONNX Runtime.

`auto` picks ONNX Runtime on CPU (measured ~3x faster than torch channels_last for Lite0 on this CPU, DESIGN.md §5)
and torch on CUDA. Both run the same `ImageModel`, so they agree to float rounding (a test holds them to 1e-4).
"""

from __future__ import annotations

import glob
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from tasks.atomic import atomic_path

if TYPE_CHECKING:
    from torch import nn

# torch is imported only where a torch model is built or run: the ONNX Runtime path over a cached backbone graph
# never pays its ~2-4 s import.


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


def resolve_engine(engine: str) -> str:
    """`auto` -> torch on CUDA, onnxruntime on CPU."""
    if engine == "auto":
        return "torch" if cuda_available() else "onnxruntime"
    return engine


def ort_providers() -> list[str]:
    """CUDA provider only when torch sees a GPU (requesting it otherwise logs errors); CPU always last."""
    import onnxruntime as ort

    avail = ort.get_available_providers()
    out = ["CUDAExecutionProvider"] if cuda_available() and "CUDAExecutionProvider" in avail else []
    return out + ["CPUExecutionProvider"]


def export_onnx(model: nn.Module, dest: Path, size: int, output_names: list[str], opset: int) -> Path:
    """Export `model` (uint8 NHWC input named `images`) to ONNX with a dynamic batch axis, atomically.

    Uses torch's TorchScript-based exporter when available (0.9 s for Lite0 here) and falls back to the dynamo
    exporter (16 s here, the future default). The trace uses batch 2 so the batch axis stays symbolic.
    """
    import torch

    model = model.eval()
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    dynamic = {"images": {0: "batch"}, **{n: {0: "batch"} for n in output_names}}
    with atomic_path(dest, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), str(tmp), input_names=["images"], output_names=output_names,
                              dynamic_axes=dynamic, opset_version=opset, dynamo=False, do_constant_folding=True)
        except (TypeError, RuntimeError, NotImplementedError):
            torch.onnx.export(model, (example,), str(tmp), input_names=["images"], output_names=output_names,
                              dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
                              opset_version=opset, dynamo=True, verbose=False)
    return dest


class Engine(Protocol):
    name: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...


class TorchEngine:
    """Eager torch, inference_mode, channels_last; fp32 on CPU, autocast fp16 on CUDA."""

    name = "torch"

    def __init__(self, model: nn.Module, threads: int):
        import torch

        self.device = torch.device("cuda" if cuda_available() else "cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(resolve_threads(threads))
        self.model = model.eval().to(self.device).to(memory_format=torch.channels_last)

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        with torch.inference_mode():
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    out = self.model(x)
            else:
                out = self.model(x)
        out = out[0] if isinstance(out, tuple) else out
        return out.float().cpu().numpy()


class OrtEngine:
    """ONNX Runtime session over an exported graph; all graph optimisations, deliberate thread count."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, threads: int, spin: bool = True):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if not spin:
            # Idle ORT threads otherwise busy-wait for ~ms between runs, stealing the core the decode thread needs;
            # measured on 2 cores: same end-to-end throughput, far less wasted CPU.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = resolve_threads(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=ort_providers())
        self.input = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(batch)})[0]
