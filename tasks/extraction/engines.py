"""Inference engines for batches of raw samples (uint8 NHWC images, or texts): torch (eager) and ONNX Runtime.

`auto` picks ONNX Runtime on CPU (its fused CPU kernels run these backbones several times faster than torch's; the
ratio is in bench/RESULTS.md) and torch on CUDA. Both run the same `ImageModel`, so they agree to float rounding (a
test holds them to 1e-4).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tasks.core.hardware import add_extension_ops, cuda_available, ort_providers, resolve_threads

if TYPE_CHECKING:
    from torch import nn

# torch is imported only where a torch model is built or run: the ONNX Runtime path over a cached backbone graph
# never pays its ~2-4 s import.


def resolve_engine(engine: str) -> str:
    """`auto` -> torch on CUDA, onnxruntime on CPU."""
    if engine == "auto":
        return "torch" if cuda_available() else "onnxruntime"
    return engine


class TorchEngine:
    """Eager torch, inference_mode, channels_last; fp32 on CPU, autocast fp16 on CUDA."""

    name = "torch"

    def __init__(self, model: nn.Module, threads: int, to_inputs=None):
        import torch

        self.device = torch.device("cuda" if cuda_available() else "cpu")
        if self.device.type == "cpu":
            torch.set_num_threads(resolve_threads(threads))
        self.model = model.eval().to(self.device)
        if to_inputs is None:  # pixels: channels_last is torch's fast layout for convolutions on CPU
            self.model = self.model.to(memory_format=torch.channels_last)
        self.to_inputs = to_inputs  # raw samples -> the model's inputs (Modality.torch_input); None: as they are

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if self.to_inputs is None:
            inputs = (torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True),)
        else:
            inputs = tuple(torch.from_numpy(a).to(self.device) for a in self.to_inputs(batch))
        with torch.inference_mode():
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    out = self.model(*inputs)
            else:
                out = self.model(*inputs)
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
            # with decode threads beside it, spinning buys no throughput and burns the core they need.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = resolve_threads(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        add_extension_ops(opts)
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=ort_providers())
        self.input = self.session.get_inputs()[0].name
        self.path = Path(onnx_path)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(batch) if batch.dtype != object else batch})[0]
